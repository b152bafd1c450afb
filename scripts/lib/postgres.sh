# Sourced by scripts: makes sure a Postgres the tests can use answers, and exports
# UPKEEP_TEST_PG_URL. Order: an explicit UPKEEP_TEST_PG_URL, the local server on
# 127.0.0.1:5432 (trust auth, user postgres), else a throwaway cluster under .run/pg that is
# stopped when the calling script exits.

pg_answers() {
  psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v pg_config >/dev/null && pg_config --bindir && return 0
  return 1
}

ensure_postgres() {
  # The backup tests run pg_dump and pg_restore as the daemon does.
  if ! command -v pg_dump >/dev/null || ! command -v pg_restore >/dev/null; then
    echo "scripts: installing the PostgreSQL client from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
  fi
  if [ -n "${UPKEEP_TEST_PG_URL:-}" ] && pg_answers "$UPKEEP_TEST_PG_URL"; then
    return 0
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_answers "$local_url"; then
    export UPKEEP_TEST_PG_URL="$local_url"
    return 0
  fi
  if ! command -v psql >/dev/null || ! pg_bindir >/dev/null; then
    echo "scripts: installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  local bin dir port
  bin=$(pg_bindir)
  dir="$PWD/.run/pg"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    as=(runuser -u postgres --)
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  fi
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null
  PG_THROWAWAY=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop)
  trap 'stop_postgres' EXIT
  export UPKEEP_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "scripts: started a throwaway Postgres on 127.0.0.1:$port" >&2
}

stop_postgres() {
  if [ -n "${PG_THROWAWAY:-}" ]; then
    "${PG_THROWAWAY[@]}" >/dev/null 2>&1 || true
  fi
}

# Databases left by an interrupted earlier run (tests drop their own when they end).
drop_stale_test_databases() {
  local db
  for db in $(psql "$UPKEEP_TEST_PG_URL" -Atqc "select datname from pg_database where datname like 'upkeep\_t\_%'"); do
    psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
}
