"""One prepared GPU session: the experiments and measurements worth a short loan of one accelerator,
all in ONE device call (at most 10 minutes a command), each part under its own time limit, resumable,
with the results gathered into at most 8 small files directly under --out.

    python -m benchmarks.gpu_session --out DIR                  # the GPU plan below (refuses a CPU backend)
    python -m benchmarks.gpu_session --out DIR --smoke          # tiny shapes on CPU: every code path
    python -m benchmarks.gpu_session --out DIR --parts a,c      # some parts (letters or names)
    OUT=DIR bash benchmarks/gpu_session.sh                      # on the device machine (wheels, PYTHONPATH)

Parts (each step a subprocess with a time limit, so that one hanging cannot eat the others):

a. `humanoid`: humanoid walk / crawl, MLSH (`python -m experiments.humanoid --no-baseline`) and beside
   it the shared-policy baseline on the same budget (`--baseline-only`), then the pair's summary.json
   and learning curve (`--resume`). Result: task-balanced returns of both, the sub-policies' torso heights.
b. `maze`: ant maze MLSH alone (`python -m experiments.ant_maze --no-baseline`) at 1024 slots, side by
   side with part a. Result: goal reached over slots, the sub-policies' headings.
c. `throughput`: `python -m benchmarks.throughput` at 1024 and 4096 slots for humanoid walk / crawl
   and ant maze (env alone and MLSH, one timed call after two warm-up calls), with peak device memory
   (`peak_device_memory_mb`, from `device.memory_stats()["peak_bytes_in_use"]`; None where the device
   reports none, e.g. CPU). While a and b train, the same commands run once to fill the XLA
   compilation cache (figures discarded); part c then measures with nothing else on the device, and
   its compiles are cache loads.

Every step's process skips preallocating the device's memory (XLA_PYTHON_CLIENT_PREALLOCATE=false):
up to seven share the one device (three training runs; two warm-up commands, each with the process of
its current measurement). The device runs their programs in turn, so their device time adds up.

GPU sizing (one H200). Measured: ant maze MLSH R_ant(256) = 1.215M env steps/s, R_ant(1024) = 2.202M,
the ant maze env alone 3.25M at 1024 slots (docs/results/ant_throughput_h200.json); on a 2-core CPU,
one device, MLSH 5,329 (ant maze) and 6,330 (humanoid walk / crawl) env steps/s, the envs alone 8,652
and 7,526 (docs/results/ant_throughput_cpu_2core.json, docs/results/humanoid_throughput_cpu_2core.json).
The humanoid on the GPU is not measured: the ant's GPU rate scaled by the CPU ratio,

    R_hum(256) = R_ant(256) * 6,330 / 5,329 = 1.215M * 1.188 = ~1.44M env steps/s

One update of 256 slots is 256 x 2000 = 512k env steps (~0.36 s): 200 updates train in
200 * 512k / 1.44M = ~71 s per run; the shared-policy baseline is assumed as fast as MLSH (on the CPU
the two humanoid runs of 1019 updates took 5527 s and 5434 s). Each run: ~60 s of compile, ~30 s of
process start and analysis. Part b: 1024 slots x 30 updates = 61M env steps, 30 * 2.048M / 2.20M =
~28 s of training + ~40 s of compile (measured) + ~30 s. The warm-up's device time: 3 calls per
measurement (2 warm-up, 1 timed) of B x 1000 env steps (env alone) and B x 2000 (an MLSH update) at
the 1024-slot rates (humanoid: the CPU ratios again; 4096 slots assumed no faster): ~36 s for the
four entries. Parts a, b and the warm-up side by side: 60 + 30 + (2 * 71 + 28 + 36) = ~296 s of
training, then ~30 s for the pair's summary: part a ~326 s. Part c: per entry ~27 s (three process
starts, two cache loads) + its ~9 s of calls (~4 at 1024, ~14-15 at 4096 slots): ~144 s.
With ~25 s of setup (wheels on a fresh machine, the environment probe): ~495 s of the 560 s budget;
the limits (`GPU_PLAN`, printed before the session starts) add up to 30 + 360 + 160 = 550 s. One
after another, with part c compiling its own programs (~70 s per humanoid entry, ~46 s per ant
entry), the same sizes would take 25 + 2 * (60 + 30 + 71) + 98 + 376 = ~820 s: two calls. Training
side by side overlaps the compiles and process starts, which are most of the time; the device time
(~250 s) does not shrink.

Time limits: each part and step stops at its limit: training steps first get SIGTERM (the run saves a
checkpoint after the current update and exits), then SIGKILL after a grace period. When the training
limit stops part a or b (the estimate was too optimistic), the part finishes at the updates done (for
part a the most of its two runs: the other catches up in the summary step, paired) and is reported
as truncated. The whole call stops within --budget-s (the device tool allows 10 minutes a command):
a part cut by that budget is resumed by the next call, which skips complete parts ("skipped: already
done"), resumes runs that have a checkpoint (`--resume`) and throughput entries not yet measured. Run
directories, checkpoints, logs and the XLA compilation cache live under --work (default
/tmp/gpu_session_work), not under --out.

Files under --out (at most 8, written after every part): humanoid.json, maze.json, throughput.json
(each with the part's status, wall time, plan, key numbers and the environment), humanoid_metrics.csv,
humanoid_baseline_metrics.csv, maze_metrics.csv, humanoid_learning_curve.png and session.log.

This process never imports JAX (on a GPU it would take the device's memory from the runs it starts):
jax's version, platform and devices are read by a subprocess and printed first. The machinery is in
benchmarks/session_runner.py (subprocesses, limits, files) and benchmarks/session_parts.py (the parts).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import signal
import sys
from typing import Any

from benchmarks.session_parts import Parts
from benchmarks.session_runner import gather_files, read_json, write_json

# Measured rates (env steps/s) behind the GPU plan (see the module docstring).
ANT_MLSH_GPU = {256: 1_215_210.0, 1024: 2_202_403.0}       # docs/results/ant_throughput_h200.json
ANT_ENV_GPU_1024 = 3_250_065.0                              # the ant maze env alone, same file
ANT_MLSH_CPU, ANT_ENV_CPU = 5_329.0, 8_652.0                # docs/results/ant_throughput_cpu_2core.json
HUMANOID_MLSH_CPU, HUMANOID_ENV_CPU = 6_330.0, 7_526.0      # docs/results/humanoid_throughput_cpu_2core.json
HUMANOID_MLSH_GPU_256 = ANT_MLSH_GPU[256] * HUMANOID_MLSH_CPU / ANT_MLSH_CPU   # ~1.44M, estimated
# (family, kind) -> env steps/s at 1024 slots and more (4096 assumed no faster); humanoid estimated.
GPU_RATES = {("ant", "env"): ANT_ENV_GPU_1024, ("ant", "mlsh"): ANT_MLSH_GPU[1024],
             ("humanoid", "env"): ANT_ENV_GPU_1024 * HUMANOID_ENV_CPU / ANT_ENV_CPU,
             ("humanoid", "mlsh"): ANT_MLSH_GPU[1024] * HUMANOID_MLSH_CPU / ANT_MLSH_CPU}
STEPS_PER_SLOT = 2000                                       # D of the paper settings: one MLSH update
ENV_STEPS_PER_SLOT_CALL = 1000                              # one call of benchmarks.throughput's env alone
COMPILE_S = {"humanoid": 60.0, "maze": 40.0}                # per run; maze measured, humanoid assumed
PROCESS_S = 30.0                                            # per run: start, restore, analysis, figures
THROUGHPUT_ENTRY_S = 27.0       # per entry from the warm cache: 3 process starts, 2 cache loads, set-up
THROUGHPUT_COMPILE_S = {"humanoid": 70.0, "ant": 46.0}      # per entry without the warm-up: env + MLSH
SETUP_S = 25.0                                              # wheels (fresh machine), environment probe

PART_NAMES = {"a": "humanoid", "b": "maze", "c": "throughput"}
OUTPUT_FILES = ("humanoid.json", "maze.json", "throughput.json", "humanoid_metrics.csv",
                "humanoid_baseline_metrics.csv", "maze_metrics.csv", "humanoid_learning_curve.png",
                "session.log")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and time limits of one session (`GPU_PLAN` or `SMOKE_PLAN`). Parts a and b run side by
    side, so the limits that add up are setup_s + max(humanoid_limit_s, maze_limit_s) +
    throughput_limit_s (printed with the estimates before a session starts)."""

    mode: str
    humanoid_preset: str
    humanoid_slots: int | None          # None: the preset's
    humanoid_updates: int
    humanoid_limit_s: float             # the whole part
    humanoid_mlsh_limit_s: float        # its training (MLSH and the baseline beside it); the summary gets the rest
    maze_preset: str
    maze_slots: int | None
    maze_updates: int
    maze_limit_s: float
    maze_mlsh_limit_s: float
    throughput_entries: tuple[tuple[str, int], ...]     # (family, slots) in order of value
    throughput_kinds: tuple[tuple[str, tuple[str, ...]], ...]
    throughput_repeats: int
    throughput_entry_limit_s: float
    throughput_limit_s: float           # the whole of part c (after its warm-up has ended)
    budget_s: float                     # the whole call
    grace_s: float                      # SIGTERM -> SIGKILL
    min_start_s: float                  # no part or entry starts with less time than this left
    setup_s: float = 0.0                # reserved before this process starts measuring (wheels, probe)
    warm_throughput: bool = True        # part c's commands fill the compilation cache while a and b train
    humanoid_sets: tuple[str, ...] = ()
    maze_sets: tuple[str, ...] = ()
    humanoid_module: str = "experiments.humanoid"
    maze_module: str = "experiments.ant_maze"
    throughput_module: str = "benchmarks.throughput"

    def kinds(self, family: str) -> tuple[str, ...]:
        return dict(self.throughput_kinds).get(family, ())


