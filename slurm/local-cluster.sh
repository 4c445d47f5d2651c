#!/usr/bin/env bash
# A real Slurm for tests and for trying onepiece without a cluster: one host, or several hosts on
# this machine.
#
#   slurm/local-cluster.sh install          apt-get the packages when missing (root, Debian/Ubuntu)
#   slurm/local-cluster.sh up               one host: munged, MariaDB, slurmdbd, slurmctld, slurmd (node n1)
#   slurm/local-cluster.sh up --hosts N     N hosts h1..hN, one slurmd each (see below)
#   slurm/local-cluster.sh down             kill the jobs still running, stop the daemons, remove the hosts
#   slurm/local-cluster.sh env              print the line that points Slurm clients at this cluster
#   slurm/local-cluster.sh hosts            list the hosts: name, address, state (up, cut, slow, killed)
#   slurm/local-cluster.sh kill HOST        kill -9 every process on HOST (its slurmd, steps, ranks)
#   slurm/local-cluster.sh revive HOST      start HOST's slurmd again after a kill
#   slurm/local-cluster.sh cut HOST         cut HOST's link (its packets are dropped, no error is sent)
#   slurm/local-cluster.sh heal HOST        restore HOST's link, without delay
#   slurm/local-cluster.sh slow HOST MBIT   limit HOST's link to MBIT Mbit/s each way
#   slurm/local-cluster.sh on HOST CMD...   run CMD on HOST (in its namespaces)
#
# Everything lives in one scratch folder ($ONEPIECE_SLURM_DIR, default $TMPDIR/onepiece-slurm or
# /tmp/onepiece-slurm): configuration, state, logs, sockets, the database. Daemons run as root on
# private ports (four from $ONEPIECE_SLURM_PORTS, default 16817) and a private munge socket, so a
# system Slurm on the same host is not disturbed, and two of these clusters can run side by side.
# MaxArraySize is 4 on purpose, so that splitting a large sweep into several arrays is exercised
# here as on a real cluster.
#
# One host: node "n1" claims 8 CPUs whatever the machine has. With --hosts N each host is a
# network, UTS and mount namespace of its own: its own hostname (h1..hN, in /etc/hosts there), its
# own /dev/shm and /tmp, its own address on a private bridge (10.213.X.0/24, the head's address
# .1, host i's .(10+i)); every other path is shared, as on a cluster file system (the scratch
# folder too, also when it lies under /tmp). Each host claims 4 CPUs. munged, MariaDB, slurmdbd
# and slurmctld run on the head (this machine's own namespaces); sbatch, squeue and sacct work
# from there.
set -euo pipefail

DIR="${ONEPIECE_SLURM_DIR:-${TMPDIR:-/tmp}/onepiece-slurm}"
CLUSTER=onepiece-local
PORTS="${ONEPIECE_SLURM_PORTS:-16817}"  # four ports from here: slurmctld, slurmd, slurmdbd, MariaDB
[[ "$PORTS" =~ ^[0-9]+$ ]] && [ "$PORTS" -ge 1024 ] && [ "$PORTS" -le 65000 ] \
    || { echo "local-cluster: ONEPIECE_SLURM_PORTS must be a port number from 1024 to 65000" >&2; exit 2; }
CTLD_PORT=$PORTS
SLURMD_PORT=$((PORTS + 1))
DBD_PORT=$((PORTS + 2))
DB_PORT=$((PORTS + 3))
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2)
HOST_CPUS=4

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
    if [ "$(id -u)" = 0 ] && command -v flock >/dev/null; then
        # one install at a time: two test workers (or two clusters) installing at once fought over
        # apt's lock, and the loser gave up; the second one waits, then finds the packages there
        exec 9>/var/lock/onepiece-local-cluster-install.lock
        flock -w 900 9 || die "another install of the local cluster's packages held its lock for 900 s"
    fi
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); fix: as root run: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # wait for apt's locks rather than fail when another apt-get (not ours) holds them
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# -- hosts: names, namespaces, addresses ----------------------------------------------------------
# $DIR/hosts.list: one line a host, NAME NETNS VETH ADDRESS; $DIR/net: the bridge and the prefix

