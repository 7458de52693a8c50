"""The humanoid experiments end to end (smoke presets): walk / crawl with its shared-policy
baseline and the sub-policies' postures, the course over transferred sub-policies with both
baselines, rendering, and sources the course cannot use (exit 2, nothing written)."""

import json
import shutil

import jax
import numpy as np
import pytest

from mlsh_jax import load_run

# Humanoid trainers compile for minutes on 2 CPU cores (~7 min for this file alone): slow tier.
pytestmark = pytest.mark.slow

from experiments import humanoid, humanoid_course


@pytest.fixture(scope="module")
def walkcrawl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("humanoid") / "walkcrawl"
    summary = humanoid.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out, summary


def _exit_code(fn, argv) -> int:
    with pytest.raises(SystemExit) as stopped:
        fn(argv)
    return stopped.value.code


def test_walkcrawl_smoke_writes_the_contract_baseline_and_postures(walkcrawl_run):
    out, summary = walkcrawl_run
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png",
                 "baseline_shared/summary.json"):
        assert (out / name).is_file(), name
    postures = summary["subpolicy_postures"]
    assert sorted(postures) == ["subpolicy_0", "subpolicy_1"]
    for per_objective in postures.values():
        assert sorted(per_objective) == ["crawl", "walk"]
        for figures in per_objective.values():
            assert 0.0 < figures["mean_torso_height"] < 2.0 and np.isfinite(figures["mean_x_displacement"])
            # It starts standing (torso at 1.41) and cannot fall in one 10-step macro step (0.15 s).
            assert figures["mean_torso_height_first_macro_step"] > 1.0
            assert figures["upright_fraction"] > 0.0


def test_course_trains_masters_and_both_baselines_over_the_transferred_policies(walkcrawl_run, tmp_path):
    source, _ = walkcrawl_run
    out = tmp_path / "course"
    summary = humanoid_course.main(["--preset", "smoke", "--out", str(out), "--no-progress",
                                    "--subs-from", str(source)])
    assert summary["subs_from"] == str(source)
    for name in ("shared_transfer", "flat_ppo"):
        baseline = summary[f"baseline_{name}"]
        assert (out / name / "metrics.csv").is_file() and np.isfinite(baseline["mean_return"])
        assert baseline["progress"]["episodes"] == 2
    progress = summary["progress"]
    # The smoke course lasts 0.6 s: nobody passes x = 25 (the turn itself: test_humanoid_envs.py).
    assert progress["turned_fraction"] == 0.0 and np.isfinite(progress["furthest_x_mean"])
    # The shared policy transferred starts from the source's shared policy (one sub-policy, same shapes).
    shared_config = json.loads((out / "shared_transfer" / "config.json").read_text())
    assert shared_config["algorithm"] == "shared" and shared_config["num_subpolicies"] == 1
    source_shared = load_run(source / "baseline_shared")
    transferred = load_run(out / "shared_transfer")
    shapes = lambda run: [np.shape(x) for x in jax.tree.leaves(run.state.subs.params)]   # noqa: E731
    assert shapes(source_shared) == shapes(transferred)


def test_course_refuses_sources_it_cannot_use(walkcrawl_run, tmp_path, capsys):
    source, _ = walkcrawl_run
    out = tmp_path / "course"
    no_shared = tmp_path / "no_shared"
    shutil.copytree(source, no_shared, ignore=shutil.ignore_patterns("baseline_shared"))
    assert _exit_code(humanoid_course.main, ["--preset", "smoke", "--out", str(out),
                                             "--subs-from", str(no_shared)]) == 2
    assert "has no shared-policy baseline" in capsys.readouterr().err
    ant = tmp_path / "ant"
    ant.mkdir()
    config = json.loads((source / "config.json").read_text())
    (ant / "config.json").write_text(json.dumps(dict(config, env="ant_twowalk")))
    assert _exit_code(humanoid_course.main, ["--preset", "smoke", "--out", str(out), "--subs-from", str(ant)]) == 2
    message = capsys.readouterr().err
    assert "does not fit humanoid_course" in message and "action size is 8" in message
    assert not out.exists()


def test_render_writes_viewer_and_side_view(walkcrawl_run, tmp_path):
    from experiments import render
    source, _ = walkcrawl_run
    out = tmp_path / "pictures"
    report = render.main(["--run", str(source), "--out", str(out), "--steps", "20"])
    assert report["picture"] == "side.png" and (out / "side.png").stat().st_size > 5000
    assert "<html" in (out / "rollout.html").read_text().lower()
    assert not (out / "path.png").exists()
    with pytest.raises(SystemExit) as stopped:                  # existing files are not overwritten
        render.main(["--run", str(source), "--out", str(out), "--steps", "20"])
    assert stopped.value.code == 2
