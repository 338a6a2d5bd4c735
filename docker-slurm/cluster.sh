#!/usr/bin/env bash
# cluster.sh: a real single-host Slurm (munge, MariaDB, slurmdbd, slurmctld,
# slurmd) with fake GPUs, started without systemd or Docker, for piqc-slurm's
# tests and demo.
#
#   cluster.sh up            install what is missing, start everything, wait for an idle node
#   cluster.sh down          stop only the daemons this script started (by PID), remove its fake /dev/nvidia*
#   cluster.sh down --purge  the same, then drop its state, logs and accounting database
#   cluster.sh status        what runs, and the node as Slurm sees it
#   cluster.sh env           export lines to act on this cluster exactly as its hooks do
#
# Settings (environment):
#   PIQC_CLUSTER_DIR  state, config and logs      [/var/lib/piqc-cluster]
#   CLUSTER_NAME      Slurm ClusterName            [piqc]
#   NODES             slurmd nodes on this host     [1]
#                     1: one node named after the host.  2 or more: nodes
#                     node1..nodeN (NODE_PREFIX), each its own slurmd (Debian's
#                     Slurm is built with multiple-slurmd support: slurmd -N),
#                     port, spool, fake GPUs and fake-NVML state
#   NGPU, GPU_TYPE    fake GPUs per node            [8, h100]
#                     comma lists give each node its own, the last one
#                     repeating: NODES=2 NGPU=4 GPU_TYPE=h100,l40s
#   NODE_PREFIX       names of the nodes when NODES >= 2   [node]
#   NODE_CPUS         CPUs declared to Slurm (more than the machine has, so
#                     dozens of short jobs run at once)   [64]
#   TEST_USER         unprivileged user who submits jobs  [piqcuser]
#   TEST_ACCOUNT      its Slurm account                   [research]
#   PIQC_BIN          piqc-slurm the hooks call     [<repo>/.venv/bin/piqc-slurm]
#   DB_PORT           MariaDB TCP port (127.0.0.1 only)  [3307]
#   SLURM_PORTS       slurmctld,slurmd,slurmdbd ports    [6817,6818,6819]
#
# Safety: refuses to run on a host with a real NVIDIA driver, or where a Slurm
# daemon runs that this script did not start; removes only the device nodes it
# recorded creating.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
D=${PIQC_CLUSTER_DIR:-/var/lib/piqc-cluster}
CLUSTER_NAME=${CLUSTER_NAME:-piqc}
NGPU=${NGPU:-8}
GPU_TYPE=${GPU_TYPE:-h100}
NODES=${NODES:-1}
NODE_PREFIX=${NODE_PREFIX:-node}
NODE_CPUS=${NODE_CPUS:-64}
TEST_USER=${TEST_USER:-piqcuser}
TEST_ACCOUNT=${TEST_ACCOUNT:-research}
PIQC_BIN=${PIQC_BIN:-$REPO/.venv/bin/piqc-slurm}
# The hook fragment skips an entry point that is not executable (exit 0, "nothing done"), so
# wiring a missing one would leave every job's Prolog and Epilog silently doing nothing.
check_piqc_bin() {
    case "$PIQC_BIN" in /*) ;; *) echo "cluster.sh: error: PIQC_BIN=$PIQC_BIN is not an absolute path (slurmd runs hooks with no PATH)" >&2; return 1;; esac
    if [ ! -f "$PIQC_BIN" ] || [ ! -x "$PIQC_BIN" ]; then
        echo "cluster.sh: error: PIQC_BIN=$PIQC_BIN is missing or not executable: the hooks would do nothing for every job." >&2
        echo "cluster.sh: create $REPO/.venv with 'bash docker-slurm/setup.sh', or set PIQC_BIN to an installed piqc-slurm" >&2
        return 1
    fi
}
DB_PORT=${DB_PORT:-3307}
IFS=, read -r CTLD_PORT SLURMD_PORT DBD_PORT <<<"${SLURM_PORTS:-6817,6818,6819}"
NODE=$(hostname -s)
IFS=, read -r -a NGPU_LIST <<<"$NGPU"
IFS=, read -r -a TYPE_LIST <<<"$GPU_TYPE"

ETC=$D/etc; RUN=$D/run; LOG=$D/log; STATE=$D/state; DB=$D/mariadb
NV=$D/fakenvml; BIN=$D/bin
MARKER=$D/.piqc-cluster
DBPASS_FILE=$ETC/db.pass

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

# --- nodes ------------------------------------------------------------------
check_nodes() {
    [[ $NODES =~ ^[1-9][0-9]?$ ]] || die "NODES=$NODES: expected a count 1-99"
    [[ $NODE_PREFIX =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "NODE_PREFIX=$NODE_PREFIX: expected lower-case letters, digits, '-'"
    local n t
    [ ${#NGPU_LIST[@]} -ge 1 ] && [ ${#TYPE_LIST[@]} -ge 1 ] || die "NGPU and GPU_TYPE must not be empty"
    for n in "${NGPU_LIST[@]}"; do [[ $n =~ ^[1-9][0-9]?$ && $n -le 64 ]] || die "NGPU=$NGPU: expected counts 1-64"; done
    for t in "${TYPE_LIST[@]}"; do [[ $t =~ ^[a-z0-9]+$ ]] || die "GPU_TYPE=$GPU_TYPE: expected names like h100,l40s"; done
    [ ${#NGPU_LIST[@]} -le "$NODES" ] || die "NGPU=$NGPU names more nodes than NODES=$NODES"
    [ ${#TYPE_LIST[@]} -le "$NODES" ] || die "GPU_TYPE=$GPU_TYPE names more nodes than NODES=$NODES"
}
node_name() { if [ "$NODES" = 1 ]; then echo "$NODE"; else echo "$NODE_PREFIX$(($1 + 1))"; fi; }  # 0-based index
node_ngpu() { echo "${NGPU_LIST[$1]:-${NGPU_LIST[-1]}}"; }
node_type() { echo "${TYPE_LIST[$1]:-${TYPE_LIST[-1]}}"; }
node_port() { echo $((SLURMD_PORT + 10 * $1)); }
node_names() { local i; for ((i = 0; i < NODES; i++)); do node_name "$i"; done; }
max_ngpu() { local i m=0 n; for ((i = 0; i < NODES; i++)); do n=$(node_ngpu "$i"); [ "$n" -gt "$m" ] && m=$n; done; echo "$m"; }
# Per-node files: one node keeps the single-node layout; several use slurm.conf's %n.
slurmd_pidfile() { if [ "$NODES" = 1 ]; then echo "$RUN/slurmd.pid"; else echo "$RUN/slurmd-$1.pid"; fi; }
fakenvml_dir() { if [ "$NODES" = 1 ]; then echo "$NV"; else echo "$NV/nodes/$1"; fi; }
piqc_spool() { if [ "$NODES" = 1 ]; then echo "$D/piqc/spool"; else echo "$D/piqc/nodes/$1/spool"; fi; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts system daemons and creates /dev/nvidia* nodes)"; }

pid_alive() { # pidfile -> 0 if its process runs
    local p
    [ -s "$1" ] || return 1
    p=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$p" ] && [ -d "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null
}

our_pids() { for f in "$RUN"/*.pid "$RUN"/munge/*.pid; do [ -s "$f" ] && cat "$f"; done 2>/dev/null || true; }

# --- safety -----------------------------------------------------------------
started_by_us() { # pid -> 0 if it is one of our daemons (in our pid files, or
    # started with our SLURM_CONF), or no daemon at all: gone by now, or a zombie
    # left by a daemon forking itself into the background (this sandbox's pid 1
    # reaps orphans late)
    local p=$1
    case " $(our_pids | tr '\n' ' ') " in *" $p "*) return 0;; esac
    [ -d "/proc/$p" ] || return 0
    grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && return 0
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$ETC/slurm.conf" && return 0
    [ -d "/proc/$p" ] || return 0
    return 1
}

safety_checks() {
    if [ -e /proc/driver/nvidia ] || [ -e /dev/nvidiactl ]; then
        die "a real NVIDIA driver is present (/proc/driver/nvidia or /dev/nvidiactl): this fake-GPU cluster must not run here"
    fi
    local p comm
    for comm in slurmctld slurmd slurmdbd; do
        for p in $(pgrep -x "$comm" 2>/dev/null || true); do
            started_by_us "$p" || die "a $comm this script did not start runs (pid $p): refusing to touch a site's Slurm"
        done
    done
}

# --- packages ---------------------------------------------------------------
PKGS="slurmctld slurmd slurmdbd slurm-client munge mariadb-server libslurm-dev gcc make libc6-dev python3 util-linux bsdutils procps"
install_packages() {
    local missing=() p
    for p in $PKGS; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

slurm_version() { dpkg-query -W -f '${Version}' slurmd 2>/dev/null | sed 's/-.*//'; }

# --- config rendering -------------------------------------------------------
cgroup_mode() { # v1 when the v1 controllers Slurm needs are mounted, else none
    if grep -qE '^cgroup /sys/fs/cgroup/freezer cgroup' /proc/mounts 2>/dev/null \
       && grep -qE '^cgroup /sys/fs/cgroup/devices cgroup' /proc/mounts 2>/dev/null; then
        echo v1
    else
        echo none
    fi
}

render_slurm_conf() {
    local hw mem cg
    hw=$(slurmd -C 2>/dev/null | head -1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    cg=$(cgroup_mode)
    cat <<EOF
# Generated by docker-slurm/cluster.sh: a single-host test cluster with fake GPUs.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket.2
CryptoType=crypto/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$(slurmd_pidfile %n)
SlurmctldLogFile=$LOG/slurm/slurmctld.log
SlurmdLogFile=$LOG/slurm/$([ "$NODES" = 1 ] && echo slurmd || echo slurmd-%n).log
SlurmdSpoolDir=$STATE/$([ "$NODES" = 1 ] && echo slurmd || echo slurmd-%n)
StateSaveLocation=$STATE/slurmctld
PlugStackConfig=$ETC/plugstack.conf
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=600
# Declare more CPUs than the machine has, so that many short jobs run at once.
SlurmdParameters=config_overrides
EOF
    if [ "$cg" = v1 ]; then
        cat <<EOF
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
PrologFlags=Alloc,Contain
EOF
    else
        cat <<EOF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
PrologFlags=Alloc
EOF
    fi
    cat <<EOF
# piqc-slurm hook fragments (a site keeps its own next to them).
Prolog=$ETC/prolog.d/*
Epilog=$ETC/epilog.d/*
PrologEpilogTimeout=60
SchedulerType=sched/backfill
# A pending job that cannot run (held, or waiting for GPUs) blocks the FIFO
# queue until backfill passes: pass often, so short test jobs start promptly.
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With slurmdbd this names the munge socket clients use to reach it.
AccountingStoragePass=$RUN/munge/munge.socket.2
AccountingStorageTRES=gres/gpu$(printf ',gres/gpu:%s' $(printf '%s\n' "${TYPE_LIST[@]}" | sort -u))
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
EOF
    local i hostname_port
    for ((i = 0; i < NODES; i++)); do
        # Several nodes: slurmd -N NAME on this host, each on its own port (multiple-slurmd build).
        hostname_port=
        [ "$NODES" = 1 ] || hostname_port=" NodeHostname=$NODE Port=$(node_port "$i")"
        echo "NodeName=$(node_name "$i")$hostname_port NodeAddr=127.0.0.1 CPUs=$NODE_CPUS Sockets=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=${mem:-4000} Gres=gpu:$(node_type "$i"):$(node_ngpu "$i") State=UNKNOWN"
    done
    echo "PartitionName=gpu Nodes=$(node_names | paste -sd,) Default=YES MaxTime=INFINITE State=UP"
}

render_cgroup_conf() {
    cat <<EOF
# Generated by docker-slurm/cluster.sh
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainDevices=yes
ConstrainRAMSpace=yes
EOF
}

render_gres_conf() {
    local i
    echo "# Generated by docker-slurm/cluster.sh: fake GPUs (character devices, major 195)"
    # Every node names /dev/nvidia0.. as a real machine does: the hooks' SLURM_JOB_GPUS is the GPU's
    # position in its node's list (gres_common.c), which is its minor only when File= counts from 0.
    for ((i = 0; i < NODES; i++)); do
        echo "NodeName=$(node_name "$i") Name=gpu Type=$(node_type "$i") File=/dev/nvidia[0-$(($(node_ngpu "$i") - 1))]"
    done
}

render_slurmdbd_conf() {
    cat <<EOF
# Generated by docker-slurm/cluster.sh
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=$LOG/slurm/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DBPASS_FILE")
StorageLoc=slurm_acct_db
EOF
}

gpu_name() {
    case "$1" in
        h100) echo "NVIDIA H100 80GB HBM3 81559 700";;
        h200) echo "NVIDIA H200 143771 700";;
        a100) echo "NVIDIA A100-SXM4-80GB 81920 400";;
        a10g) echo "NVIDIA A10G 23028 300";;
        l4) echo "NVIDIA L4 23034 72";;
        l40s) echo "NVIDIA L40S 46068 350";;
        t4) echo "Tesla T4 15360 70";;
        *) echo "NVIDIA $1 81559 700";;
    esac
}

render_fakenvml_conf() { # node index -> that node's fake driver config (its GPUs only, its own state dir)
    local spec name mem watts i k=$1
    spec=$(gpu_name "$(node_type "$k")")
    read -r -a parts <<<"$spec"
    watts=${parts[-1]}; mem=${parts[-2]}
    name=${spec% * *}
    echo "# Generated by docker-slurm/cluster.sh (format: docker-slurm/FAKE-GPU.md)"
    echo "state_dir $(fakenvml_dir "$(node_name "$k")")/state"
    echo "driver_version 550.54.15"
    for ((i = 0; i < $(node_ngpu "$k"); i++)); do
        printf 'gpu %d GPU-%08x-5e1f-4c0d-9a7b-%012d %s %s %s\n' "$i" $((0x1a2b0000 + 0x100 * k + i)) "$i" "$mem" "$watts" "$name"
    done
}

render_hook_env() {
    cat <<EOF
# Sourced by the piqc-slurm Prolog/Epilog wrappers of this test cluster.
# 'cluster.sh env' prints these for an interactive shell.
export PIQC_BIN=$PIQC_BIN
export PIQC_CONFIG=$ETC/piqc.toml
export PIQC_HOOK_LOG=$LOG/hooks.log
export PIQC_TIMEOUT=20
export FAKENVML_CONFIG=$(fakenvml_dir %n)/fakenvml.conf
export LD_LIBRARY_PATH=$NV/lib
EOF
}

render_piqc_toml() {
    cat <<EOF
# piqc-slurm configuration of the test cluster (see piqc_slurm/data/piqc.example.toml).
cluster = "$CLUSTER_NAME"
db = "sqlite:///$D/piqc/piqc.db"
spool_dir = "$(piqc_spool %n)"
delivery = "shared-spool"
shared_spool_dir = "$D/piqc/shared-spool"
syslog = false

[sampler]
interval = 1.0
min_interval = 1.0
process_interval = 10.0
checkpoint_interval = 30.0
EOF
}

render_plugstack() {
    local so=$REPO/spank/piqc.so spool
    # spool= is the hooks' spool_dir (the plugin writes jobinfo/ there for the Epilog's report):
    # taken from the piqc.toml this script writes, so the two cannot drift apart.
    spool=$(render_piqc_toml | sed -n 's/^spool_dir = "\(.*\)"$/\1/p')
    echo "# Generated by docker-slurm/cluster.sh"
    if [ -f "$so" ]; then
        echo "optional $so default_interval=1 allow_opt_out=1 spool=$spool"
    fi
}

render_wrapper() { # template -> hook fragment pointing at this cluster's env file
    sed "s|^PIQC_HOOK_ENV=.*|PIQC_HOOK_ENV=$ETC/hook.env|" "$1"
}

# install stdin at path with owner/mode, touching it only when its content differs (a Slurm
# config newer than the running slurmctld makes `up` restart slurmctld and slurmd: slurm_stale)
put() { # path owner mode  (content on stdin)
    local path=$1 owner=$2 mode=$3 tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$path"
    fi
    chown "$owner" "$path"; chmod "$mode" "$path"
}

# --- set-up steps -------------------------------------------------------------
make_dirs() {
    mkdir -p "$D"; chmod 755 "$D"; touch "$MARKER"
    mkdir -p "$ETC/prolog.d" "$ETC/epilog.d" "$RUN/munge" "$RUN/mysqld" "$LOG/slurm" "$LOG/munge" "$LOG/mariadb" "$STATE/slurmctld" \
             "$STATE/slurmd" "$STATE/munge" "$DB" "$NV/lib" "$NV/state" "$BIN" "$D/piqc/spool" "$D/piqc/shared-spool"
    chown munge:munge "$RUN/munge" "$STATE/munge" "$LOG/munge"; chmod 755 "$RUN/munge"; chmod 700 "$STATE/munge"
    chown mysql:mysql "$RUN/mysqld" "$DB" "$LOG/mariadb"
    chown slurm:slurm "$STATE/slurmctld" "$LOG/slurm"
    chown root:root "$D" "$LOG" "$RUN" "$ETC"; chmod 755 "$LOG" "$LOG/slurm"
    chmod 1777 "$NV/state"
    chmod 700 "$D/piqc/spool"
    local n
    if [ "$NODES" != 1 ]; then
        for n in $(node_names); do
            mkdir -p "$(fakenvml_dir "$n")/state" "$(piqc_spool "$n")"
            chmod 1777 "$(fakenvml_dir "$n")/state"; chmod 755 "$D/piqc/nodes" "$D/piqc/nodes/$n"; chmod 700 "$(piqc_spool "$n")"
        done
    fi
}

ensure_user() {
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$TEST_USER"
        log "created user $TEST_USER"
    fi
}

build_fake_driver() {
    make -s -C "$HERE/fakenvml" OUT="$NV/lib" >/dev/null
    install -m 755 "$HERE/fakegpu-work" "$BIN/fakegpu-work"
    if [ -f "$REPO/spank/Makefile" ]; then
        make -s -C "$REPO/spank" >/dev/null 2>&1 || log "warning: SPANK plugin did not build (cluster runs without it)"
    fi
}

make_devices() {
    local i dev rec=$D/devices.list
    touch "$rec"
    for ((i = 0; i < $(max_ngpu); i++)); do
        dev=/dev/nvidia$i
        if [ -e "$dev" ]; then
            grep -qx "$dev" "$rec" || die "$dev exists and was not created by this script: refusing"
            continue
        fi
        mknod -m 666 "$dev" c 195 "$i"
        echo "$dev" >>"$rec"
    done
}

remove_devices() {
    local rec=$D/devices.list dev
    [ -f "$rec" ] || return 0
    while read -r dev; do
        case "$dev" in /dev/nvidia[0-9]*) ;; *) continue;; esac
        if [ -c "$dev" ] && [ "$(stat -c %t "$dev")" = c3 ]; then rm -f "$dev"; fi
    done <"$rec"
    : >"$rec"
}

write_configs() {
    [ -s "$DBPASS_FILE" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DBPASS_FILE")
    if [ ! -s "$ETC/munge.key" ]; then
        (umask 077; head -c 128 /dev/urandom >"$ETC/munge.key")
    fi
    chown munge:munge "$ETC/munge.key"; chmod 400 "$ETC/munge.key"
    put "$ETC/slurm.conf"    root:root 644 < <(render_slurm_conf)
    put "$ETC/gres.conf"     root:root 644 < <(render_gres_conf)
    put "$ETC/cgroup.conf"   root:root 644 < <(render_cgroup_conf)
    put "$ETC/plugstack.conf" root:root 644 < <(render_plugstack)
    put "$ETC/slurmdbd.conf" slurm:slurm 600 < <(render_slurmdbd_conf)
    local i
    for ((i = 0; i < NODES; i++)); do
        put "$(fakenvml_dir "$(node_name "$i")")/fakenvml.conf" root:root 644 < <(render_fakenvml_conf "$i")
    done
    put "$ETC/hook.env"      root:root 644 < <(render_hook_env)
    put "$ETC/piqc.toml"     root:root 644 < <(render_piqc_toml)
    put "$ETC/prolog.d/50-piqc.sh" root:root 755 < <(render_wrapper "$REPO/epilog/prolog.sh")
    put "$ETC/epilog.d/50-piqc.sh" root:root 755 < <(render_wrapper "$REPO/epilog/epilog.sh")
}

export SLURM_CONF=$ETC/slurm.conf

wait_for() { # seconds description command...
    local t=$1 what=$2 i; shift 2
    for ((i = 0; i < t * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${t}s waiting for $what (logs in $LOG)"
}

start_munge() {
    pid_alive "$RUN/munge/munged.pid" && return 0
    rm -f "$RUN/munge/munge.socket.2"*
    runuser -u munge -- /usr/sbin/munged --socket="$RUN/munge/munge.socket.2" --key-file="$ETC/munge.key" \
        --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged sh -c "munge -S '$RUN/munge/munge.socket.2' -n | unmunge -S '$RUN/munge/munge.socket.2'"
}

mysql_cli() { mariadb --no-defaults --socket="$RUN/mysqld/mysqld.sock" -u root "$@"; }

start_mariadb() {
    pid_alive "$RUN/mysqld/mysqld.pid" && return 0
    if [ ! -d "$DB/data/mysql" ]; then
        mkdir -p "$DB/data"; chown mysql:mysql "$DB/data"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
    fi
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" \
        --socket="$RUN/mysqld/mysqld.sock" --pid-file="$RUN/mysqld/mysqld.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$LOG/mariadb/mariadb.log" \
        --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb mysql_cli -e 'SELECT 1'
    local pw; pw=$(cat "$DBPASS_FILE")
    mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
                  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
                  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
                  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    pid_alive "$RUN/slurmdbd.pid" && return 0
    /usr/sbin/slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
}

register() {
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME" || sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
    sacctmgr -n -P list account format=account | grep -qx "$TEST_ACCOUNT" || sacctmgr -i add account "$TEST_ACCOUNT" cluster="$CLUSTER_NAME" >/dev/null
    sacctmgr -n -P list user format=user | grep -qx "$TEST_USER" || sacctmgr -i add user "$TEST_USER" account="$TEST_ACCOUNT" cluster="$CLUSTER_NAME" >/dev/null
}

start_slurm() {
    local n
    pid_alive "$RUN/slurmctld.pid" || { /usr/sbin/slurmctld; wait_for 30 slurmctld scontrol ping; }
    for n in $(node_names); do
        if [ "$NODES" = 1 ]; then
            pid_alive "$RUN/slurmd.pid" || /usr/sbin/slurmd
        else
            pid_alive "$(slurmd_pidfile "$n")" || /usr/sbin/slurmd -N "$n"
        fi
    done
    for n in $(node_names); do
        wait_for 30 "node $n idle" sh -c "sinfo -h -n '$n' -o %T | grep -Eq '^(idle|mixed|allocated)'"
    done
}

stop_slurmds() { # every slurmd this script started, of this node set or an earlier one
    local f
    for f in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do
        [ -e "$f" ] && stop_pid "$f" "slurmd ${f##*/}"
    done
    return 0
}

slurm_stale() { # 0 when what runs is not what the configs now say: a Slurm config newer than the
    # running slurmctld (a change, or one an interrupted `up` wrote), or a slurmd of another node set
    local f n want
    pid_alive "$RUN/slurmctld.pid" || return 1
    for f in "$ETC"/slurm.conf "$ETC"/gres.conf "$ETC"/cgroup.conf "$ETC"/plugstack.conf; do
        [ "$f" -nt "$RUN/slurmctld.pid" ] && return 0
    done
    want=" $(for n in $(node_names); do slurmd_pidfile "$n"; done | tr '\n' ' ')"
    for f in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do
        pid_alive "$f" && [[ $want != *" $f "* ]] && return 0
    done
    return 1
}

slurm_any_alive() {
    local f
    for f in "$RUN"/slurmctld.pid "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do pid_alive "$f" && return 0; done
    return 1
}

restart_slurm() {
    stop_slurmds
    stop_pid "$RUN/slurmctld.pid" slurmctld
    start_slurm
}

stop_pid() { # pidfile name
    local p i
    pid_alive "$1" || { rm -f "$1"; return 0; }
    p=$(cat "$1")
    kill "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do [ -d "/proc/$p" ] || break; sleep 0.1; done
    if [ -d "/proc/$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
    rm -f "$1"
    log "stopped $2 (pid $p)"
}

all_up() {
    local n
    pid_alive "$RUN/munge/munged.pid" && pid_alive "$RUN/mysqld/mysqld.pid" && pid_alive "$RUN/slurmdbd.pid" \
        && pid_alive "$RUN/slurmctld.pid" || return 1
    for n in $(node_names); do pid_alive "$(slurmd_pidfile "$n")" || return 1; done
}

# --- verbs --------------------------------------------------------------------
cmd_up() {
    need_root
    local t0=$SECONDS
    check_piqc_bin || exit 1
    check_nodes
    safety_checks
    install_packages
    make_dirs
    ensure_user
    build_fake_driver
    write_configs
    make_devices
    if all_up && ! slurm_stale; then
        log "already up (nothing changed)"
    else
        start_munge
        start_mariadb
        start_slurmdbd
        register
        if slurm_any_alive && slurm_stale; then
            log "configuration changed: restarting slurmctld and slurmd"
            restart_slurm
        else
            start_slurm
        fi
    fi
    local i what=
    for ((i = 0; i < NODES; i++)); do what+="${what:+, }node $(node_name "$i") with $(node_ngpu "$i") x $(node_type "$i")"; done
    log "up in $((SECONDS - t0))s: Slurm $(slurm_version), cluster $CLUSTER_NAME, $what, $(cgroup_mode | sed 's/none/no cgroups/;s/v1/cgroup v1/')"
    log "act on it with: eval \"\$($0 env)\""
}

cmd_down() {
    need_root
    local purge=0
    [ "${1:-}" = --purge ] && purge=1
    [ -f "$MARKER" ] || { log "nothing to do: $D is not a cluster made by this script"; return 0; }
    if pid_alive "$RUN/slurmctld.pid"; then
        scancel --quiet --full --state=RUNNING,PENDING,SUSPENDED -u "$TEST_USER" 2>/dev/null || true
        scancel --quiet --full --state=RUNNING,PENDING,SUSPENDED -u root 2>/dev/null || true
        for _ in $(seq 1 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    stop_slurmds
    stop_pid "$RUN/slurmctld.pid" slurmctld
    stop_pid "$RUN/slurmdbd.pid" slurmdbd
    stop_pid "$RUN/mysqld/mysqld.pid" mariadb
    stop_pid "$RUN/munge/munged.pid" munged
    remove_devices
    if [ "$purge" = 1 ]; then
        rm -rf --one-file-system "$D"
        log "purged $D"
    fi
}

cmd_status() {
    local f name rc=0
    for f in munge/munged mysqld/mysqld slurmdbd slurmctld; do
        name=${f##*/}
        if pid_alive "$RUN/$f.pid"; then echo "$name: running (pid $(cat "$RUN/$f.pid"))"; else echo "$name: stopped"; rc=3; fi
    done
    for f in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do
        [ -e "$f" ] || continue
        name=${f##*/}; name=${name%.pid}
        if pid_alive "$f"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; rc=3; fi
    done
    if [ $rc = 0 ]; then
        sinfo -N -o '%N %T %G %C' 2>/dev/null || true
    fi
    return $rc
}

cmd_env() {
    [ -f "$ETC/hook.env" ] || die "no cluster at $D: run '$0 up' first"
    echo "export SLURM_CONF=$ETC/slurm.conf"
    grep '^export ' "$ETC/hook.env"
    echo "export PIQC_CLUSTER_DIR=$D"
    echo "export PATH=$BIN:\$PATH"
}

case "${1:-}" in
    up) shift; cmd_up "$@";;
    down) shift; cmd_down "$@";;
    status) shift; cmd_status "$@";;
    env) shift; cmd_env "$@";;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//';;
    *) die "usage: $0 up|down [--purge]|status|env   (--help for more)";;
esac
