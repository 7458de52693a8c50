"""Key-door and four rooms experiments end to end (smoke presets): run contract, baseline and the
sub-policy behaviour summaries."""

import json
import pathlib

import pytest

from envs.four_rooms import ROOMS
from experiments import four_rooms, key_door


# key-door's smoke run is in the slow tier (suite time); its env is tested in test_discrete_tasks.
@pytest.mark.parametrize("module", [pytest.param(key_door, marks=pytest.mark.slow), four_rooms],
                         ids=["key_door", "four_rooms"])
def test_smoke_run_writes_the_contract_and_a_behaviour_summary(module, tmp_path):
    out = tmp_path / "run"
    summary = module.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png",
                 "baseline_shared/summary.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "summary.json").read_text())
    assert saved["updates"] == 3 and "baseline_shared" in saved
    config = module.PRESETS["smoke"]()
    if module is key_door:
        behaviour = saved["subpolicy_behaviour"]
        assert len(behaviour) == config.num_subpolicies == 3
        for entry in behaviour.values():
            # A fraction of the 200 episodes run per sub-policy.
            assert entry["picks_up_key"] * 200 == pytest.approx(round(entry["picks_up_key"] * 200))
            assert len(entry["ends_near_door"]) == 2
    else:
        rooms = saved["subpolicy_rooms"]
        assert len(rooms) == config.num_subpolicies == 4
        for fractions in rooms.values():
            assert list(fractions) == list(ROOMS) and sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
        _check_ceiling(saved, out, config)
    assert summary["mean_return"] == saved["mean_return"]


def _check_ceiling(saved: dict, run: pathlib.Path, config) -> None:
    """summary.json's hierarchy ceiling, and `four_rooms_ceiling` on the same run with N = 1 and N = 25."""
    from experiments import four_rooms_ceiling
    ceiling = saved["hierarchy_ceiling"]
    assert ceiling["macro_duration"] == config.macro_duration and len(ceiling["per_goal"]) == 21
    assert sorted(cell for cell, row in ceiling["per_goal"].items() if row["split"] == "heldout") == [
        "10:8", "11:11", "8:7", "9:9"]
    assert ceiling["heldout"]["mean_optimum"] == pytest.approx(66.73, abs=0.01)
    for row in ceiling["per_goal"].values():
        assert 0 <= row["ceiling"] <= row["optimum"] + 1e-6
    assert len(saved["subpolicy_holds"]) == 4
    report = four_rooms_ceiling.main(["--run", str(run), "--out", str(run / "ceiling.json")])
    assert report["hierarchy_ceiling"] == ceiling
    assert json.loads((run / "ceiling.json").read_text())["hierarchy_ceiling"] == ceiling
    every_step = four_rooms_ceiling.main(["--run", str(run), "--macro-duration", "1"])["hierarchy_ceiling"]
    for cell, row in every_step["per_goal"].items():     # a master deciding every step can only gain
        assert row["ceiling"] >= ceiling["per_goal"][cell]["ceiling"] - 0.02


