"""The prepared GPU session (benchmarks/gpu_session.py, session_parts.py, session_runner.py): its
orchestration (parts a and b side by side, the MLSH run beside its baseline, part c's cache warm-up,
time limits, truncation, resuming, the at most 8 gathered files, the printed plan) with stand-in
experiments that take no compile, part c for real at a tiny size, and (slow tier) the whole smoke
session with the real experiments."""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from benchmarks import gpu_session, session_runner

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A stand-in for `python -m experiments.humanoid / ant_maze`: the same flags, run directory layout
# (config.json, metrics.csv, checkpoints/<update>/, summary.json, learning_curve.png,
# baseline_shared/), --resume from the newest checkpoint, --baseline-only (the baseline of the MLSH
# run's config.json), SIGTERM -> checkpoint after the current update and exit 0. FAKE_UPDATE_S
# seconds per update.
FAKE_EXPERIMENT = r'''
import argparse, json, os, pathlib, signal, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path, required=True)
parser.add_argument("--preset")
parser.add_argument("--set", action="append", default=[])
parser.add_argument("--resume", action="store_true")
parser.add_argument("--no-baseline", action="store_true")
parser.add_argument("--baseline-only", action="store_true")
parser.add_argument("--no-progress", action="store_true")
args = parser.parse_args()
sets = dict(item.split("=", 1) for item in args.set)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
delay = float(os.environ.get("FAKE_UPDATE_S", "0"))
HEADER = "update,env_steps,wall_s,mean_return,mean_return_by_task_0,mean_return_by_task_1\n"

def write(path, text):
    path.with_name(path.name + ".tmp").write_text(text)
    path.with_name(path.name + ".tmp").replace(path)

def train(run, resume, base=None):
    if resume:
        config = json.loads((run / "config.json").read_text())
        done = max(int(p.name) for p in (run / "checkpoints").iterdir())
        rows = (run / "metrics.csv").read_text().splitlines()[1:done + 1]
    else:
        assert not run.exists() or not any(run.iterdir()), f"{run} is not empty"
        run.mkdir(parents=True, exist_ok=True)
        config, done, rows = dict(base or {"num_slots": int(sets.get("num_slots", 2))}), 0, []
    config["num_updates"] = int(sets.get("num_updates", config.get("num_updates", 2)))
    write(run / "config.json", json.dumps(config))
    print(f"{run.name}: {'resuming at ' + str(done) if resume else 'new'} -> {config['num_updates']}", flush=True)
    while done < config["num_updates"]:
        time.sleep(delay)
        done += 1
        rows.append(f"{done},{done * 100},{done * delay},{done},{done / 2},{done / 4}")
        (run / "metrics.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
        if stop:
            break
    (run / "checkpoints" / str(done)).mkdir(parents=True, exist_ok=True)
    if done < config["num_updates"]:
        print(f"stopped after update {done}", flush=True)
        sys.exit(0)
    summary = {"updates": done, "mean_return": float(done), "mean_return_task_balanced": done / 2,
               "env_steps_per_s_after_compile": 1000.0}
    (run / "summary.json").write_text(json.dumps(summary))
    return summary

if args.baseline_only:
    assert args.preset is None, "--baseline-only takes its configuration from the MLSH run"
    base = json.loads((args.out / "config.json").read_text())
    print(json.dumps(train(args.out / "baseline_shared", args.resume, base)))
    sys.exit(0)
summary = train(args.out, args.resume and (args.out / "checkpoints").is_dir())
summary["subpolicy_postures"] = {f"subpolicy_{k}": {"walk": {"mean_torso_height": 1.0 + k}, "crawl": {"mean_torso_height": 0.3}}
                                 for k in range(2)}
summary["success"] = {"all_slots": 0.5}
if not args.no_baseline:
    baseline = args.out / "baseline_shared"
    shared = train(baseline, args.resume and (baseline / "checkpoints").is_dir())
    summary["baseline_shared"] = {k: shared[k] for k in ("mean_return", "mean_return_task_balanced")}
(args.out / "summary.json").write_text(json.dumps(summary))
(args.out / "learning_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
'''

