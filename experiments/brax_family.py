"""What the Brax experiments (ant and humanoid) share: the paper's settings, presets, a run-time
estimate, and the analysis of what each ant sub-policy does when it runs alone.

Paper settings (docs/algorithm.md, "Settings"): 1000-step episodes, N=200, W=20, U=40, D=2000 steps per
task slot per update (here 10 env copies x 200 steps: one master decision per copy per update).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import numpy as np

from experiments import common
from mlsh_jax.config import LOCOMOTION_MINIBATCH_SAMPLES, MLSHConfig, NetworkConfig, PPOConfig

# Env steps per second of MLSH training, measured with `python -m benchmarks.throughput --family
# ant|humanoid` on idle cores (docs/benchmarks.md): used only to print a run-time estimate before a run
# starts. CPU: 2 cores, one device, 16 slots, ant on ant_maze (docs/results/ant_throughput_cpu_2core.json)
# and humanoid on humanoid_walkcrawl (docs/results/humanoid_throughput_cpu_2core.json). GPU: ant maze on
# one H200, 256 slots (docs/results/ant_throughput_h200.json); the humanoid there is not measured: the
# ant's figure scaled by their CPU ratio. TPU: not measured (the GPU figures are used).
ANT_CPU_RATE, HUMANOID_CPU_RATE, ANT_GPU_RATE = 5_329.0, 6_330.0, 1_215_210.0
MEASURED_TRAINING_RATE = {
    "ant": {"cpu": ANT_CPU_RATE, "gpu": ANT_GPU_RATE, "tpu": ANT_GPU_RATE},
    "humanoid": {"cpu": HUMANOID_CPU_RATE, "gpu": ANT_GPU_RATE * HUMANOID_CPU_RATE / ANT_CPU_RATE,
                 "tpu": ANT_GPU_RATE * HUMANOID_CPU_RATE / ANT_CPU_RATE},
}
# With the task slots split over 2 host devices on the 2-core CPU
# (XLA_FLAGS=--xla_force_host_platform_device_count=2), training ran at 9.7k env steps/s on ant_maze
# (1.8x the one-device rate above) and at 6.4k on humanoid_walkcrawl (no gain over one device on idle
# cores). More devices or cores: not measured, so these factors are used for any CPU run over 2 or
# more devices on 2 or more cores.
CPU_MULTI_DEVICE_SPEEDUP = {"ant": 1.8, "humanoid": 1.0}


def paper_settings(env: str, num_subpolicies: int, episode_length: int = 1000, **changes) -> MLSHConfig:
    """The paper's ant settings for `env` with K = `num_subpolicies`, 10 task slots."""
    config = MLSHConfig(
        env=env, episode_length=episode_length, num_subpolicies=num_subpolicies, macro_duration=200,
        warmup_updates=20, joint_updates=40, num_slots=10, steps_per_slot=2000, envs_per_slot=10,
        num_updates=1000, checkpoint_every=50,
        master=PPOConfig(learning_rate=0.01, num_minibatches=0, minibatch_size=64),
        sub=PPOConfig(learning_rate=3e-4, num_minibatches=15),
    )
    return dataclasses.replace(config, **changes)


def with_locomotion_recipe(config: MLSHConfig, body: str = "ant") -> MLSHConfig:
    """`config` with sub-policies that learn by brax PPO's locomotion recipe for `body`
    (`PPOConfig.locomotion`: gamma 0.97, lambda 0.95, clip 0.3, value weight 0.5; the ant 4 epochs
    and entropy 1e-2, the humanoid 8 epochs and 1e-3) with policy 4x32 / value 5x256 swish networks
    and a tanh-squashed Gaussian (docs/algorithm.md, "Learner recipes"). The minibatches keep brax's
    samples per minibatch (`LOCOMOTION_MINIBATCH_SAMPLES`: 1280 for the ant, 5120 for the humanoid;
    their number follows from the joint slots' batch), not brax's count: an MLSH update trains its
    sub-policies on far fewer samples than brax's iteration, and brax's count of minibatches on them
    would take several times brax's SGD steps per sample. The masters, the task's reward scale, the
    env-copy layout and the sub-policies' other PPO fields (learning rate, value and gradient clips,
    advantage normalisation) stay as they are."""
    recipe = PPOConfig.locomotion(body)
    sub = dataclasses.replace(config.sub, num_minibatches=0, minibatch_size=LOCOMOTION_MINIBATCH_SAMPLES[body],
                              **{name: getattr(recipe, name) for name in (
                                  "epochs", "clip_eps", "entropy_coef", "value_coef", "discount", "gae_lambda")})
    return dataclasses.replace(config, sub=sub, sub_network=NetworkConfig.locomotion())


