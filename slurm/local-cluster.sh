#!/usr/bin/env bash
# A real one-host Slurm for tests and for trying onepiece without a cluster.
#
#   slurm/local-cluster.sh install   apt-get the packages when missing (root, Debian/Ubuntu)
#   slurm/local-cluster.sh up        start munged, MariaDB, slurmdbd, slurmctld, slurmd
#   slurm/local-cluster.sh down      kill the jobs still running, stop the daemons (by their PID files, in reverse order)
#   slurm/local-cluster.sh env       print the line that points Slurm clients at this cluster
#
# Everything lives in one scratch folder ($ONEPIECE_SLURM_DIR, default $TMPDIR/onepiece-slurm or
# /tmp/onepiece-slurm): configuration, state, logs, sockets, the database. Daemons run as root on
# private ports and a private munge socket, so a system Slurm on the same host is not disturbed.
# One node, "n1", claims 8 CPUs whatever the host has; MaxArraySize is 4 on purpose, so that
# splitting a large sweep into several arrays is exercised here as on a real cluster.
set -euo pipefail

DIR="${ONEPIECE_SLURM_DIR:-${TMPDIR:-/tmp}/onepiece-slurm}"
CLUSTER=onepiece-local
CTLD_PORT=16817
SLURMD_PORT=16818
DBD_PORT=16819
DB_PORT=16820
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds, at most SECONDS
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if timeout 5 "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what did not come up within ${limit}s; see the logs in $DIR/log"
}

install() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); fix: as root run: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
    local host
    host="$(hostname -s)"
    mkdir -p "$DIR"/{log,run,state,spool/n1,db,tmp}
    # Job ids that differ from one cluster start to the next: MPICH names its shared-memory
    # segments after the job and step, and a segment left by a killed job of an earlier
    # cluster with the same id would make the new job's MPI_Init wait forever.
    local FIRST_JOB_ID=$(( ($(date +%s) % 5000000) * 10 + 1000 ))
    chmod 700 "$DIR"
    [ -f "$DIR/munge.key" ] || { head -c 1024 /dev/urandom >"$DIR/munge.key"; chmod 600 "$DIR/munge.key"; }
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=300
MaxArraySize=4
FirstJobId=$FIRST_JOB_ID
JobRequeue=1
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/run/munge.socket
JobAcctGatherType=jobacct_gather/none
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=n1 Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=$host
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

up() {
    [ "$(id -u)" = 0 ] || die "the local cluster runs its daemons as root; fix: run this as root"
    for cmd in munged slurmctld slurmd slurmdbd mariadbd mariadb-install-db sacctmgr; do
        command -v "$cmd" >/dev/null || die "$cmd not found; fix: $0 install"
    done
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        die "already up (slurmctld pid $(cat "$DIR/run/slurmctld.pid")); fix: $0 down first"
    fi
    for port in $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT; do
        port_free "$port" || die "port $port is in use; fix: stop what holds it, or $0 down"
    done
    write_config
    export SLURM_CONF="$DIR/slurm.conf"

    munged --force --socket="$DIR/run/munge.socket" --key-file="$DIR/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munged.seed"
    wait_for 10 munged bash -c "munge -S '$DIR/run/munge.socket' -n | unmunge -S '$DIR/run/munge.socket'"

    [ -d "$DIR/db/mysql" ] || mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=normal \
        >"$DIR/log/mariadb-install.log" 2>&1
    mariadbd --user=root --datadir="$DIR/db" --port=$DB_PORT --bind-address=127.0.0.1 \
        --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadbd.pid" --skip-grant-tables \
        --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=32M >/dev/null 2>&1 &
    wait_for 30 MariaDB test -S "$DIR/run/mysqld.sock"

    slurmdbd  # reads slurmdbd.conf from the folder of $SLURM_CONF
    wait_for 30 slurmdbd bash -c "(exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT)"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true

    slurmctld -c -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N n1
    wait_for 30 "the node (sinfo says idle)" bash -c "sinfo -h -o %T | grep -qx idle"
    say "up; Slurm clients need: $(env_line)"
}

stop_pid() {  # stop_pid NAME: TERM the process in run/NAME.pid, then KILL it after 10 s
    local file="$DIR/run/$1.pid" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

end_jobs() {  # kill this cluster's jobs: slurmd going down leaves their processes running
    local pid jobs
    pid="$(cat "$DIR/run/slurmctld.pid" 2>/dev/null)" || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    export SLURM_CONF="$DIR/slurm.conf"
    jobs="$(timeout 10 squeue -h -o %A 2>/dev/null)" || return 0
    [ -n "$jobs" ] || return 0
    say "killing the jobs still queued or running: $(echo $jobs)"
    echo "$jobs" | xargs timeout 10 scancel --full --signal=KILL 2>/dev/null || true
    for _ in $(seq 1 200); do  # slurmd kills what outlives the signal after KillWait (30 s)
        [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    say "jobs still listed after 40 s; stopping the daemons anyway"
}

down() {
    end_jobs
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_pid "$name"; done
    say "down"
}

env_line() { echo "export SLURM_CONF='$DIR/slurm.conf'"; }

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    env) env_line ;;
    *) echo "usage: $0 install|up|down|env" >&2; exit 2 ;;
esac