THROUGHPUT_KINDS = (("humanoid", ("humanoid_walkcrawl", "mlsh_humanoid_walkcrawl")),
                    ("ant", ("ant_maze", "mlsh_ant_maze")))

# The GPU plan's time budget, from the start of benchmarks/gpu_session.sh (the machine's start not
# included): setup 30 + parts a and b side by side 360 + part c 160 = 550 s <= 560 s.
GPU_PLAN = Plan(
    mode="gpu",
    humanoid_preset="paper", humanoid_slots=256, humanoid_updates=200,
    humanoid_limit_s=360, humanoid_mlsh_limit_s=325,
    maze_preset="paper", maze_slots=1024, maze_updates=30, maze_limit_s=360, maze_mlsh_limit_s=325,
    throughput_entries=(("humanoid", 1024), ("humanoid", 4096), ("ant", 4096), ("ant", 1024)),
    throughput_kinds=THROUGHPUT_KINDS, throughput_repeats=1, throughput_entry_limit_s=120,
    throughput_limit_s=160, budget_s=560, grace_s=20, min_start_s=30, setup_s=30,
)

# Tiny shapes for a CPU: the experiments' smoke presets (2 slots x 2 updates), throughput at 2 and 4
# slots with 1 repeat (the humanoid's env only: its MLSH measurement is the ant's code path with a
# longer compile), no warm-up (on a CPU it would take the cores from the training beside it). Limits
# are generous: compiles take minutes on a busy 2-core CPU, more with parts a and b side by side.
SMOKE_PLAN = Plan(
    mode="smoke",
    humanoid_preset="smoke", humanoid_slots=None, humanoid_updates=2,
    humanoid_limit_s=3000, humanoid_mlsh_limit_s=2400,
    maze_preset="smoke", maze_slots=None, maze_updates=2, maze_limit_s=3000, maze_mlsh_limit_s=2400,
    throughput_entries=(("humanoid", 2), ("ant", 4)),
    throughput_kinds=(("humanoid", ("humanoid_walkcrawl",)), ("ant", ("ant_maze", "mlsh_ant_maze"))),
    throughput_repeats=1, throughput_entry_limit_s=1200, throughput_limit_s=2400,
    budget_s=7200, grace_s=120, min_start_s=0, warm_throughput=False,
)


