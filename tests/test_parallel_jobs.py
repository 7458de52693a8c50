"""The job pool that runs independent experiment commands side by side (`experiments.parallel`)."""

import json

import pytest

from experiments.parallel import Job, JobsFailed, run_jobs


def test_jobs_run_to_their_end_with_logs_and_a_failure_is_named(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"a": 1}))
    bad.write_text("{not json")
    jobs = [Job("ok/first", "json.tool", (str(good),), cost=1.0),
            Job("broken", "json.tool", (str(bad),), cost=3.0),
            Job("ok/second", "json.tool", (str(good),), cost=2.0)]
    with pytest.raises(JobsFailed, match="broken") as failure:
        run_jobs(jobs, workers=2, log_dir=tmp_path / "logs")
    assert "ok/" not in str(failure.value)
    for name in ("ok/first", "ok/second"):          # the others still ran, each with its own log
        assert json.loads((tmp_path / "logs" / f"{name}.log").read_text()) == {"a": 1}
    assert (tmp_path / "logs" / "broken.log").read_text()


def test_wall_times_for_every_job_and_bad_arguments_refused(tmp_path):
    good = tmp_path / "good.json"
    good.write_text("[]")
    wall = run_jobs([Job(f"j{i}", "json.tool", (str(good),)) for i in range(3)], workers=1, log_dir=tmp_path)
    assert set(wall) == {"j0", "j1", "j2"} and all(t >= 0 for t in wall.values())
    with pytest.raises(ValueError, match="workers"):
        run_jobs([], workers=0, log_dir=tmp_path)
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("x", "json.tool", ()), Job("x", "json.tool", ())], workers=1, log_dir=tmp_path)
