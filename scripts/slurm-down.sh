#!/usr/bin/env bash
# Stop the single-node Slurm cluster that scripts/slurm-up.sh started: slurmd, slurmctld, then munged
# (only if slurm-up.sh started it), each by the PID in its pid file, waiting for each to exit.
# Idempotent: with nothing running it does nothing.
set -uo pipefail

S=${HYRAX_SLURM_DIR:-/tmp/slurm}

stop() {  # stop PIDFILE: TERM, wait up to 15 s (slurmctld saves its state), then KILL
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

stop "$S/slurmd.pid"
stop "$S/slurmctld.pid"
if [ -f "$S/munged.started" ]; then
    stop /run/munge/munged.pid
    rm -f "$S/munged.started"
fi
echo "slurm: stopped"
