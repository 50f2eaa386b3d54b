#!/usr/bin/env bash
# Pretraining on a Cloud TPU slice: install this project (the commit checked out here) on every
# host, then start one trainer per host with --distributed; jax.distributed finds the slice's
# hosts by itself. Run it from the root of a clone whose commit is pushed to its origin.
#
#   TPU=my-v5e-64 ZONE=us-west4-a launch/cloud_tpu.sh configs/w2v2_base.py /mnt/runs/w2v2_base \
#       --config.data.path=/mnt/data/ls960_shards
#   QR=my-qr ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-64 RUNTIME_VERSION=v2-alpha-tpuv5-lite \
#       launch/cloud_tpu.sh configs/w2v2_base.py /mnt/runs/w2v2_base ...
#   launch/cloud_tpu.sh --dry-run ...          # print the gcloud commands, run nothing
#
# The slice is a TPU VM (TPU=NAME) or a queued resource (QR=NAME or --queued-resource NAME). With
# ACCELERATOR_TYPE and RUNTIME_VERSION set, the queued resource is created first (NODE_ID names
# its TPU, default the QR name; QR_FLAGS adds flags such as --spot); either way the launcher
# waits until it is ACTIVE. ZONE is required, PROJECT optional. REPO and REF (default: this
# checkout's origin URL and HEAD commit) say what each host clones; the Python version and the
# jax[tpu] pin come from setup.cfg. WORKDIR must be a folder that every host sees at the same
# path (a Filestore or gcsfuse mount): the trainer writes it through the file system, so a
# gs:// URL is refused. The ssh sessions stay attached: run this where it can stay up (tmux).
set -euo pipefail

usage() {
  echo "usage: [TPU=NAME | QR=NAME] ZONE=ZONE $0 [--dry-run] [--queued-resource NAME] CONFIG WORKDIR [--config.a.b=value ...]" >&2
  exit 2
}
die() { echo "error: $*" >&2; exit 2; }

# One shell-quoted command line (what --dry-run prints): words that need quoting get single quotes.
quote() {
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}
run() {
  if [ "$dry_run" = 1 ]; then quote "$@"; echo; else "$@"; fi
}

dry_run=0
qr="${QR:-}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --queued-resource) [ "$#" -ge 2 ] || usage; qr="$2"; shift 2 ;;
    --queued-resource=*) qr="${1#*=}"; shift ;;
    -*) echo "error: unknown option '$1'" >&2; usage ;;
    *) break ;;
  esac
done
[ "$#" -ge 2 ] || usage
config="$1"; workdir="$2"; shift 2
for a in "$@"; do
  [[ $a == --* ]] || { echo "error: extra arguments are trainer flags (--config.a.b=value), got '$a'" >&2; usage; }
done
[ -n "${ZONE:-}" ] || die "set ZONE to the slice's zone (e.g. ZONE=us-west4-a)"
if [ -n "$qr" ] && [ -n "${TPU:-}" ]; then die "set TPU (a TPU VM) or QR (a queued resource), not both"; fi
[ -n "$qr" ] || [ -n "${TPU:-}" ] || die "set TPU=NAME (a TPU VM) or QR=NAME / --queued-resource NAME (a queued resource)"
if [ -z "$qr" ] && [ -n "${ACCELERATOR_TYPE:-}${RUNTIME_VERSION:-}" ]; then
  die "ACCELERATOR_TYPE and RUNTIME_VERSION create a queued resource: set QR=NAME instead of TPU"