def estimate_s(plan: Plan, parts: list[str] | tuple[str, ...] = tuple(PART_NAMES.values())) -> dict[str, float]:
    """Estimated seconds of each part of a GPU plan on one H200 (see the module docstring): the device
    time of everything side by side with part a (part b, part c's warm-up) counts in part a's."""
    def train_s(slots: int | None, updates: int, rate: float) -> float:
        return (slots or 0) * STEPS_PER_SLOT * updates / rate

    calls = 2 + plan.throughput_repeats
    entries = [(f, b) for f, b in plan.throughput_entries if plan.kinds(f)]
    calls_s = {(f, b): calls * b * (ENV_STEPS_PER_SLOT_CALL / GPU_RATES[f, "env"]
                                    + STEPS_PER_SLOT / GPU_RATES[f, "mlsh"]) for f, b in entries}
    maze_rate = ANT_MLSH_GPU[1024] if (plan.maze_slots or 0) >= 1024 else ANT_MLSH_GPU[256]
    maze_train = train_s(plan.maze_slots, plan.maze_updates, maze_rate)
    warm = plan.warm_throughput and "throughput" in parts
    beside = (maze_train if "maze" in parts else 0.0) + (sum(calls_s.values()) if warm else 0.0)
    return {
        "setup": SETUP_S,
        "humanoid": round(COMPILE_S["humanoid"] + 2 * PROCESS_S + beside
                          + 2 * train_s(plan.humanoid_slots, plan.humanoid_updates, HUMANOID_MLSH_GPU_256)),
        "maze": round(COMPILE_S["maze"] + PROCESS_S + maze_train),
        "throughput": round(sum(THROUGHPUT_ENTRY_S + s + (0.0 if warm else THROUGHPUT_COMPILE_S[f])
                                for (f, b), s in calls_s.items())),
    }


