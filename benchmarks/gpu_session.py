"""One prepared GPU session: the experiments and measurements worth a short loan of one accelerator,
in order of value, each part under its own time limit, resumable, with the results gathered into at
most 8 small files directly under --out.

    python -m benchmarks.gpu_session --out DIR                  # the GPU plan below (refuses a CPU backend)
    python -m benchmarks.gpu_session --out DIR --smoke          # tiny shapes on CPU: every code path
    python -m benchmarks.gpu_session --out DIR --parts a,c      # some parts (letters or names)
    OUT=DIR bash benchmarks/gpu_session.sh                      # on the device machine (wheels, PYTHONPATH)

Parts (each one or more subprocesses with a timeout, so that one part hanging cannot eat the others):

a. `humanoid`: humanoid walk / crawl, MLSH (`python -m experiments.humanoid --no-baseline`), then the
   shared-policy baseline on the same budget (`--resume`, which also writes the pair's summary.json and
   learning curve). Result: task-balanced returns of both, the sub-policies' torso heights.
b. `maze`: ant maze MLSH alone (`python -m experiments.ant_maze --no-baseline`) at 1024 slots. Result:
   goal reached over slots, the sub-policies' headings.
c. `throughput`: `python -m benchmarks.throughput` at 256 / 1024 / 4096 slots for ant maze and humanoid
   walk / crawl (env alone and MLSH), with peak device memory (`peak_device_memory_mb`, from
   `device.memory_stats()["peak_bytes_in_use"]`; None where the device reports none, e.g. CPU).

GPU sizing (one H200). Measured: ant maze MLSH R_ant,gpu(256) = 1.215M env steps/s and
R_ant,gpu(1024) = 2.202M (docs/results/ant_throughput_h200.json); on a 2-core CPU, one device, ant maze
MLSH R_ant,cpu = 5,329 and humanoid walk / crawl MLSH R_hum,cpu = 6,330 env steps/s
(docs/results/ant_throughput_cpu_2core.json, docs/results/humanoid_throughput_cpu_2core.json). The
humanoid on the GPU is not measured; it is estimated by scaling the ant's GPU rate by the CPU ratio:

    R_hum,gpu(256) = R_ant,gpu(256) * R_hum,cpu / R_ant,cpu = 1.215M * 6,330 / 5,329 = ~1.44M env steps/s

One update of 256 slots is 256 x 2000 = 512k env steps (~0.35 s), so 360 updates train in
360 * 512k / 1.44M = ~128 s per run; the shared-policy baseline is assumed as fast as MLSH (on the CPU
the two humanoid runs of 1019 updates took 5527 s and 5434 s). With ~60 s of compile and ~30 s of
process start, analysis and figures per run: 2 * (60 + 30 + 128) = ~436 s (~7.3 min) for part a, under
its 480 s limit. Part b: 1024 slots x 50 updates = 102M env steps, 50 * 2.048M / 2.20M = ~47 s of
training + ~40 s of compile (measured) + ~30 s = ~2 min, limit 200 s. Part c: ~90 s per (family, slot
count) entry (three process starts, two compiles, 2 + 2 timed calls), six entries in order of value
(humanoid 1024, humanoid 4096, ant 4096, humanoid 256, ant 1024, ant 256; the ant at 256 and 1024 is
measured already), 180 s limit each.

Time limits: each part and step stops at its limit: training steps first get SIGTERM (the run saves a
checkpoint after the current update and exits), then SIGKILL after a grace period. When the MLSH run
of part a or b hits its own limit (the estimate was too optimistic), the part is finished at the
updates done (the baseline then trains as many, paired) and reported as truncated. The whole call
stops within --budget-s (the device tool allows 10 minutes a command): a part cut by that budget is
resumed by the next call, which skips complete parts ("skipped: already done"), resumes runs that have
a checkpoint (`--resume`) and throughput entries not yet measured. Run directories, checkpoints, logs
and the XLA compilation cache live under --work (default /tmp/gpu_session_work), not under --out.

Files under --out (at most 8, written after every part): humanoid.json, maze.json, throughput.json
(each with the part's status, wall time, plan, key numbers and the environment), humanoid_metrics.csv,
humanoid_baseline_metrics.csv, maze_metrics.csv, humanoid_learning_curve.png and session.log.

This process never imports JAX (on a GPU it would take the device's memory from the runs it starts):
jax's version, platform and devices are read by a subprocess and printed first.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]

# Measured rates (env steps/s) behind the GPU plan (see the module docstring).
ANT_MLSH_GPU = {256: 1_215_210.0, 1024: 2_202_403.0}       # docs/results/ant_throughput_h200.json
ANT_MLSH_CPU = 5_329.0                                      # docs/results/ant_throughput_cpu_2core.json
HUMANOID_MLSH_CPU = 6_330.0                                 # docs/results/humanoid_throughput_cpu_2core.json
HUMANOID_MLSH_GPU_256 = ANT_MLSH_GPU[256] * HUMANOID_MLSH_CPU / ANT_MLSH_CPU   # ~1.44M, estimated
STEPS_PER_SLOT = 2000                                       # D of the paper settings
COMPILE_S = {"humanoid": 60.0, "maze": 40.0}                # per run; maze measured, humanoid assumed
PROCESS_S = 30.0                                            # per run: start, restore, analysis, figures
THROUGHPUT_ENTRY_S = 90.0                                   # per (family, slot count), assumed

PART_NAMES = {"a": "humanoid", "b": "maze", "c": "throughput"}
OUTPUT_FILES = ("humanoid.json", "maze.json", "throughput.json", "humanoid_metrics.csv",
                "humanoid_baseline_metrics.csv", "maze_metrics.csv", "humanoid_learning_curve.png",
                "session.log")
MAX_OUTPUT_BYTES = 16 * 2**20
LOG_BYTES_KEPT = 4 * 2**20
# Log lines left out of the tails that session.log quotes (the step logs keep them).
LOG_NOISE = ("cpu_aot_loader", "Failed to import warp", "Failed to import mujoco_warp")
SUMMARY_KEYS = ("updates", "env_steps", "wall_s", "mean_return", "mean_return_post_warmup",
                "mean_return_by_task", "mean_return_task_balanced", "sub_usage",
                "env_steps_per_s_after_compile", "first_update_s")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and time limits of one session (`GPU_PLAN` or `SMOKE_PLAN`)."""

    mode: str
    humanoid_preset: str
    humanoid_slots: int | None          # None: the preset's
    humanoid_updates: int
    humanoid_limit_s: float             # the whole part
    humanoid_mlsh_limit_s: float        # its MLSH run; the baseline gets the rest of the part's limit
    maze_preset: str
    maze_slots: int | None
    maze_updates: int
    maze_limit_s: float
    maze_mlsh_limit_s: float
    throughput_entries: tuple[tuple[str, int], ...]     # (family, slots) in order of value
    throughput_kinds: tuple[tuple[str, tuple[str, ...]], ...]
    throughput_repeats: int
    throughput_entry_limit_s: float
    budget_s: float                     # the whole call
    grace_s: float                      # SIGTERM -> SIGKILL
    min_start_s: float                  # no part or entry starts with less time than this left
    humanoid_sets: tuple[str, ...] = ()
    maze_sets: tuple[str, ...] = ()
    humanoid_module: str = "experiments.humanoid"
    maze_module: str = "experiments.ant_maze"
    throughput_module: str = "benchmarks.throughput"

    def kinds(self, family: str) -> tuple[str, ...]:
        return dict(self.throughput_kinds).get(family, ())