# What the presets that `presets` adds to the paper's mean (shown by --help).
PRESET_NOTES = {"locomotion": "the `cpu` preset with sub-policies that learn by brax PPO's locomotion recipe"}


def smoke_settings(env: str, num_subpolicies: int, **changes) -> MLSHConfig:
    """Seconds of training (plus compile): tiny episodes and batches, for tests and CI."""
    config = dataclasses.replace(
        paper_settings(env, num_subpolicies, episode_length=40),
        macro_duration=10, warmup_updates=1, joint_updates=1, num_slots=2, steps_per_slot=40,
        envs_per_slot=2, num_updates=2, checkpoint_every=1,
        master_network=NetworkConfig(policy_hidden_sizes=(32, 32), value_hidden_sizes=(32, 32)),
        sub_network=NetworkConfig(policy_hidden_sizes=(32, 32), value_hidden_sizes=(32, 32)),
        master=PPOConfig(learning_rate=0.01, num_minibatches=2, epochs=2),
        sub=PPOConfig(learning_rate=3e-4, num_minibatches=2, epochs=2),
    )
    return dataclasses.replace(config, **changes)


def device_kind() -> str:
    """'cpu', 'gpu' or 'tpu': the platform of the default device."""
    return jax.default_backend()


def auto_settings(env: str, num_subpolicies: int, cpu_updates: int, **changes) -> MLSHConfig:
    """The default preset: sized to the devices present. On CPU 16 task slots (about an hour for
    `cpu_updates` updates on 2 cores); on accelerators 256 slots per device for 1000 updates
    (about 7 minutes on one H200)."""
    if device_kind() == "cpu":
        return paper_settings(env, num_subpolicies, num_slots=16, num_updates=cpu_updates, **changes)
    return paper_settings(env, num_subpolicies, num_slots=256 * jax.device_count(), num_updates=1000, **changes)


def presets(env: str, num_subpolicies: int, cpu_updates: int, master_learning_rate: float | None = None,
            body: str = "ant", sub_advantage_normalization: str | None = None, **task) -> dict:
    """The presets of a Brax walk experiment: `auto` (sized to the devices present), `cpu` (16 slots,
    `cpu_updates` updates), `locomotion` (`cpu` with the locomotion recipe of `body`), `paper` (10 slots) and
    `smoke`; `task` holds the experiment's own settings, `master_learning_rate` (when given) replaces
    the paper's 0.01 in every preset, `sub_advantage_normalization` (when given) the sub-policies'
    `advantage_normalization` in every preset."""
    cpu = lambda: paper_settings(env, num_subpolicies, num_slots=16, num_updates=cpu_updates, **task)
    builders = {
        "auto": lambda: auto_settings(env, num_subpolicies, cpu_updates=cpu_updates, **task),
        "cpu": cpu,
        "locomotion": lambda: with_locomotion_recipe(cpu(), body),
        "paper": lambda: paper_settings(env, num_subpolicies, **task),
        "smoke": lambda: smoke_settings(env, num_subpolicies, **task),
    }
    if master_learning_rate is None and sub_advantage_normalization is None:
        return builders
    return {name: functools.partial(_adjusted, build, master_learning_rate, sub_advantage_normalization)
            for name, build in builders.items()}


