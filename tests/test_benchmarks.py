"""The throughput benchmark's interleaved timing, on fake env calls of known duration."""

import time

import pytest

from benchmarks import brax_measures, throughput


def test_interleaved_timing_takes_turns_and_divides_steps_by_each_kinds_own_time(monkeypatch):
    order, spent = [], {"fast": [], "slow": []}

    def fake_env_call(kind, num_slots):
        seconds, steps = {"fast": (0.01, 1000), "slow": (0.03, 500)}[kind]

        def call():
            order.append(kind)
            start = time.perf_counter()
            time.sleep(seconds)
            spent[kind].append(time.perf_counter() - start)
            return 0
        return call, steps * num_slots

    monkeypatch.setattr(brax_measures, "env_call", fake_env_call)
    rates = brax_measures.measure_interleaved(["fast", "slow"], num_slots=2, rounds=4)
    # Two warm-up calls each, then one call each per round, in turn.
    assert order == ["fast", "fast", "slow", "slow"] + ["fast", "slow"] * 4
    # Each kind's rate: its steps over the time its own timed calls took (the warm-ups excluded).
    assert rates["fast"] == pytest.approx(4 * 2000 / sum(spent["fast"][2:]), rel=0.1)
    assert rates["slow"] == pytest.approx(4 * 1000 / sum(spent["slow"][2:]), rel=0.1)
    assert rates["fast"] <= 200_000 and rates["slow"] <= 1000 / 0.03      # sleep never undershoots


def test_a_negative_number_of_rounds_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--family", "humanoid", "--interleaved", "-1"])
    assert exit_info.value.code == 2
    assert "--interleaved takes a number of rounds >= 1" in capsys.readouterr().err
