#!/usr/bin/env bash
# One-call GPU suite for the lent H100 (or any CUDA host): parity tests, then benchmarks; short table last.
#   bash benchmarks/run_gpu_suite.sh [parts...]    parts: tests scan sweep conv layers step mamba_ssm (default: tests scan conv)
# Writes logs and JSON under $OUT (default benchmarks/results/run) and benchmarks/results/*.json.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/run}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
parts="${*:-tests scan conv}"
log="$OUT/suite.log"
has() { [[ " $parts " == *" $1 "* ]]; }
{
  echo "== $(date -u) parts: $parts"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  if has mamba_ssm; then
    # optional side-by-side anchor: build mamba-ssm 2.3.1 for sm_90 only from the carried sdist (~210 s),
    # in the background while the parity tests run; the benchmarks wait for it
    t0=$(date +%s)
    ( MAMBA_FORCE_BUILD=TRUE MAMBA_KEEP_CUDA_BUILD=TRUE TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=12 \
      timeout 420 python3 -m pip install -q --no-build-isolation --no-deps --no-index \
      .gpuwhl/mamba_ssm-2.3.1.tar.gz > "$OUT/mamba_build.log" 2>&1; echo $? > /tmp/mamba_build.rc ) &
    build_pid=$!
  fi
  if has tests; then
    python3 -m pytest -q -m gpu tests/gpu -n 4 -p no:cacheprovider -rf --tb=short > "$OUT/pytest.log" 2>&1
    grep -E "Error|error:|^E " "$OUT/pytest.log" | sort | uniq -c | sort -rn | head -15
    tail -25 "$OUT/pytest.log"
  fi
  if has mamba_ssm; then
    wait "$build_pid"
    if [ "$(cat /tmp/mamba_build.rc)" = 0 ] && python3 -c "import mamba_ssm" 2>/dev/null; then
      echo "mamba-ssm 2.3.1 built in $(( $(date +%s) - t0 )) s (sm_90)"
    else
      echo "mamba-ssm build FAILED (rc $(cat /tmp/mamba_build.rc)) after $(( $(date +%s) - t0 )) s"; tail -15 "$OUT/mamba_build.log"
    fi
  fi
  if has scan; then
    if has sweep; then python3 benchmarks/gpu_scan.py --sweep --out-dir "$OUT"; else python3 benchmarks/gpu_scan.py --out-dir "$OUT"; fi
    python3 benchmarks/gpu_scan.py --d-state 64 --no-reference --name gpu_scan_n64 --out-dir "$OUT" 2>&1 | tail -6
  fi
  if has conv; then python3 benchmarks/gpu_conv.py --out-dir "$OUT"; fi
  if has layers; then python3 benchmarks/gpu_layers.py --out-dir "$OUT"; fi
  if has step; then python3 benchmarks/gpu_step.py --out-dir "$OUT"; fi
  echo "== done $(date -u)"
} 2>&1 | tee "$log"
