#!/usr/bin/env bash
# Orphan scan benchmark: Upkeep's `orphan_records` plan over N `upload_files` rows (a third
# referenced from message answers, a third from message_files, a third orphaned) beside a
# hand-written ceiling on the same database: one psql session that gathers the same reference
# sources (the script is generated from Upkeep's own source list, bench/orphans_sql.rs) into
# an indexed, analyzed temporary table, anti-joins and counts. The ceiling runs before and
# after Upkeep; the ratio is to the faster of the two. Both must find the same rows.
# Usage: bench/orphans.sh [--files N]   (default 1000000; release build; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="bench/orphans.sh $*"
files=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=${2:?--files needs a number}; shift 2 ;;
    *) echo "bench/orphans.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $files =~ ^[1-9][0-9]*$ ]] || { echo "bench/orphans.sh: --files must be a positive integer" >&2; exit 2; }

. scripts/lib/postgres.sh
ensure_postgres
cargo build --release --locked --bin upkeep --example orphans_sql >&2
db=upkeep_bench_orphans
url="${UPKEEP_TEST_PG_URL%/*}/$db"
token="bench-token-0123456789abcdef"
work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-bench-orphans.XXXXXX")
daemon_pid=""
cleanup() {
  set +e
  [ -n "$daemon_pid" ] && pkill -TERM -P "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db with (force)" >/dev/null 2>&1
  rm -rf "$work"
  stop_postgres
}
trap cleanup EXIT

psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db with (force)" -c "create database $db" >/dev/null
psql "$url" -q -v ON_ERROR_STOP=1 -f tests/fixtures/dify_schema.sql >/dev/null
gen_start=$(date +%s.%N)
psql "$url" -q -v ON_ERROR_STOP=1 -v n="$files" >/dev/null <<'SQL'
INSERT INTO public.upload_files (id, tenant_id, storage_type, key, name, size, extension, created_by, created_at)
SELECT gen_random_uuid(), t, 'opendal', 'upload_files/' || t || '/' || g || '.pdf', 'f', 1, 'pdf', t,
       (now() AT TIME ZONE 'UTC') - interval '3 days'
FROM generate_series(1, :n) g, LATERAL (SELECT ('00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid) AS x(t);
CREATE TEMP TABLE f AS SELECT id, row_number() OVER () AS r FROM public.upload_files;
INSERT INTO public.messages (id, app_id, conversation_id, inputs, query, message, message_unit_price, answer,
                             answer_unit_price, currency, from_source)
SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), '{}', 'q', '[]', 0,
       'here: ![img](/files/' || upper(id::text) || '/file-preview)', 0, 'USD', 'api'
FROM f WHERE r % 3 = 0;
INSERT INTO public.message_files (message_id, type, transfer_method, created_by_role, created_by, upload_file_id)
SELECT m.id, 'image', 'local_file', 'account', m.id, f.id
FROM f JOIN LATERAL (SELECT id FROM public.messages LIMIT 1) m ON true WHERE f.r % 3 = 1;
ANALYZE;
SQL
gen_s=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1])))" "$gen_start" "$(date +%s.%N)")

echo "## orphan_records scan ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`$cmdline\`"
echo
echo "$files upload_files rows (generated in ${gen_s} s): a third referenced by an upper-case id in a"
echo "message answer, a third by message_files, a third unreferenced and older than the grace period."
echo

load() { cut -d' ' -f1-3 /proc/loadavg; }
# The ceiling, timed in one psql session; prints `seconds orphans sources`.
ceiling() {
  target/release/examples/orphans_sql --url "$url" | psql "$url" -qAt | tail -1
}
load_start=$(load)
read -r sql1_s sql1_orphans sources <<<"$(ceiling)"

# Upkeep: a fresh daemon under /usr/bin/time for its peak RSS.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/storage"
UPKEEP_DATABASE_URL="$url" UPKEEP_LISTEN="127.0.0.1:$port" UPKEEP_ADMIN_TOKEN="$token" UPKEEP_WORKERS=1 \
  OPENDAL_FS_ROOT="$work/storage" UPKEEP_LOG=warn \
  /usr/bin/time -v -o "$work/time.txt" target/release/upkeep serve 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
id=$(curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  "http://127.0.0.1:$port/v1/jobs" -d '{"kind":"orphan_records","params":{}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# The figure is the job's own started_at..finished_at, so polling once a second loses nothing;
# a python3 per poll five times a second took CPU from the daemon on these 2 cores.
while :; do
  job=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/jobs/$id")
  case "$job" in *'"state":"succeeded"'*|*'"state":"failed"'*|*'"state":"cancelled"'*) break ;; esac
  sleep 1
done
# Signal upkeep, not /usr/bin/time, so time lives to report.
pkill -TERM -P "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""
read -r up_s up_orphans up_sources <<<"$(echo "$job" | python3 -c '
import json, sys, datetime as d
j = json.load(sys.stdin)
p = lambda s: d.datetime.fromisoformat(s.replace("Z", "+00:00"))
r = j["result"] or {}
print(round((p(j["finished_at"]) - p(j["started_at"])).total_seconds(), 2),
      r["tables"]["upload_files"]["orphans"] if j["state"] == "succeeded" else j["error"],
      len(r.get("references_read", [])))')"
up_rss=$(awk -F: '/Maximum resident/ {print int($2/1024)}' "$work/time.txt")

read -r sql2_s sql2_orphans _ <<<"$(ceiling)"
load_end=$(load)
# Untimed: the rows only one side found (the ceiling's orphans against Upkeep's recorded plan).
differ=$(target/release/examples/orphans_sql --url "$url" --check "$id" | psql "$url" -qAt | tail -1)
best=$(python3 -c "import sys; print(min(float(sys.argv[1]), float(sys.argv[2])))" "$sql1_s" "$sql2_s")
ratio=$(python3 -c "import sys; print(round(float(sys.argv[1]) / float(sys.argv[2]), 2))" "$up_s" "$best")

echo "| tool | seconds | ratio to the ceiling | orphans found | peak RSS MB |"
echo "|---|---|---|---|---|"
echo "| Upkeep \`orphan_records\` plan ($up_sources reference sources, plan recorded) | $up_s | $ratio | $up_orphans | $up_rss |"
echo "| ceiling: one psql session, the same $sources sources gathered + indexed + analyzed + anti-joined + counted (before Upkeep) | $sql1_s | | $sql1_orphans | — |"
echo "| the same ceiling, after Upkeep | $sql2_s | | $sql2_orphans | — |"
echo
echo "Load average (1, 5, 15 min) at the start: $load_start; at the end: $load_end."
echo "upload_files rows found by only one side (the ceiling's count against Upkeep's recorded plan): $differ."