THROUGHPUT_KINDS = (("humanoid", ("humanoid_walkcrawl", "mlsh_humanoid_walkcrawl")),
                    ("ant", ("ant_maze", "mlsh_ant_maze")))

GPU_PLAN = Plan(
    mode="gpu",
    humanoid_preset="paper", humanoid_slots=256, humanoid_updates=360,
    humanoid_limit_s=480, humanoid_mlsh_limit_s=270,
    maze_preset="paper", maze_slots=1024, maze_updates=50, maze_limit_s=200, maze_mlsh_limit_s=160,
    throughput_entries=(("humanoid", 1024), ("humanoid", 4096), ("ant", 4096), ("humanoid", 256),
                        ("ant", 1024), ("ant", 256)),
    throughput_kinds=THROUGHPUT_KINDS, throughput_repeats=2, throughput_entry_limit_s=180,
    budget_s=570, grace_s=30, min_start_s=60,
)

# Tiny shapes for a CPU: the experiments' smoke presets (2 slots x 2 updates), throughput at 2 and 4
# slots with 1 repeat (the humanoid's env only: its MLSH measurement is the ant's code path with a
# longer compile). Limits are generous: compiles take minutes on a busy 2-core CPU.
SMOKE_PLAN = Plan(
    mode="smoke",
    humanoid_preset="smoke", humanoid_slots=None, humanoid_updates=2,
    humanoid_limit_s=2400, humanoid_mlsh_limit_s=1500,
    maze_preset="smoke", maze_slots=None, maze_updates=2, maze_limit_s=1200, maze_mlsh_limit_s=900,
    throughput_entries=(("humanoid", 2), ("ant", 4)),
    throughput_kinds=(("humanoid", ("humanoid_walkcrawl",)), ("ant", ("ant_maze", "mlsh_ant_maze"))),
    throughput_repeats=1, throughput_entry_limit_s=1200,
    budget_s=7200, grace_s=120, min_start_s=0,
)


