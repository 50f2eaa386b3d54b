#!/usr/bin/env bash
# wav2vec 2.0 on a Cloud TPU VM slice: install on every worker, then run one process per
# host; jax.distributed discovers the slice by itself. WORKDIR should be a gs:// bucket
# path (Orbax writes there directly) so every host sees the same checkpoints.
#
#   TPU=my-v5e-64 ZONE=us-west4-a launch/cloud_tpu.sh configs/w2v2_base.py gs://bucket/runs/w2v2_base \
#       --config.data.path=/mnt/disks/data/ls960_shards
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
config="${1:?config file}"; workdir="${2:?workdir}"; shift 2
repo="${REPO:-https://github.com/ssl-jax/ssl_jax.git}"
run() { gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$1"; }
run "test -d ssl_jax || git clone $repo ssl_jax; cd ssl_jax && python3 -m pip install -q -e . 'jax[tpu]==0.10.2'"
run "cd ssl_jax && python3 -m ssl_jax.train --config=$config --workdir=$workdir --distributed --config.model.dtype=bfloat16 $*"
