"""The job templates in cluster/, run for real by bash with stand-ins for the cluster's tools.

SLURM: `bash cluster/slurm_gpu.sbatch` runs with the SLURM_* environment sbatch would give it for its
own #SBATCH directives (2 nodes x 8 tasks), a fake `srun` on PATH that starts the remaining command
once per rank with the variables a real srun sets (SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID,
SLURM_STEP_*) and CUDA_VISIBLE_DEVICES as SLURM's GPU binding sets it, and a fake `python` that
records its argv and environment. Each rank's GPU is then worked out by JAX's own SLURM detection
(`jax._src.clusters.ClusterEnv.auto_detect_unset_distributed_params`, what
`jax.distributed.initialize()` calls when `--distributed` passes no coordinator) and must be one the
rank can see. Cloud TPU: `bash cluster/tpu_pod.sh` with a fake `gcloud` that records its calls.
Nothing here compiles or starts JAX's backend.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from unittest import mock

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SBATCH = ROOT / "cluster" / "slurm_gpu.sbatch"
TPU_POD = ROOT / "cluster" / "tpu_pod.sh"
NODES, TASKS_PER_NODE = 2, 8
NODELIST = "gpu[017-018]"
HOSTS = ["gpu017", "gpu018"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the templates are bash scripts")

# srun as SLURM runs a job step: one task per rank, block distribution over the nodes, the step's
# variables set, and the GPUs of each node bound to its tasks by --gpu-bind (default: none, unless
# --gpus-per-task was requested, which implies --gpu-bind=per_task:<gpus per task>).
FAKE_SRUN = f"""#!{sys.executable}
import os, re, subprocess, sys
args = sys.argv[1:]
opts = {{}}
while args and args[0].startswith("-"):
    key, _, value = args.pop(0).partition("=")
    opts[key] = value
env = dict(os.environ)
nodes = int(env["SLURM_JOB_NUM_NODES"])
ntasks = int(env["SLURM_NTASKS"])
per_node = ntasks // nodes
prefix, first, last = re.fullmatch(r"(\\w+)\\[(\\d+)-(\\d+)\\]", env["SLURM_JOB_NODELIST"]).groups()
hosts = [f"{{prefix}}{{i:0{{len(first)}}d}}" for i in range(int(first), int(last) + 1)]
assert len(hosts) == nodes, (hosts, nodes)
per_task = env.get("SLURM_GPUS_PER_TASK")
per_node_gpus = env.get("SLURM_GPUS_PER_NODE")
node_gpus = (int(per_node_gpus.split(":")[-1]) if per_node_gpus
             else int(per_task.split(":")[-1]) * per_node if per_task else 0)
