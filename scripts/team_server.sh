#!/usr/bin/env bash
# Start / stop a team MLflow tracking server: PostgreSQL backend store, artifacts served by the
# server from a folder, bound to 127.0.0.1 unless told otherwise. See docs/team.md.
#
#   scripts/team_server.sh start [--port 5000] [--workers 1] [--db URL] [--artifacts DIR]
#                                [--host 127.0.0.1] [--home DIR] [--timeout 180] [--auth]
#   scripts/team_server.sh stop   [--port 5000] [--home DIR]
#   scripts/team_server.sh status [--port 5000] [--home DIR]
#   scripts/team_server.sh create-db [--db URL] [--optuna-db URL]
#   scripts/team_server.sh uri    [--port 5000] [--host 127.0.0.1]
#   scripts/team_server.sh command [options]      # print the mlflow server command, start nothing
#
# Defaults (each also read from the environment):
#   --db         MEDIMG_TEAM_DB         postgresql://postgres@127.0.0.1:5432/medimg
#   --optuna-db  MEDIMG_TEAM_OPTUNA_DB  the --db URL with database <name>_optuna
#   --artifacts  MEDIMG_TEAM_ARTIFACTS  <home>/artifacts
#   --home       MEDIMG_TEAM_HOME       ~/.medimg-team   (pid file and log per port)
#   --port       MEDIMG_TEAM_PORT       5000
#   --workers    MEDIMG_TEAM_WORKERS    1   (uvicorn workers; measured ~1.5 GB for 1, ~2.4 GB for 4)
#   --host       MEDIMG_TEAM_HOST       127.0.0.1
#   --jobs       MEDIMG_TEAM_JOBS=true  also start MLflow's GenAI job runner (7 more processes,
#                                       ~0.8 GB; this platform uses none of its jobs)
#   --auth       MEDIMG_TEAM_AUTH=true  MLflow's basic-auth app: every request needs a user
#                                       (users and roles: python -m tools.team_users)
#   --auth-db    MEDIMG_TEAM_AUTH_DB    users and permissions; default <db name>_auth on the
#                                       same PostgreSQL, or <home>/auth-<port>.db for SQLite
#   admin password (first start on a new --auth-db only): MLFLOW_AUTH_ADMIN_PASSWORD, or the
#                file named by MEDIMG_TEAM_ADMIN_PASSWORD_FILE; never an option
#
# Passwords: do not put them in --db (URLs end up in process listings and logs); libpq reads
# PGPASSWORD or ~/.pgpass. `start` prints the URI to export and the Optuna storage URL.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$REPO/.venv/bin/mlflow" ]]; then
  MLFLOW="$REPO/.venv/bin/mlflow"; PY="$REPO/.venv/bin/python"
else
  MLFLOW="$(command -v mlflow || true)"; PY="$(command -v python3 || command -v python)"
fi

cmd="${1:-}"
[[ -n "$cmd" ]] && shift || true
PORT="${MEDIMG_TEAM_PORT:-5000}"
WORKERS="${MEDIMG_TEAM_WORKERS:-1}"
HOST="${MEDIMG_TEAM_HOST:-127.0.0.1}"
DB="${MEDIMG_TEAM_DB:-postgresql://postgres@127.0.0.1:5432/medimg}"
OPTUNA_DB="${MEDIMG_TEAM_OPTUNA_DB:-}"
HOME_DIR="${MEDIMG_TEAM_HOME:-${HOME:-/tmp}/.medimg-team}"
ARTIFACTS="${MEDIMG_TEAM_ARTIFACTS:-}"
TIMEOUT=180
CREATE_DB=1
JOBS="${MEDIMG_TEAM_JOBS:-false}"
AUTH="${MEDIMG_TEAM_AUTH:-false}"
AUTH_DB="${MEDIMG_TEAM_AUTH_DB:-}"

