#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine and run them:
# a virtualenv with lethe and its test tools, a throwaway PostgreSQL server on
# 127.0.0.1 (installed with apt-get when missing), and one Prefect server for
# the session. Every ledger test runs on SQLite and on PostgreSQL.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scratch=$(mktemp -d)  # /tmp/tmp.*, removed on exit
chmod 755 "$scratch"
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  if [ -n "${pg_ctl:-}" ] && [ -d "$scratch/pg" ]; then
    as_postgres "$pg_ctl" -D "$scratch/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

# --- PostgreSQL -----------------------------------------------------------
find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pg_bin=$(find_pg_bin)
if [ -z "$pg_bin" ]; then
  say "installing PostgreSQL (apt-get)"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(find_pg_bin)
fi
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; else "$@"; fi
}
pg_ctl="$pg_bin/pg_ctl"
pg_port=${LETHE_TEST_PG_PORT:-55432}
mkdir -p "$scratch/pg" "$scratch/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$scratch/pg" "$scratch/pgsock"
say "starting PostgreSQL on 127.0.0.1:$pg_port"
as_postgres "$pg_bin/initdb" -D "$scratch/pg" -A trust -U postgres >/dev/null
as_postgres "$pg_ctl" -D "$scratch/pg" -l "$scratch/pgsock/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$scratch/pgsock -c fsync=off" \
  start >/dev/null

# --- Graphviz (the lineage graph's svg output is tested when dot exists) ---
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  say "installing Graphviz (apt-get)"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq graphviz >/dev/null; } \
    || echo "Graphviz could not be installed; its tests will skip" >&2
fi

# --- Python ---------------------------------------------------------------
say "installing lethe and its test tools"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# --- Prefect server for the session ---------------------------------------
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="$scratch/prefect"
prefect_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
say "starting a Prefect server on 127.0.0.1:$prefect_port"
.venv/bin/prefect server start --host 127.0.0.1 --port "$prefect_port" --no-ui \
  > "$scratch/prefect-server.log" 2>&1 &
pids+=($!)
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api"
for _ in $(seq 1 180); do
  if .venv/bin/python -c "import httpx,sys; sys.exit(httpx.get('$PREFECT_API_URL/health').status_code!=200)" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
.venv/bin/python -c "import httpx; httpx.get('$PREFECT_API_URL/health').raise_for_status()" \
  || { cat "$scratch/prefect-server.log"; exit 1; }

# --- the tests --------------------------------------------------------------
export LETHE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
export LETHE_REQUIRE_POSTGRES=1
export LETHE_TEST_PREFECT_DB="$PREFECT_HOME/prefect.db"
export LETHE_SAMPLE_DATA="${LETHE_SAMPLE_DATA:-$repo/../shared/data}"
[ -d "$LETHE_SAMPLE_DATA" ] || echo "warning: no sample data at $LETHE_SAMPLE_DATA; the tests that read it will skip" >&2
say "running the tests"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
