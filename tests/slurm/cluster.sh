#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for the metatune tests and for trying the Slurm profile
# without a cluster account.
#
#   tests/slurm/cluster.sh start    install the Debian packages if missing, write the configs, start the daemons
#   tests/slurm/cluster.sh stop     cancel this cluster's jobs, stop exactly the daemons that `start` started and
#                                   remove the configs it wrote
#   tests/slurm/cluster.sh status   which daemons run (with PIDs), the node state and the queue
#   tests/slurm/cluster.sh clean    stop, then delete the state dir (database, spool, logs)
#
# Needs root (it installs packages, writes /etc/slurm, creates /run/munge, /run/mysqld and device nodes).
# Works without systemd: every daemon runs in the foreground of its own session and its PID is recorded in
# $METATUNE_SLURM_STATE/pids/, which is what `stop` kills. Daemons that were already running before `start`
# (a system munged or MariaDB) are used but never stopped.
#
# Why each piece is here:
#   munge        Slurm's authentication between commands and daemons.
#   MariaDB      storage for slurmdbd. The Slurm executor plugin asks `sacct` for job states; without
#                accounting it never learns that a job ended and waits forever.
#   slurmdbd     the accounting daemon that `sacct` and `sacctmgr` talk to.
#   slurmctld    the controller (queue, scheduling).
#   slurmd       the one compute node, "localhost", with fake GPUs (character devices) as GRES.
#
# Settings (environment variables; defaults in brackets):
#   METATUNE_SLURM_STATE    state dir: configs' spool, database, logs, PIDs     [/tmp/metatune-slurm]
#   METATUNE_SLURM_ACCOUNT  the account created for the test user(s)            [metatune]
#   METATUNE_SLURM_USERS    users added to that account                         [root and $SUDO_USER]
#   METATUNE_SLURM_CPUS     CPUs the node advertises (may exceed the real ones) [16]
#   METATUNE_SLURM_MEM_MB   memory the node advertises (not enforced)           [131072]
#   METATUNE_SLURM_GPUS     fake GPUs on the node                               [2]
set -euo pipefail

STATE=${METATUNE_SLURM_STATE:-/tmp/metatune-slurm}
ACCOUNT=${METATUNE_SLURM_ACCOUNT:-metatune}
USERS=${METATUNE_SLURM_USERS:-root ${SUDO_USER:-}}
# An Euler-like GPU node by default, so profiles/slurm's requests (4 CPUs and 16 GB per trial, 8 CPUs per
# group) fit unchanged. Nothing enforces them here: the test jobs sleep or run the simulated trainer.
CPUS=${METATUNE_SLURM_CPUS:-16}
MEM_MB=${METATUNE_SLURM_MEM_MB:-131072}
GPUS=${METATUNE_SLURM_GPUS:-2}

CLUSTER=metatune
PARTITION=normal
NODE=localhost              # the node's name in slurm.conf; the machine's hostname may differ (slurmd -N)
CONF_DIR=/etc/slurm         # where sbatch/squeue/sacct look by default, so users need no SLURM_CONF
# slurmdbd reaches MariaDB as StorageHost=localhost, which the client library maps to its compiled-in
# default socket; MariaDB itself runs with --skip-networking (no TCP port that could clash).
MYSQL_SOCKET=/run/mysqld/mysqld.sock
MUNGE_SOCKET=/run/munge/munge.socket.2
MARKER="# Written by metatune tests/slurm/cluster.sh; regenerated on every start."
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, writes /etc/slurm and /run)"
}

# ---------------------------------------------------------------------------------------------- install

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    # Not the slurm-wlm metapackage: it drags in recommends (X11 tools, docs) that a test needs none of.
    # The lock timeout: other processes on a shared machine may be running apt at the same time.
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2 \
        || { apt-get -o DPkg::Lock::Timeout=600 update >&2 &&
             apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2; }
}

# ---------------------------------------------------------------------------------------------- configs