def _adjusted(build, master_learning_rate: float | None, sub_advantage_normalization: str | None) -> MLSHConfig:
    """The preset `build` makes, with the fields given (not None) replaced."""
    config = build()
    if master_learning_rate is not None:
        config = dataclasses.replace(config, master=dataclasses.replace(config.master, learning_rate=master_learning_rate))
    if sub_advantage_normalization is not None:
        config = dataclasses.replace(config, sub=dataclasses.replace(
            config.sub, advantage_normalization=sub_advantage_normalization))
    return config


def run_time_estimate(config: MLSHConfig, updates_done: int = 0) -> str:
    """'about N minutes' for the updates left (all of them for a new run) from the measured
    training rate of this body on this platform."""
    body = "humanoid" if config.env.startswith("humanoid") else "ant"
    rate = MEASURED_TRAINING_RATE[body].get(device_kind(), MEASURED_TRAINING_RATE[body]["cpu"])
    devices = jax.device_count()
    if device_kind() != "cpu":
        rate *= devices
    elif min(devices, os.cpu_count() or 1) >= 2:
        rate *= CPU_MULTI_DEVICE_SPEEDUP[body]
    minutes = (config.num_updates - updates_done) * config.env_steps_per_update / rate / 60
    return (f"{common.env_steps_left(config, updates_done)}; a first guess of the run time: about "
            f"{math.ceil(minutes)} min at ~{rate:,.0f} steps/s measured once on {device_kind()} x {devices} "
            f"device{'s' if devices > 1 else ''} (plus compile); the run prints its own estimate after "
            f"its first updates")


def subpolicy_headings(trainer, state, tasks, key) -> dict:
    """Runs each sub-policy alone for one episode per task (sampled actions) and reports where it
    takes the ant (`headings_of`)."""
    return headings_of(subpolicy_episodes(trainer, state, tasks, key))


def subpolicy_episodes(trainer, state, tasks, key) -> list:
    """Each sub-policy alone for one episode per task [n] (sampled actions), on the task's own reward
    (`common.original_task_env`: no episode end at a fall, the whole episode counts): K trajectories
    [episode_length + 1, n]."""
    from mlsh_jax.evaluation import run_subpolicy

    env = common.original_task_env(trainer.config)
    return [run_subpolicy(trainer, state, k, tasks, jax.random.fold_in(key, k), env=env)
            for k in range(trainer.config.num_subpolicies)]


def headings_of(trajectories) -> dict:
    """Where each sub-policy's episodes (one trajectory [T + 1, n] per sub-policy) take the ant: mean
    displacement (dx, dy), its heading in degrees and the mean distance covered, plus the smallest
    angle between two sub-policies' headings."""
    headings, per_sub = [], []
    for trajectory in trajectories:
        xy = np.asarray(trajectory.obs[..., -2:])                       # [T + 1, n, 2]
        displacement = xy[-1] - xy[0]                                   # [n, 2]
        mean = displacement.mean(axis=0)
        heading = float(np.degrees(np.arctan2(mean[1], mean[0])))
        headings.append(heading)
        per_sub.append({"mean_displacement": mean.round(3).tolist(), "heading_deg": round(heading, 1),
                        "mean_distance": float(np.linalg.norm(displacement, axis=-1).mean())})
    gaps = [abs((a - b + 180) % 360 - 180) for i, a in enumerate(headings) for b in headings[i + 1:]]
    return {"subpolicies": per_sub, "min_angle_between_deg": round(min(gaps), 1) if gaps else None}


def run_experiment(module: str, title: str, presets: dict, argv, analyse, default_preset: str = "auto") -> dict:
    """Command line of an ant experiment: MLSH, then the shared-policy baseline (see
    `experiments.common.run_with_shared_baseline`), with a run-time estimate printed first."""
    return common.run_with_shared_baseline(module, title, presets, argv, analyse, default_preset,
                                           estimate=run_time_estimate)
