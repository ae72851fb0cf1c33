#!/usr/bin/env bash
# The GPU checks of issue 3 in one device call (the lent machine's image has torch, Triton,
# pyyaml, safetensors; no DeepSpeed or MDS library, so this times the plain model step):
#   run(command="bash tools/gpu_check.sh", timeout_s=540)
# Figures go to stdout and to $OUT/gpu_check.txt; record them in BENCHMARKS.md.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu_check.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "import flash_attn; print('flash_attn', flash_attn.__version__)" 2>/dev/null \
    || echo "flash_attn: not installed (SDPA only)"
  for spec in "150M 16" "1B 8"; do
    set -- $spec
    python3 tools/bench_gpu_step.py --preset "$1" --micro-batch "$2" --attention sdpa --steps 20
  done
  python3 -m pytest -q -p no:cacheprovider tests/unit/model 2>&1 | tail -3
} 2>&1 | tee "$log"
