#!/usr/bin/env bash
# Start a single-node SLURM 22.05 with accounting and fake GPUs (run as root; install.sh first).
#
# Daemons, in order: munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, each with a pid file under
# the state directory (SPOTSWEEP_SLURM_STATE, default /tmp/spotsweep-slurm). Idempotent: a daemon that
# runs already is left alone, so starting twice is harmless. Use the cluster from any shell with
#   export SLURM_CONF=$STATE/etc/slurm.conf      (or: source $STATE/env.sh)
# Settings (environment): SPOTSWEEP_SLURM_STATE, SPOTSWEEP_SLURM_PORT (first of 4 ports, default 6817),
# SPOTSWEEP_SLURM_CPUS (default: all), SPOTSWEEP_SLURM_GPUS (fake GPUs, default 2).
# Exit status 3: the packages are missing (run hpc/slurm/install.sh as root).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

say() { echo "spotsweep-slurm: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    say "run as root: the daemons run as root (munged as user munge, MariaDB as user mysql)."
    exit 1
fi
for command in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sbatch sacct; do
    if ! command -v "$command" >/dev/null; then
        say "'$command' is not installed; run hpc/slurm/install.sh as root first."
        exit 3
    fi
done

HOST=$(hostname -s)
CPUS=${SPOTSWEEP_SLURM_CPUS:-$(nproc)}
GPUS=${SPOTSWEEP_SLURM_GPUS:-2}

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }
all_running() {
    pid_alive "$MUNGE_DIR/munged.pid" && pid_alive "$DB_RUN/mariadbd.pid" && pid_alive "$RUN/slurmdbd.pid" &&
        pid_alive "$RUN/slurmctld.pid" && pid_alive "$RUN/slurmd.pid" && node_ready
}

report_up() {
    cat >"$STATE/env.sh" <<ENV
# Source this file to use the spotsweep single-node SLURM: source $STATE/env.sh
export SLURM_CONF=$SLURM_CONF_FILE
ENV
    say "up: node $HOST with $CPUS CPUs and $GPUS fake GPUs, partition debug, accounting on."
    say "use it with: export SLURM_CONF=$SLURM_CONF_FILE   (or: source $STATE/env.sh)"
}

if all_running; then
    say "already running."
    report_up
    exit 0
fi

mkdir -p "$STATE" "$ETC" "$RUN" "$LOG" "$STATE/spool/ctld" "$STATE/spool/d" "$FAKE_GPU_DIR"
chmod 755 "$STATE"
touch "$STATE/.spotsweep-slurm"   # stop.sh deletes only a folder that carries this mark

# SLURM needs the node's name to resolve; most machines do this already.
if ! getent hosts "$HOST" >/dev/null; then
    say "adding '127.0.0.1 $HOST' to /etc/hosts: SLURM cannot start when the host name does not resolve."
    echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# Fake GPUs: character devices like /dev/null, one per GPU, declared as gres files.
for ((i = 0; i < GPUS; i++)); do
    [[ -c $FAKE_GPU_DIR/nvidia$i ]] || mknod -m 666 "$FAKE_GPU_DIR/nvidia$i" c 1 3
done

# munge: its own key, socket and pid file; munged insists on owning its folder.
mkdir -p "$MUNGE_DIR"
chown munge:munge "$MUNGE_DIR"
chmod 755 "$MUNGE_DIR"
if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 600 "$MUNGE_DIR/munge.key"
fi
if ! pid_alive "$MUNGE_DIR/munged.pid"; then
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
fi
wait_for 20 munged bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"

# MariaDB for slurmdbd, on 127.0.0.1 only, data under the state folder.
mkdir -p "$DB_RUN"
chown mysql:mysql "$DB_RUN"
if [[ ! -d $DB_DIR/mysql ]]; then
    mkdir -p "$DB_DIR"
    chown mysql:mysql "$DB_DIR"
    mariadb-install-db --no-defaults --datadir="$DB_DIR" --user=mysql --auth-root-authentication-method=socket \
        --skip-test-db >"$LOG/mariadb-install.log" 2>&1
fi
if ! pid_alive "$DB_RUN/mariadbd.pid"; then
    setsid mariadbd --no-defaults --datadir="$DB_DIR" --socket="$DB_SOCKET" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$DB_RUN/mariadbd.pid" --log-error="$LOG/mariadb.log" \
        --user=mysql --skip-log-bin --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
fi
wait_for 60 mariadbd mariadb-admin --no-defaults -S "$DB_SOCKET" -u root ping
if [[ ! -s $ETC/db-password ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ETC/db-password")
fi
DB_PASSWORD=$(cat "$ETC/db-password")
mariadb --no-defaults -S "$DB_SOCKET" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# Configuration files from the templates.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
render() {  # render TEMPLATE TARGET MODE
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASSWORD@|$DB_PASSWORD|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@GPUS@|$GPUS|g" -e "s|@LAST_GPU@|$((GPUS - 1))|g" -e "s|@REAL_MEMORY@|$MEM_MB|g" \
        -e "s|@DEF_MEM_PER_CPU@|1000|g" -e "s|@FAKE_GPU_DIR@|$FAKE_GPU_DIR|g" "$HERE/templates/$1" >"$2.tmp"
    chmod "$3" "$2.tmp"
    mv "$2.tmp" "$2"
}
render slurm.conf.in "$ETC/slurm.conf" 644
render gres.conf.in "$ETC/gres.conf" 644
render slurmdbd.conf.in "$ETC/slurmdbd.conf" 600
# slurmctld and slurmd read cgroup.conf even with cgroups off; an empty one keeps them quiet.
[[ -e $ETC/cgroup.conf ]] || echo "# no cgroups here (proctrack/linuxproc)" >"$ETC/cgroup.conf"

if ! pid_alive "$RUN/slurmdbd.pid"; then
    slurmdbd
fi
wait_for 60 "slurmdbd (port $DBD_PORT)" port_open "$DBD_PORT"

if ! pid_alive "$RUN/slurmctld.pid"; then
    slurmctld
fi
wait_for 60 slurmctld scontrol ping

if ! pid_alive "$RUN/slurmd.pid"; then
    slurmd -N "$HOST"
fi
wait_for 60 "the node $HOST" bash -c "[[ -n \$(sinfo -h -N -n '$HOST' -o %T 2>/dev/null) ]]"
if [[ $(node_state) =~ ^(drain|down) ]]; then
    scontrol update nodename="$HOST" state=resume || true
fi
if ! wait_for 60 "the node $HOST (idle)" node_ready; then
    sinfo -N -l >&2 || true
    exit 1
fi
report_up
