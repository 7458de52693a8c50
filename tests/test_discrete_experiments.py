"""Key-door and four rooms experiments end to end (smoke presets): run contract, baseline and the
sub-policy behaviour summaries."""

import json

import pytest

from envs.four_rooms import ROOMS
from experiments import four_rooms, key_door


@pytest.mark.parametrize("module", [key_door, four_rooms], ids=["key_door", "four_rooms"])
def test_smoke_run_writes_the_contract_and_a_behaviour_summary(module, tmp_path):
    out = tmp_path / "run"
    summary = module.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png",
                 "baseline_shared/summary.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "summary.json").read_text())
    assert saved["updates"] == 3 and "baseline_shared" in saved
    config = module.PRESETS["smoke"]()
    if module is key_door:
        behaviour = saved["subpolicy_behaviour"]
        assert len(behaviour) == config.num_subpolicies == 3
        for entry in behaviour.values():
            assert 0 <= entry["picks_up_key"] <= 1 and len(entry["ends_near_door"]) == 2
    else:
        rooms = saved["subpolicy_rooms"]
        assert len(rooms) == config.num_subpolicies == 4
        for fractions in rooms.values():
            assert list(fractions) == list(ROOMS) and sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["mean_return"] == saved["mean_return"]


def test_paper_settings_are_the_papers():
    config = four_rooms.PRESETS["paper"]()
    assert (config.episode_length, config.macro_duration, config.num_subpolicies, config.warmup_updates,
            config.joint_updates, config.num_slots, config.steps_per_slot) == (100, 25, 4, 20, 30, 10, 2000)
