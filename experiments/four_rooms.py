"""Four rooms (paper Figure 4 right, training part): MLSH over the training goal cells vs the
shared-policy baseline. Adaptation to the held-out goals: `python -m experiments.adapt --run RUN`
(its default `--split heldout` draws the held-out goals of the run's own task set).

    python -m experiments.four_rooms                       # preset `fast`: paper task set, 50 task slots
    python -m experiments.four_rooms --preset paper        # paper task set, the paper's 10 task slots
    python -m experiments.four_rooms --preset all_rooms    # all-rooms task set, 50 task slots
    python -m experiments.four_rooms --preset original     # the original code's four goals, 50 task slots
    python -m experiments.four_rooms --preset smoke        # seconds, for tests (paper task set)

Task sets (`envs.four_rooms.TASK_SETS`; the config's env names one): `paper` (env
"four_rooms_paper", the task set of the paper's figure): goals in the 21 cells of the bottom-right
room and its doorway, the original code's four goals (8,7), (9,9), (10,8), (11,11) held out;
`all_rooms` (env "four_rooms", also every run made before the paper task set existed): goals in all
104 free cells, 16 held out (four per room); `original` (env "four_rooms_original"): the original
code's four goals, nothing held out (its "unseen" goal (11, 11) was one of them; adapt with `--split
train`, fresh masters on the same goals). `--set env=NAME` switches a preset's task set.

Paper settings: 100-step episodes, N=25, K=4, W=20, U=30 (D=2000 steps per slot per update, here 20
env copies x 100 steps). Writes the run contract into --out, the baseline into
--out/baseline_shared, and in summary.json `subpolicy_rooms`: where each sub-policy, run alone from
the start, ends (fraction of episodes per room); `subpolicy_holds`: the cell where each most likely
ends; `hierarchy_ceiling`: per goal, the best return a perfect master could get from the learned
sub-policies, next to the optimum (`python -m experiments.four_rooms_ceiling --run RUN` computes it
for any four-rooms run, also for another N).
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from envs import four_rooms as grid
from envs.four_rooms import ROOMS, room_of_cells
from experiments import common
from mlsh_jax.config import MLSHConfig, PPOConfig
from mlsh_jax.evaluation import run_subpolicy
from mlsh_jax.networks import ActorCritic


def paper_settings(**changes) -> MLSHConfig:
    """The paper's four-rooms settings: the paper task set, 10 task slots."""
    config = MLSHConfig(env="four_rooms_paper", episode_length=100, num_subpolicies=4, macro_duration=25,
                        warmup_updates=20, joint_updates=30, num_slots=10, steps_per_slot=2000, envs_per_slot=20,
                        num_updates=300, checkpoint_every=50)
    return dataclasses.replace(config, **changes)


# --help: what each preset means (its task set; usage.PRESET_NOTES for the rest).
PRESET_NOTES = {
    "paper": "the paper's settings (its 10 task slots), paper task set (the paper's figure)",
    "fast": "many task slots with the paper's per-slot settings, paper task set",
    "all_rooms": "`fast` on the all-rooms task set (goals in every room; 16 held out)",
    "original": "`fast` on the original code's four goals, nothing held out (adapt with --split train)",
}
MODULE = "experiments.four_rooms"
PRESETS = {
    "paper": paper_settings,
    # Many task slots (each lifetime is 50 updates; 200 updates = 4 lifetimes per slot).
    "fast": lambda: paper_settings(num_slots=50, num_updates=200),
    # The same on the all-rooms task set (goals in every room).
    "all_rooms": lambda: paper_settings(env="four_rooms", num_slots=50, num_updates=200),
    # The same on the original code's four goals (what its figure trained and adapted on).
    "original": lambda: paper_settings(env="four_rooms_original", num_slots=50, num_updates=200),
    "smoke": lambda: paper_settings(
        num_slots=4, steps_per_slot=200, envs_per_slot=2, warmup_updates=1, joint_updates=1, num_updates=3,
        checkpoint_every=2, sub=PPOConfig(learning_rate=3e-4, num_minibatches=4, epochs=2),
        master=PPOConfig(learning_rate=0.01, num_minibatches=2, epochs=2)),
}