bind = opts.get("--gpu-bind") or env.get("SLURM_GPU_BIND") or (f"per_task:{{per_task}}" if per_task else "none")
for rank in range(ntasks):
    node, local = divmod(rank, per_node)
    task = dict(env, SLURM_PROCID=str(rank), SLURM_LOCALID=str(local), SLURM_NODEID=str(node),
                SLURMD_NODENAME=hosts[node], SLURM_STEP_ID="0", SLURM_STEP_NODELIST=env["SLURM_JOB_NODELIST"],
                SLURM_STEP_NUM_NODES=str(nodes), SLURM_STEP_NUM_TASKS=str(ntasks),
                SLURM_STEP_TASKS_PER_NODE=f"{{per_node}}(x{{nodes}})", SLURM_NTASKS=str(ntasks))
    task.pop("CUDA_VISIBLE_DEVICES", None)
    if node_gpus:
        if bind.split(",")[-1] == "none":
            gpus = range(node_gpus)
        elif bind.startswith("per_task:"):
            k = int(bind.split(":")[1])
            gpus = range(local * k, local * k + k)
        else:
            sys.exit(f"fake srun: --gpu-bind={{bind}} is not emulated")
        task["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    code = subprocess.call(args, env=task)
    if code:
        sys.exit(code)
"""

FAKE_PYTHON = """#!/bin/bash
set -eu
printf '%s\\0' "$@" > "$FAKE_RECORD_DIR/rank$SLURM_PROCID.argv"
env -0 > "$FAKE_RECORD_DIR/rank$SLURM_PROCID.env"
"""

FAKE_GCLOUD = """#!/bin/bash
set -eu
n=$(ls "$FAKE_RECORD_DIR" | wc -l)
printf '%s\\0' "$@" > "$FAKE_RECORD_DIR/call$n"
"""


def sbatch_directives(script: pathlib.Path) -> dict[str, str]:
    """The #SBATCH options of `script`, read as sbatch does: up to the first command."""
    options = {}
    for line in script.read_text(encoding="utf-8").splitlines()[1:]:
        if line.startswith("#SBATCH"):
            key, _, value = line.split()[1].partition("=")
            options[key] = value
        elif line.strip() and not line.startswith("#"):
            break
    return options


def sbatch_environment(options: dict[str, str], job_id: int, submit_dir: pathlib.Path) -> dict[str, str]:
    """The SLURM_* variables of the batch script's environment, as sbatch sets them for `options`."""
    nodes = int(options.get("--nodes", 1))
    per_node = int(options["--ntasks-per-node"])
    env = {"SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NAME": options["--job-name"],
           "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NNODES": str(nodes), "SLURM_JOB_NODELIST": NODELIST,
           "SLURM_NODELIST": NODELIST, "SLURM_SUBMIT_DIR": str(submit_dir), "SLURM_NTASKS": str(nodes * per_node),
           "SLURM_NPROCS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node),
           "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})", "SLURMD_NODENAME": HOSTS[0], "SLURM_NODEID": "0",
           "SLURM_CPUS_PER_TASK": options.get("--cpus-per-task", "1")}
    for option, variable in (("--gpus-per-node", "SLURM_GPUS_PER_NODE"), ("--gpus-per-task", "SLURM_GPUS_PER_TASK"),
                             ("--gpu-bind", "SLURM_GPU_BIND")):
        if option in options:
            env[variable] = options[option]
    return env


def read_nul(path: pathlib.Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


class Job:
    """One run of the batch script: its exit status, output and each rank's argv and environment."""

    def __init__(self, done: subprocess.CompletedProcess, records: pathlib.Path):
        self.returncode, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr
        ranks = sorted(int(p.stem[4:]) for p in records.glob("rank*.argv"))
        self.argv = {r: read_nul(records / f"rank{r}.argv") for r in ranks}
        self.env = {r: dict(item.split("=", 1) for item in read_nul(records / f"rank{r}.env")) for r in ranks}


@pytest.fixture
def submit(tmp_path):
    """submit(job_id, script=SBATCH, **environment) runs the batch script as SLURM would start it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    submit_dir = tmp_path / "submit"
    submit_dir.mkdir()
    calls = iter(range(1000))

    def run(job_id: int, script: pathlib.Path = SBATCH, **environment: str) -> Job:
        records = tmp_path / f"records{next(calls)}"
        records.mkdir()
        options = sbatch_directives(script)
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
               "FAKE_RECORD_DIR": str(records), **sbatch_environment(options, job_id, submit_dir), **environment}
        done = subprocess.run(["bash", str(script)], cwd=submit_dir, env=env, capture_output=True, text=True,
                              timeout=120)
        return Job(done, records)

    run.submit_dir = submit_dir
    return run


def jax_device_ids(rank_env: dict[str, str]) -> tuple[str, int, int, list[int]]:
    """(coordinator, process count, process id, local device ids) as `jax.distributed.initialize()` with
    no arguments works them out in `rank_env`: JAX_LOCAL_DEVICE_IDS if set, else cluster detection
    (jax/_src/distributed.py, State.initialize; jax/_src/clusters/cluster.py,
    ClusterEnv.auto_detect_unset_distributed_params; jax/_src/clusters/slurm_cluster.py). The ids are
    CUDA ordinals: they become jax_cuda_visible_devices, counted within CUDA_VISIBLE_DEVICES."""
    from jax._src.clusters import ClusterEnv

    with mock.patch.dict(os.environ, rank_env, clear=True):
        ids = os.environ.get("JAX_LOCAL_DEVICE_IDS")
        ids = list(map(int, ids.split(","))) if ids else None
        return ClusterEnv.auto_detect_unset_distributed_params(None, None, None, ids, None, 120)


def test_the_template_asks_for_two_nodes_of_eight_tasks():
    options = sbatch_directives(SBATCH)
    assert int(options["--nodes"]) == NODES and int(options["--ntasks-per-node"]) == TASKS_PER_NODE


def test_every_rank_gets_the_command_line(submit):
    job = submit(4242)
    assert job.returncode == 0, job.stderr
    out = str(submit.submit_dir / "runs" / "mlsh_jax_ant_maze")
    assert sorted(job.argv) == list(range(NODES * TASKS_PER_NODE)), "one process per rank, each once"
    for rank, argv in job.argv.items():
        assert argv == ["-m", "experiments.ant_maze", "--distributed", "--out", out, "--no-progress"], rank
        assert job.env[rank]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false", rank
    assert out in job.stdout


def test_args_pass_through_and_resume_only_with_resume_1(submit):
    args = "--preset paper --set num_slots=320  --set sub.learning_rate=1e-4"
    fresh = submit(100, ARGS=args, EXPERIMENT="experiments.moving_bandits")
    resumed = submit(101, ARGS=args, EXPERIMENT="experiments.moving_bandits", RESUME="1")
    not_resumed = submit(102, ARGS=args, EXPERIMENT="experiments.moving_bandits", RESUME="0")
    out = str(submit.submit_dir / "runs" / "mlsh_jax_moving_bandits")
    expected = ["-m", "experiments.moving_bandits", "--distributed", "--out", out, "--no-progress", *args.split()]
    for job, tail in ((fresh, []), (resumed, ["--resume"]), (not_resumed, [])):
        assert job.returncode == 0, job.stderr
        assert len(job.argv) == NODES * TASKS_PER_NODE
        for rank, argv in job.argv.items():
            assert argv == expected + tail, (rank, argv)


def test_out_is_the_same_for_every_resubmit(submit):
    """The default OUT names no job id: a resubmit with RESUME=1 continues the run in the same
    directory (a submit without it is refused there by the experiment: --resume is absent)."""
    outs = set()
    for job_id, resume in ((7001, "0"), (7002, "1"), (93117, "1")):
        job = submit(job_id, RESUME=resume)
        assert job.returncode == 0, job.stderr
        for argv in job.argv.values():
            out = argv[argv.index("--out") + 1]
            assert str(job_id) not in out
            assert ("--resume" in argv) == (resume == "1")
            outs.add(out)
    assert len(outs) == 1, outs
    explicit = submit(7003, OUT="/shared/runs/ant_big", RESUME="1")
    assert {a[a.index("--out") + 1] for a in explicit.argv.values()} == {"/shared/runs/ant_big"}


def test_every_rank_sees_the_gpu_jax_picks_for_it(submit):
    job = submit(5555)
    assert job.returncode == 0, job.stderr
    coordinators, physical = set(), {}
    for rank, env in job.env.items():
        coordinator, count, process_id, ids = jax_device_ids(env)
        coordinators.add(coordinator)
        assert (count, process_id) == (NODES * TASKS_PER_NODE, rank), "JAX's SLURM detection must find the job"
        assert ids, f"rank {rank}: JAX chose no local device ids"
        visible = env.get("CUDA_VISIBLE_DEVICES", "").split(",")
        assert all(0 <= i < len(visible) for i in ids), (
            f"rank {rank} (local rank {env['SLURM_LOCALID']}): JAX asks for CUDA ordinal(s) {ids} but the "
            f"process sees CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}")
        for i in ids:
            physical.setdefault(env["SLURM_NODEID"], []).append(visible[i])
    assert coordinators == {f"{HOSTS[0]}:{5555 % 2**12 + 65535 - 2**12 + 1}"}
    for node, gpus in physical.items():      # one process per GPU, all of the node's GPUs used
        assert sorted(gpus, key=int) == [str(g) for g in range(TASKS_PER_NODE)], (node, gpus)


def test_tasks_and_gpus_per_node_must_match(submit):
    job = submit(6000, SLURM_GPUS_PER_NODE="h100:4")
    assert job.returncode == 2 and "--gpus-per-node" in job.stderr and not job.argv


def record_gcloud(tmp_path: pathlib.Path, name: str, **environment: str) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    records = tmp_path / name
    records.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "FAKE_RECORD_DIR": str(records), "ZONE": "us-west4-a", **environment}
    done = subprocess.run(["bash", str(TPU_POD)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [read_nul(records / f"call{i}") for i in range(len(list(records.iterdir())))]


def test_tpu_pod_runs_one_command_on_every_host_with_a_stable_out(tmp_path):
    first = record_gcloud(tmp_path, "first", TPU="my-v5e-32", ARGS="--set num_slots=64")
    again = record_gcloud(tmp_path, "again", TPU="my-v5e-32-recreated", ARGS="--set num_slots=64", RESUME="1")
    commands = []
    for calls in (first, again):
        assert all("--worker=all" in call for call in calls)
        run = calls[-1]
        assert run[:4] == ["compute", "tpus", "tpu-vm", "ssh"]
        command = shlex.split(run[run.index("--command") + 1])
        assert command[:2] == ["cd", "mlsh_jax"], "the repository path is the remote home's, not this machine's"
        assert command[2:6] == ["&&", "python", "-m", "experiments.ant_maze"]
        commands.append(command[6:])
    out = "/mnt/shared/runs/mlsh_jax_ant_maze"
    assert commands[0] == ["--distributed", "--out", out, "--no-progress", "--set", "num_slots=64"]
    assert commands[1] == commands[0] + ["--resume"]