def plan_lines(plan: Plan, parts: list[str]) -> list[str]:
    """The plan's parts with their sizes, estimates (GPU plan) and limits, and the sums: printed
    before a session starts. Parts a and b run side by side: the larger limit of the two counts."""
    estimates = estimate_s(plan, parts) if plan.mode != "smoke" else {}
    rows = [("setup", "wheels (fresh machine), environment probe", plan.setup_s, "reserved")]
    if "humanoid" in parts:
        rows.append(("a humanoid", f"{_slots(plan.humanoid_slots, plan.humanoid_preset)} x {plan.humanoid_updates} "
                     "updates, MLSH beside shared", plan.humanoid_limit_s,
                     f"training {plan.humanoid_mlsh_limit_s:.0f} s"))
    if "maze" in parts:
        rows.append(("b maze", f"{_slots(plan.maze_slots, plan.maze_preset)} x {plan.maze_updates} updates, MLSH",
                     plan.maze_limit_s, f"training {plan.maze_mlsh_limit_s:.0f} s, beside a"))
    if "throughput" in parts:
        rows.append(("c throughput", f"{len(plan.throughput_entries)} entries, {plan.throughput_repeats} timed "
                     f"call(s){', cache warmed beside a, b' if plan.warm_throughput else ''}",
                     plan.throughput_limit_s, f"{plan.throughput_entry_limit_s:.0f} s per entry"))
    lines = [f"plan ({plan.mode} plan): part, size, estimate, limit"]
    for label, what, limit, note in rows:
        estimate = estimates.get(label.split()[-1])
        shown = f"{estimate:4.0f} s" if estimate is not None else "     -"
        lines.append(f"  {label:<13} {what:<55} {shown}  {limit:5.0f} s ({note})")

    def total(values: dict) -> float:    # setup + the longer of a and b (side by side) + c
        side = [values[n] for n in ("humanoid", "maze") if n in parts]
        return values["setup"] + max(side, default=0.0) + (values["throughput"] if "throughput" in parts else 0.0)

    limits = total({"setup": plan.setup_s, "humanoid": plan.humanoid_limit_s, "maze": plan.maze_limit_s,
                    "throughput": plan.throughput_limit_s})
    fits = limits <= plan.budget_s
    estimated = f"estimate {total(estimates):.0f} s, " if estimates else ""
    lines.append(f"  sum (a and b side by side count once): {estimated}"
                 f"limits {limits:.0f} s {'<=' if fits else '>'} budget {plan.budget_s:.0f} s"
                 + ("" if fits else ": the last parts get what is left"))
    return lines


def _slots(slots: int | None, preset: str) -> str:
    return f"{slots} slots" if slots else f"{preset} preset's slots"