@pytest.mark.parametrize("flags, message", [
    (["--macro-duration", "0"], "--macro-duration must be in 1..100"),
    (["--macro-duration", "101"], "--macro-duration must be in 1..100"),
    (["--out", "{run}/config.json"], "already exists"),
    (["--out", "{run}/missing/c.json"], "does not exist"),
])
def test_ceiling_refuses_bad_input_before_loading(tmp_path, capsys, flags, message):
    from experiments import four_rooms_ceiling
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(four_rooms.PRESETS["smoke"]().to_dict()))
    with pytest.raises(SystemExit) as exit_info:
        four_rooms_ceiling.main(["--run", str(run)] + [f.format(run=run) for f in flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_ceiling_refuses_a_run_of_another_env(tmp_path, capsys):
    from experiments import four_rooms_ceiling
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(key_door.PRESETS["smoke"]().to_dict()))
    with pytest.raises(SystemExit) as exit_info:
        four_rooms_ceiling.main(["--run", str(run)])
    assert exit_info.value.code == 2 and "is a key_door run" in capsys.readouterr().err


def test_paper_settings_are_the_papers():
    config = four_rooms.PRESETS["paper"]()
    assert (config.episode_length, config.macro_duration, config.num_subpolicies, config.warmup_updates,
            config.joint_updates, config.num_slots, config.steps_per_slot) == (100, 25, 4, 20, 30, 10, 2000)


def test_study_variants_are_the_papers_ablations_and_sweep():
    from experiments import moving_bandits_studies as studies
    runs = {(label, seed): config for label, seed, config in studies.variant_configs("ablations", 3, 50, 100)}
    assert len(runs) == 12 and {seed for _, seed in runs} == {0, 1, 2}
    mlsh = runs[("MLSH", 0)]
    assert (mlsh.num_slots, mlsh.num_updates, mlsh.warmup_updates, mlsh.joint_updates, mlsh.macro_duration,
            mlsh.num_subpolicies) == (100, 50, 9, 1, 10, 2)
    assert (runs[("MLSH, no warmup (W=0)", 1)].warmup_updates, runs[("MLSH, no warmup (W=0)", 1)].lifetime) == (0, 10)
    assert runs[("MLSH, same timescale (N=1)", 2)].macro_duration == 1
    assert runs[("shared policy", 0)].algorithm == "shared"
    sweep = {label: config for label, seed, config in studies.variant_configs("sweep", 1, 50, 100)}
    assert [(c.num_subpolicies, c.warmup_updates, c.joint_updates) for c in sweep.values()] == [
        (1, 9, 1), (2, 9, 1), (4, 9, 1), (2, 1, 1), (2, 20, 1)]
    labels = {label for label, _ in runs} | set(sweep)
    assert len({studies.slug(label) for label in labels}) == len(labels)   # one directory per variant


@pytest.mark.slow
def test_bandit_ablations_run_every_variant_and_report_over_seeds(tmp_path):
    from experiments import moving_bandits_studies as studies
    out = tmp_path / "ablations"
    argv = ["ablations", "--out", str(out), "--preset", "smoke", "--seeds", "2", "--updates", "3", "--slots", "2",
            "--no-progress"]
    report = studies.main(argv)
    saved = json.loads((out / "study.json").read_text())["final_post_warmup_return"]
    assert list(saved) == list(studies.STUDIES["ablations"]) == list(report)
    for label, entry in saved.items():
        assert len(entry["per_seed"]) == 2
        for seed in range(2):
            config = json.loads((out / studies.slug(label) / f"s{seed}" / "config.json").read_text())
            assert config["seed"] == seed and config["num_updates"] == 3
    no_warmup = json.loads((out / "mlsh_no_warmup_w_0" / "s0" / "config.json").read_text())
    same_timescale = json.loads((out / "mlsh_same_timescale_n_1" / "s0" / "config.json").read_text())
    assert (no_warmup["warmup_updates"], no_warmup["joint_updates"]) == (0, 10)
    assert same_timescale["macro_duration"] == 1
    assert (out / "study.png").stat().st_size > 1000
    # Called again, the finished runs are reused (nothing retrained) and the report is the same.
    assert json.dumps(studies.main(argv)) == json.dumps(report)
    # Another setting into the same directory is refused.
    with pytest.raises(SystemExit) as exit_info:
        studies.main(argv[:-2] + ["4", "--no-progress"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_discrete_figures_make_every_figure_and_continue(tmp_path):
    from experiments import discrete_figures
    out = tmp_path / "figures"
    argv = ["--out", str(out), "--preset", "smoke", "--seeds", "2", "--no-progress"]
    report = discrete_figures.main(argv)
    for name in ("bandit_ablations", "bandit_sweep", "adapt_bandits", "adapt_four_rooms"):
        assert pathlib.Path(report[name]["figure"]).stat().st_size > 1000, name
    assert set(report["adapt_bandits"]["mean_return"]) == {"MLSH", "single policy", "shared policy fine-tuned"}
    four_rooms_numbers = report["adapt_four_rooms"]
    assert set(four_rooms_numbers["mean_over_first_20000_steps"]) == {"MLSH", "single policy"}
    assert 0 < four_rooms_numbers["optimal_mean_return"] < 100
    adapt_runs = json.loads((out / "adapt_four_rooms" / "adapt.json").read_text())["runs"]
    assert adapt_runs == [str(out / "four_rooms" / f"s{seed}") for seed in range(2)]
    assert json.loads((out / "figures.json").read_text())["wall_s"]["total"] > 0
    # Called again, everything is reused: no step is timed but the total, same numbers.
    again = discrete_figures.main(argv)
    assert set(again["wall_s"]) == {"bandit_ablations", "bandit_sweep", "total"}
    assert again["adapt_four_rooms"] == report["adapt_four_rooms"]
    # An unfinished adaptation (here: every part trained, adapt.json not yet written) is resumed.
    (out / "adapt_bandits" / "adapt.json").unlink()
    resumed = discrete_figures.main(argv)
    assert resumed["adapt_bandits"]["mean_return"] == pytest.approx(report["adapt_bandits"]["mean_return"], abs=1e-3)


def test_discrete_figures_hands_each_unfinished_run_to_one_parallel_job(tmp_path):
    from experiments import discrete_figures
    from mlsh_jax.run import SUMMARY_FILE
    steps = discrete_figures.Steps(discrete_figures.PRESETS["smoke"], tmp_path, 2, ("--no-progress",))
    names = {job.name for job in discrete_figures.training_jobs(steps)}
    # Every ablation and sweep variant and every four-rooms seed, except the sweep's K=2, W=9 (the
    # ablations' MLSH runs, copied in by the sweep).
    assert names == {"bandit_ablations/mlsh", "bandit_ablations/mlsh_no_warmup_w_0",
                     "bandit_ablations/mlsh_same_timescale_n_1", "bandit_ablations/shared_policy",
                     "bandit_sweep/k_1", "bandit_sweep/k_4", "bandit_sweep/w_1", "bandit_sweep/w_20",
                     "four_rooms/s0", "four_rooms/s1"}
    jobs = {job.name: job for job in discrete_figures.training_jobs(steps)}
    assert "--runs-only" in jobs["bandit_sweep/k_4"].argv and "--reuse-runs-from" in jobs["bandit_sweep/k_4"].argv
    assert jobs["bandit_ablations/mlsh_no_warmup_w_0"].cost > jobs["bandit_ablations/mlsh"].cost
    for seed in (0, 1):                          # a variant whose seeds have all finished is left out
        run = tmp_path / "bandit_sweep" / "k_4" / f"s{seed}"
        run.mkdir(parents=True)
        (run / SUMMARY_FILE).write_text("{}")
    (tmp_path / "four_rooms" / "s1").mkdir(parents=True)
    (tmp_path / "four_rooms" / "s1" / SUMMARY_FILE).write_text("{}")
    training = discrete_figures.training_jobs(steps)
    assert names - {job.name for job in training} == {"bandit_sweep/k_4", "four_rooms/s1"}
    # Each adaptation waits for the training jobs of the runs it adapts (bandits: MLSH and the shared
    # policy), named as those jobs are; a finished one (four rooms s1) is not in the call, so done.
    adaptations = {job.name: job for job in discrete_figures.adaptation_jobs(steps)}
    assert set(adaptations["adapt_bandits"].after) == {"bandit_ablations/mlsh", "bandit_ablations/shared_policy"}
    assert set(adaptations["adapt_bandits"].after) <= {job.name for job in training}
    assert adaptations["adapt_four_rooms"].after == ("four_rooms/s0", "four_rooms/s1")
    assert all(job.cost > 0 for job in adaptations.values())


def test_discrete_figures_refuses_zero_workers(tmp_path):
    from experiments import discrete_figures
    with pytest.raises(SystemExit) as stop:
        discrete_figures.main(["--out", str(tmp_path / "f"), "--preset", "smoke", "--workers", "0"])
    assert stop.value.code == 2 and not (tmp_path / "f").exists()
