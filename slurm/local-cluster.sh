#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for tests (tests/test_slurm.py)
# and for trying slurm/generate.sbatch on a workstation. Debian's slurm-wlm +
# munge, daemons started by hand (no systemd), no cgroups, no accounting.
#
#   sudo bash slurm/local-cluster.sh start    # install if missing, configure, start, wait for the node
#   sudo bash slurm/local-cluster.sh status   # daemons and sinfo
#   sudo bash slurm/local-cluster.sh stop     # stop slurmd, slurmctld, munged
#
# Idempotent: `start` on a running, idle cluster with the same configuration does
# nothing; with a changed configuration it restarts the daemons.
#
# Needs root (apt-get, /etc/slurm, /etc/munge). Environment (optional):
#   XTALHPC_SLURM_STATE    state, spool, logs and pid files [/var/lib/xtalhpc-slurm]
#   XTALHPC_SLURM_TIMEOUT  seconds to wait for the node to be idle [60]
#
# Writes /etc/slurm/slurm.conf (the path every Slurm command reads by default),
# but refuses to overwrite one that this script did not write.
set -euo pipefail

STATE=${XTALHPC_SLURM_STATE:-/var/lib/xtalhpc-slurm}
TIMEOUT=${XTALHPC_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by xtalhpc slurm/local-cluster.sh"
NODE=localhost
MUNGE_SOCKET=/run/munge/munge.socket.2

say() { echo "[local-cluster] $*"; }
die() { echo "[local-cluster] ERROR: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, /etc/slurm, /etc/munge, the daemons)"
}

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "slurm-wlm and munge already installed ($(slurmctld -V))"
        return
    fi
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -q --no-install-recommends slurm-wlm munge)
    if ! "${apt[@]}" >"$STATE/apt.log" 2>&1; then
        say "apt-get install failed without a package list update; running apt-get update"
        apt-get update -q >>"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; die "apt-get update failed (log: $STATE/apt.log)"; }
        "${apt[@]}" >>"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $STATE/apt.log)"; }
    fi
    for cmd in munged slurmctld slurmd sbatch sinfo srun scontrol; do
        command -v "$cmd" >/dev/null || die "$cmd still not on PATH after installing slurm-wlm munge"
    done
    say "installed $(slurmctld -V)"
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
ClusterName=xtalhpc-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
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
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=10
MinJobAge=300
SlurmdTimeout=60
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
    CONF_CHANGED=0
    if [[ -e $CONF ]] && ! head -1 "$CONF" | grep -qF "$MARK"; then
        die "$CONF exists and was not written by this script: not overwriting it (move it away to use the local cluster)"
    fi
    if [[ -e $CONF ]] && [[ $(cat "$CONF") == "$new" ]]; then
        say "$CONF unchanged ($hw)"
    else
        mkdir -p "$(dirname "$CONF")"
        printf '%s\n' "$new" >"$CONF"
        CONF_CHANGED=1
        say "wrote $CONF: node $NODE $hw, partition debug"
    fi
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
    if munge_ok; then
        say "munged already running"
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    # A stale socket/pid from a killed munged would make it refuse to start.
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" /run/munge/munged.pid
    runuser -u munge -- munged --socket="$MUNGE_SOCKET"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged did not start (log: /var/log/munge/munged.log)"
    say "started munged (pid $(cat /run/munge/munged.pid 2>/dev/null || echo ?))"
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1; }

start() {
    need_root
    local t0=$SECONDS
    mkdir -p "$STATE/ctld" "$STATE/spool"
    chmod 0755 "$STATE"
    install_packages
    write_conf
    if [[ $CONF_CHANGED -eq 1 ]] && { pid_alive "$STATE/slurmctld.pid" || pid_alive "$STATE/slurmd.pid"; }; then
        say "configuration changed: restarting the Slurm daemons"
        stop_slurm
    fi
    start_munge
    if pid_alive "$STATE/slurmctld.pid"; then
        say "slurmctld already running (pid $(cat "$STATE/slurmctld.pid"))"
    else
        slurmctld -i || die "slurmctld failed to start (log: $STATE/slurmctld.log)"
        say "started slurmctld (log $STATE/slurmctld.log)"
    fi
    if pid_alive "$STATE/slurmd.pid"; then
        say "slurmd already running (pid $(cat "$STATE/slurmd.pid"))"
    else
        slurmd -N "$NODE" || die "slurmd failed to start (log: $STATE/slurmd.log)"
        say "started slurmd -N $NODE (log $STATE/slurmd.log)"
    fi
    local state="" resumed=0
    while (( SECONDS - t0 < TIMEOUT )); do
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
    say "cluster up in $((SECONDS - t0)) s: node $NODE $state, partition debug"
    sinfo
}

stop_slurm() {
    local name pidfile pid
    for name in slurmd slurmctld; do
        pidfile=$STATE/$name.pid
        if pid_alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                say "$name (pid $pid) did not stop in 10 s: killed"
            else
                say "stopped $name (pid $pid)"
            fi
        else
            say "$name not running"
        fi
        rm -f "$pidfile"
    done
}

stop() {
    need_root
    stop_slurm
    if munge_ok; then
        munged --stop --socket="$MUNGE_SOCKET" >/dev/null && say "stopped munged" || die "munged --stop failed"
    else
        say "munged not running"
    fi
}

status() {
    local name
    for name in slurmctld slurmd; do
        if pid_alive "$STATE/$name.pid"; then say "$name running (pid $(cat "$STATE/$name.pid"))"; else say "$name not running"; fi
    done
    if munge_ok; then say "munged running"; else say "munged not running"; fi
    sinfo 2>&1 || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