host_count() { if [ -f "$DIR/hosts.list" ]; then wc -l <"$DIR/hosts.list"; else echo 0; fi; }

host_field() {  # host_field NAME COLUMN: a column of NAME's line (2 netns, 3 veth, 4 address)
    local line
    line="$(awk -v n="$1" '$1 == n' "$DIR/hosts.list" 2>/dev/null)"
    [ -n "$line" ] || die "no host '$1' in this cluster (hosts: $(awk '{print $1}' "$DIR/hosts.list" 2>/dev/null | xargs)); fix: name one of them"
    echo "$line" | awk -v c="$2" '{print $c}'
}

plan_hosts() {  # plan_hosts N: names, namespaces and addresses of a new set of hosts
    local n=$1 tag prefix
    tag="$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')"
    prefix="10.213.$(( 0x$tag % 250 + 1 ))"
    echo "opb$tag $prefix" >"$DIR/net"
    : >"$DIR/hosts.list"
    printf '127.0.0.1 localhost\n%s.1 head\n' "$prefix" >"$DIR/etc-hosts"
    for i in $(seq 1 "$n"); do
        echo "h$i op${tag}h$i op${tag}v$i $prefix.$((10 + i))" >>"$DIR/hosts.list"
        echo "$prefix.$((10 + i)) h$i" >>"$DIR/etc-hosts"
    done
}

make_network() {  # a bridge on the head; each host a network namespace with a veth on the bridge
    local bridge prefix name netns veth addr
    read -r bridge prefix <"$DIR/net"
    ip link add "$bridge" type bridge
    ip addr add "$prefix.1/24" dev "$bridge"
    ip link set "$bridge" up
    while read -r name netns veth addr; do
        ip netns add "$netns"
        ip link add "$veth" type veth peer name eth0 netns "$netns"
        ip link set "$veth" master "$bridge" up
        ip -n "$netns" addr add "$addr/24" dev eth0
        ip -n "$netns" link set eth0 up
        ip -n "$netns" link set lo up
    done <"$DIR/hosts.list"
}

kill_host_processes() {  # every process in the network namespace $1, at once
    local pids
    for _ in 1 2 3 4 5; do
        pids="$(ip netns pids "$1" 2>/dev/null | xargs)"
        [ -n "$pids" ] || return 0
        kill -9 $pids 2>/dev/null || true
        sleep 0.2
    done
}

remove_network() {
    local bridge prefix name netns veth addr
    [ -f "$DIR/hosts.list" ] || return 0
    while read -r name netns veth addr; do
        kill_host_processes "$netns"
        ip netns del "$netns" 2>/dev/null || true
    done <"$DIR/hosts.list"
    if [ -f "$DIR/net" ]; then
        read -r bridge prefix <"$DIR/net"
        ip link del "$bridge" 2>/dev/null || true
    fi
    rm -f "$DIR/hosts.list" "$DIR/net"
}