class Session(Parts):
    """One call: runs the selected parts (a and b side by side, then c), then gathers the files into `out`."""

    def __init__(self, out: pathlib.Path, work: pathlib.Path, plan: Plan, parts: list[str],
                 throughput_kinds: list[str] | None = None, allow_cpu: bool = False, probe: bool = True,
                 spent_s: float = 0.0):
        super().__init__(work.resolve() / plan.mode, plan.budget_s - spent_s, plan.grace_s)
        self.spent_s = spent_s
        self.out, self.plan, self.parts = out.resolve(), plan, parts
        self.kinds_filter = throughput_kinds
        self.allow_cpu = allow_cpu
        self.probe = probe
        self.environment: dict = {}
        self.estimates = estimate_s(plan, parts) if plan.mode != "smoke" else {}

    def main(self) -> int:
        for directory in (self.out, self.runs, self.results, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        calls = read_json(self.work / "calls.json") or {"calls": 0}
        self.call = calls["calls"] + 1
        write_json(self.work / "calls.json", {"calls": self.call})
        previous = {sig: signal.signal(sig, self.interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.log(f"gpu_session call {self.call} ({self.plan.mode} plan, parts {','.join(self.parts)}, budget "
                     f"{self.plan.budget_s:.0f} s, {self.spent_s:.0f} s of it spent before this process; work "
                     f"{self.work})")
            for line in plan_lines(self.plan, self.parts):
                self.log(line)
            self.environment = self.probe_environment() if self.probe else {"probe": "skipped"}
            env = self.environment
            self.log(f"jax {env.get('jax', '?')}, platform {env.get('platform', '?')}, devices "
                     f"{env.get('devices', '?')} ({env.get('device_kind', '?')}); brax {env.get('brax', '?')}")
            if "jax_error" in env or "probe_error" in env:
                self.log(f"environment problem: {env.get('jax_error') or env.get('probe_error')}")
            if self.plan.mode != "smoke" and env.get("platform") == "cpu" and not self.allow_cpu:
                self.log("error: the GPU plan on a CPU backend would run for hours; use --smoke, or --allow-cpu")
                return 2
            self.run_parts()
        finally:
            self.interrupted = True     # stops whatever still runs (after an error), then gathers
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.gather()
        return 0

    def run_parts(self) -> None:
        """Parts a and b side by side (with part c's warm-up in the background), then part c."""
        side = [name for name in ("humanoid", "maze") if name in self.parts]
        pending = [name for name in side if not (read_json(self.results / f"{name}.json") or {}).get("complete")]
        warm = None
        if "throughput" in self.parts and self.plan.warm_throughput and pending:
            window = max(getattr(self.plan, f"{name}_limit_s") for name in pending)
            warm = self.background(lambda: self.warm_throughput(min(window, self.remaining())))
        try:
            self.together(*[lambda name=name: (getattr(self, f"part_{name}")(), self.gather()) for name in side])
            if "throughput" in self.parts:
                self.part_throughput(warm)
        finally:
            if warm is not None and warm.is_alive():
                self.interrupted = True
                warm.join()

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
        with self._lock:
            return gather_files(sources, self.out)


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
    if args.no_warm:
        changes["warm_throughput"] = False
    for item in args.limit:
        field, _, seconds = item.partition("=")
        field = f"{field.strip()}_limit_s" if field.strip() != "grace" else "grace_s"
        if field not in {f.name for f in dataclasses.fields(Plan)}:
            raise SystemExit(f"error: unknown --limit {item!r}; names: humanoid, humanoid_mlsh, maze, maze_mlsh, "
                             "throughput, throughput_entry, grace")
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
                        help="seconds this call may take in all (default: 560 on the GPU plan, 7200 smoke)")
    parser.add_argument("--spent-s", type=float, default=0.0,
                        help="seconds of the budget spent before this process (gpu_session.sh: the wheel install)")
    parser.add_argument("--humanoid-slots", type=int, default=None)
    parser.add_argument("--humanoid-updates", type=int, default=None)
    parser.add_argument("--maze-slots", type=int, default=None)
    parser.add_argument("--maze-updates", type=int, default=None)
    parser.add_argument("--humanoid-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="extra --set of a new humanoid run (e.g. master.learning_rate=0.001)")
    parser.add_argument("--maze-set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--throughput-slots", type=int, nargs="+", default=None,
                        help="slot counts of part c (default: 1024 4096; smoke: 2 4)")
    parser.add_argument("--throughput-kinds", nargs="+", default=None,
                        help="only these kinds in part c (e.g. ant_maze); families left without any are skipped")
    parser.add_argument("--no-warm", action="store_true",
                        help="part c compiles its programs itself (no warm-up beside parts a and b)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=SECONDS",
                        help="a time limit: humanoid, humanoid_mlsh, maze, maze_mlsh, throughput, "
                             "throughput_entry or grace")
    parser.add_argument("--allow-cpu", action="store_true", help="run the GPU plan even on a CPU backend")
    args = parser.parse_args(argv)
    plan = build_plan(args)
    session = Session(args.out, args.work, plan, args.parts, throughput_kinds=args.throughput_kinds,
                      allow_cpu=args.allow_cpu, spent_s=args.spent_s)
    return session.main()


if __name__ == "__main__":
    sys.exit(main())
