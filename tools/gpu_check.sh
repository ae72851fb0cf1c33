#!/usr/bin/env bash
# The GPU checks in one device call. The lent machine's image has torch,
# Triton, sentencepiece, safetensors, pyyaml; DeepSpeed and the MDS library (and their
# needs) travel as wheels in .whl/ (`make gpu-wheels` fetches them):
#   run(command="bash tools/gpu_check.sh [all|trainer|dga|perf]", carry=[".whl"], timeout_s=540)
# trainer: throughput (150M, 1B), plain step, DRO and Dirichlet step ratios, model tests;
# dga: a short 150M run (its export is the DRO reference), the DRO ratio, DGA's time and
# memory overhead at 150M and 1B. all (default): both.
# perf: the throughput choices side by side — attention kernels (sdpa, flex; causal and
# document masks), the loss (torch, liger, our fused kernel), the 1B and 150M presets
# through the real launcher with each choice (default, document mask, fused loss, compiled
# blocks), the plain step, and online DRAW's step ratio; ~9 minutes on one H200.
# Each step has its own time limit, so a hang costs one step, not the call. Figures go to
# stdout and to $OUT/gpu_check.txt; record them in BENCHMARKS.md.
#   GPU_CHECK_SMOKE=1 bash tools/gpu_check.sh   # the same steps on CPU with tiny models
set -uo pipefail
what="${1:-all}"
case "$what" in all|trainer|dga|perf) ;; *) echo "usage: $0 [all|trainer|dga|perf]" >&2; exit 2;; esac
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
work=/tmp/gpu_check
rm -rf "$work" && mkdir -p "$work"

if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then   # CPU: checks the script itself, not the figures
  export DS_ACCELERATOR=cpu OMP_NUM_THREADS=1
  small=tiny-64; small_mb=4; big=tiny-128; big_mb=2; steps=8; plain_steps=3; seq=256
  t_r=4; big_t_r=4; od_m=4
else
  small=150M; small_mb=16; big=1B; big_mb=8; steps=40; plain_steps=20; seq=1024
  t_r=100; big_t_r=50; od_m=10
fi
if [ -d .whl ] && ! python3 -c "import deepspeed, streaming" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site" PATH="/tmp/site/bin:$PATH"
fi

step() {  # step SECONDS NAME COMMAND...: run with a limit, say how it ended
  local limit=$1 name=$2; shift 2
  echo "=== $name ($(date -u +%T))"
  timeout "$limit" "$@"
  local rc=$?
  [ $rc = 0 ] || echo "=== $name FAILED rc=$rc"
}

