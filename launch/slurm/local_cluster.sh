#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for testing launch/slurm/*.sbatch on a laptop or a
# CI box (Debian/Ubuntu, root, no systemd needed). Idempotent: rerun it any time.
#
#   sudo launch/slurm/local_cluster.sh          # install (apt) + configure + start; = "up"
#   sudo launch/slurm/local_cluster.sh status   # daemons and node state
#   sudo launch/slurm/local_cluster.sh down     # stop the daemons this script started
#
# Then, from the repository root (the batch script's log folder must exist):
#   mkdir -p runs
#   GPUS_PER_NODE=0 sbatch --ntasks-per-node 2 --gpus-per-node 0 \
#       launch/slurm/pretrain.sbatch configs/experiments/smoke_cpu.yaml train.steps=6
#   squeue; scontrol show job <id>; tail -f runs/slurm-<id>.out
#
# Environment: CPUS (default: the online CPUs), REAL_MEMORY_MB (default: 90% of MemTotal),
# PARTITION (default: debug). Two settings are shorter than Slurm's defaults so that a
# requeued job comes back quickly in tests: CRED_EXPIRE (AuthInfo=cred_expire: a requeued
# job may start again only that many seconds later; default 10, Slurm's 120) and
# SCHED_INTERVAL (the period of the main and the backfill scheduler, which start such a
# job once it may; default 5, Slurm's 60 and 30).
#
# Deliberately ProctrackType=proctrack/linuxproc and TaskPlugin=task/none:
# proctrack/cgroup without a working cgroup setup makes batch scripts silently not run
# while the job still reads COMPLETED (and drains the node). No slurmdbd, so no sacct:
# finished jobs stay visible to `scontrol show job` for MinJobAge (1 h here).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
HOST=$(hostname -s)
CPUS=${CPUS:-$(getconf _NPROCESSORS_ONLN)}  # not nproc: it honours OMP_NUM_THREADS
REAL_MEMORY_MB=${REAL_MEMORY_MB:-$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))}
PARTITION=${PARTITION:-debug}
CRED_EXPIRE=${CRED_EXPIRE:-10}
SCHED_INTERVAL=${SCHED_INTERVAL:-5}
LOG_DIR=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

say() { echo "[local_cluster] $*"; }

running() {  # running <pidfile>: the process named there is alive
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  local missing=()
  for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
    [[ -x $bin ]] || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
  fi
}

configure() {
  mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/munge
  chown munge:munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key

  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<CONF
# Written by launch/slurm/local_cluster.sh: a one-node cluster on 127.0.0.1.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$CRED_EXPIRE
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=$SCHED_INTERVAL,bf_interval=$SCHED_INTERVAL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  if ! cmp -s "$tmp" "$CONF"; then
    say "writing $CONF (CPUs=$CPUS RealMemory=$REAL_MEMORY_MB)"
    install -m 0644 "$tmp" "$CONF"
    CONF_CHANGED=1
  fi
  rm -f "$tmp"
}

start() {
  if ! running "$MUNGE_PID"; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
  fi
  if [[ ${CONF_CHANGED:-0} == 1 ]]; then
    # A changed node or controller definition needs fresh daemons.
    stop_slurm
  fi
  if ! running "$CTLD_PID"; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
  fi
  if ! running "$SLURMD_PID"; then
    say "starting slurmd"
    /usr/sbin/slurmd
  fi
  local i state=""
  for i in $(seq 1 60); do
    state=$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null || true)
    case $state in
      idle*|mixed*|allocated*) say "node $HOST is $state"; return 0 ;;
      drain*|down*)
        # e.g. left drained by an earlier misconfiguration: bring it back.
        scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
  done
  say "node $HOST did not come up (state: ${state:-unknown}); see $LOG_DIR/*.log" >&2
  return 1
}

stop_pidfile() {
  if running "$1"; then
    local pid
    pid=$(cat "$1")
    say "stopping $2 (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

stop_slurm() {
  stop_pidfile "$SLURMD_PID" slurmd
  stop_pidfile "$CTLD_PID" slurmctld
}

status() {
  for p in "$MUNGE_PID:munged" "$CTLD_PID:slurmctld" "$SLURMD_PID:slurmd"; do
    if running "${p%%:*}"; then echo "${p##*:}: running (pid $(cat "${p%%:*}"))"
    else echo "${p##*:}: stopped"; fi
  done
  sinfo 2>/dev/null || true
}

[[ $(id -u) == 0 ]] || { echo "run as root (sudo $0 $*)" >&2; exit 1; }
case ${1:-up} in
  up) install_packages; configure; start ;;
  status) status ;;
  down) stop_slurm; stop_pidfile "$MUNGE_PID" munged ;;
  *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
