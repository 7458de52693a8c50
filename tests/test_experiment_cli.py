"""The moving-bandits experiment end to end (smoke preset), its run contract, loading a run back,
and bad input: exit code 2 with a clear message before any compile or file write. Every experiment
module's command line: --help (usage text, presets), --set help, and resume commands that work."""

import csv
import dataclasses
import importlib
import json
import pathlib
import re
import shlex
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from experiments import adapt, common, moving_bandits
from mlsh_jax import RunLoadError, load_run
from mlsh_jax.config import MLSHConfig
from tests.helpers.messages import user_message
from tests.helpers.preemption import stop_after


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    summary = moving_bandits.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out, summary


def test_smoke_run_writes_the_run_contract(smoke_run):
    out, summary = smoke_run
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png", "subpolicies.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]
    config = MLSHConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config == moving_bandits.PRESETS["smoke"]()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    for column in ("env_steps", "wall_s", "mean_return", "mean_return_post_warmup", "sub_usage_0"):
        assert column in rows[0]
    assert int(rows[-1]["env_steps"]) == 3 * config.env_steps_per_update
    saved = json.loads((out / "summary.json").read_text())
    assert "subpolicy_behaviour" in saved and "baseline_shared" in saved
    assert len(saved["subpolicy_behaviour"]["fraction_ending_at_goal_slot"]) == config.num_subpolicies
    assert (out / "baseline_shared" / "metrics.csv").is_file()
    # The baseline, trained after MLSH in the same process, times itself: its clock starts at its own
    # training call, so the time before its first update is shorter than the whole MLSH run.
    shared_first = next(csv.DictReader(open(out / "baseline_shared" / "metrics.csv")))
    assert 0 <= float(shared_first["wall_s"]) - float(shared_first["interval_s"]) < float(rows[-1]["wall_s"])


def test_load_run_gives_config_and_a_policy(smoke_run):
    out, _ = smoke_run
    run = load_run(out)
    assert run.update == 3 and run.config.num_subpolicies == 2
    obs = np.array([[0.5, 0.5, 0.1, 0.2, 0.9, 0.8], [0.4, 0.6, 0.3, 0.3, 0.7, 0.1]], np.float32)
    result = run.act(obs, sub_index=1)
    assert result.action.shape == (2,) and result.master_choice.shape == (2,)
    assert set(np.asarray(result.action).tolist()) <= set(range(5))
    assert set(np.asarray(result.master_choice).tolist()) <= {0, 1}
    # The restored state is the trained one, not a fresh initialisation...
    fresh = run.trainer.init(jax.random.PRNGKey(run.config.seed))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(fresh.subs.params),
                                                      jax.tree.leaves(run.state.subs.params)))
    # ...and `act` is that state's sub-policy 1, greedy.
    sub_1 = jax.tree.map(lambda x: x[1], run.state.subs.params)
    logits = run.trainer.sub_model.apply(sub_1, run.trainer.normalize(run.state.obs_stats, obs))[0]
    np.testing.assert_array_equal(result.action, np.argmax(logits, -1))
    sampled = run.act(obs, sub_index=[0, 1], key=jax.random.PRNGKey(0))
    assert sampled.action.shape == (2,)
    with pytest.raises(ValueError, match="sub_index"):
        run.act(obs, sub_index=2)
    shared = load_run(out / "baseline_shared")
    assert shared.act(obs, sub_index=0).master_choice is None