def estimate_s(plan: Plan) -> dict[str, float]:
    """Estimated seconds of each part of a GPU plan on one H200 (see the module docstring)."""
    humanoid_steps = (plan.humanoid_slots or 0) * STEPS_PER_SLOT * plan.humanoid_updates
    maze_steps = (plan.maze_slots or 0) * STEPS_PER_SLOT * plan.maze_updates
    maze_rate = ANT_MLSH_GPU[1024] if (plan.maze_slots or 0) >= 1024 else ANT_MLSH_GPU[256]
    return {
        "humanoid": round(2 * (COMPILE_S["humanoid"] + PROCESS_S + humanoid_steps / HUMANOID_MLSH_GPU_256)),
        "maze": round(COMPILE_S["maze"] + PROCESS_S + maze_steps / maze_rate),
        "throughput": round(THROUGHPUT_ENTRY_S * len(plan.throughput_entries)),
    }


# --- small file helpers --------------------------------------------------------------------------

def read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: pathlib.Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """NaN and infinities as None (null), so that the files are strict JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_report(path: pathlib.Path) -> Any:
    """The JSON document a command printed on stdout (from its first line that opens one)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith("{"):
            try:
                return json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
    return None


def newest_checkpoint(run: pathlib.Path) -> int | None:
    """The newest complete checkpoint's update number of a run directory (orbax names finished
    step directories by the number alone), or None."""
    directory = run / "checkpoints"
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def metrics_progress(run: pathlib.Path) -> dict | None:
    """Rows in a run's metrics.csv and the figures of its last row (returns, steps, wall time)."""
    try:
        with open(run / "metrics.csv", newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return None
    if not rows:
        return {"rows": 0}
    last = rows[-1]
    keep = {k: v for k, v in last.items() if k in ("update", "env_steps", "wall_s") or k.startswith("mean_return")}
    return {"rows": len(rows), "checkpoint": newest_checkpoint(run),
            "last_row": {k: _number(v) for k, v in keep.items()}}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _tail(path: pathlib.Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            text = file.read().decode(errors="replace")
    except OSError:
        return []
    kept = [line for line in text.replace("\r", "\n").splitlines()
            if line.strip() and not any(noise in line for noise in LOG_NOISE)]
    return [line if len(line) <= 400 else line[:400] + " [...]" for line in kept[-lines:]]


@dataclasses.dataclass
class Step:
    name: str
    status: str         # done | timed out | timed out (session budget) | failed (exit N)
    wall_s: float
    rc: int | None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def record(self, call: int) -> dict:
        return {"call": call, "name": self.name, "status": self.status, "wall_s": round(self.wall_s, 1),
                "rc": self.rc}


class Session:
    """One call: runs the selected parts in order, then gathers the files into `out`."""

    def __init__(self, out: pathlib.Path, work: pathlib.Path, plan: Plan, parts: list[str],
                 throughput_kinds: list[str] | None = None, allow_cpu: bool = False, probe: bool = True):
        self.out, self.plan, self.parts = out.resolve(), plan, parts
        self.work = work.resolve() / plan.mode
        self.runs, self.results, self.logs = self.work / "runs", self.work / "results", self.work / "logs"
        self.kinds_filter = throughput_kinds
        self.allow_cpu = allow_cpu
        self.probe = probe
        self.started = time.monotonic()
        self.deadline = self.started + plan.budget_s
        self.interrupted = False
        self.environment: dict = {}
        self.call = 1

    # --- time and logging ---

    def remaining(self) -> float:
        return 0.0 if self.interrupted else self.deadline - time.monotonic()

    def log(self, message: str, echo: bool = True) -> None:
        if echo:
            print(message, flush=True)
        with open(self.work / "session.log", "a") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def _interrupt(self, signum, frame) -> None:
        self.interrupted = True
        print(f"received {signal.Signals(signum).name}: stopping the current step, then gathering results",
              file=sys.stderr, flush=True)

    # --- subprocesses ---

    def child_env(self, cache: bool = True, **extra: str) -> dict:
        env = dict(os.environ)
        paths = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        if cache:   # a resumed run then loads its compiled programs instead of compiling them again
            env.setdefault("JAX_COMPILATION_CACHE_DIR", str(self.work / "xla_cache"))
        env.update(extra)
        return env

    def run(self, name: str, argv: list[str], limit_s: float, graceful: bool, stdout: pathlib.Path | None = None,
            env: dict | None = None) -> Step:
        """Runs `argv` (a Python module command line) for at most `limit_s` and the session budget.
        `graceful`: at the limit minus the grace period SIGTERM first (a training run saves a
        checkpoint after its current update and exits), SIGKILL of its process group at the limit;
        else SIGKILL of the group at the limit."""
        remaining = self.remaining()
        by_budget = remaining < limit_s
        limit = min(limit_s, remaining)
        if limit < 1.0:
            status = "timed out (session budget)" if by_budget else "timed out"
            self.log(f"  step {name}: {status} before it started ({max(limit, 0):.0f} s left)")
            return Step(name, status, 0.0, None)
        grace = min(self.plan.grace_s, limit / 2) if graceful else 0.0
        log_path = self.logs / f"{name}.log"
        start = time.monotonic()
        term_at, kill_at = start + limit - grace, start + limit
        signalled = False
        with open(log_path, "a") as log:
            log.write(f"=== call {self.call} {time.strftime('%Y-%m-%d %H:%M:%S')}, limit {limit:.0f} s: "
                      f"{' '.join(argv)}\n")
            log.flush()
            sink = open(stdout, "w") if stdout else log
            try:
                # Its own process group (to stop it with whatever it started), in this session: the
                # device tool ends a command's processes when it returns, but not a new session's.
                group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
                process = subprocess.Popen([sys.executable] + argv, cwd=REPO, env=env or self.child_env(),
                                           stdout=sink, stderr=log if stdout else subprocess.STDOUT, **group)
                while True:
                    try:
                        rc = process.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    now = time.monotonic()
                    if self.interrupted and not signalled:
                        by_budget, signalled = True, True
                        kill_at = min(kill_at, now + (self.plan.grace_s if graceful else 0.0))
                        if graceful:
                            _signal(process, signal.SIGTERM, group=False)
                    if graceful and not signalled and now >= term_at:
                        signalled = True
                        _signal(process, signal.SIGTERM, group=False)
                    if now >= kill_at:
                        signalled = True
                        _signal(process, signal.SIGKILL, group=True)
            finally:
                if stdout:
                    sink.close()
            if signalled:   # what its process group may have left (e.g. a measurement's own subprocess)
                _signal(process, signal.SIGKILL, group=True)
        wall = time.monotonic() - start
        if signalled:
            status = "timed out (session budget)" if by_budget else "timed out"
        elif rc == 0:
            status = "done"
        else:
            status = f"failed (exit {rc})"
        print(f"  step {name}: {status} in {wall:.1f} s", flush=True)
        tail = _tail(log_path, 3 if status == "done" else 25)
        self.log(f"  step {name}: {status} in {wall:.1f} s, log {log_path}"
                 + "".join(f"\n    | {line}" for line in tail), echo=False)
        if status != "done":
            print("".join(f"    | {line}\n" for line in tail), end="", flush=True)
        return Step(name, status, wall, rc)

    # --- the session ---

    def probe_environment(self) -> dict:
        probe = ("import json, platform, sys\n"
                 "info = {'python': sys.version.split()[0], 'machine': platform.machine()}\n"
                 "try:\n"
                 "    import jax\n"
                 "    info.update(jax=jax.__version__, platform=jax.default_backend(), device_count=jax.device_count(),\n"
                 "                devices=[str(d) for d in jax.devices()], device_kind=jax.devices()[0].device_kind)\n"
                 "except Exception as error:\n"
                 "    info['jax_error'] = repr(error)[:300]\n"
                 "for name in ('jaxlib', 'brax', 'mujoco', 'flax', 'optax', 'chex', 'orbax.checkpoint', 'tensorboardX'):\n"
                 "    try:\n"
                 "        info[name] = getattr(__import__(name, fromlist=['_']), '__version__', '?')\n"
                 "    except Exception as error:\n"
                 "        info[name] = 'missing: ' + repr(error)[:200]\n"
                 "print(json.dumps(info))\n")
        env = self.child_env(cache=False, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        try:
            done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=180)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            info = json.loads(lines[-1]) if lines else {"probe_error": done.stderr.strip()[-500:]}
        except (subprocess.TimeoutExpired, ValueError) as error:
            info = {"probe_error": repr(error)}
        if shutil.which("nvidia-smi"):
            try:
                smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                      "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
                info["nvidia_smi"] = smi.stdout.strip()
            except (OSError, subprocess.TimeoutExpired) as error:
                info["nvidia_smi"] = repr(error)
        return info

    def main(self) -> int:
        for directory in (self.out, self.runs, self.results, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        calls = read_json(self.work / "calls.json") or {"calls": 0}
        self.call = calls["calls"] + 1
        write_json(self.work / "calls.json", {"calls": self.call})
        previous = {sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.environment = self.probe_environment() if self.probe else {"probe": "skipped"}
            env = self.environment
            self.log(f"gpu_session call {self.call} ({self.plan.mode} plan, parts {','.join(self.parts)}, budget "
                     f"{self.plan.budget_s:.0f} s, work {self.work})")
            self.log(f"jax {env.get('jax', '?')}, platform {env.get('platform', '?')}, devices "
                     f"{env.get('devices', '?')} ({env.get('device_kind', '?')}); brax {env.get('brax', '?')}")
            if "jax_error" in env or "probe_error" in env:
                self.log(f"environment problem: {env.get('jax_error') or env.get('probe_error')}")
            if self.plan.mode != "smoke" and env.get("platform") == "cpu" and not self.allow_cpu:
                self.log("error: the GPU plan on a CPU backend would run for hours; use --smoke, or --allow-cpu")
                return 2
            if self.plan.mode != "smoke":
                self.log(f"estimates (one H200): {estimate_s(self.plan)} s")
            for part in self.parts:
                getattr(self, f"part_{part}")()
                self.gather()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.gather()
        return 0

    def _part_line(self, letter: str, name: str, status: str, wall_s: float, extra: str = "") -> None:
        self.log(f"part {letter} {name}: {status} ({wall_s:.1f} s){extra}")

    # --- parts a and b: an experiment ---

    def part_humanoid(self) -> None:
        self._experiment_part("a", "humanoid", self.plan.humanoid_module, self.plan.humanoid_preset,
                              self.plan.humanoid_slots, self.plan.humanoid_updates, self.plan.humanoid_sets,
                              self.plan.humanoid_limit_s, self.plan.humanoid_mlsh_limit_s, baseline=True,
                              analysis_key="subpolicy_postures")

    def part_maze(self) -> None:
        self._experiment_part("b", "maze", self.plan.maze_module, self.plan.maze_preset, self.plan.maze_slots,
                              self.plan.maze_updates, self.plan.maze_sets, self.plan.maze_limit_s,
                              self.plan.maze_mlsh_limit_s, baseline=False, analysis_key="success")

    def _experiment_part(self, letter: str, name: str, module: str, preset: str, slots: int | None,
                         updates: int, sets: tuple[str, ...], part_limit: float, mlsh_limit: float, *,
                         baseline: bool, analysis_key: str) -> None:
        result_path = self.results / f"{name}.json"
        result = read_json(result_path) or {}
        if result.get("complete"):
            self._part_line(letter, name, "skipped: already done", 0.0)
            return
        if self.remaining() < max(self.plan.min_start_s, 1.0):
            self._part_line(letter, name, "skipped: no time left", 0.0, f" ({max(self.remaining(), 0):.0f} s left)")
            return
        start = time.monotonic()
        part_deadline = start + part_limit
        run = self.runs / name
        target = int(result.get("target_updates") or updates)
        result.update(part=name, plan={"module": module, "preset": preset, "slots": slots, "updates": updates,
                                       "sets": list(sets), "limit_s": part_limit, "mlsh_limit_s": mlsh_limit,
                                       "estimate_s": estimate_s(self.plan)[name] if self.plan.mode != "smoke" else None},
                      run_dir=str(run), environment=self.environment)
        result.setdefault("steps", [])
        common = ["-m", module, "--out", str(run), "--no-progress"]
        status, summary = None, None

        checkpoint = self._usable_run(run)
        if checkpoint is None or checkpoint < target:
            if checkpoint is None:
                argv = common + ["--no-baseline", "--preset", preset] + \
                    ([f"--set=num_slots={slots}"] if slots else []) + [f"--set=num_updates={target}"] + \
                    [f"--set={s}" for s in sets]
            else:
                argv = common + ["--no-baseline", "--resume", f"--set=num_updates={target}"]
            step = self.run(f"{name}_mlsh", argv, min(mlsh_limit, part_deadline - time.monotonic()), graceful=True)
            result["steps"].append(step.record(self.call))
            checkpoint = newest_checkpoint(run)
            if step.status == "timed out" and checkpoint:
                # Its own limit: the estimate was optimistic. Finish the part at the updates done.
                target = checkpoint
                result.update(target_updates=target, truncated=True)
                self.log(f"  {name}: MLSH stopped at its limit after {checkpoint} of {updates} updates: "
                         f"the part finishes at {checkpoint} updates")
            elif not step.done:
                status = step.status
            elif not baseline:
                summary = read_json(run / "summary.json") or {}
                if analysis_key in summary and newest_checkpoint(run) == target:
                    status = "done"

        if status is None:
            if baseline:
                self._usable_run(run / "baseline_shared")
            argv = common + ["--resume", f"--set=num_updates={target}"] + ([] if baseline else ["--no-baseline"])
            what = "baseline" if baseline else "finish"
            step = self.run(f"{name}_{what}", argv, part_deadline - time.monotonic(), graceful=True)
            result["steps"].append(step.record(self.call))
            status = step.status
            summary = read_json(run / "summary.json") or {}
            if step.done and (analysis_key not in summary or (baseline and "baseline_shared" not in summary)):
                status = "failed (summary incomplete)"

        summary = summary if summary is not None else (read_json(run / "summary.json") or {})
        complete = status == "done"
        if complete and result.get("truncated"):
            status = f"done (truncated: {target} of {updates} updates)"
        wall = time.monotonic() - start
        result.update(status=status, complete=complete, wall_s=round(result.get("wall_s", 0.0) + wall, 1),
                      target_updates=target)
        result.update(self._experiment_figures(run, summary, baseline, complete))
        write_json(result_path, result)
        self._part_line(letter, name, status, wall, _key_numbers(result))

    def _usable_run(self, run: pathlib.Path) -> int | None:
        """The run's newest checkpoint; a run directory without one (stopped before its first save)
        is removed, so that the next step starts it afresh instead of failing to resume."""
        checkpoint = newest_checkpoint(run)
        if checkpoint is None and run.exists():
            shutil.rmtree(run)
            self.log(f"  removed {run} (no checkpoint): it starts afresh")
        return checkpoint

    def _experiment_figures(self, run: pathlib.Path, summary: dict, baseline: bool, complete: bool) -> dict:
        figures: dict[str, Any] = {"mlsh": {k: summary[k] for k in SUMMARY_KEYS if k in summary},
                                   "progress": {"mlsh": metrics_progress(run)}}
        if baseline:
            shared = read_json(run / "baseline_shared" / "summary.json") or {}
            figures["shared"] = {k: shared[k] for k in SUMMARY_KEYS if k in shared} if complete else {}
            figures["progress"]["shared"] = metrics_progress(run / "baseline_shared")
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

    def part_throughput(self) -> None:
        letter, name = "c", "throughput"
        result_path = self.results / "throughput.json"
        result = read_json(result_path) or {}
        if result.get("complete"):
            self._part_line(letter, name, "skipped: already done", 0.0)
            return
        if self.remaining() < max(self.plan.min_start_s, 1.0):
            self._part_line(letter, name, "skipped: no time left", 0.0, f" ({max(self.remaining(), 0):.0f} s left)")
            return
        entries = result.setdefault("entries", {})
        selected = []
        for family, slots in self.plan.throughput_entries:
            kinds = [k for k in self.plan.kinds(family) if not self.kinds_filter or k in self.kinds_filter]
            if kinds:
                selected.append((family, slots, kinds))
        start = time.monotonic()
        result.update(part=name, environment=self.environment,
                      plan={"entries": [f"{f} B={b}: {' '.join(k)}" for f, b, k in selected],
                            "repeats": self.plan.throughput_repeats,
                            "entry_limit_s": self.plan.throughput_entry_limit_s,
                            "estimate_s": estimate_s(self.plan)["throughput"] if self.plan.mode != "smoke" else None},
                      note="python -m benchmarks.throughput --family F --slots B --repeats R --kinds ... per entry, "
                           "XLA_PYTHON_CLIENT_PREALLOCATE=false (each measurement in its own process); "
                           "peak_device_memory_mb is None where the device reports no memory stats (CPU)")
        stopped = None
        for family, slots, kinds in selected:
            key = f"{family} B={slots}"
            entry = entries.get(key) or {}
            if entry.get("status") in ("done", "timed out") or str(entry.get("status", "")).startswith("failed"):
                continue
            if self.remaining() < max(self.plan.min_start_s, 1.0):
                stopped = f"no time left ({max(self.remaining(), 0):.0f} s) before {key}"
                break
            stdout = self.work / "throughput" / f"{family}_B{slots}.json"
            stdout.parent.mkdir(parents=True, exist_ok=True)
            argv = ["-m", self.plan.throughput_module, "--family", family, "--slots", str(slots),
                    "--repeats", str(self.plan.throughput_repeats), "--kinds", *kinds]
            step = self.run(f"throughput_{family}_B{slots}", argv, self.plan.throughput_entry_limit_s,
                            graceful=False, stdout=stdout,
                            env=self.child_env(cache=False, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
            report = read_report(stdout) if step.done else None
            status = step.status if report is not None or not step.done else "failed (no JSON)"
            entries[key] = {"status": status, "wall_s": round(step.wall_s, 1), "kinds": kinds, "call": self.call,
                            "report": report}
            if step.status == "timed out (session budget)":
                stopped = f"session budget spent during {key}"
                break
        final = [entries.get(f"{f} B={b}", {}).get("status") for f, b, _ in selected]
        complete = all(s is not None and s != "timed out (session budget)" for s in final)
        if complete:
            bad = sum(s != "done" for s in final)
            status = "done" if not bad else f"done ({bad} of {len(final)} entries timed out or failed)"
        else:
            status = "timed out (session budget)" if stopped else "stopped"
        wall = time.monotonic() - start
        result.update(status=status, complete=complete, wall_s=round(result.get("wall_s", 0.0) + wall, 1),
                      table=throughput_table(entries))
        write_json(result_path, result)
        measured = sum(1 for s in final if s == "done")
        self._part_line(letter, name, status, wall, f": {measured} of {len(selected)} entries measured"
                        + (f"; {stopped}" if stopped else ""))

    # --- results ---

    def gather(self) -> list[str]:
        """Copies the result files (at most 8, each at most 16 MiB) directly under `out`."""
        sources = {
            "humanoid.json": self.results / "humanoid.json",
            "maze.json": self.results / "maze.json",
            "throughput.json": self.results / "throughput.json",
            "humanoid_metrics.csv": self.runs / "humanoid" / "metrics.csv",
            "humanoid_baseline_metrics.csv": self.runs / "humanoid" / "baseline_shared" / "metrics.csv",
            "maze_metrics.csv": self.runs / "maze" / "metrics.csv",
            "humanoid_learning_curve.png": self.runs / "humanoid" / "learning_curve.png",
            "session.log": self.work / "session.log",
        }
        assert tuple(sources) == OUTPUT_FILES
        return gather_files(sources, self.out)


def gather_files(sources: dict[str, pathlib.Path], out: pathlib.Path) -> list[str]:
    """Copies each existing source to out/NAME; a file over 16 MiB is cut to its last 4 MiB when it is
    a log, else left out. Returns the names written."""
    if len(sources) > 8:
        raise ValueError(f"at most 8 files come back, not {len(sources)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sources.items():
        if not source.is_file():
            continue
        size = source.stat().st_size
        target = out / name
        if size <= MAX_OUTPUT_BYTES:
            shutil.copyfile(source, target)
        elif name.endswith(".log"):
            with open(source, "rb") as file:
                file.seek(size - LOG_BYTES_KEPT)
                target.write_bytes(b"[... cut ...]\n" + file.read())
        else:
            print(f"warning: {source} is {size / 2**20:.1f} MiB, over the 16 MiB limit: left out", file=sys.stderr)
            continue
        written.append(name)
    return written


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


def _signal(process: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            os.kill(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def parse_parts(text: str) -> list[str]:
    names = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        name = PART_NAMES.get(item, item)
        if name not in PART_NAMES.values():
            raise argparse.ArgumentTypeError(f"unknown part {item!r}; parts: a humanoid, b maze, c throughput")
        names.append(name)
    return [name for name in PART_NAMES.values() if name in names]    # always in order of value


def build_plan(args) -> Plan:
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    changes: dict[str, Any] = {}
    for field in ("humanoid_slots", "humanoid_updates", "maze_slots", "maze_updates", "budget_s"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.humanoid_set:
        changes["humanoid_sets"] = tuple(args.humanoid_set)
    if args.maze_set:
        changes["maze_sets"] = tuple(args.maze_set)
    if args.throughput_slots:
        changes["throughput_entries"] = tuple((family, b) for b in args.throughput_slots
                                              for family in ("humanoid", "ant"))
    for item in args.limit:
        field, _, seconds = item.partition("=")
        field = f"{field.strip()}_limit_s" if field.strip() != "grace" else "grace_s"
        if field not in {f.name for f in dataclasses.fields(Plan)}:
            raise SystemExit(f"error: unknown --limit {item!r}; names: humanoid, humanoid_mlsh, maze, maze_mlsh, "
                             "throughput_entry, grace")
        changes[field] = float(seconds)
    return dataclasses.replace(plan, **changes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="where the (at most 8) result files go")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/gpu_session_work"),
                        help="run directories, checkpoints, logs, compilation cache (kept for resuming)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (smoke presets) for a CPU")
    parser.add_argument("--parts", type=parse_parts, default=list(PART_NAMES.values()),
                        help="comma-separated parts: a (humanoid), b (maze), c (throughput); default all")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds this call may take in all (default: 570 on the GPU plan, 7200 smoke)")
    parser.add_argument("--humanoid-slots", type=int, default=None)
    parser.add_argument("--humanoid-updates", type=int, default=None)
    parser.add_argument("--maze-slots", type=int, default=None)
    parser.add_argument("--maze-updates", type=int, default=None)
    parser.add_argument("--humanoid-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="extra --set of a new humanoid run (e.g. master.learning_rate=0.001)")
    parser.add_argument("--maze-set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--throughput-slots", type=int, nargs="+", default=None,
                        help="slot counts of part c (default: 256 1024 4096; smoke: 2 4)")
    parser.add_argument("--throughput-kinds", nargs="+", default=None,
                        help="only these kinds in part c (e.g. ant_maze); families left without any are skipped")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=SECONDS",
                        help="a time limit: humanoid, humanoid_mlsh, maze, maze_mlsh, throughput_entry or grace")
    parser.add_argument("--allow-cpu", action="store_true", help="run the GPU plan even on a CPU backend")
    args = parser.parse_args(argv)
    plan = build_plan(args)
    session = Session(args.out, args.work, plan, args.parts, throughput_kinds=args.throughput_kinds,
                      allow_cpu=args.allow_cpu)
    return session.main()


if __name__ == "__main__":
    sys.exit(main())
