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
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
# Any experiment module runs this way; the default is the main job, the Brax ant mazes.
EXPERIMENT=${EXPERIMENT:-experiments.ant_maze}
OUT=${OUT:-/mnt/shared/runs/mlsh_jax_tpu}
ARGS=${ARGS:-}
if [ "${RESUME:-0}" = "1" ]; then ARGS="$ARGS --resume"; fi
REPO=${REPO:-~/mlsh_jax}

# One-time set-up on every host: copy the repository and install the TPU build of JAX.
gcloud compute tpus tpu-vm scp --recurse . "$TPU":"$REPO" --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all \
  --command "cd $REPO && pip install -q -e '.[tpu]'"

# The run: every host starts the same command at once.
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all \
  --command "cd $REPO && python -m $EXPERIMENT --distributed --out $OUT --no-progress $ARGS"
