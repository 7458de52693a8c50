"""The run-time estimate a run prints after its first updates: the median pace of updates 2-4 (the
first compiles) times the updates left, worked out by hand from made-up update times."""

import pytest

from mlsh_jax import metrics_log
from tests.conftest import tiny_config


def test_the_estimate_uses_the_median_pace_after_the_compile(tmp_path, monkeypatch, capsys):
    config = tiny_config(num_updates=64)                  # 2 slots x 100 steps = 200 env steps per update
    clock = iter([0.0, 0.0, 40.0, 46.0, 48.0, 57.0, 59.0])   # start; then updates 1-5 (40 s compile; 6, 2, 9, 2 s)
    monkeypatch.setattr(metrics_log.time, "time", lambda: next(clock))
    log = metrics_log.MetricsLog(tmp_path, config, started=0.0, progress=False, tensorboard=False)
    for update in range(1, 4):
        log.record(update, {})
    assert "measured" not in capsys.readouterr().out          # two timed updates are not enough
    log.record(4, {})
    printed = capsys.readouterr().out
    # Updates 2-4 took 6, 2 and 9 s: median 6 s, 200 / 6 = 33 env steps/s, 60 updates left = 6 min.
    assert "measured over updates 2-4: 33 env steps/s, 6.00 s per update; about 6 min for the 60 updates left" in printed
    log.record(5, {})
    assert "measured" not in capsys.readouterr().out          # once only
    log.close()
