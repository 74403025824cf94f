#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for tests (tests/test_slurm*.py)
# and for trying the sbatch scripts on a workstation. Debian's slurm-wlm, munge,
# slurmdbd and mariadb-server; every daemon started by hand (no systemd), no
# cgroups; job accounting in a MariaDB of its own, so that `sacct` answers (it is
# what submitit polls to notice that a job finished, failed or was cancelled).
#
#   sudo bash slurm/local-cluster.sh start    # install if missing, configure, start, wait for the node
#   sudo bash slurm/local-cluster.sh status   # daemons, sinfo, the cluster in the accounting database
#   sudo bash slurm/local-cluster.sh stop     # stop the daemons this script started, by pid
#
# Idempotent: `start` on a running, idle cluster with the same configuration does
# nothing; with a changed configuration it restarts the daemons concerned.
# `stop` stops slurmd, slurmctld, slurmdbd, mariadbd and munged, each by the pid
# file this script keeps for it in its state directory (checking the process
# name): a munged that was already running when `start` came is left alone.
#
# Needs root (apt-get, /etc/slurm, /etc/munge). Environment (optional):
#   XTALHPC_SLURM_STATE    state, spool, database, logs and pid files [/var/lib/xtalhpc-slurm]
#   XTALHPC_SLURM_TIMEOUT  seconds to wait for each daemon, and for the node to be idle [60]
#   XTALHPC_SLURM_DB_PORT  MariaDB's TCP port, listening on 127.0.0.1 only [3307]
#
# Writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf (the paths every Slurm
# command and slurmdbd read by default), but refuses to overwrite either if this
# script did not write it.
set -euo pipefail

STATE=${XTALHPC_SLURM_STATE:-/var/lib/xtalhpc-slurm}
TIMEOUT=${XTALHPC_SLURM_TIMEOUT:-60}
DB_PORT=${XTALHPC_SLURM_DB_PORT:-3307}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by xtalhpc slurm/local-cluster.sh"
CLUSTER=xtalhpc-local
NODE=localhost
DBD_PORT=6819
MUNGE_SOCKET=/run/munge/munge.socket.2
DB_DIR=$STATE/mariadb          # MariaDB's datadir (owned by mysql)
DB_RUN=$STATE/mariadb-run      # its socket, pid file and log (owned by mysql: mariadbd runs as mysql)
DB_CNF=$STATE/mariadb.cnf      # its only option file (--defaults-file: /etc/mysql is not read)
DB_SOCKET=$DB_RUN/mariadbd.sock
DB_NAME=slurm_acct_db
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
# Stopped in this order (the reverse of starting): slurmctld hands its last records to slurmdbd.
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

say() { echo "[local-cluster] $*"; }
die() { echo "[local-cluster] ERROR: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, /etc/slurm, /etc/munge, the daemons)"
}

mariadb_version() { mariadbd --version | sed 's/^.*Ver /mariadb /; s/ for .*//'; }

install_packages() {
    local missing=() cmd
    for cmd in munged slurmctld slurmd slurmdbd sbatch sacct sacctmgr mariadbd mariadb-install-db mariadb; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages already installed ($(slurmctld -V), $(mariadb_version))"
        return
    fi
    local t0=$SECONDS
    say "installing ${PACKAGES[*]} with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -q --no-install-recommends "${PACKAGES[@]}")
    if ! "${apt[@]}" >"$STATE/apt.log" 2>&1; then
        say "apt-get install failed without a package list update; running apt-get update"
        apt-get update -q >>"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; die "apt-get update failed (log: $STATE/apt.log)"; }
        "${apt[@]}" >>"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; die "apt-get install ${PACKAGES[*]} failed (log: $STATE/apt.log)"; }
    fi
    for cmd in munged slurmctld slurmd slurmdbd sbatch sinfo srun scontrol sacct sacctmgr \
               mariadbd mariadb-install-db mariadb mariadb-admin; do
        command -v "$cmd" >/dev/null || die "$cmd still not on PATH after installing ${PACKAGES[*]}"
    done
    say "installed $(slurmctld -V) and $(mariadb_version) in $((SECONDS - t0)) s"
}