fi
if [ -n "${ACCELERATOR_TYPE:-}" ] && [ -z "${RUNTIME_VERSION:-}" ]; then die "ACCELERATOR_TYPE needs RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite for v5e)"; fi
if [ -n "${RUNTIME_VERSION:-}" ] && [ -z "${ACCELERATOR_TYPE:-}" ]; then die "RUNTIME_VERSION needs ACCELERATOR_TYPE (e.g. v5litepod-64)"; fi
[[ $workdir != gs://* ]] || die "WORKDIR $workdir: the trainer writes through the file system; mount the bucket on every host (gcsfuse) and pass the mount path"

# What every host installs comes from this checkout: its origin, its commit, its setup.cfg.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$root/${config%%:*}" ] || die "config file '${config%%:*}' not found in $root (hosts run from a clone of it)"
repo="${REPO:-$(git -C "$root" remote get-url origin 2>/dev/null || true)}"
[ -n "$repo" ] || die "this checkout has no 'origin' remote: set REPO to the URL the hosts clone"
ref="${REF:-$(git -C "$root" rev-parse HEAD 2>/dev/null || true)}"
[ -n "$ref" ] || die "$root is not a git checkout: set REF to the commit or tag the hosts check out"
if [ -z "${REF:-}" ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "warning: uncommitted changes here do not reach the hosts; they run commit $ref" >&2
fi
if [ -z "${REF:-}" ] && [ -z "$(git -C "$root" branch -r --contains "$ref" 2>/dev/null)" ]; then
  echo "warning: commit $ref is on no remote branch known here: push it, or the hosts cannot check it out" >&2
fi
jax_version="$(sed -n 's/^[[:space:]]*jax\[cpu\]==\([^[:space:];]*\).*/\1/p' "$root/setup.cfg")"
[ -n "$jax_version" ] || die "no jax[cpu]==VERSION pin found in $root/setup.cfg"
py_version="$(sed -n 's/^python_requires[[:space:]]*=[[:space:]]*>=[[:space:]]*\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' "$root/setup.cfg")"
[ -n "$py_version" ] || die "no python_requires = >=X.Y found in $root/setup.cfg"
read -r py_major py_minor <<<"$py_version"
py="python${py_major}.${py_minor}"

gflags=(--zone="$ZONE")
if [ -n "${PROJECT:-}" ]; then gflags+=(--project="$PROJECT"); fi
if [ -n "$qr" ]; then
  if [ -n "${ACCELERATOR_TYPE:-}" ]; then
    read -r -a qr_flags <<<"${QR_FLAGS:-}"
    run gcloud compute tpus queued-resources create "$qr" "${gflags[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
      --runtime-version="$RUNTIME_VERSION" --node-id="${NODE_ID:-$qr}" "${qr_flags[@]+"${qr_flags[@]}"}"
  fi
  describe=(gcloud compute tpus queued-resources describe "$qr" "${gflags[@]}" --format="value(state.state)")
  if [ "$dry_run" = 1 ]; then
    run "${describe[@]}"
  else
    while :; do
      state="$("${describe[@]}")"
      case "$state" in
        ACTIVE) break ;;
        FAILED | SUSPENDING | SUSPENDED | DELETING)
          echo "error: queued resource $qr is $state" >&2
          exit 1
          ;;
      esac
      echo "queued resource $qr: ${state:-unknown}; checking again in ${POLL_SECONDS:-60} s" >&2
      sleep "${POLL_SECONDS:-60}"
    done
  fi
  ssh=(gcloud compute tpus queued-resources ssh "$qr" "${gflags[@]}" --node=all --worker=all)
else
  ssh=(gcloud compute tpus tpu-vm ssh "$TPU" "${gflags[@]}" --worker=all)
fi

# On every host: a Python that setup.cfg accepts, the project at REF in ~/ssl_jax/.venv with the
# TPU build of the pinned jax, then the trainer (bfloat16 compute; later overrides win).
need="sys.exit(sys.version_info < (${py_major}, ${py_minor}))"
install="set -e; py=python3; if ! python3 -c \"import sys; ${need}\" 2>/dev/null; then py=${py}; \
command -v ${py} >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq ${py} ${py}-venv; }; fi; \
test -d ssl_jax/.git || git clone -q $(quote "$repo") ssl_jax; cd ssl_jax; git fetch -q --tags origin; \
git checkout -q --detach $(quote "$ref"); \$py -m venv .venv; .venv/bin/pip install -q -e . $(quote "jax[tpu]==${jax_version}")"
train="cd ssl_jax && exec $(quote .venv/bin/python -m ssl_jax.train --config="$config" --workdir="$workdir" \
  --distributed --config.model.dtype=bfloat16 "$@")"
run "${ssh[@]}" --command="$install"
run "${ssh[@]}" --command="$train"
