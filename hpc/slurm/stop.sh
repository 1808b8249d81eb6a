#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh and remove its state directory.
#
# Jobs still queued or running are cancelled first, then the daemons stop in reverse start order,
# each by the pid in its pid file. `--keep` keeps the state directory (accounting database, job
# state, configs) for the next start. Idempotent: stopping a stopped cluster is harmless.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

keep=0
[[ ${1:-} == --keep ]] && keep=1
say() { echo "spotsweep-slurm: $*" >&2; }

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 20 s, then KILL
    local name=$1 file=$2 pid
    pid_alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM; killing it."
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

if [[ -d $STATE ]]; then
    if pid_alive "$RUN/slurmctld.pid"; then
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u || true)
        if [[ -n $jobs ]]; then
            say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            scancel $jobs || true
            for _ in $(seq 75); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pid slurmd "$RUN/slurmd.pid"
    stop_pid slurmctld "$RUN/slurmctld.pid"
    stop_pid slurmdbd "$RUN/slurmdbd.pid"
    stop_pid mariadbd "$DB_RUN/mariadbd.pid"
    stop_pid munged "$MUNGE_DIR/munged.pid"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$DB_SOCKET"
fi

if [[ $keep -eq 1 ]]; then
    say "stopped; state kept in $STATE."
elif [[ -e $STATE/.spotsweep-slurm ]]; then
    rm -rf "$STATE"
    say "stopped; removed $STATE."
elif [[ -d $STATE ]]; then
    say "stopped; $STATE was not made by start.sh, so it is left in place."
else
    say "stopped (nothing was running)."
fi