# write_owned PATH TEXT MODE: write a file this script owns (first line $MARK), refusing
# to overwrite anyone else's; sets CHANGED=1 if the content changed. Created with its
# final mode (slurmdbd.conf holds the database password), then moved into place.
write_owned() {
    local path=$1 text=$2 mode=$3
    CHANGED=0
    if [[ -e $path ]] && ! head -1 "$path" | grep -qF "$MARK"; then
        die "$path exists and was not written by this script: not overwriting it (move it away to use the local cluster)"
    fi
    if [[ -e $path ]] && [[ $(cat "$path") == "$text" ]]; then
        chmod "$mode" "$path"
        return
    fi
    mkdir -p "$(dirname "$path")"
    (umask 077; printf '%s\n' "$text" >"$path.new")
    chmod "$mode" "$path.new"
    mv -f "$path.new" "$path"
    CHANGED=1
}

write_conf() {
    # CPUs, sockets, cores, threads and RealMemory as slurmd itself detects them.
    local hw
    hw=$(slurmd -C | head -1) || die "slurmd -C failed"
    [[ $hw == NodeName=* ]] || die "unexpected slurmd -C output: $hw"
    hw=${hw#NodeName=* }   # drop the machine's own hostname: the node is called localhost
    local new
    new=$(cat <<EOF
$MARK ($STATE); do not edit, rerun the script
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Job-step credential lifetime, which is also how long a requeued job waits before it may start
# again (default 120 s): shorter here, so that requeue tests do not idle for two minutes.
AuthInfo=cred_expire=30
# No cgroups: plain process tracking, no task binding or containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Accounting: slurmctld sends every job's record to slurmdbd (MariaDB in $STATE), so
# sacct answers after a job has left slurmctld's memory; linux gathers usage from /proc.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# A job that becomes eligible without an event (a requeued job's wait running out) is started by
# the next backfill pass: every 5 s rather than 30 on this one-node cluster.
SchedulerParameters=bf_interval=5
InactiveLimit=0
KillWait=10
MinJobAge=300
SlurmdTimeout=60
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
    write_owned "$CONF" "$new" 0644
    CONF_CHANGED=$CHANGED
    if [[ $CONF_CHANGED -eq 1 ]]; then say "wrote $CONF: node $NODE $hw, partition debug"; else say "$CONF unchanged ($hw)"; fi
}

write_dbd_conf() {
    # The database password: made once, kept (mode 600) beside the database it opens.
    if [[ ! -s $STATE/db-password ]]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/db-password")
    fi
    chmod 0600 "$STATE/db-password"
    local new
    new=$(cat <<EOF
$MARK ($STATE); do not edit, rerun the script
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$STATE/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/db-password")
StorageLoc=$DB_NAME
EOF
)
    # slurmdbd refuses a slurmdbd.conf that is not owned by SlurmUser (root) or that others can read.
    write_owned "$DBD_CONF" "$new" 0600
    chown root:root "$DBD_CONF"
    DBD_CONF_CHANGED=$CHANGED
    if [[ $DBD_CONF_CHANGED -eq 1 ]]; then say "wrote $DBD_CONF (mode 600)"; else say "$DBD_CONF unchanged"; fi
}

write_db_cnf() {
    local new
    new=$(cat <<EOF
$MARK ($STATE); do not edit, rerun the script
[mariadbd]
user=mysql
datadir=$DB_DIR
socket=$DB_SOCKET
pid-file=$DB_RUN/mariadbd.pid
log-error=$DB_RUN/mariadbd.log
bind-address=127.0.0.1
port=$DB_PORT
skip-name-resolve
# Small: a test cluster's accounting on a shared machine. slurmdbd's recommended lock wait.
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_lock_wait_timeout=900
performance_schema=OFF
max_connections=50
[client]
socket=$DB_SOCKET
EOF
)
    write_owned "$DB_CNF" "$new" 0644
    DB_CNF_CHANGED=$CHANGED
    if [[ $DB_CNF_CHANGED -eq 1 ]]; then say "wrote $DB_CNF"; fi
}

# The pid file of each daemon this script starts (mariadbd writes its own as user mysql).
pidfile_of() { if [[ $1 == mariadbd ]]; then echo "$DB_RUN/mariadbd.pid"; else echo "$STATE/$1.pid"; fi; }

# pid_alive NAME: the pid file this script keeps for NAME names a live process called NAME.
pid_alive() {
    local pidfile pid
    pidfile=$(pidfile_of "$1")
    [[ -s $pidfile ]] || return 1
    pid=$(cat "$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s; false if it never succeeds.
wait_until() {
    local limit=$1 t0=$SECONDS
    shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS - t0 < limit )) || return 1
        sleep 0.2
    done
}

stop_daemon() {
    local name=$1 pidfile pid
    pidfile=$(pidfile_of "$1")
    if pid_alive "$name"; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        # mariadbd flushes InnoDB on the way out: give it longer than the others.
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            say "$name (pid $pid) did not stop in 30 s: killed"
        else
            say "stopped $name (pid $pid)"
        fi
    else
        say "$name not running (no live pid in $pidfile)"
    fi
    rm -f "$pidfile"
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
        say "created /etc/munge/munge.key"
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    if pid_alive munged && munge_ok; then
        say "munged already running (pid $(cat "$STATE/munged.pid"))"
        return
    fi
    if munge_ok; then
        say "munged already running, not started by this script: using it, and \`stop\` will leave it"
        rm -f "$STATE/munged.pid"
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    # A stale socket/pid from a killed munged would make it refuse to start.
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" /run/munge/munged.pid
    runuser -u munge -- munged --socket="$MUNGE_SOCKET"
    wait_until 10 munge_ok || die "munged did not start (log: /var/log/munge/munged.log)"
    # munged writes its pid to /run/munge; our copy is what `stop` goes by.
    cp /run/munge/munged.pid "$STATE/munged.pid"
    pid_alive munged || die "munged started but /run/munge/munged.pid does not name it"
    say "started munged (pid $(cat "$STATE/munged.pid"))"
}

db_sql() { mariadb --defaults-file="$DB_CNF" --user=root --batch --skip-column-names "$@"; }
db_ping() { mariadb-admin --defaults-file="$DB_CNF" --user=root ping; }

start_mariadb() {
    if pid_alive mariadbd; then
        wait_until "$TIMEOUT" db_ping \
            || die "mariadbd (pid $(cat "$DB_RUN/mariadbd.pid")) runs but does not answer (log: $DB_RUN/mariadbd.log)"
        say "mariadbd already running (pid $(cat "$DB_RUN/mariadbd.pid"))"
        return
    fi
    local t0=$SECONDS pid
    install -d -o mysql -g mysql -m 0750 "$DB_DIR" "$DB_RUN"
    if [[ ! -d $DB_DIR/mysql ]]; then
        # root gets in through the unix socket as the OS root (no password); no test database.
        mariadb-install-db --defaults-file="$DB_CNF" --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket --skip-test-db \
            >"$STATE/mariadb-install.log" 2>&1 \
            || { tail -20 "$STATE/mariadb-install.log" >&2; die "mariadb-install-db failed (log: $STATE/mariadb-install.log)"; }
        say "created the MariaDB datadir $DB_DIR"
    fi
    rm -f "$DB_SOCKET" "$DB_RUN/mariadbd.pid"
    # mariadbd does not daemonize itself: its own session, detached from this shell.
    setsid mariadbd --defaults-file="$DB_CNF" </dev/null >>"$DB_RUN/mariadbd.log" 2>&1 &
    pid=$!
    until db_ping >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$DB_RUN/mariadbd.log" >&2; die "mariadbd exited while starting (log: $DB_RUN/mariadbd.log)"
        fi
        if (( SECONDS - t0 >= TIMEOUT )); then
            tail -20 "$DB_RUN/mariadbd.log" >&2; die "mariadbd did not answer in ${TIMEOUT}s (log: $DB_RUN/mariadbd.log)"
        fi
        sleep 0.2
    done
    pid_alive mariadbd || die "mariadbd answers but $DB_RUN/mariadbd.pid does not name it (another server on $DB_SOCKET?)"
    # The account slurmdbd uses (TCP from 127.0.0.1, password in $DBD_CONF); idempotent.
    local pw
    pw=$(cat "$STATE/db-password")
    db_sql <<EOF || die "could not create the database $DB_NAME and its user (log: $DB_RUN/mariadbd.log)"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO 'slurm'@'127.0.0.1';
EOF
    say "started mariadbd (pid $pid, 127.0.0.1:$DB_PORT, datadir $DB_DIR, log $DB_RUN/mariadbd.log) in $((SECONDS - t0)) s"
}

dbd_ok() { sacctmgr --noheader --parsable2 list cluster format=cluster; }

start_slurmdbd() {
    if pid_alive slurmdbd; then
        say "slurmdbd already running (pid $(cat "$STATE/slurmdbd.pid"))"
    else
        local t0=$SECONDS
        slurmdbd || die "slurmdbd failed to start (log: $STATE/slurmdbd.log)"
        # The first start creates the tables: seconds on a busy machine.
        wait_until "$TIMEOUT" dbd_ok \
            || { tail -20 "$STATE/slurmdbd.log" >&2; die "slurmdbd did not answer sacctmgr in ${TIMEOUT}s (log: $STATE/slurmdbd.log)"; }
        pid_alive slurmdbd || die "slurmdbd answers but $STATE/slurmdbd.pid does not name it"
        say "started slurmdbd (pid $(cat "$STATE/slurmdbd.pid"), log $STATE/slurmdbd.log) in $((SECONDS - t0)) s"
    fi
    # slurmctld records jobs only for a cluster the database knows.
    if ! dbd_ok | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
        say "registered cluster $CLUSTER in the accounting database"
    fi
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1; }

start() {
    need_root
    local t0=$SECONDS
    mkdir -p "$STATE/ctld" "$STATE/spool"
    chmod 0755 "$STATE"
    install_packages
    write_conf
    write_dbd_conf
    write_db_cnf
    # A changed configuration restarts the daemons that read it (and those above them).
    if [[ $DB_CNF_CHANGED -eq 1 ]] && pid_alive mariadbd; then
        say "MariaDB configuration changed: restarting it and slurmdbd"
        stop_daemon slurmdbd; stop_daemon mariadbd
    elif [[ $DBD_CONF_CHANGED -eq 1 ]] && pid_alive slurmdbd; then
        say "slurmdbd configuration changed: restarting it"
        stop_daemon slurmdbd
    fi
    if [[ $CONF_CHANGED -eq 1 ]] && { pid_alive slurmctld || pid_alive slurmd; }; then
        say "Slurm configuration changed: restarting slurmctld and slurmd"
        stop_daemon slurmd; stop_daemon slurmctld
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    if pid_alive slurmctld; then
        say "slurmctld already running (pid $(cat "$STATE/slurmctld.pid"))"
    else
        slurmctld -i || die "slurmctld failed to start (log: $STATE/slurmctld.log)"
        say "started slurmctld (log $STATE/slurmctld.log)"
    fi
    if pid_alive slurmd; then
        say "slurmd already running (pid $(cat "$STATE/slurmd.pid"))"
    else
        slurmd -N "$NODE" || die "slurmd failed to start (log: $STATE/slurmd.log)"
        say "started slurmd -N $NODE (log $STATE/slurmd.log)"
    fi
    local state="" resumed=0 t1=$SECONDS
    while (( SECONDS - t1 < TIMEOUT )); do
        state=$(node_state || true)
        case $state in
            idle|mixed|allocated|completing) break ;;
            drain*|drng) # left drained by an earlier run (e.g. a killed job): give it back
                if [[ $resumed -eq 0 ]]; then
                    scontrol update NodeName="$NODE" State=RESUME || true
                    say "node $NODE was $state: resumed"
                    resumed=1
                fi ;;
        esac
        sleep 0.5
    done
    case $state in
        idle|mixed|allocated|completing) ;;
        *)
            echo "--- sinfo:" >&2; sinfo -N -l >&2 || true
            echo "--- tail $STATE/slurmctld.log:" >&2; tail -15 "$STATE/slurmctld.log" >&2 || true
            echo "--- tail $STATE/slurmd.log:" >&2; tail -15 "$STATE/slurmd.log" >&2 || true
            die "node $NODE not idle after ${TIMEOUT}s (state '${state:-no answer from slurmctld}')" ;;
    esac
    say "cluster up in $((SECONDS - t0)) s: node $NODE $state, partition debug, accounting via slurmdbd"
    sinfo
}

stop() {
    need_root
    local name
    for name in "${DAEMONS[@]}"; do
        if [[ $name == munged ]] && [[ ! -e $STATE/munged.pid ]] && munge_ok; then
            say "munged running but not started by this script: left alone"
            continue
        fi
        stop_daemon "$name"
    done
}

status() {
    local name
    for name in "${DAEMONS[@]}"; do
        if pid_alive "$name"; then
            say "$name running (pid $(cat "$(pidfile_of "$name")"))"
        elif [[ $name == munged ]] && munge_ok; then
            say "munged running (not started by this script)"
        else
            say "$name not running"
        fi
    done
    sinfo 2>&1 || true
    sacctmgr --noheader list cluster format=cluster%20,controlhost,controlport 2>&1 || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
