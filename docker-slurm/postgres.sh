#!/usr/bin/env bash
# postgres.sh: a real local PostgreSQL for piqc-slurm's tests and demo,
# started without systemd, from Debian's postgresql package.
#
#   postgres.sh up      start the cluster (creating it if missing), make sure the
#                       role and database exist; idempotent, fast when already up
#   postgres.sh url     print the SQLAlchemy URL of the database (root only: it
#                       carries the password)
#   postgres.sh status  whether the cluster runs, and who started it (exit 3: down)
#   postgres.sh down    stop the cluster, only if this script started it
#
# What `up` sets up:
#   - the cluster PG_CLUSTER of the installed PostgreSQL (its version read from
#     pg_lsclusters, or the newest under /usr/lib/postgresql when the cluster
#     must be created with pg_createcluster), started with pg_ctlcluster
#   - a login role PG_ROLE with CREATEDB (tests create a database per session),
#     password auth over TCP on 127.0.0.1; its generated password is kept in
#     $PIQC_PG_DIR/postgres.pass (root only, 0600) and set again on every `up`
#   - a database PG_DB owned by PG_ROLE
#
# Settings (environment):
#   PIQC_PG_DIR   password file, "we started it" record, lock  [/var/lib/piqc-postgres]
#   PG_CLUSTER    Debian cluster name                            [main]
#   PG_PORT       port for a cluster this script creates (an existing
#                 cluster keeps its own port)                    [5432]
#   PG_ROLE       owner role                                     [piqc]
#   PG_DB         database                                       [piqc_test]
#
# Safety: refuses to start when the cluster's port is held by another process;
# `down` stops only a cluster whose start it recorded; it never drops data.
# (Not under /var/lib/piqc-cluster: `cluster.sh down --purge` removes that
# directory, and with it the record of who started PostgreSQL.)
set -euo pipefail

D=${PIQC_PG_DIR:-/var/lib/piqc-postgres}
PG_CLUSTER=${PG_CLUSTER:-main}
PG_PORT=${PG_PORT:-5432}
PG_ROLE=${PG_ROLE:-piqc}
PG_DB=${PG_DB:-piqc_test}
PASS_FILE=$D/postgres.pass
STARTED=$D/started          # "<version> <cluster>" when this script started it
LOCK=$D/lock

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { printf 'postgres.sh: error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts the PostgreSQL cluster and keeps a root-only password)"; }

valid_name() { [[ $1 =~ ^[a-z_][a-z0-9_]*$ ]] || die "$2 '$1' must be a plain lower-case SQL name"; }

ensure_packages() {
    command -v pg_lsclusters >/dev/null 2>&1 && ls -d /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and there is no apt-get: install Debian's postgresql package"
    log "installing Debian's postgresql package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
        || die "apt-get install postgresql failed"
}

# Fields of our cluster from pg_lsclusters: "ver port status"; empty if none.
cluster_line() {
    pg_lsclusters -h 2>/dev/null | awk -v c="$PG_CLUSTER" '$2 == c { print $1, $3, $4; exit }'
}

newest_version() {
    local v
    v=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | awk -F/ '{ print $5 }' | sort -n | tail -n 1)
    [ -n "$v" ] || die "no PostgreSQL server under /usr/lib/postgresql"
    echo "$v"
}

# The pids listening on TCP port $1 (any address), one per line.
port_pids() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

port_held() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

describe_pids() {
    local p out=""
    for p in "$@"; do out+="$p ($(cat "/proc/$p/comm" 2>/dev/null || echo '?')) "; done
    echo "${out% }"
}

# Superuser SQL over the Unix socket (peer auth as the cluster owner), from stdin.
su_psql() { # ver port [psql args...]
    local ver=$1 port=$2; shift 2
    runuser -u postgres -- "/usr/lib/postgresql/$ver/bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -p "$port" -d postgres "$@"
}

wait_ready() { # ver port
    local i
    for i in $(seq 1 100); do
        "/usr/lib/postgresql/$1/bin/pg_isready" -q -h /var/run/postgresql -p "$2" && return 0
        sleep 0.1
    done
    die "PostgreSQL $1/$PG_CLUSTER did not accept connections on port $2 within 10 s (see /var/log/postgresql/postgresql-$1-$PG_CLUSTER.log)"
}

