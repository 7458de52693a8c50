"""Render one episode of a trained ant or humanoid run: a self-contained HTML viewer (Brax's
`brax.io.html`) and a picture coloured by the active sub-policy: for the ant a top-down PNG of its
path over the walls, for the humanoid a side view (x and torso height, with the ceiling) and the
torso height and x over time.

    python -m experiments.render --run runs/ant_maze_auto_s0                 # slot 0's task
    python -m experiments.render --run RUN --layout 4 --out pictures/        # a slot trained on layout 4
    python -m experiments.render --run RUN --steps 300

An MLSH run is rendered with the chosen slot's own master over the sub-policies (greedy); a
shared-policy run with its one policy. Writes OUT/rollout.html and OUT/path.png (ant) or
OUT/side.png (humanoid); OUT defaults to RUN/render; existing files there are not overwritten.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np

from envs.ant import AntTaskEnv
from envs.brax_body import BraxTaskEnv
from experiments.common import exit_with_usage_error, usage_parser


class RenderError(ValueError):
    """The run, slot or layout asked for cannot be rendered; the message says why."""


def pick_slot(slots, env, slot: int | None, layout: int | None) -> int:
    """The slot to render: `slot`, or the first slot whose task is maze layout `layout`."""
    num_slots = int(np.asarray(slots.phase).shape[0])
    if layout is not None:
        from envs.ant_maze import LAYOUTS
        if not hasattr(slots.task, "layout"):
            raise RenderError(f"--layout applies to ant_maze runs, this run's env is {env.name}")
        if not 0 <= layout < len(LAYOUTS):
            raise RenderError(f"unknown layout {layout}; layouts are 0..{len(LAYOUTS) - 1}")
        matches = np.flatnonzero(np.asarray(slots.task.layout) == layout)
        if matches.size == 0:
            raise RenderError(f"no task slot of this run is on layout {layout} at its last checkpoint "
                              f"(layouts present: {sorted(set(np.asarray(slots.task.layout).tolist()))})")
        return int(matches[0])
    slot = 0 if slot is None else slot
    if not 0 <= slot < num_slots:
        raise RenderError(f"--slot must be in 0..{num_slots - 1}, got {slot}")
    return slot


def rollout(run, slot: int, num_steps: int, key):
    """One greedy episode of `slot`'s task: (pipeline states [T + 1], active sub-policy [T], task,
    the task state at the last rendered step)."""
    from mlsh_jax.distributed import to_host
    from mlsh_jax.evaluation import run_hierarchy, run_subpolicy

    trainer, state = run.trainer, run.state
    slots = to_host(state.slots)
    one = lambda tree: jax.tree.map(lambda x: np.asarray(x)[slot:slot + 1], tree)
    task = one(slots.task)
    if slots.master is not None:
        trajectory, active = run_hierarchy(trainer, state, one(slots.master.params), task, key, greedy=True)
        active = np.asarray(active)[:num_steps, 0]
    else:
        trajectory = run_subpolicy(trainer, state, 0, task, key, greedy=True)
        active = np.zeros((num_steps,), np.int32)
    pipeline = jax.tree.map(lambda x: np.asarray(x)[: num_steps + 1, 0], trajectory.inner.pipeline)
    extra = jax.tree.map(lambda x: np.asarray(x)[num_steps, 0], trajectory.inner.extra)
    return pipeline, active, jax.tree.map(lambda x: x[0], task), extra


def write_html(env: BraxTaskEnv, task, extra, pipeline, path: pathlib.Path) -> None:
    """The viewer, with the geometry of the task as it stands at the end (e.g. the course's ceiling)."""
    from brax.io import html
    sys_ = env.task_system(task, extra)
    num_frames = jax.tree.leaves(pipeline)[0].shape[0]
    states = [jax.tree.map(lambda x, t=t: x[t], pipeline) for t in range(num_frames)]
    path.write_text(html.render(sys_, states))


def draw_side_view(env, task, extra, pipeline, active: np.ndarray, num_subpolicies: int, path: pathlib.Path,
                   title: str) -> None:
    """Humanoid: side view (x, torso height) with the ceiling where it stands at the end, and torso
    height and x over time; dots coloured by the active sub-policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from envs.humanoid import CEILING_BOTTOM
    torso = np.asarray(pipeline.x.pos)[:, 0]                  # [T + 1, 3]
    steps = np.arange(1, len(torso))
    fig, (side, height, along) = plt.subplots(3, 1, figsize=(8, 9))
    centre, half = env.ceiling_box()
    present = float(np.asarray(env.task_system(task, extra).geom_pos)[_geom_id(env, "ceiling"), 2]) > 0
    if present:
        side.add_patch(Rectangle((centre[0] - half[0], CEILING_BOTTOM), 2 * half[0], 2 * half[2], color="0.7",
                                 label="ceiling"))
    colours = plt.get_cmap("tab10")
    for k in range(num_subpolicies):
        at = np.flatnonzero(active == k)
        style = dict(s=4, color=colours(k), label=f"sub-policy {k}")
        side.scatter(torso[1:][at, 0], torso[1:][at, 2], **style)
        height.scatter(steps[at], torso[1:][at, 2], **style)
        along.scatter(steps[at], torso[1:][at, 0], **style)
    side.set(xlabel="x (m)", ylabel="torso height (m)", title=title)
    side.autoscale_view()
    height.axhline(1.0, color="gray", ls=":", lw=1)
    height.set(xlabel="step", ylabel="torso height (m)")
    along.set(xlabel="step", ylabel="torso x (m)")
    for ax in (side, height, along):
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _geom_id(env, name: str) -> int:
    from envs.brax_body import geom_names
    return geom_names(env.sys).index(name)


def draw_path(env: AntTaskEnv, task, pipeline, active: np.ndarray, num_subpolicies: int, path: pathlib.Path,
              title: str) -> None:
    """Top-down picture: standing walls as grey boxes, the goal (and the env's `map_zones`, if any), the
    path as dots coloured by sub-policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    sys_ = env.task_system(task)
    geom_pos, geom_size = np.asarray(sys_.geom_pos), np.asarray(sys_.geom_size)
    xy = np.asarray(pipeline.x.pos)[:, 0, :2]
    fig, ax = plt.subplots(figsize=(6, 6))
    for geom in getattr(env, "wall_geom_ids", None) or _wall_ids(env):
        (x, y, z), (hx, hy, _) = geom_pos[geom], geom_size[geom]
        if z > 0:
            ax.add_patch(Rectangle((x - hx, y - hy), 2 * hx, 2 * hy, color="0.6"))
    colours = plt.get_cmap("tab10")
    for k in range(num_subpolicies):
        at = np.flatnonzero(active == k)
        ax.scatter(xy[1:][at, 0], xy[1:][at, 1], s=4, color=colours(k), label=f"sub-policy {k}")
    ax.plot(*xy[0], "k^", label="start")
    goal = getattr(task, "goal", None)
    if goal is not None and np.ndim(goal) == 1:
        ax.add_patch(Circle(tuple(np.asarray(goal)), 4.0, fill=False, color="green"))
        ax.plot(*np.asarray(goal), "g*", markersize=12, label="goal")
    for label, centre, radius, colour in getattr(env, "map_zones", ()):
        ax.add_patch(Circle(centre, radius, fill=False, color=colour, label=label))
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _wall_ids(env) -> list[int]:
    from envs.brax_body import geom_names
    names = geom_names(env.sys)
    return [i for i, name in enumerate(names) if name.startswith("wall_")]


def main(argv=None) -> dict:
    parser = usage_parser("experiments.render", trains=False)
    parser.add_argument("--run", type=pathlib.Path, required=True,
                        help="a run directory of an ant or humanoid experiment")
    parser.add_argument("--out", type=pathlib.Path, help="where to write (default RUN/render)")
    parser.add_argument("--slot", type=int, help="task slot whose task and master to render (default 0)")
    parser.add_argument("--layout", type=int, help="ant_maze: render a slot trained on this layout")
    parser.add_argument("--steps", type=int, help="env steps to render (default: one episode)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the episode (default 0)")
    args = parser.parse_args(argv)
    from mlsh_jax.loading import RunLoadError, load_config, load_run
    try:
        config = load_config(args.run)
        if not config.env.startswith(("ant_", "humanoid_")):
            raise RenderError(f"{args.run} is a {config.env} run; rendering is for the ant and humanoid envs")
        picture = "side.png" if config.env.startswith("humanoid_") else "path.png"
        if args.slot is not None and args.layout is not None:
            raise RenderError("give --slot or --layout, not both")
        out = args.out or args.run / "render"
        taken = [name for name in ("rollout.html", picture) if (out / name).exists()]
        if taken:
            raise RenderError(f"{out} already holds {', '.join(taken)}; choose another --out")
        if args.steps is not None and not 1 <= args.steps <= config.episode_length:
            raise RenderError(f"--steps must be in 1..{config.episode_length}, got {args.steps}")
        run = load_run(args.run)
        slot = pick_slot(jax.device_get(run.state.slots), run.trainer.env, args.slot, args.layout)
    except (RunLoadError, RenderError) as error:
        exit_with_usage_error(str(error))
    num_steps = args.steps or config.episode_length
    pipeline, active, task, extra = rollout(run, slot, num_steps, jax.random.PRNGKey(args.seed))
    out.mkdir(parents=True, exist_ok=True)
    env = run.trainer.env
    write_html(env, task, extra, pipeline, out / "rollout.html")
    title = f"{config.env}, slot {slot}" + (f", layout {int(task.layout)}" if hasattr(task, "layout") else "")
    if picture == "side.png":
        draw_side_view(env, task, extra, pipeline, active, config.num_subpolicies, out / picture, title)
    else:
        draw_path(env, task, pipeline, active, config.num_subpolicies, out / picture, title)
    usage = np.bincount(active, minlength=config.num_subpolicies) / len(active)
    report = {"out": str(out), "slot": slot, "steps": num_steps, "sub_policy_share": usage.round(3).tolist(),
              "final_xy": np.asarray(pipeline.x.pos)[-1, 0, :2].round(2).tolist(), "picture": picture}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
