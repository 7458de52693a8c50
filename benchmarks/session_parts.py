"""The parts of a prepared GPU session (benchmarks/gpu_session.py has the plan and the order):

- `experiment_part`: an experiment's MLSH run and (humanoid) its shared-policy baseline trained side
  by side (`--no-baseline` and `--baseline-only`), then the pair's summary (`--resume`); resumable
  from checkpoints, truncated at the updates done when the training limit stops them.
- `warm_throughput`: part c's commands run while parts a and b train, so that their compiled programs
  are in the XLA compilation cache when part c measures (figures discarded).
- `part_throughput`: `benchmarks.throughput` per (family, slot count) entry, resumable entry by entry.

Each part writes results/<part>.json (status, wall time, plan, key numbers) after it ends.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from benchmarks.session_runner import Runner, Step, metrics_progress, newest_checkpoint, read_json, read_report, \
    write_json

BASELINE_DIR = "baseline_shared"        # experiments.common.BASELINE_DIR (not imported: it imports JAX)
SUMMARY_KEYS = ("updates", "env_steps", "wall_s", "mean_return", "mean_return_post_warmup",
                "mean_return_by_task", "mean_return_task_balanced", "sub_usage",
                "env_steps_per_s_after_compile", "first_update_s")
# A throughput entry's status that a later call measures again (cut by the budget or part c's limit).
RETRIED = ("timed out (session budget)", "timed out (part limit)")


class Parts(Runner):
    """The parts; `plan` (gpu_session.Plan), `environment` and `estimates` come from the session."""

    plan: Any
    environment: dict
    estimates: dict
    kinds_filter: list[str] | None
    warm_steps: list[dict] = []         # set by warm_throughput

    def part_line(self, letter: str, name: str, status: str, wall_s: float, extra: str = "") -> None:
        self.log(f"part {letter} {name}: {status} ({wall_s:.1f} s){extra}")

    def _may_start(self, letter: str, name: str) -> bool:
        if self.remaining() < max(self.plan.min_start_s, 1.0):
            self.part_line(letter, name, "skipped: no time left", 0.0, f" ({max(self.remaining(), 0):.0f} s left)")
            return False
        return True

    # --- parts a and b: an experiment ---

    def part_humanoid(self) -> None:
        plan = self.plan
        self.experiment_part("a", "humanoid", plan.humanoid_module, plan.humanoid_preset, plan.humanoid_slots,
                             plan.humanoid_updates, plan.humanoid_sets, plan.humanoid_limit_s,
                             plan.humanoid_mlsh_limit_s, baseline=True, analysis_key="subpolicy_postures")

    def part_maze(self) -> None:
        plan = self.plan
        self.experiment_part("b", "maze", plan.maze_module, plan.maze_preset, plan.maze_slots, plan.maze_updates,
                             plan.maze_sets, plan.maze_limit_s, plan.maze_mlsh_limit_s, baseline=False,
                             analysis_key="success")

    def experiment_part(self, letter: str, name: str, module: str, preset: str, slots: int | None, updates: int,
                        sets: tuple[str, ...], part_limit: float, train_limit: float, *, baseline: bool,
                        analysis_key: str) -> None:
        """Trains MLSH (and the baseline beside it) up to `train_limit`, then writes the summary (the
        pair's, or the MLSH run's analysis when its training step did not) in the rest of `part_limit`."""
        result_path = self.results / f"{name}.json"
        result = read_json(result_path) or {}
        if result.get("complete"):
            self.part_line(letter, name, "skipped: already done", 0.0)
            return
        if not self._may_start(letter, name):
            return
        start = time.monotonic()
        part_deadline, train_deadline = start + part_limit, start + min(train_limit, part_limit)
        run = self.runs / name
        dirs = [run, run / BASELINE_DIR] if baseline else [run]
        target = int(result.get("target_updates") or updates)
        result.update(part=name, plan={"module": module, "preset": preset, "slots": slots, "updates": updates,
                                       "sets": list(sets), "limit_s": part_limit, "train_limit_s": train_limit,
                                       "baseline": "beside MLSH (--baseline-only)" if baseline else None,
                                       "estimate_s": self.estimates.get(name)},
                      run_dir=str(run), environment=self.environment)
        result.setdefault("steps", [])
        common = ["-m", module, "--out", str(run), "--no-progress"]

        # Training: MLSH and (with a baseline) the shared policy, side by side, up to `target` updates.
        behind = [(self._usable_run(d) or 0) < target for d in dirs]
        steps: dict[str, Step] = {}
        mlsh_ended = threading.Event()

        def train_mlsh():
            try:
                if newest_checkpoint(run) is None:
                    argv = common + ["--no-baseline", "--preset", preset] + \
                        ([f"--set=num_slots={slots}"] if slots else []) + [f"--set=num_updates={target}"] + \
                        [f"--set={s}" for s in sets]
                else:
                    argv = common + ["--no-baseline", "--resume", f"--set=num_updates={target}"]
                steps["mlsh"] = self.run(f"{name}_mlsh", argv, train_deadline - time.monotonic(), graceful=True)
            finally:
                mlsh_ended.set()

        def train_shared():
            # --baseline-only reads the MLSH run's config.json (written before its compile).
            while not (run / "config.json").is_file() and not mlsh_ended.is_set() and self.remaining() > 0:
                time.sleep(0.2)
            if not (run / "config.json").is_file():
                steps["shared"] = Step(f"{name}_baseline", "failed (no MLSH config.json)", 0.0, None)
                return
            resume = ["--resume"] if newest_checkpoint(dirs[1]) is not None else []
            argv = common + ["--baseline-only"] + resume + [f"--set=num_updates={target}"]
            steps["shared"] = self.run(f"{name}_baseline", argv, train_deadline - time.monotonic(), graceful=True)

        if not behind[0]:
            mlsh_ended.set()
        self.together(*[task for task, needed in zip((train_mlsh, train_shared), behind) if needed])
        trained = [steps[key] for key in ("mlsh", "shared") if key in steps]
        result["steps"].extend(step.record(self.call) for step in trained)
        status = next((s.status for s in trained if not s.done and s.status != "timed out"), None)
        if status is None and any(s.status == "timed out" for s in trained):
            checkpoints = [newest_checkpoint(d) for d in dirs]
            if not all(checkpoints):
                status = "timed out"
            elif max(checkpoints) < target:
                # The training limit stopped them (the estimate was optimistic): the part finishes at
                # the updates done, the one behind (if any) catching up in the summary step.
                target = max(checkpoints)
                result.update(target_updates=target, truncated=True)
                self.log(f"  {name}: training stopped at its limit after {checkpoints} of {updates} updates: "
                         f"the part finishes at {target} updates")

        summary = read_json(run / "summary.json") or {}
        finished = not baseline and analysis_key in summary and newest_checkpoint(run) == target
        if status is None and not finished:
            argv = common + ["--resume", f"--set=num_updates={target}"] + ([] if baseline else ["--no-baseline"])
            step = self.run(f"{name}_{'pair' if baseline else 'finish'}", argv, part_deadline - time.monotonic(),
                            graceful=True)
            result["steps"].append(step.record(self.call))
            status = step.status
            summary = read_json(run / "summary.json") or {}
            if step.done and (analysis_key not in summary or (baseline and "baseline_shared" not in summary)):
                status = "failed (summary incomplete)"
        status = status or "done"

        complete = status == "done"
        if complete and result.get("truncated"):
            status = f"done (truncated: {target} of {updates} updates)"
        wall = time.monotonic() - start
        result.update(status=status, complete=complete, wall_s=round(result.get("wall_s", 0.0) + wall, 1),
                      target_updates=target)
        result.update(self._experiment_figures(run, summary, baseline, complete))
        write_json(result_path, result)
        self.part_line(letter, name, status, wall, _key_numbers(result))

    def _usable_run(self, run) -> int | None:
        """The run's newest checkpoint; a run directory without one (stopped before its first save)
        is removed, so that the next step starts it afresh instead of failing to resume."""
        checkpoint = newest_checkpoint(run)
        if checkpoint is None and run.exists():
            shutil.rmtree(run)
            self.log(f"  removed {run} (no checkpoint): it starts afresh")
        return checkpoint

    def _experiment_figures(self, run, summary: dict, baseline: bool, complete: bool) -> dict:
        figures: dict[str, Any] = {"mlsh": {k: summary[k] for k in SUMMARY_KEYS if k in summary},
                                   "progress": {"mlsh": metrics_progress(run)}}
        if baseline:
            shared = read_json(run / BASELINE_DIR / "summary.json") or {}
            figures["shared"] = {k: shared[k] for k in SUMMARY_KEYS if k in shared} if complete else {}
            figures["progress"]["shared"] = metrics_progress(run / BASELINE_DIR)
            figures["mean_return_task_balanced"] = {
                "mlsh": summary.get("mean_return_task_balanced"),
                "shared": (summary.get("baseline_shared") or {}).get("mean_return_task_balanced")}
            figures["mean_return"] = {"mlsh": summary.get("mean_return"),
                                      "shared": (summary.get("baseline_shared") or {}).get("mean_return")}
        postures = summary.get("subpolicy_postures")
        if postures:
            figures["subpolicy_postures"] = postures
            figures["torso_height"] = {sub: {objective: values.get("mean_torso_height")
                                             for objective, values in per.items()}
                                       for sub, per in postures.items()}
        for key in ("success", "subpolicy_headings", "baseline_shared"):
            if key in summary:
                figures[key] = summary[key]
        figures["summary"] = summary
        return figures

    # --- part c: throughput ---

    def throughput_selection(self) -> list[tuple[str, int, list[str]]]:
        """(family, slots, kinds) of part c in order of value, after --throughput-kinds."""
        selected = []
        for family, slots in self.plan.throughput_entries:
            kinds = [k for k in self.plan.kinds(family) if not self.kinds_filter or k in self.kinds_filter]
            if kinds:
                selected.append((family, slots, kinds))
        return selected

    def throughput_env(self) -> dict:
        return self.child_env(cache=True)

    def _throughput_argv(self, family: str, slots: list[int], kinds: list[str]) -> list[str]:
        return ["-m", self.plan.throughput_module, "--family", family, "--slots", *map(str, slots),
                "--repeats", str(self.plan.throughput_repeats), "--kinds", *kinds]

    def warm_throughput(self, limit_s: float) -> None:
        """Part c's commands for the entries not yet measured, one process per family side by side,
        within `limit_s`: they fill the XLA compilation cache (figures discarded; the steps are kept
        in `warm_steps` for part c's file)."""
        result = read_json(self.results / "throughput.json") or {}
        if result.get("complete"):
            return
        entries = result.get("entries") or {}
        families: dict[str, tuple[list[int], list[str]]] = {}
        for family, slots, kinds in self.throughput_selection():
            status = (entries.get(f"{family} B={slots}") or {}).get("status")
            if status is None or status in RETRIED:
                families.setdefault(family, ([], kinds))[0].append(slots)
        steps: list[Step] = []

        def warm(family: str, slots: list[int], kinds: list[str]):
            stdout = self.work / "throughput" / f"warm_{family}.json"
            stdout.parent.mkdir(parents=True, exist_ok=True)
            steps.append(self.run(f"throughput_warm_{family}", self._throughput_argv(family, slots, kinds),
                                  limit_s, graceful=False, stdout=stdout, env=self.throughput_env()))

        self.together(*[lambda f=f, s=s, k=k: warm(f, s, k) for f, (s, k) in families.items()])
        self.warm_steps = [step.record(self.call) for step in steps]

    def part_throughput(self, warm: threading.Thread | None = None) -> None:
        """Measures each entry not yet measured; first waits for `warm` (the cache warm-up) to end."""
        letter, name = "c", "throughput"
        result_path = self.results / "throughput.json"
        result = read_json(result_path) or {}
        if result.get("complete"):
            self.part_line(letter, name, "skipped: already done", 0.0)
            return
        start = time.monotonic()
        self.join(warm)     # nothing else on the device while part c measures
        if not self._may_start(letter, name):
            return
        result = read_json(result_path) or {}
        entries = result.setdefault("entries", {})
        selected = self.throughput_selection()
        deadline = time.monotonic() + self.plan.throughput_limit_s
        result.update(part=name, environment=self.environment,
                      plan={"entries": [f"{f} B={b}: {' '.join(k)}" for f, b, k in selected],
                            "repeats": self.plan.throughput_repeats, "limit_s": self.plan.throughput_limit_s,
                            "entry_limit_s": self.plan.throughput_entry_limit_s,
                            "estimate_s": self.estimates.get("throughput")},
                      note="python -m benchmarks.throughput --family F --slots B --repeats R --kinds ... per entry "
                           "(each measurement in its own process), nothing else on the device; the XLA "
                           "compilation cache on: where the warm-up (the same commands while parts a and b "
                           "trained) compiled a program, compile_s_approx is the cache's load time. "
                           "peak_device_memory_mb is None where the device reports no memory stats (CPU)")
        if self.warm_steps:
            result.setdefault("warm", []).extend(self.warm_steps)
        stopped, reason = None, "stopped"
        for family, slots, kinds in selected:
            key = f"{family} B={slots}"
            entry = entries.get(key) or {}
            if entry.get("status") is not None and entry["status"] not in RETRIED:
                continue
            left = min(self.remaining(), deadline - time.monotonic())
            if left < max(self.plan.min_start_s, 1.0):
                reason = RETRIED[0] if self.remaining() <= deadline - time.monotonic() else RETRIED[1]
                stopped = f"no time left ({max(left, 0):.0f} s) before {key}"
                break
            by_part = deadline - time.monotonic() < self.plan.throughput_entry_limit_s
            stdout = self.work / "throughput" / f"{family}_B{slots}.json"
            stdout.parent.mkdir(parents=True, exist_ok=True)
            step = self.run(f"throughput_{family}_B{slots}", self._throughput_argv(family, [slots], kinds),
                            min(self.plan.throughput_entry_limit_s, deadline - time.monotonic()),
                            graceful=False, stdout=stdout, env=self.throughput_env())
            report = read_report(stdout) if step.done else None
            status = step.status if report is not None or not step.done else "failed (no JSON)"
            if status == "timed out" and by_part:
                status = "timed out (part limit)"
            entries[key] = {"status": status, "wall_s": round(step.wall_s, 1), "kinds": kinds, "call": self.call,
                            "report": report}
            if status in RETRIED:
                reason, stopped = status, f"{status} during {key}"
                break
        final = [entries.get(f"{f} B={b}", {}).get("status") for f, b, _ in selected]
        complete = all(s is not None and s not in RETRIED for s in final)
        if complete:
            bad = sum(s != "done" for s in final)
            status = "done" if not bad else f"done ({bad} of {len(final)} entries timed out or failed)"
        else:
            status = reason
        wall = time.monotonic() - start
        result.update(status=status, complete=complete, wall_s=round(result.get("wall_s", 0.0) + wall, 1),
                      table=throughput_table(entries))
        write_json(result_path, result)
        measured = sum(1 for s in final if s == "done")
        self.part_line(letter, name, status, wall, f": {measured} of {len(selected)} entries measured"
                       + (f"; {stopped}" if stopped else ""))


def throughput_table(entries: dict) -> list[dict]:
    """One row per (entry, kind): steps/s, compile, peak device memory (None where unreported)."""
    rows = []
    for key, entry in entries.items():
        family, slots = key.split(" B=")
        report = entry.get("report") or {}
        device = report.get("device")
        for row_key, row in (report.get("results") or {}).items():
            for kind, values in row.items():
                if not isinstance(values, dict):
                    continue
                rows.append({"family": family, "slots": int(slots), "kind": kind, "device": device,
                             "env_steps_per_s": values.get("env_steps_per_s"),
                             "per_call_s": values.get("per_call_s"),
                             "compile_s_approx": values.get("compile_s_approx"),
                             "peak_device_memory_mb": values.get("peak_device_memory_mb"),
                             "peak_rss_mb": values.get("peak_rss_mb"), "error": values.get("error")})
    return rows


def _key_numbers(result: dict) -> str:
    parts = []
    balanced = result.get("mean_return_task_balanced") or {}
    if balanced.get("mlsh") is not None:
        parts.append(f"task-balanced return MLSH {balanced['mlsh']:.1f}"
                     + (f", shared {balanced['shared']:.1f}" if balanced.get("shared") is not None else ""))
    if result.get("torso_height"):
        parts.append("torso " + "; ".join(f"{sub}: " + ", ".join(f"{o} {h}" for o, h in per.items())
                                          for sub, per in result["torso_height"].items()))
    if isinstance(result.get("success"), dict):
        parts.append(f"goal reached by {result['success'].get('all_slots')} of slots")
    rate = (result.get("mlsh") or {}).get("env_steps_per_s_after_compile")
    if rate:
        parts.append(f"MLSH {rate:,.0f} env steps/s")
    return (": " + "; ".join(parts)) if parts else ""
