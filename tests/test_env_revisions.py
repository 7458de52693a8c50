"""A run records the revision of its env's definition (`TaskEnv.revision`, RUN/env.json); resuming,
loading or transferring from a run made with another revision is refused with exit code 2 and a
message naming both revisions, before anything compiles or is written."""

import json

import pytest

from envs import env_class
from experiments import humanoid, humanoid_course
from mlsh_jax.loading import ENV_FILE, RunLoadError, check_env_revision, env_record, load_config
from mlsh_jax.resume import ResumeError, find_resume_point


def _old_humanoid_run(tmp_path):
    """A humanoid walk/crawl run directory as a revision-1 run left it: config.json, no env.json."""
    run = tmp_path / "old_walkcrawl"
    run.mkdir()
    config = humanoid.PRESETS["smoke"]()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.csv").write_text("update\n")
    return run, config


def _exit_code(fn, argv) -> int:
    with pytest.raises(SystemExit) as stopped:
        fn(argv)
    return stopped.value.code


def test_the_humanoid_tasks_are_at_revision_2_and_the_others_at_1():
    assert env_class("humanoid_walkcrawl").revision == env_class("humanoid_course").revision == 2
    assert env_class("humanoid_walk").revision == 2
    for name in ("ant_maze", "ant_twowalk", "moving_bandits", "four_rooms"):
        assert env_class(name).revision == 1
    assert env_record("humanoid_walkcrawl") == {"env": "humanoid_walkcrawl", "revision": 2}


def test_a_run_without_an_env_record_is_revision_1(tmp_path):
    run, config = _old_humanoid_run(tmp_path)
    with pytest.raises(RunLoadError) as refused:
        load_config(run)
    message = str(refused.value)
    assert "revision 1 of env 'humanoid_walkcrawl'" in message and "0.25 v" in message
    assert "this code's env is revision 2" in message and "1.25 v" in message
    # The same directory recorded as revision 2 loads; an ant run without a record is revision 1 and loads.
    (run / ENV_FILE).write_text(json.dumps({"env": "humanoid_walkcrawl", "revision": 2}))
    assert load_config(run) == config
    check_env_revision(tmp_path, "ant_maze")


def test_an_unreadable_env_record_is_refused_with_its_expected_form(tmp_path):
    (tmp_path / ENV_FILE).write_text('{"env": "ant_maze"}')
    with pytest.raises(RunLoadError, match='should hold {"env": "ant_maze", "revision": N}'):
        check_env_revision(tmp_path, "ant_maze")


def test_resuming_an_old_humanoid_run_is_refused_and_changes_nothing(tmp_path, capsys):
    run, config = _old_humanoid_run(tmp_path)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    with pytest.raises(ResumeError, match="revision 1 of env 'humanoid_walkcrawl'"):
        find_resume_point(run, config)
    assert _exit_code(humanoid.main, ["--preset", "smoke", "--out", str(run), "--resume"]) == 2
    assert "revision 1 of env 'humanoid_walkcrawl'" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_the_course_refuses_sub_policies_of_an_old_humanoid_run(tmp_path, capsys):
    run, _ = _old_humanoid_run(tmp_path)
    out = tmp_path / "course"
    assert _exit_code(humanoid_course.main, ["--preset", "smoke", "--out", str(out), "--subs-from", str(run)]) == 2
    assert "revision 1 of env 'humanoid_walkcrawl'" in capsys.readouterr().err
    assert not out.exists()
