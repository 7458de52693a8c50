"""The task-distribution environment contract shared by every env in `envs/`.

A *task* is a pytree drawn by `env.sample_task(key)`; `reset` and `step` take it as an argument, so a
batch of tasks is just a `jax.vmap` over the task axis (gymnax's `EnvParams` idea applied to MLSH's
task distribution). Time limits are reported as `truncated`, never as `terminated`, so learners can
bootstrap the value at a time limit.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Task = Any


@struct.dataclass
class EnvState:
    """State of one environment copy.

    Attributes:
      inner: env-specific pytree (positions, goals, ...).
      obs: observation, shape [observation_size], float32.
      reward: reward of the last transition, shape [], float32.
      terminated: the last transition ended the episode for good (no bootstrap), shape [], bool.
      truncated: the last transition hit the time limit (bootstrap from `obs`), shape [], bool.
      time: steps taken in the current episode, shape [], int32.
    """

    inner: Any
    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    time: jax.Array


@struct.dataclass
class AutoResetStep:
    """What `auto_reset_step` returns: the state to continue from and the transition just made.

    Attributes:
      state: state after the step, already reset if the episode ended.
      reward: reward of the transition, shape [].
      terminated: the episode ended for good, shape [] bool.
      truncated: the episode hit its time limit, shape [] bool.
      final_obs: observation reached by the transition, before any reset, shape [obs].
    """

    state: EnvState
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


def tasks_of_split(splits: dict[str, tuple[int, ...]], split: str, explicit: tuple[int, ...] | None,
                   count: int, what: str) -> tuple[int, ...]:
    """The task indices an env draws from: `explicit` if given, else `splits[split]`; raises
    ValueError for an unknown split or indices outside 0..count-1 (`what` names them: "layout",
    "goal cell")."""
    if explicit is None:
        if split not in splits:
            raise ValueError(f"unknown {what} split {split!r}; use one of {', '.join(splits)}")
        explicit = splits[split]
    bad = [i for i in explicit if not 0 <= int(i) < count]
    if not explicit or bad:
        raise ValueError(f"{what}s must be a non-empty list of indices in 0..{count - 1}, got {list(explicit)}")
    return tuple(int(i) for i in explicit)


class TaskEnv(abc.ABC):
    """A distribution of tasks over one environment, in pure JAX.

    Subclasses set `observation_size`, `action_size` and `episode_length`, and implement
    `sample_task`, `_reset` and `_transition`. Everything is a pure function of its arguments, so it
    jits and vmaps over tasks, env copies and keys.

    Attributes:
      action_size: number of discrete actions, or the dimension of a continuous action.
      continuous_actions: actions are float vectors in [-1, 1]^action_size (else integers).
      subpolicy_observation_size: the sub-policies see only the first this-many observation entries
        (e.g. the ant's body state without its position), the master sees all of them; by default
        everyone sees everything.
      task_kinds: names of the kinds of task (twowalk's two goals, the maze layouts) whose returns
        training logs apart, `task_kind(task)` indexing them; empty (the default): none. The tasks
        drawn in a stretch of training can be skewed towards one kind, which moves the plain mean
        return of a policy that does well on that kind; the task-balanced mean does not move.
      revision: the version of the task's definition (reward, observation, dynamics), raised whenever
        a change makes runs made before it mean something else; a run records it and cannot be
        resumed or loaded under another. `revision_notes` says what each revision was.
    """

    name: str
    observation_size: int
    action_size: int
    continuous_actions: bool = False
    episode_length: int
    task_kinds: tuple[str, ...] = ()
    revision: int = 1
    revision_notes: dict[int, str] = {}

    def task_kind(self, task: Task) -> jax.Array:
        """Index int32 [] of `task`'s kind in `task_kinds` (0 for an env without kinds)."""
        return jnp.zeros((), jnp.int32)

    @property
    def subpolicy_observation_size(self) -> int:
        return self.observation_size

    def subpolicy_view(self, obs: jax.Array) -> jax.Array:
        """The part [..., subpolicy_observation_size] of observations [..., observation_size] that
        sub-policies see."""
        return obs[..., : self.subpolicy_observation_size]

    @abc.abstractmethod
    def sample_task(self, key: jax.Array) -> Task:
        """Draws one task from the distribution (a pytree of arrays)."""

    @abc.abstractmethod
    def _reset(self, task: Task, key: jax.Array) -> tuple[Any, jax.Array]:
        """Returns (inner state, observation [observation_size]) at the start of an episode."""

    @abc.abstractmethod
    def _transition(
        self, task: Task, inner: Any, action: jax.Array, key: jax.Array
    ) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        """Returns (inner state, observation, reward [], terminated []) after `action`."""

    def reset(self, task: Task, key: jax.Array) -> EnvState:
        """Starts an episode of `task`."""
        inner, obs = self._reset(task, key)
        false = jnp.zeros((), bool)
        return EnvState(
            inner=inner,
            obs=obs.astype(jnp.float32),
            reward=jnp.zeros((), jnp.float32),
            terminated=false,
            truncated=false,
            time=jnp.zeros((), jnp.int32),
        )

    def step(self, task: Task, state: EnvState, action: jax.Array, key: jax.Array) -> EnvState:
        """Takes one step of `task`; `truncated` is set when the time limit is reached."""
        inner, obs, reward, terminated = self._transition(task, state.inner, action, key)
        time = state.time + 1
        terminated = jnp.asarray(terminated, bool)
        return EnvState(
            inner=inner,
            obs=obs.astype(jnp.float32),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=terminated,
            truncated=(time >= self.episode_length) & ~terminated,
            time=time,
        )


def auto_reset_step(
    env: TaskEnv, task: Task, state: EnvState, action: jax.Array, key: jax.Array
) -> AutoResetStep:
    """Steps one env copy and starts a new episode of the same task when the last one ended.

    The observation reached before the reset is kept in `final_obs`, so that a learner can bootstrap
    its value at a time limit.
    """
    step_key, reset_key = jax.random.split(key)
    stepped = env.step(task, state, action, step_key)
    done = stepped.terminated | stepped.truncated
    fresh = env.reset(task, reset_key)
    next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
    return AutoResetStep(
        state=next_state,
        reward=stepped.reward,
        terminated=stepped.terminated,
        truncated=stepped.truncated,
        final_obs=stepped.obs,
    )
