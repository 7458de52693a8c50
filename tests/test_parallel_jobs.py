"""The job pool that runs independent experiment commands side by side (`experiments.parallel`)."""

import json

import pytest

from experiments.parallel import Job, JobsFailed, chain_costs, run_jobs


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


def test_a_job_starts_after_the_jobs_it_needs_and_is_skipped_when_one_fails(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text("[]")
    bad.write_text("{not json")
    # "late" is the cheapest job and needs "first"; two workers are free for it from the start.
    jobs = [Job("late", "json.tool", (str(good),), cost=0.1, after=("first",)),
            Job("first", "json.tool", (str(good),), cost=0.2),
            Job("broken", "json.tool", (str(bad),), cost=5.0),
            Job("needs_broken", "json.tool", (str(good),), cost=9.0, after=("broken", "not_in_this_call"))]
    with pytest.raises(JobsFailed) as failure:
        run_jobs(jobs, workers=2, log_dir=tmp_path / "logs")
    assert "needs_broken (not started: needs broken)" in str(failure.value)
    assert not (tmp_path / "logs" / "needs_broken.log").exists()
    printed = capsys.readouterr().out
    assert printed.index("[first: done") < printed.index("[late: started")


def test_the_longest_chain_of_work_goes_first_and_cycles_are_refused(tmp_path):
    jobs = [Job("big", "m", (), cost=5.0), Job("small", "m", (), cost=1.0),
            Job("after_small", "m", (), cost=10.0, after=("small",))]
    assert chain_costs(jobs) == {"big": 5.0, "small": 11.0, "after_small": 10.0}
    with pytest.raises(ValueError, match="cycle"):
        chain_costs([Job("a", "m", (), after=("b",)), Job("b", "m", (), after=("a",))])
