"""The mutation run (`tests/mutations/run.py`): every deliberate bug of `tests/mutations/mutants.py`
must make a default-tier test fail. The default tier checks that every patch still applies to the
code (a moved snippet fails here at once, naming the mutant); the slow tier runs the whole thing."""

import json
import pathlib
import subprocess
import sys

import pytest

from tests.mutations.mutants import MUTANTS, Mutant
from tests.mutations.run import ROOT, PatchError, check_patches

REQUIRED = {"ppo_clip_min_max_swapped", "credit_weights_ignored", "maze_reward_sign_flipped",
            "humanoid_walk_weight_divided_by_5", "macro_reward_not_summed", "gae_no_bootstrap_at_truncation",
            "transfer_statistics_reset", "restore_without_optimizer_state"}


def test_every_mutant_patches_the_code_once_and_names_existing_tests():
    check_patches(ROOT)
    assert REQUIRED <= {mutant.name for mutant in MUTANTS}
    assert len({mutant.name for mutant in MUTANTS}) == len(MUTANTS)
    for mutant in MUTANTS:
        assert mutant.search != mutant.replace and mutant.tests, mutant.name
        for test in mutant.tests:
            path, _, name = test.partition("::")
            source = (ROOT / path).read_text()
            assert not name or f"def {name.split('[')[0]}(" in source, test


def test_a_patch_that_no_longer_applies_stops_the_run_naming_it():
    moved = Mutant("moved_code", "a snippet that is not there", "mlsh_jax/losses.py", "no such line", "x", ("t",))
    with pytest.raises(PatchError, match="mutant 'moved_code': its snippet occurs 0 times in mlsh_jax/losses.py"):
        check_patches(ROOT, MUTANTS + (moved,))


@pytest.mark.slow
def test_the_default_tier_catches_every_mutant(tmp_path):
    report_path = tmp_path / "mutations.json"
    done = subprocess.run([sys.executable, "tests/mutations/run.py", "--out", str(report_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3 * 3600)
    report = json.loads(report_path.read_text())
    assert done.returncode == 0 and not report["missed"] and not report["inconclusive"], done.stdout
    assert sorted(report["caught"]) == sorted(mutant.name for mutant in MUTANTS)