enter_host() {  # (in host $1's network namespace and a new mount and UTS namespace) become it, run the rest
    local name=$1 root="$DIR/hosts/$1" shared
    shift
    hostname "$name"
    mount --make-rprivate /
    mount --bind "$DIR/etc-hosts" /etc/hosts
    mount -t tmpfs -o mode=1777,size=4g tmpfs /dev/shm
    mkdir -p "$root/tmp"
    chmod 1777 "$root/tmp"
    # the scratch folder and what --share named stay shared where they lie under /tmp
    for shared in "$DIR" $(cat "$DIR/shares" 2>/dev/null); do
        case "$shared" in
            /tmp/*) mkdir -p "$root/tmp/${shared#/tmp/}"; mount --bind "$shared" "$root/tmp/${shared#/tmp/}" ;;
        esac
    done
    mount --rbind "$root/tmp" /tmp
    mount -t proc proc /proc  # this host's processes only (its own PID namespace)
    mkdir -p /tmp/slurmd-spool
    cd /
    # this shell is the host's first process (PID 1 there): it outlives the daemon's start,
    # reaps what is left to it, and the host ends with it
    "$@" &
    wait "$!"
}

start_slurmd() {  # start_slurmd NAME: host NAME's slurmd, in its namespaces
    # nsenter, not `ip netns exec`, which mounts a /sys of its own without the cgroup tree
    nsenter --net="/run/netns/$(host_field "$1" 2)" setsid unshare --mount --uts --ipc --pid --fork --propagation private \
        env ONEPIECE_SLURM_DIR="$DIR" bash "$0" _enter "$1" slurmd -D -f "$DIR/slurm.conf" -N "$1" \
        </dev/null >>"$DIR/log/host-$1.log" 2>&1 &
}

# -- configuration --------------------------------------------------------------------------------
write_config() {
    local host ctld nodes part node_files bridge prefix name netns veth addr
    host="$(hostname -s)"
    mkdir -p "$DIR"/{log,run,state,spool/n1,db,tmp}
    # Job ids that differ from one cluster start to the next: MPICH names its shared-memory
    # segments after the job and step, and a segment left by a killed job of an earlier
    # cluster with the same id would make the new job's MPI_Init wait forever.
    local FIRST_JOB_ID=$(( ($(date +%s) % 5000000) * 10 + 1000 ))
    chmod 700 "$DIR"
    [ -f "$DIR/munge.key" ] || { head -c 1024 /dev/urandom >"$DIR/munge.key"; chmod 600 "$DIR/munge.key"; }
    if [ "$(host_count)" -gt 0 ]; then
        read -r bridge prefix <"$DIR/net"
        ctld="$host($prefix.1)"
        nodes=""
        while read -r name netns veth addr; do
            nodes+="NodeName=$name NodeHostname=$name NodeAddr=$addr CPUs=$HOST_CPUS State=UNKNOWN"$'\n'
        done <"$DIR/hosts.list"
        part="PartitionName=debug Nodes=$(awk '{print $1}' "$DIR/hosts.list" | paste -sd,) Default=YES MaxTime=INFINITE State=UP"
        # node-local, in each host's own /tmp; a host that stops answering is down after 30 s
        node_files="SlurmdSpoolDir=/tmp/slurmd-spool
SlurmdPidFile=/tmp/slurmd.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdTimeout=30"
    else
        ctld="$host"
        nodes="NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN"$'\n'
        part="PartitionName=debug Nodes=n1 Default=YES MaxTime=INFINITE State=UP"
        node_files="SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdLogFile=$DIR/log/slurmd.log"
    fi
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$ctld
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
$node_files
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
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
$nodes$part
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

# -- up and down ----------------------------------------------------------------------------------
up() {
    local hosts=0 shared=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --hosts)
                [[ "${2:-}" =~ ^[1-9][0-9]?$ ]] || die "--hosts needs a number of hosts, 1 to 99"
                hosts=$2; shift 2 ;;
            --share)
                [ -d "${2:-}" ] || die "--share needs a folder that exists"
                shared+=" $(cd "$2" && pwd)"; shift 2 ;;
            *) die "unknown option '$1'; usage: $0 up [--hosts N] [--share FOLDER]..." ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "the local cluster runs its daemons as root; fix: run this as root"
    for cmd in munged slurmctld slurmd slurmdbd mariadbd mariadb-install-db sacctmgr ip unshare nsenter; do
        command -v "$cmd" >/dev/null || die "$cmd not found; fix: $0 install"
    done
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        die "already up (slurmctld pid $(cat "$DIR/run/slurmctld.pid")); fix: $0 down first"
    fi
    for port in $CTLD_PORT $DBD_PORT $DB_PORT; do
        port_free "$port" || die "port $port is in use; fix: stop what holds it, or $0 down"
    done
    [ "$hosts" -gt 0 ] || port_free "$SLURMD_PORT" || die "port $SLURMD_PORT is in use; fix: stop what holds it, or $0 down"
    mkdir -p "$DIR"
    remove_network  # what an earlier cluster in this folder left
    echo "$shared" >"$DIR/shares"
    if [ "$hosts" -gt 0 ]; then
        plan_hosts "$hosts"
        make_network
    fi
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
    if [ "$hosts" -gt 0 ]; then
        local name
        for name in $(awk '{print $1}' "$DIR/hosts.list"); do start_slurmd "$name"; done
        wait_for 60 "every host (sinfo says idle)" bash -c "[ \"\$(sinfo -h -N -o %T | grep -cx idle)\" = $hosts ]"
    else
        slurmd -f "$SLURM_CONF" -N n1
        wait_for 30 "the node (sinfo says idle)" bash -c "sinfo -h -o %T | grep -qx idle"
    fi
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
    [ "$(host_count)" -eq 0 ] || return 0  # a host's processes all end with it
    for _ in $(seq 1 200); do  # slurmd kills what outlives the signal after KillWait (30 s)
        [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    say "jobs still listed after 40 s; stopping the daemons anyway"
}

down() {
    end_jobs
    remove_network
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_pid "$name"; done
    say "down"
}

env_line() { echo "export SLURM_CONF='$DIR/slurm.conf'"; }

# -- hosts' faults --------------------------------------------------------------------------------
list_hosts() {
    local name netns veth addr state
    [ "$(host_count)" -gt 0 ] || die "this cluster has no hosts of their own; fix: $0 up --hosts N"
    while read -r name netns veth addr; do
        state=up
        [ -n "$(ip netns pids "$netns" 2>/dev/null)" ] || state=killed
        tc qdisc show dev "$veth" 2>/dev/null | grep -q tbf && state=slow
        ip link show "$veth" 2>/dev/null | grep -q "state DOWN" && state=cut
        echo "$name $addr $state"
    done <"$DIR/hosts.list"
}

kill_host() { kill_host_processes "$(host_field "$1" 2)"; say "killed every process on $1"; }

revive_host() {
    local netns
    netns="$(host_field "$1" 2)"
    [ -z "$(ip netns pids "$netns")" ] || die "$1 still has processes running; fix: $0 kill $1 first"
    start_slurmd "$1"
    say "started $1's slurmd again"
}

cut_host() { ip link set "$(host_field "$1" 3)" down; say "cut $1's link: its packets are dropped"; }

heal_host() {
    local veth netns
    veth="$(host_field "$1" 3)"
    netns="$(host_field "$1" 2)"
    tc qdisc del dev "$veth" root 2>/dev/null || true
    ip netns exec "$netns" tc qdisc del dev eth0 root 2>/dev/null || true
    ip link set "$veth" up
    say "healed $1's link"
}

slow_host() {  # a rate limit both ways (a token bucket: this kernel may have no netem for delays)
    [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "slow needs a rate in Mbit/s; usage: $0 slow HOST MBIT"
    tc qdisc replace dev "$(host_field "$1" 3)" root tbf rate "${2}mbit" burst 64kb latency 1s
    ip netns exec "$(host_field "$1" 2)" tc qdisc replace dev eth0 root tbf rate "${2}mbit" burst 64kb latency 1s
    say "every packet to and from $1 now shares ${2} Mbit/s each way"
}

on_host() {  # run a command in host $1's namespaces (those of its slurmd)
    local name=$1 pid p
    shift
    pid=""
    for p in $(ip netns pids "$(host_field "$name" 2)"); do  # one inside the host's own PID namespace
        [ "$(readlink "/proc/$p/ns/pid")" = "$(readlink /proc/self/ns/pid)" ] || { pid=$p; break; }
    done
    [ -n "$pid" ] || die "$name has no process to join (killed?); fix: $0 revive $name"
    exec nsenter -t "$pid" -n -m -u -i -p -- "$@"
}

need_host() { [ -n "${2:-}" ] || die "name a host; usage: $0 $1 HOST"; }

case "${1:-}" in
    install) install ;;
    up) shift; up "$@" ;;
    down) down ;;
    env) env_line ;;
    hosts) list_hosts ;;
    kill) need_host kill "${2:-}"; kill_host "$2" ;;
    revive) need_host revive "${2:-}"; revive_host "$2" ;;
    cut) need_host cut "${2:-}"; cut_host "$2" ;;
    heal) need_host heal "${2:-}"; heal_host "$2" ;;
    slow) need_host slow "${2:-}"; slow_host "$2" "${3:-}" ;;
    on) need_host on "${2:-}"; shift; on_host "$@" ;;
    _enter) shift; enter_host "$@" ;;
    *) echo "usage: $0 install | up [--hosts N] [--share FOLDER]... | down | env | hosts | kill|revive|cut|heal HOST | slow HOST MBIT | on HOST CMD..." >&2
       exit 2 ;;
esac
