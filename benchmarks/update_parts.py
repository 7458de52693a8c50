"""Where the time of one MLSH update goes: the rollout, the masters' PPO, the sub-policies' PPO,
timed apart on one experiment preset, and the sub-policy update side by side with the way it was
computed before (every sub-policy network on every sample, masked).

    python -m benchmarks.update_parts                                   # four rooms `fast`
    python -m benchmarks.update_parts --experiment moving_bandits --preset fast
    python -m benchmarks.update_parts --experiment moving_bandits --preset fast --set warmup_updates=0

Prints one JSON document: seconds per call of each part (after two warm-up calls, the state after
two real updates), env steps per second of the whole update, and the ratio of the sub-policy update's
time with every network evaluated to its time now (`networks.apply_by_group`, one network per sample).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import time

import jax
import jax.numpy as jnp

from mlsh_jax.losses import ppo_loss
from mlsh_jax.networks import ActorCritic
from mlsh_jax.rollout import slot_rollout
from mlsh_jax.trainer import Trainer


class EveryNetworkTrainer(Trainer):
    """The sub-policy update as it was computed before `apply_by_group`: each sample through all K
    networks, each network's loss masked to its own samples. Same losses, K networks' work."""

    def _active_values(self, sub_params, obs, sub_index):
        state_value = functools.partial(self.sub_model.apply, method=ActorCritic.state_value)
        values = jax.vmap(state_value, in_axes=(0, None))(sub_params, obs)
        return jnp.take_along_axis(values, sub_index[None], axis=0)[0]

    def _loss_fn(self, model, ppo, num_learners=None):
        if num_learners is None:
            return Trainer._loss_fn(model, ppo)
        settings = dict(apply_fn=model.apply, distribution=model.distribution, clip_eps=ppo.clip_eps,
                        value_clip=ppo.value_clip, entropy_coef=ppo.entropy_coef, value_coef=ppo.value_coef)

        def masked_loss(params, batch, weights):
            def one(network_params, k):
                return ppo_loss(network_params, batch.replace(group=None), weights * (batch.group == k), **settings)
            losses, metrics = jax.vmap(one)(params, jnp.arange(num_learners))
            return jnp.sum(losses), metrics

        return masked_loss


def _seconds_per_call(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats


def _subpolicy_update(trainer: Trainer):
    """Jitted `(state, steps, macros) -> sub-policies after their PPO update`."""
    def update(state, steps, macros):
        in_joint_phase = state.slots.phase >= trainer.config.warmup_updates
        sub_index = jnp.repeat(macros.action, trainer.config.macro_duration, axis=1)
        normalize = functools.partial(trainer.normalize, state.obs_stats)
        return trainer._update_subpolicies(state.subs, steps, sub_index, in_joint_phase, normalize, state.key,
                                           state.update)[0]
    return jax.jit(update)


def measure(config, repeats: int) -> dict:
    """Seconds per call of the whole update and of each part, for `config` (hierarchical)."""
    trainer = Trainer(config)
    update = jax.jit(trainer.update_step)
    state = update(update(trainer.initial_state(jax.random.PRNGKey(0)))[0])[0]
    seconds = {"update": _seconds_per_call(lambda s: update(s)[0], state, repeats=repeats)}

    normalize = functools.partial(trainer.normalize, state.obs_stats)
    rollout = functools.partial(slot_rollout, trainer.env, config, trainer.master_model, trainer.sub_model, normalize,
                                trainer.subpolicy_view)
    collect = jax.jit(lambda s: jax.vmap(rollout, in_axes=(0, None, 0, 0, 0))(
        s.slots.master.params, s.subs.params, s.slots.task, s.slots.envs, jax.random.split(s.key, config.num_slots)))
    seconds["rollout"] = _seconds_per_call(collect, state, repeats=repeats)
    _, steps, macros, _ = collect(state)
    masters = jax.jit(lambda s, m: trainer._update_masters(s.slots.master, m, functools.partial(
        trainer.normalize, s.obs_stats), s.key)[0])
    seconds["masters"] = _seconds_per_call(masters, state, macros, repeats=repeats)
    seconds["subpolicies"] = _seconds_per_call(_subpolicy_update(trainer), state, steps, macros, repeats=repeats)
    seconds["subpolicies_every_network"] = _seconds_per_call(
        _subpolicy_update(EveryNetworkTrainer(config)), state, steps, macros, repeats=repeats)
    env_steps = config.num_slots * config.steps_per_slot
    return {
        "seconds_per_call": {k: round(v, 4) for k, v in seconds.items()},
        "env_steps_per_update": env_steps,
        "env_steps_per_s": round(env_steps / seconds["update"]),
        "share_of_update": {k: round(seconds[k] / seconds["update"], 3) for k in ("rollout", "masters", "subpolicies")},
        "subpolicy_update_speedup": round(seconds["subpolicies_every_network"] / seconds["subpolicies"], 2),
        "joint_slots": config.joint_slot_capacity, "num_subpolicies": config.num_subpolicies,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="four_rooms",
                        help="a discrete experiment module: four_rooms, moving_bandits, key_door")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config overrides")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per part")
    args = parser.parse_args(argv)
    from experiments import usage
    module = importlib.import_module(f"experiments.{args.experiment}")
    config = usage.apply_overrides(module.PRESETS[args.preset](), args.set)
    report = {"experiment": args.experiment, "preset": args.preset, "overrides": args.set,
              "device": jax.devices()[0].device_kind, "cpu_count": __import__("os").cpu_count(),
              "jax": jax.__version__, **measure(config, args.repeats)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
