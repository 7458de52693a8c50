"""Deliberate bugs, each a small patch of the package, and the default-tier tests that must catch it.

A patch is an exact search / replace of a snippet that occurs once in its file (relative to the
repository root). When the code moves and a snippet no longer occurs exactly once, the mutation run
fails naming the mutant: update the snippet, never drop the mutant.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One deliberate bug.

    Attributes:
      name: short identifier.
      bug: what the patch breaks, in words.
      path: the file patched, relative to the repository root.
      search, replace: the exact snippet (occurring once in the file) and what replaces it.
      tests: pytest node ids (relative to the repository root) of which at least one must fail.
    """

    name: str
    bug: str
    path: str
    search: str
    replace: str
    tests: tuple[str, ...]


LOSSES = "tests/test_losses.py"
CLIP_TEST = f"{LOSSES}::test_clipped_objective_below_inside_and_above_the_clip_range_for_both_signs"
RESUME = "tests/test_resume_and_transfer.py"

MUTANTS = (
    Mutant("ppo_clip_min_max_swapped", "the clipped PPO objective takes the max of the two surrogates, not the min",
           "mlsh_jax/losses.py",
           "surrogate = jnp.minimum(ratio * advantages, jnp.clip(",
           "surrogate = jnp.maximum(ratio * advantages, jnp.clip(",
           (CLIP_TEST,)),
    Mutant("ppo_clip_bounds_doubled", "the ratio is clipped to [1 - 2 eps, 1 + 2 eps]",
           "mlsh_jax/losses.py",
           "jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps)",
           "jnp.clip(ratio, 1 - 2 * clip_eps, 1 + 2 * clip_eps)",
           (CLIP_TEST,)),
    Mutant("policy_gradient_sign_flipped", "the policy loss is +mean(surrogate): PPO ascends the wrong way",
           "mlsh_jax/losses.py",
           "policy_loss = -mean(surrogate)",
           "policy_loss = mean(surrogate)",
           ("tests/test_continuous_probe.py::test_a_flat_gaussian_policy_learns_to_reach_the_target",
            "tests/test_continuous_probe.py::test_a_master_learns_to_pick_the_subpolicy_that_goes_to_the_target")),
    Mutant("gae_no_bootstrap_at_truncation", "a time limit is treated as a termination: no bootstrap from V(s_final)",
           "mlsh_jax/losses.py",
           "deltas = rewards + discount * not_terminated * next_values - values",
           "deltas = rewards + discount * continues * next_values - values",
           (f"{LOSSES}::test_gae_bootstraps_at_truncation_but_not_at_termination",)),
    Mutant("gae_recursion_crosses_episodes", "the GAE recursion carries advantages back across an episode's end",
           "mlsh_jax/losses.py",
           "advantage = delta + discount * gae_lambda * cont * next_advantage",
           "advantage = delta + discount * gae_lambda * next_advantage",
           (f"{LOSSES}::test_gae_does_not_leak_across_episode_boundary",)),
    Mutant("credit_weights_ignored", "the trainer trains every sample with weight 1, whatever the credit rule says",
           "mlsh_jax/trainer.py",
           "weights = jnp.take_along_axis(credit[:, None, None, :], sub_index[..., None], axis=-1)[..., 0]",
           "weights = jnp.broadcast_to(valid[:, None, None], sub_index.shape).astype(jnp.float32)",
           ("tests/test_credit.py::test_a_subpolicy_learns_nothing_from_the_data_of_a_slot_it_lost",)),
    Mutant("credit_total_weight_floored_at_one", "weighted means divide by max(total weight, 1): weights "
           "totalling less than 1 shrink the loss",
           "mlsh_jax/losses.py",
           "def _weighted_mean(x: jax.Array, weights: jax.Array, group: jax.Array | None, num_groups: int,\n"
           "                   floor: float = 0.0)",
           "def _weighted_mean(x: jax.Array, weights: jax.Array, group: jax.Array | None, num_groups: int,\n"
           "                   floor: float = 1.0)",
           (f"{LOSSES}::test_only_the_ratios_of_the_weights_matter_whatever_their_total",
            "tests/test_credit.py::test_with_one_joint_slot_the_responsibility_rule_is_the_paper_rule")),
    Mutant("maze_reward_sign_flipped", "the ant maze pays the velocity away from the goal",
           "envs/ant_maze.py",
           "return velocity - CONTROL_COST",
           "return -velocity - CONTROL_COST",
           ("tests/test_ant_envs.py::test_maze_pays_the_velocity_toward_the_goal_minus_the_control_cost",)),
    Mutant("twowalk_reward_sign_flipped", "ant twowalk pays +sqrt(distance) / 3000",
           "envs/ant_twowalk.py",
           "original = -jnp.sqrt(distance) / 3000.0",
           "original = jnp.sqrt(distance) / 3000.0",
           ("tests/test_ant_envs.py::test_twowalk_pays_minus_the_root_of_the_distance_to_its_goal_over_3000",)),
    Mutant("twowalk_approach_reward_sign_flipped", "twowalk's approach shaping pays moving away from the goal",
           "envs/ant_twowalk.py",
           "return original + self.approach_weight * approach",
           "return original - self.approach_weight * approach",
           ("tests/test_ant_envs.py::test_twowalk_approach_weight_adds_the_speed_toward_the_goal",)),
    Mutant("maze_path_reward_heads_for_the_goal", "the maze's path reward pays straight toward the goal",
           "envs/ant_maze.py",
           'if self.reward_direction == "goal":',
           "if True:",
           ("tests/test_ant_envs.py::test_the_path_reward_heads_for_the_next_cell_of_the_corridor",)),
    Mutant("obstacle_course_reward_stuck_at_zero", "the obstacle course never pays",
           "envs/ant_obstacles.py",
           "return (distance < GOAL_RADIUS).astype(jnp.float32)",
           "return jnp.zeros((), jnp.float32) * distance",
           ("tests/test_ant_envs.py::test_obstacle_course_pays_one_within_root_30_of_its_goal_and_nothing_outside",)),
    Mutant("humanoid_walk_weight_divided_by_5", "the humanoid's walking velocity weight is 5x too weak",
           "envs/humanoid.py",
           "WALK_VELOCITY_WEIGHT = 1.25",
           "WALK_VELOCITY_WEIGHT = 1.25 / 5",
           ("tests/test_humanoid_envs.py::test_walk_pays_1_25_v_plus_the_alive_bonus_crawl_pays_7_5_v_backward",)),
    Mutant("humanoid_crawl_weight_divided_by_5", "the humanoid's crawling velocity weight is 5x too weak",
           "envs/humanoid.py",
           "CRAWL_VELOCITY_WEIGHT = 7.5",
           "CRAWL_VELOCITY_WEIGHT = 7.5 / 5",
           ("tests/test_humanoid_envs.py::test_walk_pays_1_25_v_plus_the_alive_bonus_crawl_pays_7_5_v_backward",)),
    Mutant("humanoid_alive_bonus_when_fallen", "the walking humanoid earns the alive bonus below z = 1 too",
           "envs/humanoid.py",
           "healthy = torso_height(after) >= HEALTHY_Z",
           "healthy = torso_height(after) >= 0.0",
           ("tests/test_humanoid_envs.py::test_walk_pays_1_25_v_plus_the_alive_bonus_crawl_pays_7_5_v_backward",)),
    Mutant("humanoid_observes_no_actuator_forces", "the humanoid observes the forces of zero controls, not of "
           "the step's controls", "envs/brax_body.py",
           "return inner, self.observe(after, controls), reward",
           "return inner, self.observe(after), reward",
           ("tests/test_humanoid_envs.py::test_the_body_observation_is_brax_humanoids_and_the_master_also_sees_x_y",)),
    Mutant("resume_ignores_the_env_revision", "a run of an older env revision resumes into today's env",
           "mlsh_jax/loading.py",
           "    if recorded != env.revision:",
           "    if False:",
           ("tests/test_env_revisions.py::test_resuming_an_old_humanoid_run_is_refused_and_changes_nothing",)),
    Mutant("macro_reward_not_summed", "a master transition keeps only the last step's reward, not the sum",
           "mlsh_jax/rollout.py",
           "reward=macro.reward + jnp.where(open_, out.reward, 0.0),",
           "reward=jnp.where(open_, out.reward, macro.reward),",
           ("tests/test_rollout.py",)),
    Mutant("macro_not_cut_at_episode_end", "a master transition adds the next episode's steps after an episode ends",
           "mlsh_jax/rollout.py",
           "open_ = ~macro.ended",
           "open_ = jnp.ones_like(macro.ended)",
           ("tests/test_rollout.py",)),
    Mutant("macro_final_obs_after_reset", "a master transition's final observation is the next episode's first",
           "mlsh_jax/rollout.py",
           "final_obs=jnp.where(open_[:, None], out.final_obs, macro.final_obs),",
           "final_obs=jnp.where(open_[:, None], out.state.obs, macro.final_obs),",
           ("tests/test_rollout.py",)),
    Mutant("transfer_statistics_reset", "frozen transferred sub-policies see the running statistics of the new "
           "task (restarted at a count of one and updated every update) instead of their source run's",
           "mlsh_jax/trainer.py",
           "return state.obs_stats if state.sub_obs_stats is None else state.sub_obs_stats",
           "return state.obs_stats",
           (f"{RESUME}::test_frozen_transferred_subpolicies_act_exactly_as_in_their_source_run",)),
    Mutant("restore_without_optimizer_state", "a resumed run restores the sub-policies without their optimizer state",
           "mlsh_jax/resume.py",
           "        state, _ = checkpoint.restore(manager, update, abstract)\n",
           "        state, _ = checkpoint.restore(manager, update, abstract)\n"
           "        state = state.replace(subs=state.subs.replace(opt_state=trainer.sub_optimizer.init(state.subs.params)))\n",
           (f"{RESUME}::test_a_run_resumed_with_other_settings_continues_the_uninterrupted_run",)),
    Mutant("resume_reapplies_the_transfer", "a resumed run applies `prepare_state` (the transfer) again",
           "mlsh_jax/run.py",
           "        out, state, resumed_from, previous_rows = pathlib.Path(out_dir), point.state, point.update, point.rows\n",
           "        out, state, resumed_from, previous_rows = pathlib.Path(out_dir), point.state, point.update, point.rows\n"
           "        state = state if prepare_state is None else prepare_state(state)\n",
           (f"{RESUME}::test_a_resumed_transfer_run_does_not_apply_the_transfer_again",)),
)