write_configs() {
    mkdir -p "$CONF_DIR" "$STATE"/{pids,log,ctld,spool,tmp,dev}
    chmod 755 "$STATE"      # mariadbd (user mysql) and munged (user munge) must traverse it
    local f
    for f in slurm.conf slurmdbd.conf gres.conf; do
        if [[ -e $CONF_DIR/$f ]] && ! grep -qF "$MARKER" "$CONF_DIR/$f"; then
            die "$CONF_DIR/$f exists and was not written by this script; refusing to overwrite a real config"
        fi
    done

    # Fake GPUs: character devices with /dev/null's numbers. Slurm only needs a device file per GPU to
    # bind it to a job and export CUDA_VISIBLE_DEVICES; nothing ever opens them.
    # Without the right to create device nodes (some containers), the GPUs are plain counts: --gpus=1 still
    # works, only CUDA_VISIBLE_DEVICES is not set in jobs.
    local i gres_file="Count=$GPUS"
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $STATE/dev/gpu$i ]] || mknod "$STATE/dev/gpu$i" c 1 3 2>/dev/null || break
    done
    if ((GPUS > 0)) && [[ -c $STATE/dev/gpu$((GPUS - 1)) ]]; then
        gres_file="File=$STATE/dev/gpu[0-$((GPUS - 1))]"
    elif ((GPUS > 0)); then
        log "warning: cannot create device nodes; fake GPUs without device files (no CUDA_VISIBLE_DEVICES)"
    fi

    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
# Root runs the daemons: a throwaway test cluster, and it spares chowning every state dir.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/pids/slurmctld.daemon.pid
SlurmdPidFile=$STATE/pids/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MpiDefault=none
SwitchType=switch/none
# No cgroups in containers without systemd: track processes by parent PID, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Allocate cores and memory per job (as Euler does), so jobs share the node instead of each taking it whole.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks for no memory is given the whole node and the others queue behind it.
DefMemPerCPU=256
# Reject jobs that can never run (too much memory, GPUs, time) at submit time instead of pending forever.
EnforcePartLimits=ALL
# Trust the CPUs/memory/TmpDisk written below even where the machine has fewer (a 2-core CI runner).
SlurmdParameters=config_overrides
# Keep finished jobs in slurmctld (squeue, scontrol show job) for 10 minutes, for tests and humans.
MinJobAge=600
ReturnToService=2
# scancel: a job is SIGKILLed 5 s after SIGTERM (default 30 s), so fault tests stay short.
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# Fake GPUs (gres.conf), plus Euler's "gpumem" GRES so that --gres=gpumem:24g is accepted as on Euler.
GresTypes=gpu,gpumem
# Accounting: sacct is how the executor plugin learns job states; enforce associations like a real site,
# so a wrong account is rejected at submit time.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations,limits
AccountingStorageTRES=gres/gpu,gres/gpumem
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Node-local scratch (sbatch --tmp checks TmpDisk on the node, in MB).
TmpFS=$STATE/tmp
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB TmpDisk=102400 Gres=gpu:$GPUS,gpumem:$((GPUS * 24))G State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
NodeName=$NODE Name=gpu $gres_file
NodeName=$NODE Name=gpumem Count=$((GPUS * 24))G
EOF

    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/pids/slurmdbd.daemon.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
# Root connects through the socket with MariaDB's unix_socket authentication: no password anywhere.
StorageUser=root
StorageLoc=slurm_acct_db_$CLUSTER
EOF
    # slurmdbd refuses a config that others can read (it may hold a database password).
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

# ---------------------------------------------------------------------------------------------- daemons

pidfile() { echo "$STATE/pids/$1.pid"; }