FAKE_THROUGHPUT = r'''
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--family"); parser.add_argument("--slots", type=int, nargs="+")
parser.add_argument("--repeats", type=int); parser.add_argument("--kinds", nargs="+")
args = parser.parse_args()
print(json.dumps({"device": "cpu", "results": {f"B={args.slots[0]}": {
    kind: {"env_steps_per_s": 123.0, "per_call_s": 1.0, "compile_s_approx": 2.0, "peak_rss_mb": 10.0}
    for kind in args.kinds}}}, indent=2))
'''


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Stand-in modules on PYTHONPATH and a plan that runs them in seconds."""
    modules = tmp_path / "fake_modules"
    modules.mkdir()
    (modules / "fake_experiment.py").write_text(FAKE_EXPERIMENT)
    (modules / "fake_throughput.py").write_text(FAKE_THROUGHPUT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_UPDATE_S", "0")
    plan = dataclasses.replace(
        gpu_session.SMOKE_PLAN, humanoid_module="fake_experiment", maze_module="fake_experiment",
        throughput_module="fake_throughput", humanoid_updates=4, maze_updates=3, grace_s=5,
        throughput_entries=(("humanoid", 2), ("ant", 4)), warm_throughput=True)
    return plan


def run_session(tmp_path, plan, parts=("humanoid", "maze", "throughput")):
    session = gpu_session.Session(tmp_path / "out", tmp_path / "work", plan, list(parts), probe=False)
    assert session.main() == 0
    return session


def check_out_dir(out: pathlib.Path, expected: set[str]) -> None:
    """At most 8 plain files, all directly under OUT (no folders), names of the allowed characters;
    each parses as its kind."""
    everything = list(out.rglob("*"))
    files = [p for p in everything if p.is_file()]
    assert all(p.parent == out for p in everything), everything
    assert len(files) <= 8 and {p.name for p in files} == expected
    for path in files:
        assert set(path.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        assert path.stat().st_size <= 16 * 2**20
        if path.suffix == ".json":   # strict JSON: no NaN or Infinity
            json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path.name} holds {name}"))
        elif path.suffix == ".csv":
            with open(path, newline="") as file:
                assert "update" in next(csv.reader(file))
        elif path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_parts_run_in_order_gather_eight_files_and_a_second_call_skips_them(tmp_path, fakes, capsys):
    run_session(tmp_path, fakes)
    printed = capsys.readouterr().out
    for line in ("part a humanoid: done", "part b maze: done", "part c throughput: done",
                 "plan (smoke plan)", "  c throughput ", "limits 5400 s <= budget 7200 s"):
        assert line in printed, printed
    assert printed.index("sum (a and b") < printed.index("step humanoid_mlsh")   # the plan comes first
    out = tmp_path / "out"
    check_out_dir(out, set(gpu_session.OUTPUT_FILES))
    humanoid = json.loads((out / "humanoid.json").read_text())
    assert humanoid["complete"] and humanoid["status"] == "done"
    assert humanoid["mean_return_task_balanced"] == {"mlsh": 2.0, "shared": 2.0}
    assert humanoid["torso_height"]["subpolicy_1"] == {"walk": 2.0, "crawl": 0.3}
    assert [s["name"] for s in humanoid["steps"]] == ["humanoid_mlsh", "humanoid_baseline", "humanoid_pair"]
    assert "--baseline-only --set=num_updates=4" in (tmp_path / "work" / "smoke" / "logs" /
                                                     "humanoid_baseline.log").read_text()
    assert json.loads((out / "maze.json").read_text())["success"] == {"all_slots": 0.5}
    throughput = json.loads((out / "throughput.json").read_text())
    assert {(r["family"], r["slots"], r["kind"]) for r in throughput["table"]} == {
        ("humanoid", 2, "humanoid_walkcrawl"), ("ant", 4, "ant_maze"), ("ant", 4, "mlsh_ant_maze")}
    assert all(r["peak_device_memory_mb"] is None for r in throughput["table"])
    # The warm-up ran part c's commands (one process per family, all its slot counts) before it measured.
    assert {s["name"] for s in throughput["warm"]} == {"throughput_warm_humanoid", "throughput_warm_ant"}
    assert all(s["status"] == "done" for s in throughput["warm"])

    start = time.monotonic()
    run_session(tmp_path, fakes)
    printed = capsys.readouterr().out
    assert time.monotonic() - start < 5
    for letter, name in gpu_session.PART_NAMES.items():
        assert f"part {letter} {name}: skipped: already done" in printed
    check_out_dir(out, set(gpu_session.OUTPUT_FILES))   # a fresh OUT gets everything again
    assert "call 2" in (out / "session.log").read_text()


def test_mlsh_past_its_limit_truncates_the_part_and_pairs_the_baseline(tmp_path, fakes, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_UPDATE_S", "0.2")
    plan = dataclasses.replace(fakes, humanoid_updates=200, humanoid_mlsh_limit_s=4, grace_s=2)
    run_session(tmp_path, plan, parts=["humanoid"])
    humanoid = json.loads((tmp_path / "out" / "humanoid.json").read_text())
    done = humanoid["target_updates"]
    assert humanoid["complete"] and humanoid["truncated"] and 3 <= done < 200
    assert humanoid["status"] == f"done (truncated: {done} of 200 updates)"
    assert humanoid["progress"]["mlsh"]["rows"] == humanoid["progress"]["shared"]["rows"] == done
    # MLSH and the baseline trained side by side: both stopped by the same training limit.
    assert [s["status"] for s in humanoid["steps"][:2]] == ["timed out", "timed out"]
    assert humanoid["steps"][2]["name"] == "humanoid_pair" and humanoid["steps"][2]["status"] == "done"
    assert f"part a humanoid: done (truncated: {done} of 200 updates)" in capsys.readouterr().out


def test_a_part_cut_by_the_session_budget_resumes_in_the_next_call(tmp_path, fakes, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_UPDATE_S", "0.2")
    plan = dataclasses.replace(fakes, maze_updates=30, budget_s=3, grace_s=1)
    run_session(tmp_path, plan, parts=["maze", "throughput"])
    printed = capsys.readouterr().out
    assert "part b maze: timed out (session budget)" in printed
    assert "part c throughput: skipped: no time left" in printed
    maze = json.loads((tmp_path / "work" / "smoke" / "results" / "maze.json").read_text())
    first = maze["progress"]["mlsh"]["checkpoint"]
    assert not maze["complete"] and 1 <= first < 30

    monkeypatch.setenv("FAKE_UPDATE_S", "0")
    run_session(tmp_path, dataclasses.replace(plan, budget_s=60), parts=["maze", "throughput"])
    printed = capsys.readouterr().out
    assert "part b maze: done" in printed and "part c throughput: done" in printed
    log = (tmp_path / "work" / "smoke" / "logs" / "maze_mlsh.log").read_text()
    assert f"--resume --set=num_updates=30" in log and f"resuming at {first} -> 30" in log
    maze = json.loads((tmp_path / "out" / "maze.json").read_text())
    assert maze["complete"] and maze["progress"]["mlsh"]["rows"] == 30 and not maze.get("truncated")


def test_gather_keeps_at_most_eight_files_and_cuts_a_long_log(tmp_path, monkeypatch):
    monkeypatch.setattr(session_runner, "MAX_OUTPUT_BYTES", 1000)
    monkeypatch.setattr(session_runner, "LOG_BYTES_KEPT", 100)
    sources = {"a.json": tmp_path / "a.json", "big.csv": tmp_path / "big.csv", "session.log": tmp_path / "s.log",
               "missing.png": tmp_path / "nothing.png"}
    sources["a.json"].write_text("{}")
    sources["big.csv"].write_text("update\n" + "1\n" * 1000)
    sources["session.log"].write_text("x" * 5000 + "the end\n")
    written = session_runner.gather_files(sources, tmp_path / "out")
    assert written == ["a.json", "session.log"]
    assert (tmp_path / "out" / "session.log").read_text().endswith("the end\n")
    assert (tmp_path / "out" / "session.log").stat().st_size < 200
    with pytest.raises(ValueError):
        session_runner.gather_files({f"f{i}": tmp_path / "a.json" for i in range(9)}, tmp_path / "out")


def test_parts_and_plan_from_the_command_line(monkeypatch):
    assert gpu_session.parse_parts("c,a") == ["humanoid", "throughput"]
    assert gpu_session.parse_parts("maze") == ["maze"]
    captured = {}

    class Capture:
        def __init__(self, out, work, plan, parts, **kwargs):
            captured.update(plan=plan, parts=parts)

        def main(self):
            return 0

    monkeypatch.setattr(gpu_session, "Session", Capture)
    assert gpu_session.main(["--out", "x", "--parts", "b,a", "--humanoid-updates", "10", "--limit", "maze=99",
                             "--limit", "throughput=77", "--throughput-slots", "8", "--no-warm"]) == 0
    plan = captured["plan"]
    assert captured["parts"] == ["humanoid", "maze"] and plan.mode == "gpu"
    assert plan.humanoid_updates == 10 and plan.maze_limit_s == 99 and plan.humanoid_slots == 256
    assert plan.throughput_limit_s == 77 and not plan.warm_throughput
    assert plan.throughput_entries == (("humanoid", 8), ("ant", 8))


def test_gpu_plan_fits_one_call():
    """The GPU plan's limits add up to less than the budget (a and b side by side count once), each
    part's estimate (module docstring) is under its limit, and the training estimate under the
    training limit less the grace period (else the plan would truncate by design)."""
    plan = gpu_session.GPU_PLAN
    estimates = gpu_session.estimate_s(plan)
    assert plan.budget_s <= 570
    assert plan.setup_s + max(plan.humanoid_limit_s, plan.maze_limit_s) + plan.throughput_limit_s <= plan.budget_s
    assert estimates["setup"] + max(estimates["humanoid"], estimates["maze"]) + estimates["throughput"] \
        <= 0.9 * plan.budget_s
    for part, limit in (("setup", plan.setup_s), ("humanoid", plan.humanoid_limit_s), ("maze", plan.maze_limit_s),
                        ("throughput", plan.throughput_limit_s)):
        assert estimates[part] <= limit, (part, estimates[part], limit)
    assert estimates["humanoid"] - gpu_session.PROCESS_S <= plan.humanoid_mlsh_limit_s - plan.grace_s
    assert 1.4e6 < gpu_session.HUMANOID_MLSH_GPU_256 < 1.5e6
    assert {b for _, b in plan.throughput_entries} == {1024, 4096} and plan.throughput_repeats == 1
    lines = gpu_session.plan_lines(plan, list(gpu_session.PART_NAMES.values()))
    assert lines[-1].endswith("estimate 495 s, limits 550 s <= budget 560 s"), lines


def _session_command(out, work, *flags):
    return [sys.executable, "-m", "benchmarks.gpu_session", "--smoke", "--out", str(out), "--work", str(work), *flags]


def test_smoke_throughput_part_for_real_and_resumed(tmp_path):
    """Part c as the device runs it (benchmarks.throughput in subprocesses), at 4 slots, the ant maze
    env alone: ~30-60 s on a busy 2-core CPU."""
    out, work = tmp_path / "out", tmp_path / "work"
    command = _session_command(out, work, "--parts", "c", "--throughput-kinds", "ant_maze")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jax " in done.stdout and "platform cpu" in done.stdout
    assert "part c throughput: done" in done.stdout, done.stdout
    check_out_dir(out, {"throughput.json", "session.log"})
    throughput = json.loads((out / "throughput.json").read_text())
    (row,) = throughput["table"]
    assert (row["family"], row["slots"], row["kind"]) == ("ant", 4, "ant_maze")
    assert row["env_steps_per_s"] > 0 and row["peak_device_memory_mb"] is None and row["error"] is None
    assert throughput["environment"]["platform"] == "cpu"

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "part c throughput: skipped: already done" in again.stdout, again.stdout


@pytest.mark.slow
def test_whole_smoke_session_with_the_real_experiments(tmp_path):
    """Every part with the experiments' smoke presets (minutes of compiles on a 2-core CPU), the
    8 files, then a second call that skips everything."""
    out, work = tmp_path / "out", tmp_path / "work"
    start = time.monotonic()
    done = subprocess.run(_session_command(out, work), cwd=REPO, capture_output=True, text=True, timeout=3600)
    first_s = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("part a humanoid: done", "part b maze: done", "part c throughput: done"):
        assert line in done.stdout, done.stdout
    check_out_dir(out, set(gpu_session.OUTPUT_FILES))
    humanoid = json.loads((out / "humanoid.json").read_text())
    assert set(humanoid["mean_return_task_balanced"]) == {"mlsh", "shared"}
    assert all(isinstance(v, float) for v in humanoid["mean_return_task_balanced"].values())
    assert sorted(humanoid["torso_height"]) == ["subpolicy_0", "subpolicy_1"]
    assert all(0 < h < 2 for per in humanoid["torso_height"].values() for h in per.values())
    maze = json.loads((out / "maze.json").read_text())
    assert maze["success"]["all_slots"] == 0.0 and "subpolicy_headings" in maze   # no goal within a smoke episode
    throughput = json.loads((out / "throughput.json").read_text())
    assert {(r["family"], r["kind"]) for r in throughput["table"] if r["env_steps_per_s"]} == {
        ("humanoid", "humanoid_walkcrawl"), ("ant", "ant_maze"), ("ant", "mlsh_ant_maze")}

    start = time.monotonic()
    again = subprocess.run(_session_command(out, work), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    for letter, name in gpu_session.PART_NAMES.items():
        assert f"part {letter} {name}: skipped: already done" in again.stdout, again.stdout
    assert time.monotonic() - start < 120
    print(f"whole smoke session: {first_s:.0f} s")