train() {  # train PRESET MICRO_BATCH [STEPS [TAG KEY=VALUE...]]: the real launcher on one
  # device, its throughput; TAG names the run of a variant given by the extra keys
  local preset=$1 mb=$2 n=${3:-$steps} tag=${4:-}
  shift $(( $# < 4 ? $# : 4 ))
  step 200 "pretrain_main $preset${tag:+ $tag} bf16 ZeRO-1 seq $seq" \
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 launch/pretrain_main.py \
      --config configs/experiments/gpu_bench.yaml "data.root=$work/data" \
      "run.dir=$work/runs/$preset$tag" "model.preset=$preset" "model.seq_len=$seq" \
      "train.micro_batch=$mb" "train.global_batch=$mb" "train.steps=$n" "$@"
  step 30 "throughput $preset$tag" python3 tools/run_throughput.py "$work/runs/$preset$tag" --skip 5
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import torch, triton, deepspeed; print('torch', torch.__version__, 'triton', \
triton.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.version.cuda)"
  python3 -c "import flash_attn; print('flash_attn', flash_attn.__version__)" 2>/dev/null \
    || echo "flash_attn: not installed (attention auto = SDPA)"
  step 60 "bf16 8192^3 matmul" python3 - <<'EOF'
import time, torch
if torch.cuda.is_available():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): a @ b
    torch.cuda.synchronize(); s = (time.perf_counter() - t) / 20
    print(f"bf16 8192^3 matmul: {2 * 8192**3 / s / 1e12:.0f} TFLOP/s")
else:
    print("no CUDA: matmul peak not measured")
EOF
  step 60 "synthetic data (4 domains, seq $seq, vocab 32000)" python3 -c "
from tests.unit.data.synthetic import make_synthetic_root
make_synthetic_root('$work/data', [400] * 4, seq_len=$seq, vocab_size=32000,
                    splits=('train', 'val', 'test'), random_domains=(1, 2, 3))"
  if [ "$what" = perf ]; then
    if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then smoke=--smoke; else smoke=; fi
    step 150 "attention kernels" python3 tools/bench_attention.py $smoke
    step 90 "loss kernels" python3 tools/bench_loss_kernels.py $smoke
    pn=$(( steps > 10 ? steps / 2 : steps ))
    train "$big" "$big_mb" "$pn"
    train "$big" "$big_mb" "$pn" _document model.attention_mask=document
    train "$big" "$big_mb" "$pn" _fused model.loss_kernel=fused
    train "$big" "$big_mb" "$pn" _compiled train.compile=true
    train "$small" "$((small_mb * 2))" "$pn"
    step 90 "plain model step $big (no DeepSpeed)" python3 tools/bench_gpu_step.py \
      --preset "$big" --micro-batch "$big_mb" --seq-len "$seq" --attention auto \
      --steps "$plain_steps"
    step 150 "online DRAW vs DRAW, $small" \
      python3 -m torch.distributed.run --standalone --nproc_per_node 1 tools/bench_online_draw.py \
        --config configs/experiments/gpu_bench.yaml --rounds 3 --steps-per-round "$od_m" \
        "data.root=$work/data" "model.preset=$small" "model.seq_len=$seq" \
        "train.micro_batch=$small_mb" "train.global_batch=$small_mb"
  elif [ "$what" = dga ]; then
    train "$small" "$small_mb" 10   # a model file for the DRO reference
  else
    train "$small" "$small_mb"
  fi
  if [ "$what" = perf ]; then
    :
  elif [ "$what" != dga ]; then
    for spec in "$small $small_mb" "$big $big_mb"; do
      set -- $spec
      step 90 "plain model step $1 (no DeepSpeed)" python3 tools/bench_gpu_step.py --preset "$1" \
        --micro-batch "$2" --seq-len "$seq" --attention auto --steps "$plain_steps"
    done
  fi
  if [ "$what" != perf ]; then
    step 150 "DRO step vs plain step, proxy $small, reference = the $small run's export" \
      python3 -m torch.distributed.run --standalone --nproc_per_node 1 tools/bench_dro_step.py \
        --config configs/experiments/gpu_bench.yaml --rounds 4 --steps-per-round 6 \
        "data.root=$work/data" "model.preset=$small" "model.seq_len=$seq" \
        "train.micro_batch=$small_mb" "train.global_batch=$small_mb" \
        "dro.reference=$work/runs/$small/model.safetensors"
    if [ "$what" != dga ]; then
      step 150 "Dirichlet redraw every step vs static mixture, $small" \
        python3 -m torch.distributed.run --standalone --nproc_per_node 1 tools/bench_step.py \
          --config configs/experiments/gpu_bench.yaml --rounds 4 --steps-per-round 6 \
          "data.root=$work/data" "model.preset=$small" "model.seq_len=$seq" \
          "train.micro_batch=$small_mb" "train.global_batch=$small_mb"
      train "$big" "$big_mb"
    fi
    if [ "$what" != trainer ]; then
      for spec in "$small $small_mb $t_r 3" "$big $big_mb $big_t_r 2"; do
        set -- $spec
        step 200 "DGA overhead, $1, T_r $3, specific = test:Domain 0" \
          python3 -m torch.distributed.run --standalone --nproc_per_node 1 tools/bench_dga_step.py \
            --config configs/experiments/gpu_bench.yaml --rounds "$4" --steps-per-round "$3" \
            "data.root=$work/data" "model.preset=$1" "model.seq_len=$seq" \
            "train.micro_batch=$2" "dga.eta=1.0" "dga.specific=test:Domain 0"
      done
    fi
    if [ "$what" != dga ]; then
      step 120 "model tests on this device" python3 -m pytest -q -p no:cacheprovider -x \
        tests/unit/model
    fi
  fi
} 2>&1 | tee "$OUT/gpu_check.txt"
