#!/usr/bin/env bash
# Several JAX processes on this machine, joined by jax.distributed over localhost: the
# multi-host code path (per-process data shares, global arrays, Orbax multi-host saves) on CPU.
# PYTHON picks the interpreter (default: python on PATH).
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS configs/w2v2_tiny.py runs/mp [--config.x=y ...]
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
n="$1"; per="$2"; config="$3"; workdir="$4"; shift 4
port="${PORT:-$((20000 + RANDOM % 20000))}"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${per}" \
    "${PYTHON:-python}" -m ssl_jax.train --config="$config" --workdir="$workdir" --distributed \
      --coordinator="localhost:${port}" --num_processes="$n" --process_id="$i" \
      $([ "$i" -gt 0 ] && echo --no_progress) "$@" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
