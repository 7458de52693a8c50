"""The machinery of a prepared GPU session (benchmarks/gpu_session.py): subprocesses under a time limit
(SIGTERM, then SIGKILL of the process group), several of them side by side in threads, a budget for
the whole call, a log, the small JSON / CSV file helpers that resuming reads, and the gathering of
the results into at most 8 files.

Nothing here imports JAX: on a GPU this process would take the device's memory from the runs it starts.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_OUTPUT_BYTES = 16 * 2**20
LOG_BYTES_KEPT = 4 * 2**20
# Log lines left out of the tails that session.log quotes (the step logs keep them).
LOG_NOISE = ("cpu_aot_loader", "Failed to import warp", "Failed to import mujoco_warp")


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


# --- steps ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    name: str
    status: str         # done | timed out | timed out (session budget) | failed (exit N) | failed (...)
    wall_s: float
    rc: int | None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def record(self, call: int) -> dict:
        return {"call": call, "name": self.name, "status": self.status, "wall_s": round(self.wall_s, 1),
                "rc": self.rc}


class Runner:
    """Time, log and subprocesses of one call: `run` one command under a limit and the call's budget,
    `together` several tasks side by side (threads), `background` one that a later task `join`s."""

    def __init__(self, work: pathlib.Path, budget_s: float, grace_s: float):
        self.work = work
        self.runs, self.results, self.logs = work / "runs", work / "results", work / "logs"
        self.budget_s, self.grace_s = budget_s, grace_s
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.interrupted = False
        self.call = 1
        self._lock = threading.Lock()

    # --- time and logging ---

    def remaining(self) -> float:
        return 0.0 if self.interrupted else self.deadline - time.monotonic()

    def log(self, message: str, echo: bool = True) -> None:
        with self._lock:
            if echo:
                print(message, flush=True)
            with open(self.work / "session.log", "a") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def interrupt(self, signum, frame) -> None:
        """Signal handler (SIGTERM, SIGINT): every running step is stopped, then the results gathered."""
        self.interrupted = True
        print(f"received {signal.Signals(signum).name}: stopping the current steps, then gathering results",
              file=sys.stderr, flush=True)

    # --- tasks side by side ---

    def together(self, *tasks: Callable[[], Any]) -> None:
        """Runs the tasks in threads side by side and waits for all; then re-raises the first error."""
        threads = [self.background(task) for task in tasks]
        errors = []
        for thread in threads:
            try:
                self.join(thread)
            except BaseException as error:     # noqa: BLE001 - the others still end first
                errors.append(error)
        if errors:
            raise errors[0]

    def background(self, task: Callable[[], Any]) -> threading.Thread:
        def guarded():
            try:
                task()
            except BaseException as error:      # noqa: BLE001 - re-raised by join in the main thread
                thread.error = error
        thread = threading.Thread(target=guarded, daemon=True)
        thread.error = None
        thread.start()
        return thread

    @staticmethod
    def join(thread: threading.Thread | None) -> None:
        if thread is None:
            return
        while thread.is_alive():    # short waits: the main thread keeps handling signals
            thread.join(0.5)
        if thread.error is not None:
            raise thread.error

    # --- subprocesses ---

    def child_env(self, cache: bool = True, **extra: str) -> dict:
        """The environment of a step: this tree on PYTHONPATH, no preallocation of the device's memory
        (several processes share the one device), the XLA compilation cache under the work folder (a
        resumed run, or a measurement after its warm-up, loads its compiled programs)."""
        env = dict(os.environ)
        paths = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if cache:
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
        grace = min(self.grace_s, limit / 2) if graceful else 0.0
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
                        kill_at = min(kill_at, now + (self.grace_s if graceful else 0.0))
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
        tail = _tail(log_path, 3 if status == "done" else 25)
        with self._lock:
            print(f"  step {name}: {status} in {wall:.1f} s"
                  + ("".join(f"\n    | {line}" for line in tail) if status != "done" else ""), flush=True)
        self.log(f"  step {name}: {status} in {wall:.1f} s, log {log_path}"
                 + "".join(f"\n    | {line}" for line in tail), echo=False)
        return Step(name, status, wall, rc)

    def probe_environment(self) -> dict:
        """jax's version, platform and devices and the versions of the libraries the runs need, read
        by a subprocess; nvidia-smi's GPU line where there is one."""
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
        try:
            done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=self.child_env(cache=False),
                                  capture_output=True, text=True, timeout=180)
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


def _signal(process: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            os.kill(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
