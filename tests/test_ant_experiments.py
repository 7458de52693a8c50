"""The ant experiments end to end (smoke presets): twowalk, mazes, the obstacle course over
transferred sub-policies with its flat-PPO baseline, rendering, and bad input (exit 2, nothing written)."""

import csv
import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest

from experiments import ant_maze, ant_obstacles, ant_twowalk, brax_family, plots, render
from mlsh_jax import load_run


@pytest.fixture(scope="module")
def twowalk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ant") / "twowalk"
    summary = ant_twowalk.main(["--preset", "smoke", "--out", str(out), "--no-progress", "--no-baseline"])
    return out, summary


def _exit_code(fn, argv) -> int:
    with pytest.raises(SystemExit) as stopped:
        fn(argv)
    return stopped.value.code


def test_twowalk_smoke_writes_the_run_contract(twowalk_run):
    out, summary = twowalk_run
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["update"]) for r in rows] == [1, 2]
    for row in rows:   # returns per goal: the mean over all slots lies between them
        by_goal = [float(row[f"mean_return_by_task_{k}"]) for k in (0, 1)]
        seen = [v for v in by_goal if np.isfinite(v)]
        if seen:
            assert min(seen) - 1e-6 <= float(row["mean_return"]) <= max(seen) + 1e-6
    assert "mean_return_task_balanced" in summary
    returns = summary["subpolicy_returns"]
    by_goal = np.array(returns["by_subpolicy_and_goal"])            # [K, goals]
    assert by_goal.shape == (2, 2) and np.all(by_goal < 0)            # -sqrt(distance) every step
    assert returns["perfect_master"] == pytest.approx(by_goal.max(axis=0).mean(), abs=1e-3)
    assert returns["coin_flip"] == pytest.approx(by_goal.mean(), abs=1e-3)
    headings = summary["subpolicy_headings"]
    assert len(headings["subpolicies"]) == 2 and headings["min_angle_between_deg"] is not None
    assert all(np.isfinite(s["mean_distance"]) for s in headings["subpolicies"])


def test_run_time_estimate_counts_only_the_updates_left():
    config = dataclasses.replace(ant_twowalk.PRESETS["smoke"](), num_updates=10)
    per_update = config.env_steps_per_update
    assert brax_family.run_time_estimate(config).startswith(f"{10 * per_update:,} env steps; ")
    resumed = brax_family.run_time_estimate(config, updates_done=4)
    assert resumed.startswith(f"{6 * per_update:,} env steps left of {10 * per_update:,}; ")


def test_run_time_estimate_counts_cpu_host_devices(monkeypatch):
    config = ant_twowalk.PRESETS["smoke"]()
    rate = lambda text: float(re.search(r"~([\d,]+) steps/s", text).group(1).replace(",", ""))
    one_device = brax_family.run_time_estimate(config)
    monkeypatch.setattr(brax_family.jax, "device_count", lambda: 2)
    monkeypatch.setattr(brax_family.os, "cpu_count", lambda: 2)
    two_devices = brax_family.run_time_estimate(config)
    assert "cpu x 1 device " in one_device and "cpu x 2 devices " in two_devices
    assert rate(two_devices) == pytest.approx(brax_family.CPU_MULTI_DEVICE_SPEEDUP["ant"] * rate(one_device), rel=1e-3)
    monkeypatch.setattr(brax_family.os, "cpu_count", lambda: 1)  # forced devices on one core: no gain
    assert rate(brax_family.run_time_estimate(config)) == rate(one_device)


def test_twowalk_masters_learn_at_1e_3_in_every_preset():
    assert {build().master.learning_rate for build in ant_twowalk.PRESETS.values()} == {1e-3}
    assert ant_twowalk.PRESETS["smoke"]().master.num_minibatches == 2    # the rest of the preset's master kept
    assert ant_maze.PRESETS["paper"]().master.learning_rate == 0.01     # other experiments: the paper's


def test_task_balanced_curve_weights_each_goal_equally():
    nan = np.nan
    rows = [{"mean_return_by_task_0": a, "mean_return_by_task_1": b}
            for a, b in [(1.0, nan), (nan, -1.0), (3.0, nan), (nan, nan)]]
    # trailing means over 2 updates: goal 0 -> 1, 1, 3, 3; goal 1 -> nan, -1, -1, nan
    np.testing.assert_allclose(plots.task_balanced_curve(rows, smooth=2), [1.0, 0.0, 1.0, 3.0])
    assert plots.task_balanced_curve([{"mean_return": 1.0}], smooth=2) is None
    # a run resumed by a version that logs the kinds: its earlier rows lack them
    resumed = plots.task_balanced_curve([{"mean_return": 1.0}] + rows[:2], smooth=1)
    assert np.isnan(resumed[0]) and list(resumed[1:]) == [1.0, -1.0]


@pytest.mark.slow  # ~100 s; default tier: the experiment driver (the twowalk smoke), the maze's goal test
#                    (test_ant_envs.py) and the hierarchy episode (test_evaluation.py)
def test_maze_smoke_reports_success(tmp_path):
    out = tmp_path / "maze"
    summary = ant_maze.main(["--preset", "smoke", "--out", str(out), "--no-progress", "--no-baseline"])
    success = summary["success"]
    # A smoke episode lasts 2 s and every goal is 24 m or more from the start: no slot reaches one
    # (tests/test_ant_envs.py::test_goal_reached_triggers_success: a torso near its goal counts).
    assert success["all_slots"] == 0.0 and set(success["by_layout"].values()) == {0.0}
    assert set(success["by_layout"]) <= set(range(7))  # training layouts only
    assert len(summary["subpolicy_headings"]["subpolicies"]) == 3


