#!/bin/bash
# Cloud TPU VM pod slice: the same command on every host of the slice; jax.distributed detects the
# hosts and their chips (`--distributed` with no further flags).
#
#   TPU=my-v5e-32 ZONE=us-west4-a bash cluster/tpu_pod.sh
#   TPU=my-v5e-32 ZONE=us-west4-a RESUME=1 bash cluster/tpu_pod.sh        # after a preemption
#
# num_slots must be a multiple of the slice's chip count (32 on a v5e-32). OUT must be a path all
# hosts share (a GCS bucket mounted with gcsfuse, or a Filestore share); only host 0 writes metrics.
# Preemptible / spot slices send SIGTERM: every host saves a checkpoint and exits 0.
# A stalled update, or a host whose peer was lost, exits with code 75 after writing
# OUT/stall_process<I>.txt (docs/long_runs.md): call this again with RESUME=1.
#
# Run directory: OUT, by default /mnt/shared/runs/mlsh_jax_<experiment> (e.g. mlsh_jax_ant_maze):
# the same on every call, whatever the slice is named, so RESUME=1 continues the run even on a
# re-created slice. A second run of the same experiment needs its own OUT. A call without RESUME=1
# into a directory that already holds a run stops with exit code 2 (the experiments refuse a
# non-empty --out without --resume): an existing run is never overwritten.
# The set-up step runs on every call, since a re-created (preempted) slice starts from a bare image.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
# Any experiment module runs this way; the default is the main job, the Brax ant mazes.
EXPERIMENT=${EXPERIMENT:-experiments.ant_maze}
OUT=${OUT:-/mnt/shared/runs/mlsh_jax_${EXPERIMENT##*.}}
ARGS=${ARGS:-}
if [ "${RESUME:-0}" = "1" ]; then ARGS="$ARGS --resume"; fi
# Where the repository goes on each host; a relative path is under the remote user's home (a local
# `~` would expand to this machine's home, which the hosts may not have).
REPO=${REPO:-mlsh_jax}
Q_REPO=$(printf %q "$REPO") Q_OUT=$(printf %q "$OUT") Q_EXPERIMENT=$(printf %q "$EXPERIMENT")
echo "run directory: $OUT$([ "${RESUME:-0}" = "1" ] && echo ' (resuming)')"

# Set-up on every host: copy the repository and install the TPU build of JAX.
gcloud compute tpus tpu-vm scp --recurse . "$TPU":"$REPO" --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all \
  --command "cd $Q_REPO && pip install -q -e '.[tpu]'"

# The run: every host starts the same command at once.
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all \
  --command "cd $Q_REPO && python -m $Q_EXPERIMENT --distributed --out $Q_OUT --no-progress $ARGS"