def test_load_run_rejects_non_runs(tmp_path):
    with pytest.raises(RunLoadError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunLoadError, match="no config.json"):
        load_run(tmp_path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.moving_bandits", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, field", [
    ("num_subpolicies=0", "num_subpolicies"),
    ("macro_duration=0", "macro_duration"),
    ("episode_length=45", "episode_length"),
    ("joint_updates=0", "joint_updates"),
    ("sub.learning_rate=-1", "sub.learning_rate"),
    ("master.learning_rate=0", "master.learning_rate"),
    ("num_slots=0", "num_slots"),
    ("steps_per_slot=0", "steps_per_slot"),
    ("env=nope", "env"),
    ("subpolicy_observation=body", "subpolicy_observation"),
    ("no_such_field=1", "no_such_field"),
    ("credit.rule=bogus", "credit.rule"),
    ("credit.temperature=0", "credit.temperature"),
    ("credit.final_temperature=-1", "credit.final_temperature"),
    ("credit.anneal_updates=-5", "credit.anneal_updates"),
    ("credit.balance_iterations=-1", "credit.balance_iterations"),
    ("credit.unfreeze_interval=-1", "credit.unfreeze_interval"),
    ("credit.handover_update=-1", "credit.handover_update"),
    ("sub_network.distribution=beta", "sub_network.distribution"),
    ("sub_network.activation=gelu", "sub_network.activation"),
    ("sub_network.policy_hidden_sizes=64,0", "sub_network.policy_hidden_sizes"),
    ("sub.advantage_normalization=task", "sub.advantage_normalization"),
    ("steps_per_slot=150", "steps_per_slot"),          # does not split into the env copies' windows
])
def test_bad_configuration_exits_2_before_writing(tmp_path, override, field):
    out = tmp_path / "run"
    done = run_cli("--preset", "smoke", "--out", str(out), "--set", override)
    assert done.returncode == 2, done.stderr
    assert user_message(done.stderr).startswith("error: ") and field in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_unknown_preset_and_existing_out_dir_are_refused(tmp_path):
    done = run_cli("--preset", "huge", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "unknown preset 'huge'" in done.stderr and "smoke" in done.stderr
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    done = run_cli("--preset", "smoke", "--out", str(existing))
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (existing / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_both_warmup_and_joint_zero_is_refused():
    with pytest.raises(ValueError, match="warmup_updates \\+ joint_updates"):
        MLSHConfig(warmup_updates=0, joint_updates=0).validate()


def test_mlsh_and_its_baseline_as_two_jobs_then_resume_writes_the_summary(tmp_path, smoke_run, monkeypatch, capsys):
    """`--no-baseline` and `--baseline-only` split the pair into two jobs; `--resume` of the pair then
    trains nothing more and writes the summary, equal to the one of the pair trained in one job."""
    out = tmp_path / "pair"
    refused = run_cli("--out", str(out), "--baseline-only")
    assert refused.returncode == 2 and "start that run first" in refused.stderr and not out.exists()
    moving_bandits.main(["--preset", "smoke", "--out", str(out), "--no-progress", "--no-baseline"])
    assert not (out / "baseline_shared").exists()
    assert "baseline_shared" not in json.loads((out / "summary.json").read_text())
    for bad, says in ((["--preset", "smoke"], "drop --preset"),
                      (["--set", "sub.learning_rate=0.1"], "cannot change sub.learning_rate"),
                      (["--seed", "3"], "cannot change seed"),
                      (["--no-baseline"], "not allowed with argument")):
        refused = run_cli("--out", str(out), "--baseline-only", *bad)
        assert refused.returncode == 2 and says in refused.stderr, (bad, refused.stderr)
        assert "Traceback" not in refused.stderr and not (out / "baseline_shared").exists()

    with monkeypatch.context() as patch:   # a preempted baseline job says how to resume that job
        patch.setattr(common, "train", lambda *a, **k: types.SimpleNamespace(preempted=True))
        with pytest.raises(SystemExit) as stopped:
            moving_bandits.main(["--out", str(out), "--baseline-only", "--no-progress"])
    assert stopped.value.code == 0
    assert f"to resume: python -m experiments.moving_bandits --out {out} --baseline-only --resume" in capsys.readouterr().err
    headline = moving_bandits.main(["--out", str(out), "--baseline-only", "--no-progress"])
    assert set(headline) >= {"mean_return", "wall_s"}
    assert "baseline_shared" not in json.loads((out / "summary.json").read_text())
    again = run_cli("--out", str(out), "--baseline-only")       # never overwritten
    assert again.returncode == 2 and "already exists" in again.stderr

    summary = moving_bandits.main(["--out", str(out), "--resume", "--no-progress"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["baseline_shared"]["mean_return"] == headline["mean_return"]
    one_job = json.loads((smoke_run[0] / "summary.json").read_text())
    assert summary["mean_return"] == one_job["mean_return"]
    assert saved["baseline_shared"]["mean_return"] == one_job["baseline_shared"]["mean_return"]
    assert (out / "learning_curve.png").is_file()


# ---- one command-line contract for every experiment module: --help, --set help, resume commands ----

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT_MODULES = sorted(f"experiments.{path.stem}" for path in (ROOT / "experiments").glob("*.py")
                            if 'if __name__ == "__main__":' in path.read_text())
# Runs every module's `python -m MODULE --help` in one process (one import of JAX and Brax), as
# `python -m` runs it; prints, per module, the exit code, the help text, the docstring and the presets.
HELP_SCRIPT = """
import contextlib, importlib, io, json, runpy, sys
report = {}
for module in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [module, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = None
        except SystemExit as stopped:
            code = stopped.code
    loaded = importlib.import_module(module)
    report[module] = {"code": code, "help": out.getvalue(), "doc": loaded.__doc__,
                      "presets": list(getattr(loaded, "PRESETS", {}))}
print("REPORT " + json.dumps(report))
"""


def test_every_experiment_help_shows_its_usage_text_and_what_each_preset_means():
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *EXPERIMENT_MODULES], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert {"experiments.adapt", "experiments.humanoid", "experiments.moving_bandits"} <= set(report)
    for module, entry in report.items():
        text = entry["help"]
        assert entry["code"] == 0, module
        assert text.startswith(f"usage: python -m {module} "), module
        assert entry["doc"].strip() in text, f"{module}: --help lacks the module's usage text"
        if entry["presets"]:
            listing = text.split("presets (--preset NAME", 1)[1]
            for name in entry["presets"]:   # each preset on its own line, with what it means
                line = next((l for l in listing.splitlines() if l.split()[:1] == [name]), None)
                assert line is not None and len(line.split()) > 2, (module, name)


def test_set_help_lists_every_field_with_type_and_preset_value_then_exits(tmp_path, capsys):
    out = tmp_path / "never"
    config = moving_bandits.PRESETS["smoke"]()

    def leaves(obj, prefix=""):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            yield from leaves(value, f"{prefix}{field.name}.") if dataclasses.is_dataclass(value) else [
                (prefix + field.name, value)]

    for flags in (["--set", "help"], ["--list-fields"]):
        with pytest.raises(SystemExit) as stopped:
            moving_bandits.main(["--preset", "smoke", "--out", str(out), *flags])
        assert stopped.value.code == 0
        rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
        assert set(rows) == {name for name, _ in leaves(config)}
        assert {"sub.learning_rate", "master.epochs", "credit.rule"} <= set(rows)
        assert rows["sub.learning_rate"][:2] == ["float", "0.0003"]
        assert rows["sub_network.policy_hidden_sizes"][-1] == "64,64" and rows["num_slots"] == ["int", "4"]
        assert rows["num_updates"][-1] == "*"            # may change on --resume
    assert not out.exists()
    with pytest.raises(SystemExit) as stopped:          # the chosen preset, other --set applied
        moving_bandits.main(["--set", "num_slots=7", "--set", "help"])
    assert stopped.value.code == 0 and re.search(r"num_slots\s+int\s+7\n", capsys.readouterr().out)
    with pytest.raises(SystemExit) as stopped:
        moving_bandits.main(["--preset", "huge", "--set", "help"])
    assert stopped.value.code == 2 and "unknown preset 'huge'" in capsys.readouterr().err
    # adapt: the masters' settings that its --set may change, as the --run would give them
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(SystemExit) as stopped:
        adapt.main(["--run", str(run), "--out", str(out), "--set", "help"])
    printed = capsys.readouterr().out
    assert stopped.value.code == 0 and "master.learning_rate" in printed and "random_master_action_prob" in printed
    assert "sub.learning_rate" not in printed and not out.exists()


def _printed_resume_command(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("to resume: ")]
    assert len(lines) == 1, stderr
    command = shlex.split(lines[0].removeprefix("to resume: "))
    assert command[:2] == ["python", "-m"], command
    return command[2:]


def _run_command(module: str, argv: list[str]):
    """Runs `python -m module ARGV` in this process (its compiled programs are cached); its result."""
    return importlib.import_module(module).main(argv)


@pytest.mark.slow  # minutes; default tier: test_a_preempted_study_prints_a_resume_command_that_finishes_it
def test_a_preempted_adaptation_prints_a_resume_command_that_finishes_it(smoke_run, tmp_path, capsys):
    out = tmp_path / "adapt dir"           # a space: the printed command must quote it
    argv = ["--run", str(smoke_run[0]), "--out", str(out), "--slots", "2", "--updates", "2", "--no-baseline",
            "--no-progress"]
    with stop_after(1), pytest.raises(SystemExit) as stopped:
        adapt.main(argv)
    assert stopped.value.code == 0
    module, *resume = _printed_resume_command(capsys.readouterr().err)
    assert module == "experiments.adapt" and "--resume" in resume
    report = _run_command(module, resume)
    assert len(report["curves"]["MLSH"]["mean"]) == 2 and (out / "adapt.json").is_file()
    resumes = [json.loads(line) for line in (out / "mlsh" / "resumes.jsonl").read_text().splitlines()]
    assert [r["from_update"] for r in resumes] == [1]
    with pytest.raises(SystemExit) as stopped:     # a new adaptation into it is refused: it says --resume
        adapt.main(argv)
    assert stopped.value.code == 2 and "pass --resume" in capsys.readouterr().err


def test_a_preempted_study_prints_a_resume_command_that_finishes_it(tmp_path, capsys):
    from experiments import discrete_figures, moving_bandits_studies
    out = tmp_path / "study"
    argv = ["ablations", "--out", str(out), "--preset", "smoke", "--seeds", "1", "--updates", "2", "--slots", "2",
            "--methods", "mlsh", "--no-progress"]
    # Inside a command that runs it as a step, the printed command is that command's.
    figures_argv = ["--out", str(tmp_path / "figures"), "--preset", "smoke"]
    with stop_after(1), common.job("experiments.discrete_figures", figures_argv), pytest.raises(SystemExit):
        moving_bandits_studies.main(argv)
    module, *resume = _printed_resume_command(capsys.readouterr().err)
    assert module == "experiments.discrete_figures" and discrete_figures.parse_args(resume).out == tmp_path / "figures"
    # On its own (a new study directory), the study prints its own command: run, it continues the
    # stopped run and finishes the study.
    alone = tmp_path / "study alone"
    argv[argv.index("--out") + 1] = str(alone)
    with stop_after(1), pytest.raises(SystemExit) as stopped:
        moving_bandits_studies.main(argv)
    assert stopped.value.code == 0
    module, *resume = _printed_resume_command(capsys.readouterr().err)
    assert module == "experiments.moving_bandits_studies"
    report = _run_command(module, resume)
    assert len(report["MLSH"]["per_seed"]) == 1 and (alone / "study.json").is_file()
    run = alone / "mlsh" / "s0"
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2
    assert json.loads((run / "resumes.jsonl").read_text().splitlines()[0])["from_update"] == 1


@pytest.mark.slow  # minutes: it trains two studies
def test_a_study_reuses_another_studys_finished_run_of_the_same_configuration(tmp_path, capsys):
    from experiments import moving_bandits_studies
    sizes = ["--preset", "smoke", "--seeds", "1", "--updates", "2", "--slots", "2", "--no-progress"]
    ablations, sweep = tmp_path / "ablations", tmp_path / "sweep"
    moving_bandits_studies.main(["ablations", "--out", str(ablations), "--methods", "mlsh", *sizes])
    capsys.readouterr()
    argv = ["sweep", "--out", str(sweep), "--methods", "k_2_w_9,k_1", "--reuse-runs-from", str(ablations), *sizes]
    report = moving_bandits_studies.main(argv)
    printed = capsys.readouterr().out
    assert "K=2, W=9 s0: the finished run" in printed and "K=1 s0: the finished run" not in printed
    trained, copied = ablations / "mlsh" / "s0", sweep / "k_2_w_9" / "s0"
    # Read back, not retrained (a new run would log other wall-clock times).
    assert (copied / "metrics.csv").read_text() == (trained / "metrics.csv").read_text()
    assert report["K=2, W=9"]["per_seed"] == json.loads(
        (ablations / "study.json").read_text())["final_post_warmup_return"]["MLSH"]["per_seed"]
    assert (sweep / "k_1" / "s0" / "summary.json").is_file()   # no run of its configuration: trained
    for bad, message in ((tmp_path / "missing", "no such directory"), (sweep, "this study's own --out")):
        with pytest.raises(SystemExit) as exit_info:
            moving_bandits_studies.main(argv[:argv.index("--reuse-runs-from") + 1] + [str(bad), *sizes])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_parsing_builds_no_preset():
    """A preset sized to the devices starts JAX's backend, after which a process cannot join a cluster
    (--distributed): the parser describes presets only when --help is shown."""
    def untouchable():
        raise AssertionError("a preset was built while parsing")

    parser = common.base_parser("experiments.moving_bandits", {"auto": untouchable}, "auto")
    assert parser.parse_args(["--distributed", "--process-id", "1"]).process_id == 1
    assert common.cluster_flags(parser.parse_args(["--distributed", "--process-id", "1"])) == [
        "--distributed", "--process-id", "1"]