die() { echo "error: $*" >&2; exit 2; }
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) need "$@"; PORT="$2"; shift 2 ;;
    --workers) need "$@"; WORKERS="$2"; shift 2 ;;
    --host) need "$@"; HOST="$2"; shift 2 ;;
    --db) need "$@"; DB="$2"; shift 2 ;;
    --optuna-db) need "$@"; OPTUNA_DB="$2"; shift 2 ;;
    --artifacts) need "$@"; ARTIFACTS="$2"; shift 2 ;;
    --home) need "$@"; HOME_DIR="$2"; shift 2 ;;
    --timeout) need "$@"; TIMEOUT="$2"; shift 2 ;;
    --no-create-db) CREATE_DB=0; shift ;;
    --jobs) JOBS=true; shift ;;
    --auth) AUTH=true; shift ;;
    --auth-db) need "$@"; AUTH_DB="$2"; shift 2 ;;
    --admin-password|--password) die "$1: a password on the command line shows up in process listings; set MLFLOW_AUTH_ADMIN_PASSWORD or MEDIMG_TEAM_ADMIN_PASSWORD_FILE" ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]] || die "--port: expected 1-65535, got '$PORT'"
[[ "$WORKERS" =~ ^[0-9]+$ && "$WORKERS" -ge 1 ]] || die "--workers: expected a positive integer, got '$WORKERS'"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout: expected seconds, got '$TIMEOUT'"
ARTIFACTS="${ARTIFACTS:-$HOME_DIR/artifacts}"
PIDFILE="$HOME_DIR/server-$PORT.pid"
AUTH_INI="$HOME_DIR/auth-$PORT.ini"
LOGFILE="$HOME_DIR/server-$PORT.log"

# SQLAlchemy knows postgresql:// (its default driver, psycopg 3, is installed), not the
# postgres:// short form some tools print.
sqlalchemy_url() {
  case "$1" in
    postgres://*) echo "postgresql://${1#postgres://}" ;;
    *) echo "$1" ;;
  esac
}
# user:password@ -> user:***@ for anything printed
masked() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }
default_optuna_db() {  # same server, database <name>_optuna (both tools keep an alembic_version table)
  local base="${1%%\?*}" query=""
  [[ "$1" == *\?* ]] && query="?${1#*\?}"
  echo "${base}_optuna${query}"
}
is_loopback() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" || "$1" =~ ^127\. ]]; }
uri_host() {  # what other machines (or this one) put in MLFLOW_TRACKING_URI
  case "$HOST" in 0.0.0.0|::) hostname -f 2>/dev/null || hostname ;; *) probe_host ;; esac
}
probe_host() {  # where this machine reaches the server
  case "$HOST" in 0.0.0.0|localhost|127.*) echo 127.0.0.1 ;; ::|::1) echo "[::1]" ;; *:*) echo "[$HOST]" ;; *) echo "$HOST" ;; esac
}
proc_state() {  # one letter from /proc/<pid>/stat (R, S, D, Z, ...); empty once the process is gone
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  sed -E 's/^.*\) ([A-Za-z]).*$/\1/' <<<"$stat"
}
sigkill_pending() {  # SIGKILL (signal 9, bit 0x100) is queued for the process: it is dying
  local mask
  for mask in $(awk '/^(SigPnd|ShdPnd):/ {print $2}' "/proc/$1/status" 2>/dev/null); do
    (( 16#$mask & 0x100 )) && return 0
  done
  return 1
}
alive() {  # the recorded server process exists, is not dead or dying, and is still an mlflow server
  [[ -f "$PIDFILE" ]] || return 1
  local pid state
  pid="$(cat "$PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -d /proc/self ]] || return 0        # no procfs (macOS): kill -0 is all we can ask
  # Read /proc once: a process reaped between kill -0 and this read has no stat any more and is
  # dead, not alive (an empty state used to count as alive). Z: killed, awaiting its reaper;
  # X: being torn down.
  state="$(proc_state "$pid")"
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]] || return 1
  # The pid may have been handed to an unrelated process since the server died.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow" || return 1
}

create_db() {  # CREATE DATABASE when missing (needs a role allowed to create databases)
  local url
  for url in "$@"; do
    case "$url" in postgresql*|postgres:*) ;; *) continue ;; esac
    "$PY" - "$url" <<'EOF'
import sys
from urllib.parse import urlsplit, unquote
import psycopg
from psycopg import sql

