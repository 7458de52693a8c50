"""The mutation run: applies each deliberate bug of `tests/mutations/mutants.py` to a scratch copy of
the working tree and checks that the default tier's tests named for it fail.

    python tests/mutations/run.py --out docs/results/mutations.json [--only NAME ...]

First the named tests run on the unchanged copy (they must pass there, else a failure under a
mutant proves nothing); then, per mutant, the copy is patched, its tests run in one pytest process,
and the file is restored. A mutant is *caught* when at least one of its tests fails. A patch whose
snippet does not occur exactly once in its file stops the run before anything is tested, naming
the mutant (exit 2). Exit 0 when every mutant is caught, 1 otherwise. The report (JSON) lists each
mutant's result, the tests that failed and the time taken.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.mutations.mutants import MUTANTS, Mutant  # noqa: E402

TEST_TIMEOUT_S = 1800


class PatchError(RuntimeError):
    """A mutant's snippet does not occur exactly once in its file (the code moved)."""


def patched(mutant: Mutant, text: str) -> str:
    """`text` with the mutant's snippet replaced; PatchError naming the mutant unless it occurs once."""
    count = text.count(mutant.search)
    if count != 1:
        raise PatchError(f"mutant {mutant.name!r}: its snippet occurs {count} times in {mutant.path} "
                         f"(expected once; the code moved: update tests/mutations/mutants.py): {mutant.search!r}")
    return text.replace(mutant.search, mutant.replace)


def check_patches(root: pathlib.Path, mutants=MUTANTS) -> None:
    """Raises PatchError for the first mutant whose patch does not apply to the tree at `root`."""
    for mutant in mutants:
        patched(mutant, (root / mutant.path).read_text())


def scratch_copy(destination: pathlib.Path) -> pathlib.Path:
    """Copies the working tree's files (tracked and untracked, not ignored) to `destination`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_tests(copy: pathlib.Path, tests, env: dict[str, str]) -> tuple[int, list[str], float]:
    """Runs `tests` in the copy in one pytest process: (exit code, failed node ids, seconds)."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rf",
                           *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", done.stdout, flags=re.MULTILINE)))
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pytest exited {done.returncode} on {tests}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.returncode, failed, time.time() - started


def copy_environment(copy: pathlib.Path, cache: pathlib.Path) -> dict[str, str]:
    """The environment the copy's tests run in: its own packages first, one compilation cache."""
    env = dict(os.environ, PYTHONPATH=str(copy), JAX_COMPILATION_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([sys.executable, "-c", "import envs, mlsh_jax; print(mlsh_jax.__file__, envs.__file__)"],
                           cwd=copy, env=env, check=True, capture_output=True, text=True).stdout.split()
    if not all(pathlib.Path(path).resolve().is_relative_to(copy.resolve()) for path in where):
        raise RuntimeError(f"the scratch copy's tests would import {where}, not the copy in {copy}")
    return env


def mutation_run(mutants=MUTANTS) -> dict:
    """Runs every mutant; returns the report."""
    check_patches(ROOT, mutants)
    started = time.time()
    # The copy is of the working tree: what differed from the commit when it was taken.
    uncommitted = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.splitlines()
    with tempfile.TemporaryDirectory(prefix="mlsh_jax_mutants_") as scratch:
        copy = scratch_copy(pathlib.Path(scratch) / "tree")
        env = copy_environment(copy, pathlib.Path(scratch) / "xla_cache")
        targets = sorted({test for mutant in mutants for test in mutant.tests})
        print(f"baseline: {len(targets)} tests on the unchanged copy", flush=True)
        _, baseline_failed, baseline_s = run_tests(copy, targets, env)
        results = []
        for mutant in mutants:
            path = copy / mutant.path
            original = path.read_text()
            path.write_text(patched(mutant, original))
            try:
                code, failed, seconds = run_tests(copy, mutant.tests, env)
            finally:
                path.write_text(original)
            broken_before = [t for t in baseline_failed if any(t == n or t.startswith(n + "::") or
                                                               t.startswith(n + "[") for n in mutant.tests)]
            result = "inconclusive" if broken_before else ("caught" if code == 1 else "missed")
            results.append({"name": mutant.name, "bug": mutant.bug, "path": mutant.path, "tests": list(mutant.tests),
                            "result": result, "failed_tests": failed, "seconds": round(seconds, 1)})
            print(f"{mutant.name}: {result} ({', '.join(failed) or 'no test failed'}; {seconds:.0f} s)", flush=True)
    return {
        "command": "python tests/mutations/run.py",
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "uncommitted_files": uncommitted,
        "baseline": {"tests": len(targets), "failed": baseline_failed, "seconds": round(baseline_s, 1)},
        "mutants": results,
        "caught": [r["name"] for r in results if r["result"] == "caught"],
        "missed": [r["name"] for r in results if r["result"] == "missed"],
        "inconclusive": [r["name"] for r in results if r["result"] == "inconclusive"],
        "wall_s": round(time.time() - started, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="write the report (JSON) here")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    args = parser.parse_args(argv)
    names = {mutant.name for mutant in MUTANTS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"unknown mutants {unknown}; known: {', '.join(sorted(names))}")
    chosen = [mutant for mutant in MUTANTS if not args.only or mutant.name in args.only]
    try:
        report = mutation_run(chosen)
    except PatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"caught {len(report['caught'])} of {len(chosen)}; missed: {report['missed'] or 'none'}; "
          f"inconclusive (a test failed before any mutation): {report['inconclusive'] or 'none'}")
    return 0 if len(report["caught"]) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
