#!/usr/bin/env bash
# Several JAX processes on this machine, joined by jax.distributed over localhost: the
# multi-host code path (per-process data shares, global arrays, Orbax multi-host saves) on CPU.
# Each process sees DEVICES_PER_PROCESS fake CPU devices; process 0 shows the progress bar.
#
#   launch/local_multiprocess.sh [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [--config.a.b=value ...]
#
# --dry-run prints the command of every process, one per line, and starts nothing.
# Environment: PYTHON (interpreter, default python on PATH), PORT (coordinator port, default
# random in 20000-39999), XLA_FLAGS (kept; the device count is appended).
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [--config.a.b=value ...]" >&2
  exit 2
}

# One shell-quoted command line (what --dry-run prints): words that need quoting get single quotes.
show() {
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s\n' "${out[*]}"
}

dry_run=0
if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi
[ "$#" -ge 4 ] || usage
n="$1"; per="$2"; config="$3"; workdir="$4"; shift 4
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "error: NUM_PROCESSES must be a positive integer, got '$n'" >&2; usage; }
[[ $per =~ ^[1-9][0-9]*$ ]] || { echo "error: DEVICES_PER_PROCESS must be a positive integer, got '$per'" >&2; usage; }
[ -f "${config%%:*}" ] || { echo "error: config file '${config%%:*}' not found" >&2; exit 2; }
for a in "$@"; do
  [[ $a == --* ]] || { echo "error: extra arguments are trainer flags (--config.a.b=value), got '$a'" >&2; usage; }
done
port="${PORT:-$((20000 + RANDOM % 20000))}"
xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=${per}"

pids=()
trap '[ "${#pids[@]}" -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
for ((i = 0; i < n; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=${xla_flags}" "${PYTHON:-python}" -m ssl_jax.train
    --config="$config" --workdir="$workdir" --distributed
    --coordinator="localhost:${port}" --num_processes="$n" --process_id="$i")
  if [ "$i" -gt 0 ]; then cmd+=(--no_progress); fi
  cmd+=("$@")
  if [ "$dry_run" = 1 ]; then
    show "${cmd[@]}"
  else
    "${cmd[@]}" &
    pids+=("$!")
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
