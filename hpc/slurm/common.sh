# Shared by start.sh, stop.sh and status.sh: where the single-node cluster keeps its state.
# Every path lives under one state directory, so two checkouts can use two directories and
# `stop.sh` can remove everything it made. Nothing is written into /etc.

STATE=${SPOTSWEEP_SLURM_STATE:-/tmp/spotsweep-slurm}
PORT_BASE=${SPOTSWEEP_SLURM_PORT:-6817}   # slurmctld; slurmd +1, slurmdbd +2, MariaDB +3
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
MUNGE_DIR=$STATE/munge
DB_DIR=$STATE/mariadb
DB_RUN=$STATE/mariadb-run
FAKE_GPU_DIR=$STATE/dev
SLURM_CONF_FILE=$ETC/slurm.conf

MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
DB_SOCKET=$DB_RUN/mysqld.sock

pid_alive() {  # pid_alive FILE: the process named in FILE runs
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "spotsweep-slurm: $what did not come up within ${seconds} s; see $LOG" >&2
            return 1
        fi
        sleep 0.2
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

export SLURM_CONF=$SLURM_CONF_FILE
