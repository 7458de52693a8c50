"""The SLURM template requeues a job whose run stalled (exit code 75, or a stall report written during
the job when srun reports another code) and the requeued job resumes; it does not requeue errors, a
run without a checkpoint, or after MAX_REQUEUES. Run by bash with the stand-ins of
`tests/test_cluster_templates.py`, whose fake `python` is replaced here by one that exits with
$FAKE_EXIT after writing what $FAKE_CHECKPOINT / $FAKE_REPORT ask for into --out, next to a fake
`scontrol` that prints its call.
"""

import os

import pytest

from tests.test_cluster_templates import NODES, TASKS_PER_NODE, submit  # noqa: F401  (submit: the fixture)

FAKE_PYTHON = """#!/bin/bash
set -eu
printf '%s\\0' "$@" > "$FAKE_RECORD_DIR/rank$SLURM_PROCID.argv"
env -0 > "$FAKE_RECORD_DIR/rank$SLURM_PROCID.env"
out=""; previous=""
for arg in "$@"; do [ "$previous" = "--out" ] && out=$arg; previous=$arg; done
if [ -n "${FAKE_CHECKPOINT:-}" ]; then mkdir -p "$out/checkpoints/$FAKE_CHECKPOINT"; fi
if [ -n "${FAKE_REPORT:-}" ]; then mkdir -p "$out"; echo stalled > "$out/stall_process$SLURM_PROCID.txt"; fi
exit "${FAKE_EXIT:-0}"
"""

FAKE_SCONTROL = """#!/bin/bash
echo "fake scontrol: $*"
"""


@pytest.fixture
def run_job(submit, tmp_path):  # noqa: F811
    """`submit` with the fake python and scontrol above."""
    for name, text in (("python", FAKE_PYTHON), ("scontrol", FAKE_SCONTROL)):
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    return submit


def out_dir(run_job):
    return run_job.submit_dir / "runs" / "mlsh_jax_ant_maze"


def test_a_stalled_run_is_requeued_and_the_requeued_job_resumes(run_job):
    stalled = run_job(900, FAKE_EXIT="75", FAKE_CHECKPOINT="20")
    assert stalled.returncode == 75, stalled.stderr
    assert "fake scontrol: requeue 900" in stalled.stdout
    assert "the run stalled (exit code 75); requeueing job 900" in stalled.stderr
    assert all("--resume" not in argv for argv in stalled.argv.values())

    requeued = run_job(900, SLURM_RESTART_COUNT="1")
    assert requeued.returncode == 0, requeued.stderr
    assert len(requeued.argv) == NODES * TASKS_PER_NODE
    assert all(argv[-1] == "--resume" for argv in requeued.argv.values())
    assert "scontrol" not in requeued.stdout and "(resuming)" in requeued.stdout


def test_a_stall_report_of_this_job_requeues_whatever_code_srun_reports(run_job):
    """srun ends the other processes once one exits 75, and may then report their code (e.g. 137)."""
    job = run_job(901, FAKE_EXIT="137", FAKE_REPORT="1", FAKE_CHECKPOINT="20")
    assert job.returncode == 137
    assert "fake scontrol: requeue 901" in job.stdout
    assert f"{out_dir(run_job) / 'stall_process0.txt'}" in job.stderr


@pytest.mark.parametrize("code, environment, message", [
    ("1", {}, None),                                                    # an error, not a stall
    ("137", {"OLD_REPORT": "1"}, None),                                 # a report from an earlier job
    ("75", {"NO_CHECKPOINT": "1"}, "stalled before its first checkpoint; not requeued"),
    ("75", {"SLURM_RESTART_COUNT": "3"}, "stalled again after 3 requeues (MAX_REQUEUES=3); not requeued"),
])
def test_no_requeue_for_errors_old_reports_runs_without_checkpoints_or_too_many_requeues(run_job, code, environment,
                                                                                           message):
    out = out_dir(run_job)
    if environment.pop("OLD_REPORT", None):
        out.mkdir(parents=True)
        (out / "stall_process0.txt").write_text("an earlier job's stall")
        os.utime(out / "stall_process0.txt", (1e9, 1e9))
    checkpoint = {} if environment.pop("NO_CHECKPOINT", None) else {"FAKE_CHECKPOINT": "20"}
    job = run_job(902, FAKE_EXIT=code, **checkpoint, **environment)
    assert job.returncode == int(code)
    assert "scontrol" not in job.stdout
    if message:
        assert message in job.stderr
