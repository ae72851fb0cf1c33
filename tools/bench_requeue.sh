#!/usr/bin/env bash
# How long a preempted training job is away: submit launch/slurm/pretrain.sbatch, wait for
# AFTER_STEPS train records, send SIGUSR1 to the job's tasks the way Slurm's time-limit
# warning does (--signal=USR1@T without B: signals the steps, not the batch shell:
# `scancel --signal=USR1` does the same), and time each phase until the requeued job
# trains again; then wait for the job to complete.
#
#   tools/bench_requeue.sh RUN_DIR CONFIG.yaml [key=value ...]
#   GPUS_PER_NODE=0 NTASKS_PER_NODE=2 tools/bench_requeue.sh /tmp/bench \
#       configs/experiments/smoke_cpu.yaml train.steps=400
#
# Run it from the repository root on a cluster's login node (or with
# launch/slurm/local_cluster.sh up). RUN_DIR becomes run.dir (it must not hold an earlier
# run). The pretrain.sbatch variables (NODES, GPUS_PER_NODE, NTASKS_PER_NODE, PYTHON,
# LAUNCHER, SBATCH_ARGS, ...) pass through. AFTER_STEPS (default 5) and TIMEOUT (seconds
# per phase, default 600) tune the wait. The figures depend on the cluster: a requeued job
# may not start before AuthInfo's cred_expire (printed below) has passed, and then waits
# for a scheduler pass and free nodes.
set -euo pipefail

if (($# < 2)); then
  echo "usage: tools/bench_requeue.sh RUN_DIR CONFIG.yaml [key=value ...]" >&2
  exit 2
fi
RUN_DIR=$1
shift
AFTER_STEPS=${AFTER_STEPS:-5}
TIMEOUT=${TIMEOUT:-600}
METRICS=$RUN_DIR/metrics.jsonl
if [[ -e $METRICS ]]; then
  echo "$METRICS exists: give a fresh RUN_DIR" >&2
  exit 2
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%7.1f", b - a }'; }
train_records() {
  local n
  n=$(grep -c '"kind": "train"' "$METRICS" 2>/dev/null) || true
  echo "${n:-0}"
}
job_state() { squeue -h -j "$job" -o %T 2>/dev/null || true; }
ended() {  # the job left the queue: say how it ended and stop
  echo "job $job ended while waiting for: $1 ($(scontrol show job "$job" |
    grep -oE 'JobState=[A-Z_]+'); log $log)" >&2
  exit 1
}
await() {  # await DESCRIPTION COMMAND...: poll until COMMAND succeeds (the job alive)
  local what=$1 start
  shift
  start=$(now)
  until "$@"; do
    if awk -v a="$start" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
      echo "timed out after ${TIMEOUT}s waiting for: $what (job $job; log $log)" >&2
      exit 1
    fi
    [[ -n $(job_state) ]] || ended "$what"
    sleep 0.2
  done
}

submitted=$(now)
job=$(SBATCH_ARGS="--parsable ${SBATCH_ARGS:-}" launch/slurm/pretrain.sbatch "$@" \
  "run.dir=$RUN_DIR")
job=${job%%;*}
log=$(scontrol show job "$job" | sed -n 's/^ *StdOut=//p')
echo "job $job submitted; log $log"
echo "cluster: $(scontrol show config | grep -E '^(AuthInfo|SchedulerParameters) ' |
  tr -s ' ' | paste -sd ';')"

await "$AFTER_STEPS train records" eval '(( $(train_records) >= AFTER_STEPS ))'
echo "first $AFTER_STEPS train records after $(since "$submitted") s; sending SIGUSR1"
signalled=$(now)
scancel --signal=USR1 "$job"

await "the tasks' exit" grep -q "requeueing job $job" "$log"
echo "$(since "$signalled") s  tasks checkpointed and exited 75; the script requeues"
await "the job back in the queue" eval '[[ $(job_state) == PENDING ]]'
echo "$(since "$signalled") s  job pending again"
await "the job running again" eval '[[ $(job_state) == RUNNING ]]'
running=$(since "$signalled")
echo "$running s  job running again (signal -> requeued job running)"
await "a train record after the preempted one" eval \
  "awk '/\"kind\": \"preempted\"/ { p = 1; next } p && /\"kind\": \"train\"/ { f = 1 } END { exit !f }' '$METRICS'"
training=$(since "$signalled")
echo "$training s  training again (signal -> first step of the resumed run)"
while [[ -n $(job_state) ]]; do sleep 0.5; done
state=$(scontrol show job "$job" | grep -oE 'JobState=[A-Z_]+|Restarts=[0-9]+' | paste -sd ' ')
echo "job $job ended: $state"
echo "requeue_seconds_to_running=${running// /} requeue_seconds_to_training=${training// /}"
[[ $state == *JobState=COMPLETED* ]]
