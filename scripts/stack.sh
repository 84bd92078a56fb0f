#!/usr/bin/env bash
# Makes sure Postgres, Redis and NATS (with JetStream) answer at the configured
# URLs: used when reachable, started when installed but stopped, installed from
# Debian's packages when absent. Postgres access for the configured user is set
# up too (a fresh install may use password auth).
#
#   scripts/stack.sh ensure         bring all three up; remember what we started
#   scripts/stack.sh stop-started   stop only what `ensure` started
#
# Shared by `just up`, `just test` and `.ci/run`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR="$ROOT/.run"
STARTED="$RUN_DIR/started"
mkdir -p "$RUN_DIR"

DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}

say() { printf '[stack] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else SUDO=(); fi
as_root() { "${SUDO[@]}" "$@"; }

reachable() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() { # host port what
  for _ in $(seq 1 60); do reachable "$1" "$2" && return 0; sleep 0.5; done
  die "$3 did not come up on $1:$2"
}

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null || die "$* is not installed and this is not a Debian-like system: install it, or set the URL of a running server"
  if [[ -z $APT_UPDATED ]]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  say "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

remember() { grep -qxF "$1" "$STARTED" 2>/dev/null || echo "$1" >>"$STARTED"; }

# --- URL parsing: scheme://[user[:password]@]host[:port][/path] -------------
parse_url() { # url default_port → sets U_USER U_PASS U_HOST U_PORT U_PATH
  local rest=${1#*://} auth=
  [[ $rest == *@* ]] && { auth=${rest%%@*}; rest=${rest#*@}; }
  U_USER=${auth%%:*}; U_PASS=; [[ $auth == *:* ]] && U_PASS=${auth#*:}
  local hostport=${rest%%/*}; U_PATH=; [[ $rest == */* ]] && U_PATH=${rest#*/}
  U_HOST=${hostport%%:*}; U_PORT=$2; [[ $hostport == *:* ]] && U_PORT=${hostport#*:}
  [[ $U_HOST == localhost ]] && U_HOST=127.0.0.1
  return 0
}

is_local() { [[ $1 == 127.0.0.1 || $1 == ::1 ]]; }

# --- Postgres ------------------------------------------------------------------
pg_can_login() {
  PGPASSWORD=$PG_PASS PGCONNECT_TIMEOUT=3 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc 'SELECT 1' >/dev/null 2>&1
}

pg_start_local() {
  if ! command -v pg_lsclusters >/dev/null; then apt_install postgresql postgresql-client; fi
  local version cluster
  read -r version cluster < <(pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port {print $1, $2; exit}') || true
  if [[ -z ${version:-} ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1) cluster=main
    say "creating Postgres $version cluster '$cluster' on port $PG_PORT"
    as_root pg_createcluster "$version" "$cluster" --port "$PG_PORT" >/dev/null
  fi
  say "starting Postgres $version/$cluster"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
  remember "postgres $version $cluster"
}

pg_grant_access() {
  # Through the local socket as the postgres OS user (peer auth on Debian): give the
  # configured user a role with that password, so password and trust auth both work.
  say "giving Postgres user '$PG_USER' access"
  local sql="DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') THEN
      CREATE ROLE \"$PG_USER\" LOGIN SUPERUSER PASSWORD '$PG_PASS';
    ELSE
      ALTER ROLE \"$PG_USER\" LOGIN SUPERUSER PASSWORD '$PG_PASS';
    END IF; END \$\$;"
  if [[ $(id -u) -eq 0 ]]; then
    su postgres -c "psql -p $PG_PORT -q -d postgres" <<<"$sql"
  else
    sudo -n -u postgres psql -p "$PG_PORT" -q -d postgres <<<"$sql"
  fi
}

ensure_postgres() {
  parse_url "$DATABASE_URL" 5432
  PG_USER=${U_USER:-postgres} PG_PASS=$U_PASS PG_HOST=$U_HOST PG_PORT=$U_PORT
  if ! reachable "$PG_HOST" "$PG_PORT"; then
    is_local "$PG_HOST" || die "Postgres at $PG_HOST:$PG_PORT does not answer"
    pg_start_local
    wait_for "$PG_HOST" "$PG_PORT" Postgres
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  for _ in $(seq 1 20); do pg_can_login && break; sleep 0.5; done
  if ! pg_can_login; then
    is_local "$PG_HOST" || die "cannot log in to Postgres at $PG_HOST:$PG_PORT as $PG_USER"
    pg_grant_access
    pg_can_login || die "cannot log in to Postgres as $PG_USER even after granting access (check pg_hba.conf)"
  fi
  say "Postgres ready at $PG_HOST:$PG_PORT"
}

# --- Redis ---------------------------------------------------------------------
ensure_redis() {
  parse_url "$REDIS_URL" 6379
  if ! reachable "$U_HOST" "$U_PORT"; then
    is_local "$U_HOST" || die "Redis at $U_HOST:$U_PORT does not answer"
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting Redis on port $U_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$U_PORT" --save "" --appendonly no \
      --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" --pidfile "$RUN_DIR/redis.pid"
    remember "redis $U_PORT"
    wait_for "$U_HOST" "$U_PORT" Redis
  fi
  say "Redis ready at $U_HOST:$U_PORT"
}

# --- NATS ----------------------------------------------------------------------
nats_binary() { command -v nats-server || { [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server; }; }

ensure_nats() {
  parse_url "$NATS_URL" 4222
  if ! reachable "$U_HOST" "$U_PORT"; then
    is_local "$U_HOST" || die "NATS at $U_HOST:$U_PORT does not answer"
    [[ -n $(nats_binary) ]] || apt_install nats-server
    local store="$RUN_DIR/nats" bin
    bin=$(nats_binary)
    mkdir -p "$store"
    say "starting NATS with JetStream on port $U_PORT"
    start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$RUN_DIR/nats.pid" \
      --exec "$bin" -- -a 127.0.0.1 -p "$U_PORT" -js -sd "$store" -l "$RUN_DIR/nats.log"
    remember "nats $RUN_DIR/nats.pid"
    wait_for "$U_HOST" "$U_PORT" NATS
  fi
  say "NATS ready at $U_HOST:$U_PORT"
}

stop_started() {
  [[ -f $STARTED ]] || { say "nothing was started by this checkout"; return 0; }
  while read -r what a b c; do
    case $what in
      postgres) say "stopping Postgres $a"; as_root pg_ctlcluster --skip-systemctl-redirect "$a" "$b" stop || true ;;
      redis) say "stopping Redis on port $a"; redis-cli -p "$a" shutdown nosave >/dev/null 2>&1 || true ;;
      nats) say "stopping NATS"; start-stop-daemon --stop --oknodo --pidfile "$a" --remove-pidfile >/dev/null || true ;;
    esac
  done <"$STARTED"
  rm -f "$STARTED"
}

case ${1:-ensure} in
  ensure) ensure_postgres; ensure_redis; ensure_nats ;;
  stop-started) stop_started ;;
  *) die "usage: $0 ensure|stop-started" ;;
esac