password() {
    if [ ! -s "$PASS_FILE" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$PASS_FILE.tmp")
        mv "$PASS_FILE.tmp" "$PASS_FILE"
    fi
    chmod 600 "$PASS_FILE"; chown root:root "$PASS_FILE"
    cat "$PASS_FILE"
}

cmd_up() {
    need_root
    valid_name "$PG_ROLE" PG_ROLE; valid_name "$PG_DB" PG_DB
    mkdir -p "$D"; chmod 700 "$D"
    exec 9>"$LOCK"
    flock -w 60 9 || die "another postgres.sh holds $LOCK"
    ensure_packages

    local line ver port status pids
    line=$(cluster_line)
    if [ -z "$line" ]; then
        ver=$(newest_version)
        port_held "$PG_PORT" && die "port $PG_PORT is held by $(describe_pids $(port_pids "$PG_PORT")): not creating a cluster on it (set PG_PORT)"
        log "creating cluster $ver/$PG_CLUSTER on port $PG_PORT"
        pg_createcluster --port="$PG_PORT" "$ver" "$PG_CLUSTER" >/dev/null 9>&- \
            || die "pg_createcluster $ver $PG_CLUSTER failed"
        line=$(cluster_line)
        [ -n "$line" ] || die "pg_createcluster did not create $ver/$PG_CLUSTER"
    fi
    read -r ver port status <<<"$line"

    if [ "$status" != online ]; then
        if port_held "$port"; then
            pids=$(port_pids "$port")
            die "port $port is held by ${pids:+pid }$(describe_pids $pids) -- not PostgreSQL $ver/$PG_CLUSTER, which is down: refusing to start it (stop that process, or give the cluster another port)"
        fi
        log "starting PostgreSQL $ver/$PG_CLUSTER on port $port"
        # 9>&-: the server must not inherit (and so hold forever) our lock
        pg_ctlcluster "$ver" "$PG_CLUSTER" start 9>&- \
            || die "pg_ctlcluster $ver $PG_CLUSTER start failed (see /var/log/postgresql/postgresql-$ver-$PG_CLUSTER.log)"
        echo "$ver $PG_CLUSTER" >"$STARTED"
    fi
    wait_ready "$ver" "$port"

    # Role (password set on every up, so the file and the role never disagree)
    # and database. The password travels on stdin, never in argv.
    local pass
    pass=$(password)
    su_psql "$ver" "$port" >/dev/null <<SQL
SELECT format('CREATE ROLE %I LOGIN CREATEDB', '$PG_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') \gexec
ALTER ROLE "$PG_ROLE" LOGIN CREATEDB PASSWORD '$pass';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
    # Password auth over TCP must work (Debian's pg_hba.conf allows it on 127.0.0.1).
    PGPASSWORD=$pass "/usr/lib/postgresql/$ver/bin/psql" -X -q -A -t -h 127.0.0.1 -p "$port" -U "$PG_ROLE" \
        -d "$PG_DB" -c 'SELECT 1' >/dev/null 2>&1 \
        || die "role $PG_ROLE cannot log in with a password on 127.0.0.1:$port: check listen_addresses and pg_hba.conf of $ver/$PG_CLUSTER (a 'host all all 127.0.0.1/32 scram-sha-256' line)"
    log "PostgreSQL $ver/$PG_CLUSTER up on 127.0.0.1:$port, database $PG_DB (postgres.sh url prints its URL)"
}

cmd_url() {
    need_root
    [ -s "$PASS_FILE" ] || die "no password yet: run 'postgres.sh up' first"
    local line ver port status
    line=$(cluster_line)
    [ -n "$line" ] || die "no PostgreSQL cluster '$PG_CLUSTER': run 'postgres.sh up' first"
    read -r ver port status <<<"$line"
    [ "$status" = online ] || log "warning: cluster $ver/$PG_CLUSTER is $status (run 'postgres.sh up')"
    echo "postgresql+psycopg://$PG_ROLE:$(cat "$PASS_FILE")@127.0.0.1:$port/$PG_DB"
}

cmd_status() {
    local line ver port status who="not started by postgres.sh"
    line=$(cluster_line)
    [ -n "$line" ] || { echo "no cluster '$PG_CLUSTER'"; return 3; }
    read -r ver port status <<<"$line"
    [ -f "$STARTED" ] && [ "$(cat "$STARTED")" = "$ver $PG_CLUSTER" ] && who="started by postgres.sh"
    echo "PostgreSQL $ver/$PG_CLUSTER on port $port: $status$([ "$status" = online ] && echo " ($who)")"
    [ "$status" = online ] || return 3
}

cmd_down() {
    need_root
    [ -d "$D" ] || { log "nothing to do: postgres.sh never ran here"; return 0; }
    exec 9>"$LOCK"
    flock -w 60 9 || die "another postgres.sh holds $LOCK"
    if [ ! -s "$STARTED" ]; then
        log "nothing to do: PostgreSQL was not started by postgres.sh (leaving it as it is)"
        return 0
    fi
    local ver cluster status
    read -r ver cluster <"$STARTED"
    status=$(pg_lsclusters -h 2>/dev/null | awk -v v="$ver" -v c="$cluster" '$1 == v && $2 == c { print $4 }')
    if [ "$status" = online ]; then
        log "stopping PostgreSQL $ver/$cluster"
        pg_ctlcluster "$ver" "$cluster" stop -m fast || die "pg_ctlcluster $ver $cluster stop failed"
    else
        log "PostgreSQL $ver/$cluster is already ${status:-gone}"
    fi
    rm -f "$STARTED"
}

case "${1:-}" in
    up) cmd_up;;
    down) cmd_down;;
    url) cmd_url;;
    status) cmd_status;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//';;
    *) die "usage: $0 up|down|url|status   (--help for more)";;
esac