@pytest.mark.slow  # minutes of compile; default tier: the transfer itself (test_resume_and_transfer.py) and the course env (test_ant_envs.py)
def test_obstacles_trains_masters_over_the_transferred_subpolicies(twowalk_run, tmp_path):
    source, _ = twowalk_run
    out = tmp_path / "course"
    summary = ant_obstacles.main(["--preset", "smoke", "--out", str(out), "--no-progress",
                                  "--subs-from", str(source)])
    assert "baseline_flat_ppo" in summary and (out / "flat_ppo" / "metrics.csv").is_file()
    for progress in (summary["progress"], summary["baseline_flat_ppo"]["progress"]):
        # The smoke course is 40 steps long: the ant stays near its start, ~86 m from the goal, where
        # the course pays nothing (tests/test_ant_envs.py: it pays 1 inside the goal's radius).
        assert progress["episodes"] == 2 and 80 < progress["closest_distance_mean"] <= progress["start_distance"]
        assert progress["episodes_with_reward"] == 0.0 and progress["mean_return"] == 0.0
    course, walked = load_run(out), load_run(source)
    assert not course.config.train_subpolicies and course.config.num_subpolicies == 2
    assert course.config.subpolicy_observation == walked.config.subpolicy_observation == "full"
    # The course run's sub-policies are the twowalk run's, unchanged by training.
    for a, b in zip(jax.tree.leaves(course.state.subs.params), jax.tree.leaves(walked.state.subs.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_obstacles_refuses_unusable_sources(twowalk_run, tmp_path, capsys):
    source, _ = twowalk_run
    bandits = tmp_path / "bandits"
    bandits.mkdir()
    config = json.loads((source / "config.json").read_text())
    (bandits / "config.json").write_text(json.dumps(dict(config, env="moving_bandits", hidden_sizes=[64, 64])))
    out = tmp_path / "course"
    assert _exit_code(ant_obstacles.main, ["--preset", "smoke", "--out", str(out), "--subs-from", str(bandits)]) == 2
    message = capsys.readouterr().err
    assert "does not fit ant_obstacles" in message and "discrete vs continuous" in message
    unfinished = tmp_path / "unfinished"
    shutil.copytree(source, unfinished)
    (unfinished / "config.json").write_text(json.dumps(dict(config, num_updates=10)))
    assert _exit_code(ant_obstacles.main, ["--preset", "smoke", "--out", str(out), "--subs-from", str(unfinished)]) == 2
    assert "is not a finished run" in capsys.readouterr().err
    assert _exit_code(ant_obstacles.main, ["--preset", "smoke", "--out", str(out),
                                           "--subs-from", str(tmp_path / "missing")]) == 2
    # Twowalk's sub-policies see the ant's position; a course whose sub-policies would not does not fit.
    assert _exit_code(ant_obstacles.main, ["--preset", "smoke", "--out", str(out), "--subs-from", str(source),
                                           "--set", "subpolicy_observation=env"]) == 2
    assert "see 29 observation entries, this run's see 27" in capsys.readouterr().err
    assert not out.exists()


def test_render_writes_viewer_and_path_picture(twowalk_run, tmp_path, capsys):
    source, _ = twowalk_run
    out = tmp_path / "pictures"
    report = render.main(["--run", str(source), "--out", str(out), "--steps", "20"])
    html = (out / "rollout.html").read_text()
    assert "<html" in html.lower() and len(html) > 1000
    assert (out / "path.png").stat().st_size > 1000
    assert report["steps"] == 20 and abs(sum(report["sub_policy_share"]) - 1) < 1e-6
    # Nothing is overwritten; bad layouts, slots and step counts are refused.
    assert _exit_code(render.main, ["--run", str(source), "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert _exit_code(render.main, ["--run", str(source), "--out", str(tmp_path / "x"), "--layout", "3"]) == 2
    assert "applies to ant_maze runs" in capsys.readouterr().err
    assert _exit_code(render.main, ["--run", str(source), "--out", str(tmp_path / "x"), "--slot", "7"]) == 2
    assert _exit_code(render.main, ["--run", str(source), "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert not (tmp_path / "x").exists()


def test_course_resume_command_is_one_its_parser_accepts(tmp_path):
    """What a preempted course prints to resume it parses with the course's own parser into the
    same job, resumed (a real course needs a trained Brax run: too slow for this tier)."""
    import shlex

    from experiments import common, course_transfer
    parser = course_transfer.course_parser("experiments.ant_obstacles", ant_obstacles.PRESETS)
    args = parser.parse_args(["--subs-from", str(tmp_path / "source run"), "--preset", "smoke", "--no-baseline",
                              "--distributed", "--process-id", "1"])
    out = tmp_path / "course out"
    printed = shlex.split(common.command_line("experiments.ant_obstacles", course_transfer.resume_args(args, out)))
    assert printed[:3] == ["python", "-m", "experiments.ant_obstacles"]
    again = parser.parse_args(printed[3:])
    assert (again.subs_from, again.out, again.resume, again.no_baseline) == (args.subs_from, out, True, True)
    assert (again.distributed, again.process_id) == (True, 1)