def subpolicy_rooms(trainer, state, key, episodes: int = 100) -> dict:
    """Each sub-policy alone for `episodes` episodes from the start (sampled actions): the fraction
    of episodes ending in each room."""
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(key, episodes))
    rooms = room_of_cells()
    result = {}
    for k in range(trainer.config.num_subpolicies):
        cells = np.asarray(run_subpolicy(trainer, state, k, tasks, jax.random.fold_in(key, k)).inner[-1])
        counts = np.bincount(rooms[cells], minlength=len(ROOMS)) / episodes
        result[f"subpolicy_{k}"] = {room: round(float(c), 3) for room, c in zip(ROOMS, counts)}
    return result


def subpolicy_action_probs(trainer, state) -> np.ndarray:
    """[K, cells, 4]: each sub-policy's action probabilities in every free cell (the one-hot
    observations through the run's observation statistics)."""
    obs = trainer.subpolicy_view(trainer.normalize(state.obs_stats, jax.numpy.eye(len(grid.FREE_CELLS))))
    logits = jax.vmap(lambda params: trainer.sub_model.apply(params, obs, method=ActorCritic.dist_params))(
        state.subs.params)
    return np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)


def _cell_name(cell: int) -> str:
    row, col = grid.FREE_CELLS[cell]
    return f"{row}:{col}"


def hierarchy_ceiling(action_probs: np.ndarray, task_set: str, macro_duration: int, episode_length: int) -> dict:
    """What a perfect master could get from these sub-policies on every goal of the task set
    (`envs.four_rooms.hierarchy_returns`), next to each goal's optimum: per split that has goals the
    mean of both, and per goal cell ("row:col") its split, ceiling and optimum."""
    splits = grid.TASK_SETS[task_set]
    goals = splits["all"]
    ceiling = grid.hierarchy_returns(action_probs, goals, macro_duration, episode_length)
    optimum = grid.optimal_returns(goals, episode_length)
    of_goal = dict(zip(goals, zip(ceiling, optimum)))
    report = {"macro_duration": macro_duration}
    for split in ("train", "heldout"):
        if not splits[split]:
            continue
        report[split] = {"mean_ceiling": round(float(np.mean([of_goal[g][0] for g in splits[split]])), 2),
                         "mean_optimum": round(float(np.mean([of_goal[g][1] for g in splits[split]])), 2)}
    report["per_goal"] = {
        _cell_name(g): {"split": "heldout" if g in splits["heldout"] else "train",
                        "ceiling": round(float(c), 2), "optimum": round(float(o), 2)}
        for g, (c, o) in of_goal.items()}
    return report


def subpolicy_holds(action_probs: np.ndarray, episode_length: int) -> dict:
    """Where each sub-policy, alone from the start, most likely is at the episode's end (exact, from
    the dynamics): {"subpolicy_k": {"cell": "row:col", "probability": p}}."""
    moves = np.einsum("kca,acd->kcd", action_probs, grid.transition_matrix())
    result = {}
    for k, chain in enumerate(moves):
        final = np.linalg.matrix_power(chain, episode_length)[grid.START_CELL]
        result[f"subpolicy_{k}"] = {"cell": _cell_name(int(final.argmax())), "probability": round(float(final.max()), 3)}
    return result


def hierarchy_report(trainer, state) -> dict:
    """The summary.json analysis of a four-rooms run: rooms, held cells and the hierarchy's ceiling."""
    config = trainer.config
    probs = subpolicy_action_probs(trainer, state)
    return {"subpolicy_rooms": subpolicy_rooms(trainer, state, jax.random.PRNGKey(config.seed + 1)),
            "subpolicy_holds": subpolicy_holds(probs, config.episode_length),
            "hierarchy_ceiling": hierarchy_ceiling(probs, trainer.env.task_set, config.macro_duration,
                                                   config.episode_length)}


def analyse(result, out) -> dict:
    return hierarchy_report(result.trainer, common.shared_part_on_host(result.state))


def main(argv=None) -> dict:
    return common.run_with_shared_baseline(MODULE, "Four rooms", PRESETS, argv, analyse,
                                           default_preset="fast")


if __name__ == "__main__":
    main(sys.argv[1:])