url = urlsplit(sys.argv[1].replace("+psycopg", "").replace("postgres://", "postgresql://"))
name = unquote(url.path.lstrip("/"))
if not name:
    sys.exit("error: %s: the URL names no database" % url.geturl().split("@")[-1])
kw = dict(host=url.hostname or "127.0.0.1", port=url.port or 5432, dbname="postgres")
if url.username:
    kw["user"] = unquote(url.username)
if url.password:
    kw["password"] = unquote(url.password)
try:
    conn = psycopg.connect(connect_timeout=10, autocommit=True, **kw)
except psycopg.OperationalError as exc:
    kw["dbname"] = "template1"
    try:
        conn = psycopg.connect(connect_timeout=10, autocommit=True, **kw)
    except psycopg.OperationalError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"error: cannot reach PostgreSQL at {kw['host']}:{kw['port']}: {first}")
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
conn.close()
EOF
  done
}

default_auth_db() {  # beside the backend store: <name>_auth on the same PostgreSQL, else a file
  case "$DB" in
    postgresql*|postgres:*) local base="${DB%%\?*}" query=""
                            [[ "$DB" == *\?* ]] && query="?${DB#*\?}"
                            echo "${base}_auth${query}" ;;
    *) echo "sqlite:///$HOME_DIR/auth-$PORT.db" ;;
  esac
}

server_cmd() {
  SERVER_CMD=("$MLFLOW" server --backend-store-uri "$(sqlalchemy_url "$DB")"
              --artifacts-destination "$ARTIFACTS" --serve-artifacts
              --host "$HOST" --port "$PORT" --workers "$WORKERS")
  if [[ "$AUTH" == true ]]; then SERVER_CMD+=(--app-name basic-auth); fi
}

