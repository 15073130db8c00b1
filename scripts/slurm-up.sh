#!/usr/bin/env bash
# Start a real single-node Slurm cluster (munge + slurmctld + slurmd) for the Slurm tests and CI.
# Idempotent: when the cluster already answers, it says so and starts nothing. Needs root and Debian's
# slurmctld, slurmd, slurm-client and munge packages (`--install` installs them with apt-get).
# Stop it with scripts/slurm-down.sh, which stops only what this script started.
#
#   scripts/slurm-up.sh [--install]      prints "slurm: started" or "slurm: already running"
#
# Exit codes: 0 the cluster is up; 3 Slurm is not installed; 4 not root; 1 it failed to start (logs in
# $HYRAX_SLURM_DIR/log).
set -euo pipefail

S=${HYRAX_SLURM_DIR:-/tmp/slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by hyrax scripts/slurm-up.sh"
NODE=$(hostname -s)

up() { case "$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null)" in idle|mixed|allocated) ;; *) return 1;; esac; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-}" = --install ] && ! command -v slurmctld >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm: not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 3
fi
if command -v sinfo >/dev/null && alive "$S/slurmctld.pid" && alive "$S/slurmd.pid" && up; then
    echo "slurm: already running"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm: starting the daemons needs root" >&2
    exit 4
fi

mkdir -p "$S/state" "$S/spool" "$S/log"
exec 9>"$S/.lock"
flock -w 60 9  # two callers at once (two pytest workers): the second waits, then finds it running
if alive "$S/slurmctld.pid" && alive "$S/slurmd.pid" && up; then
    echo "slurm: already running"
    exit 0
fi

if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "slurm: $CONF was not written by this script; not touching a site's configuration" >&2
    exit 1
fi
# CPUs: at least 4 so that small arrays run side by side (config_overrides lets a node claim more
# than the host has); DefMemPerCPU so that jobs don't each take the whole node's memory.
CPUS=$(nproc); [ "$CPUS" -lt 4 ] && CPUS=4
cat >"$CONF" <<EOF
$MARK
ClusterName=hyraxci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MailProg=/bin/true
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

if ! alive /run/munge/munged.pid; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$S/munged.started"  # slurm-down.sh stops munged only when we started it
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
alive "$S/slurmctld.pid" || /usr/sbin/slurmctld -c
alive "$S/slurmd.pid" || /usr/sbin/slurmd

for _ in $(seq 150); do up && break; sleep 0.2; done
if ! up || ! timeout 30 srun -t 1 true; then
    echo "slurm: the cluster did not come up; see $S/log/" >&2
    tail -n 5 "$S"/log/*.log >&2 || true
    exit 1
fi
echo "slurm: started"
