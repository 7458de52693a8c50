"""`python -m experiments.adapt`: fresh masters over frozen sub-policies on unseen tasks, and the
single-policy / fine-tuned-shared-policy baselines in the same trainer; bad input exits 2."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import four_rooms as four_rooms_env
from envs.four_rooms import FourRooms, FourRoomsPaper
from experiments import adapt, four_rooms, moving_bandits
from mlsh_jax.trainer import Trainer
from mlsh_jax.transfer import load_shared_policy, primitive_subpolicies, with_master_params, with_subpolicies


@pytest.fixture(scope="module")
def bandit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "bandits"
    moving_bandits.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out


def _exit_code(argv):
    with pytest.raises(SystemExit) as exit_info:
        adapt.main(argv)
    return exit_info.value.code


def test_adapt_writes_curves_for_mlsh_and_both_baselines(bandit_run, tmp_path):
    out = tmp_path / "adapt"
    report = adapt.main(["--run", str(bandit_run), "--out", str(out), "--slots", "2", "--updates", "2",
                         "--set", "master.learning_rate=0.005", "--no-progress"])
    saved = json.loads((out / "adapt.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["curves"]) == {"MLSH", "single policy", "shared policy fine-tuned"}
    assert saved["env_steps_per_task"] == [200, 400]
    for curve in saved["curves"].values():
        assert len(curve["mean"]) == 2 and len(curve["std_over_tasks"]) == 2 and curve["std_over_runs"] is None
        assert all(v is not None and np.isfinite(v) for v in curve["mean"]) and curve["per_run"] == [curve["mean"]]
        assert curve["mean_over_updates"] == pytest.approx(sum(curve["mean"]) / 2, abs=1e-3)
    assert (out / "adapt.png").stat().st_size > 1000
    for name in ("mlsh", "single_policy", "shared_finetuned"):
        assert (out / name / "metrics.csv").is_file(), name
    # The MLSH masters trained over the run's sub-policies, unchanged.
    source = json.loads((bandit_run / "config.json").read_text())
    masters = json.loads((out / "mlsh" / "config.json").read_text())
    assert masters["num_subpolicies"] == source["num_subpolicies"]
    # --set changed the masters' settings only; the flat baseline learns with the run's sub-policy settings.
    assert masters["master"]["learning_rate"] == 0.005 != source["master"]["learning_rate"]
    single = json.loads((out / "single_policy" / "config.json").read_text())
    assert single["master"]["learning_rate"] == source["sub"]["learning_rate"]
    # A second call never overwrites the first.
    assert _exit_code(["--run", str(bandit_run), "--out", str(out)]) == 2


@pytest.mark.slow    # suite time; discrete_figures' slow test adapts several runs too
def test_several_runs_adapt_with_one_compile_and_report_the_spread_over_runs(bandit_run, tmp_path):
    import shutil
    twin = tmp_path / "bandits_copy"
    shutil.copytree(bandit_run, twin)
    out = tmp_path / "adapt"
    report = adapt.main(["--run", str(bandit_run), "--run", str(twin), "--out", str(out), "--slots", "2",
                         "--updates", "1", "--no-baseline", "--no-progress"])
    curve = report["curves"]["MLSH"]
    assert list(report["curves"]) == ["MLSH"] and len(curve["per_run"]) == 2 and len(curve["std_over_runs"]) == 1
    assert curve["mean"][0] == pytest.approx(np.mean([r[0] for r in curve["per_run"]]), abs=1e-3)
    # Each run adapted into its own directory, with its own seed.
    seeds = [json.loads((out / name / "mlsh" / "config.json").read_text())["seed"] for name in ("bandits", "bandits_copy")]
    assert seeds == [0, 1]
    assert _exit_code(["--run", str(bandit_run), "--run", str(bandit_run), "--out", str(tmp_path / "x")]) == 2


def test_flat_baseline_is_the_shared_policy_acting_through_primitive_subpolicies(bandit_run):
    source = adapt.load_config(bandit_run)
    trainer = Trainer(adapt.flat_settings(source, 5, slots=2, updates=1, seed=0))
    shared = load_shared_policy(bandit_run / "baseline_shared", trainer)
    state = with_subpolicies(trainer, trainer.init(jax.random.PRNGKey(0)),
                             primitive_subpolicies(trainer, shared.obs_stats))
    state = with_master_params(trainer, state, jax.tree.map(lambda x: x[0], shared.params))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (16, 6))
    # Sub-policy k always takes action k...
    for k in range(5):
        logits = trainer.sub_model.apply(jax.tree.map(lambda x: x[k], state.subs.params), obs)[0]
        assert np.all(np.asarray(trainer.sub_model.distribution.mode(logits)) == k)
    # ...so every slot's master is the shared policy, choosing among actions.
    for slot in range(2):
        master = jax.tree.map(lambda x: x[slot], state.slots.master.params)
        np.testing.assert_allclose(trainer.master_model.apply(master, obs)[0],
                                   trainer.sub_model.apply(jax.tree.map(lambda x: x[0], shared.params), obs)[0],
                                   rtol=1e-6)
    assert trainer.config.macro_duration == 1 and trainer.config.random_master_action_prob == 0
    assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(state.slots.master.opt_state)
               if jnp.issubdtype(x.dtype, jnp.floating))


def _no_compile(*args, **kwargs):
    raise AssertionError("bad input must be refused before anything compiles")


def _four_rooms_config_only(tmp_path):
    run = tmp_path / "four_rooms_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(four_rooms.PRESETS["smoke"]().to_dict()))
    return run


@pytest.mark.parametrize("extra, message", [
    (["--split", "test"], "unknown goal cell split 'test'; use one of train, heldout, all"),
    (["--goal-cells", "3,104"], "0..103"),
    (["--goal-cells", "3,x"], "'x' is not a free-cell index 0..103 or row:col of a free cell"),
    (["--goal-cells", "3,0:0"], "goal cell 0:0 is a wall; each goal cell is a free-cell index 0..103 or row:col"),
    (["--goal-cells", "13:2"], "goal cell 13:2 is off the map"),
    (["--goal-cells", ","], "no goal cells"),
    (["--set", "sub.learning_rate=1e-3"], "adapt changes only the masters' settings"),
    (["--set", "master.learning_rat=1e-3"], "unknown configuration field 'master.learning_rat'"),
])
def test_bad_tasks_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(adapt, "Trainer", _no_compile)
    out = tmp_path / "adapt"
    assert _exit_code(["--run", str(_four_rooms_config_only(tmp_path)), "--out", str(out)] + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unfinished_shared_and_wrong_runs_are_refused(bandit_run, tmp_path, capsys):
    out = tmp_path / "adapt"
    # Config only, no checkpoint: not a finished run.
    assert _exit_code(["--run", str(_four_rooms_config_only(tmp_path)), "--out", str(out)]) == 2
    assert "is not a finished run" in capsys.readouterr().err
    assert _exit_code(["--run", str(bandit_run / "baseline_shared"), "--out", str(out)]) == 2
    assert "adapt needs an MLSH run" in capsys.readouterr().err
    assert _exit_code(["--run", str(bandit_run), "--out", str(out), "--split", "heldout"]) == 2
    assert "moving_bandits has no held-out split" in capsys.readouterr().err
    assert _exit_code(["--run", str(tmp_path / "missing"), "--out", str(out)]) == 2
    capsys.readouterr()
    assert not out.exists()


def test_four_rooms_heldout_split_is_the_default_and_the_runs_own_task_set():
    source = four_rooms.PRESETS["smoke"]()                     # the paper task set
    env, description = adapt.unseen_task_env(source, None, None)
    assert isinstance(env, FourRoomsPaper) and env.goal_cells == four_rooms_env.PAPER_HELDOUT_GOAL_CELLS
    assert description == "split heldout of task set paper"
    # A run on "four_rooms" (all of them before the paper task set) adapts to the all-rooms held-out goals.
    env, description = adapt.unseen_task_env(dataclasses.replace(source, env="four_rooms"), "heldout", None)
    assert type(env) is FourRooms and env.goal_cells == four_rooms_env.HELDOUT_GOAL_CELLS
    assert description == "split heldout of task set all_rooms"
    env, _ = adapt.unseen_task_env(source, None, "11:11,3")
    assert env.goal_cells == (four_rooms_env.CELL_INDEX[(11, 11)], 3)


def test_an_empty_heldout_split_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(adapt, "Trainer", _no_compile)
    monkeypatch.setitem(four_rooms_env.TASK_SETS, "paper", dict(four_rooms_env.TASK_SETS["paper"], heldout=()))
    out = tmp_path / "adapt"
    assert _exit_code(["--run", str(_four_rooms_config_only(tmp_path)), "--out", str(out)]) == 2
    assert "the paper task set's 'heldout' split has no goal cells; use one of train, all" in capsys.readouterr().err
    assert not out.exists()