# True when we started daemon $1 and it is still alive (the PID's program is checked, so a recycled PID
# of some other process never counts).
ours_running() {
    local f pid
    f=$(pidfile "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    grep -qa "$1" "/proc/$pid/cmdline" 2>/dev/null
}

# start_daemon NAME CMD...: run CMD in the foreground of a new session (so Ctrl-C or a test harness
# killing its process group does not take the cluster down), log to $STATE/log/NAME.out, record the PID.
start_daemon() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$(pidfile "$name")"
    log "started $name (pid $!)"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up within ${secs}s; see $STATE/log/"
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

start_munge() {
    if ours_running munged; then return 0; fi
    if munge_ok >/dev/null 2>&1; then
        log "munged already running (not started by this script; left alone)"
        return 0
    fi
    # munged refuses directories that other users can write to, and runs as the munge user.
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 "$STATE/munge"
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --socket="$MUNGE_SOCKET" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for munged 15 munge_ok
}

mysql_ok() { mariadb --socket="$MYSQL_SOCKET" -u root -e 'SELECT 1'; }

start_mariadb() {
    if ours_running mariadbd; then return 0; fi
    if mysql_ok >/dev/null 2>&1; then
        log "MariaDB already answers on $MYSQL_SOCKET (not started by this script; used, left alone)"
        return 0
    fi
    install -d -o mysql -g mysql -m 755 /run/mysqld
    if [[ ! -d $STATE/mysql/mysql ]]; then
        # A private data dir, so the system's /var/lib/mysql is never touched.
        log "initializing MariaDB data dir $STATE/mysql"
        install -d -o mysql -g mysql -m 750 "$STATE/mysql"
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install-db.out" 2>&1
    fi
    # Small buffer pool: the accounting database is tiny and the machine is shared.
    start_daemon mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
        --socket="$MYSQL_SOCKET" --skip-networking --pid-file="$STATE/mysql/mariadbd.pid" \
        --innodb-buffer-pool-size=32M --log-error="$STATE/log/mariadbd.log"
    wait_for MariaDB 60 mysql_ok
}

start_slurmdbd() {
    if ! ours_running slurmdbd; then
        start_daemon slurmdbd slurmdbd -D
    fi
    wait_for slurmdbd 60 sacctmgr -n list cluster
}

start_slurmctld() {
    if ! ours_running slurmctld; then
        start_daemon slurmctld slurmctld -D -i
    fi
    wait_for slurmctld 60 scontrol ping
}

start_slurmd() {
    if ! ours_running slurmd; then
        start_daemon slurmd slurmd -D -N "$NODE"
    fi
}

node_ready() {
    local s
    s=$(sinfo -h -n "$NODE" -o %T)
    [[ $s == idle || $s == mixed || $s == allocated ]]
}

# The cluster (slurmctld registers it itself), the test account, and the users in it. Idempotent:
# sacctmgr answers "Nothing new added" when an entity exists.
register_accounts() {
    local u
    # The cluster row may lag behind slurmctld's first contact with slurmdbd by a moment.
    wait_for "cluster registration" 30 bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="metatune tests" \
        Organization=metatune >/dev/null 2>&1 || true
    for u in $USERS; do
        [[ -n $u ]] || continue
        sacctmgr -i add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
    done
    for u in $USERS; do
        [[ -n $u ]] || continue
        sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" format=user | grep -qx "$u" \
            || die "user $u is not in account $ACCOUNT (sacctmgr)"
    done
}

cmd_start() {
    require_root
    local t0=$SECONDS
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    register_accounts
    # A node that was DOWN when slurmctld last saw it (unclean stop) comes back with RESUME.
    if ! node_ready; then
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    fi
    wait_for "node $NODE" 60 node_ready
    log "cluster up in $((SECONDS - t0))s: partition=$PARTITION account=$ACCOUNT cpus=$CPUS mem=${MEM_MB}MB gpus=$GPUS"
}

# stop_daemon NAME: SIGTERM, wait up to 30 s, then SIGKILL. Only PIDs this script recorded.
stop_daemon() {
    local name=$1 f pid i
    f=$(pidfile "$name")
    if ! ours_running "$name"; then
        rm -f "$f"
        return 0
    fi
    pid=$(<"$f")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.25
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for 30s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
    log "stopped $name (pid $pid)"
}

cmd_stop() {
    require_root
    # Jobs first: their slurmstepd processes outlive slurmd, so cancel them while the controller still runs.
    if ours_running slurmctld && scontrol ping >/dev/null 2>&1; then
        local ids i
        ids=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n $ids ]]; then
            log "cancelling jobs: $(echo $ids)"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            for ((i = 0; i < 80; i++)); do
                [[ -z $(squeue -h -t running,completing -o %A 2>/dev/null) ]] && break
                sleep 0.25
            done
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon slurmdbd
    stop_daemon mariadbd
    stop_daemon munged
    # A slurm.conf naming a controller that is gone makes every Slurm client wait ~9 s for it, and the Slurm
    # executor plugin runs `scontrol show config` when it is imported, i.e. in every `snakemake` call.
    # `start` writes the configs again.
    local f
    for f in slurm.conf slurmdbd.conf gres.conf; do
        if [[ -e $CONF_DIR/$f ]] && grep -qF "$MARKER" "$CONF_DIR/$f"; then
            rm -f "$CONF_DIR/$f"
        fi
    done
}

cmd_status() {
    local name rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if ours_running "$name"; then
            printf '%-10s running (pid %s)\n' "$name" "$(<"$(pidfile "$name")")"
        else
            printf '%-10s not running (from this script)\n' "$name"
            rc=1
        fi
    done
    if scontrol ping >/dev/null 2>&1; then
        sinfo -N -o '%N %T %c %m %G'
        squeue
    fi
    return $rc
}

cmd_clean() {
    cmd_stop
    [[ $STATE == / ]] && die "refusing to delete /"
    rm -rf "$STATE"
    log "removed $STATE"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    *)
        echo "usage: $0 start|stop|status|clean" >&2
        exit 2
        ;;
esac