# The basic-auth app reads its settings from an ini file (MLFLOW_AUTH_CONFIG_PATH). The admin
# password never goes there nor on a command line: MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD from
# the server's environment (only the server's owner can read /proc/<pid>/environ), and only to
# create the admin user on the first start against an empty user store.
write_auth_config() {
  local auth_db="${AUTH_DB:-$(default_auth_db)}"
  if [[ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" && -n "${MEDIMG_TEAM_ADMIN_PASSWORD_FILE:-}" ]]; then
    [[ -r "$MEDIMG_TEAM_ADMIN_PASSWORD_FILE" ]] || die "MEDIMG_TEAM_ADMIN_PASSWORD_FILE: cannot read $MEDIMG_TEAM_ADMIN_PASSWORD_FILE"
    MLFLOW_AUTH_ADMIN_PASSWORD="$(head -n 1 "$MEDIMG_TEAM_ADMIN_PASSWORD_FILE")"
    export MLFLOW_AUTH_ADMIN_PASSWORD
  fi
  if [[ "$CREATE_DB" == 1 ]]; then create_db "$auth_db"; fi
  (umask 077; cat >"$AUTH_INI" <<EOF
[mlflow]
# Written by scripts/team_server.sh --auth. Everyone signed in may read; writes need a role
# (python -m tools.team_users). No password in this file.
default_permission = READ
database_uri = $(sqlalchemy_url "$auth_db")
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Without this cache every request hashes the password again (PBKDF2): the 4-worker load test
# with a server restart made 4 runs in 87 s (load ~15 on 2 cores); with it, 68 runs in 42 s
# (load ~9; tests/integration/test_scaleout.py, not side by side). A changed or deleted password
# is seen at once by the worker that changed it, by other workers within this many seconds.
auth_cache_ttl_seconds = 60
EOF
  )
  export MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI"
  # The auth app signs its CSRF tokens with this key; every worker and restart must share it,
  # so it is made once and kept (owner-only) beside the pid file unless the environment has one.
  if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
    local keyfile="$HOME_DIR/flask-secret-$PORT"
    [[ -s "$keyfile" ]] || (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$keyfile")
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$keyfile")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
}

print_env() {
  local optuna="${OPTUNA_DB:-$(default_optuna_db "$DB")}"
  echo "export MLFLOW_TRACKING_URI=http://$(uri_host):$PORT"
  case "$DB" in
    postgresql*|postgres:*) echo "# Optuna storage for searches: --storage $(masked "$optuna")" ;;
  esac
}

wait_ready() {
  local url="http://$(probe_host):$PORT/health" deadline=$((SECONDS + TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! alive; then
      echo "error: the server exited during start-up; last lines of $LOGFILE:" >&2
      tail -n 15 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "error: no answer from $url after ${TIMEOUT}s (log: $LOGFILE)" >&2
  exit 1
}

stop_server() {
  if ! [[ -f "$PIDFILE" ]]; then echo "no server recorded for port $PORT ($PIDFILE)"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  if alive; then
    # The server was started as the leader of its own process group: stop uvicorn and its
    # workers together.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do alive || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped server on port $PORT (pid $pid)"
  else
    echo "server on port $PORT (pid $pid) was not running; removed its pid file"
  fi
  rm -f "$PIDFILE"
}

start_server() {
    [[ -n "$MLFLOW" ]] || die "mlflow not found (run make install)"
    if ! is_loopback "$HOST" && [[ "$AUTH" != true ]]; then
      echo "warning: binding to $HOST exposes the server beyond this machine; it has no" \
           "authentication. Restrict clients with a firewall and --allowed-hosts (docs/team.md)." >&2
    fi
    if alive && sigkill_pending "$(cat "$PIDFILE")"; then
      # A server killed a moment ago can still be tearing down (its threads finishing the
      # SIGKILL, or waiting on disk): give it a few seconds to go before refusing.
      local w
      for w in $(seq 1 40); do alive || break; sleep 0.25; done
    fi
    if alive; then
      die "a server is already running on port $PORT (pid $(cat "$PIDFILE"), state $(proc_state "$(cat "$PIDFILE")")); stop it first"
    fi
    mkdir -p "$HOME_DIR" "$ARTIFACTS"
    [[ -w "$ARTIFACTS" ]] || die "--artifacts: $ARTIFACTS is not writable"
    if [[ "$CREATE_DB" == 1 ]]; then create_db "$DB" "${OPTUNA_DB:-$(default_optuna_db "$DB")}"; fi
    if [[ "$AUTH" == true ]]; then write_auth_config; fi
    server_cmd
    echo "starting: $(masked "${SERVER_CMD[*]}")" >"$LOGFILE"
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$JOBS"
    # setsid: the server leads its own process group, so `stop` ends every worker with it.
    # The pid written is the group leader's whether or not setsid had to fork.
    rm -f "$PIDFILE"
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "${SERVER_CMD[@]}" >>"$LOGFILE" 2>&1 </dev/null &
    local i
    for i in $(seq 1 50); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
    [[ -s "$PIDFILE" ]] || die "the server did not start (log: $LOGFILE)"
    wait_ready
    echo "MLflow tracking server on http://$(uri_host):$PORT (pid $(cat "$PIDFILE"), $WORKERS worker(s))"
    echo "  backend store: $(masked "$DB")"
    echo "  artifacts:     $ARTIFACTS"
    echo "  log:           $LOGFILE"
    if [[ "$AUTH" == true ]]; then
      echo "  authentication: basic-auth, users in $(masked "${AUTH_DB:-$(default_auth_db)}")"
      echo "# clients: export MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>"
      echo "# users:   python -m tools.team_users add <user> --role trainer|registry|reader"
    fi
    print_env
}

case "$cmd" in
  start) start_server ;;
  stop) stop_server ;;
  restart) stop_server; start_server ;;
  status)
    if alive; then
      echo "running: port $PORT, pid $(cat "$PIDFILE")"
      curl -fsS --max-time 2 "http://$(probe_host):$PORT/health" >/dev/null 2>&1 && echo "health: OK" || echo "health: no answer"
    else
      echo "not running (port $PORT)"; exit 3
    fi
    ;;
  create-db) create_db "$DB" "${OPTUNA_DB:-$(default_optuna_db "$DB")}" ;;
  uri) print_env ;;
  command) server_cmd; echo "$(masked "${SERVER_CMD[*]}")" ;;
  "") die "usage: $0 start|stop|restart|status|create-db|uri|command [options] (see --help)" ;;
  *) die "unknown command '$cmd' (start|stop|restart|status|create-db|uri|command)" ;;
esac
