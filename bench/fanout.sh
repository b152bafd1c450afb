#!/usr/bin/env bash
# Fan-out benchmark: one `storage_migrate` with `fan_out` split into child jobs, run by one
# daemon and then by two, each daemon pinned to a core of its own (taskset) as if it were a
# machine of its own, against a local target directory (so the daemons, not a storage server,
# are what is measured). Both runs keep the same number of children in flight: one daemon
# runs all four at once; two daemons run two each (UPKEEP_KIND_LIMITS=storage_migrate=2).
# Beside them, for context, `rclone copy` pinned to one core and to both. After each run the
# target is compared with the source (count and bytes), so a broken run cannot look fast.
# Usage: bench/fanout.sh [--tenants N] [--files N] [--kb K] [--fan-out N]  (release build; prints Markdown)
#   --tenants N  tenant directories under upload_files/ (default 32)
#   --files N    files per tenant (default 64)
#   --kb K       size of each file in KiB (default 1024)
#   --fan-out N  child jobs (default 4)
# Smoke test: bench/fanout.sh --tenants 4 --files 8 --kb 64
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="bench/fanout.sh $*"

tenants=32 files=64 kb=1024 fan_out=4
while [ $# -gt 0 ]; do
  case "$1" in
    --tenants) tenants=${2:?--tenants needs a number}; shift 2 ;;
    --files) files=${2:?--files needs a number}; shift 2 ;;
    --kb) kb=${2:?--kb needs a number}; shift 2 ;;
    --fan-out) fan_out=${2:?--fan-out needs a number}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "bench/fanout.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$tenants" "$files" "$kb" "$fan_out"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench/fanout.sh: $n is not a positive integer" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/fanout.sh: needs two cores to pin two daemons apart" >&2
  exit 2
fi

. scripts/lib/postgres.sh
ensure_postgres
if ! command -v rclone >/dev/null; then
  echo "bench/fanout.sh: installing rclone from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null
fi
cargo build --release --locked --bin upkeep >&2
upkeep_bin="$PWD/target/release/upkeep"
py=$(python3 -c 'import sys; print(sys.executable)')

token="bench-token-0123456789abcdef"
secret_key="bench-secret-key-0123456789abcdef"
db_name=upkeep_bench_fanout
db_url="${UPKEEP_TEST_PG_URL%/*}/$db_name"
work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-bench-fanout.XXXXXX")
pids=()

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db_name with (force)" >/dev/null 2>&1
  rm -rf "$work"
  stop_postgres
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench/fanout.sh: $*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", ($1) }"; }
free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {
  local url=$1 i
  for i in $(seq 300); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.1
  done
  log "$url did not answer within 30 s"
  return 1
}
time_field() { awk -F': ' -v k="$2" '$1 ~ k {print $2}' "$1" | tail -1; }
# "count bytes" under a directory.
tree_size() { find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %d\n", n, b }'; }

fresh_db() {
  psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db_name with (force)" >/dev/null
  psql "$UPKEEP_TEST_PG_URL" -qc "create database $db_name" >/dev/null
}

# ---- Data ------------------------------------------------------------------------------------
"$py" - "$work/src" "$tenants" "$files" "$kb" <<'EOF'
import os, random, sys, uuid
root, tenants, files, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(20261204)
for t in range(tenants):
    d = os.path.join(root, "upload_files", str(uuid.UUID(int=rnd.getrandbits(128), version=4)))
    os.makedirs(d)
    for i in range(files):
        with open(os.path.join(d, "%04d.bin" % i), "wb") as f:
            f.write(os.urandom(kb * 1024))
EOF
read -r src_count src_bytes < <(tree_size "$work/src")
log "generated $src_count files, $src_bytes bytes under $work/src"

# ---- Upkeep: N daemons, daemon i pinned to core i --------------------------------------------
# Sets: secs (the parent job's started_at to finished_at), ok, spread (children per daemon),
# rss (peak RSS per daemon, kB), cpu (CPU seconds per daemon).
run_upkeep() { # DAEMONS
  local n=$1 i port ports=() times=() body resp id job dst="$work/dst-upkeep-$1" limit=""
  fresh_db
  rm -rf "$dst"
  mkdir -p "$dst"
  # The same children in flight either way: all on one daemon, or half on each of two.
  [ "$n" -gt 1 ] && limit="storage_migrate=$(((fan_out + n - 1) / n))"
  pids=()
  for ((i = 0; i < n; i++)); do
    port=$(free_port)
    ports+=("$port")
    UPKEEP_DATABASE_URL="$db_url" UPKEEP_LISTEN="127.0.0.1:$port" UPKEEP_ADMIN_TOKEN="$token" \
      UPKEEP_WORKERS=$((fan_out + 1)) UPKEEP_KIND_LIMITS="$limit" UPKEEP_WORKER_NAME="daemon$i" \
      UPKEEP_LOG=warn UPKEEP_SECRET_KEY="$secret_key" UPKEEP_POLL_MS=200 \
      taskset -c "$i" /usr/bin/time -v -o "$work/time-$i.txt" "$upkeep_bin" serve \
      >"$work/daemon-$i.log" 2>&1 &
    times+=($!)
    wait_http "http://127.0.0.1:$port/readyz"
    # taskset execs /usr/bin/time, whose child is the daemon: it gets the SIGTERM, so time
    # can report.
    pids+=("$(ps --ppid "$!" -o pid= | tr -d ' ')")
  done
  body=$("$py" -c '
import json, sys
src, dst, fan_out = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(json.dumps({"kind": "storage_migrate", "params": {
    "source": {"type": "local", "root": src}, "target": {"type": "local", "root": dst},
    "concurrency": 4, "update_db": False, "fan_out": fan_out}}))' "$work/src" "$dst" "$fan_out")
  resp=$(curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$body" "http://127.0.0.1:${ports[0]}/v1/jobs")
  id=$("$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$resp") || {
    log "submit failed: $resp"
    return 1
  }
  while :; do
    job=$(curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:${ports[0]}/v1/jobs/$id")
    [[ $job =~ \"state\":[[:space:]]*\"(succeeded|failed|cancelled)\" ]] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -TERM "$p"; done
  for p in "${times[@]}"; do wait "$p" || true; done
  pids=()
  printf '%s\n' "$job" >"$work/job.json"
  {
    read -r secs
    read -r ok
    read -r spread
  } < <("$py" - "$work/job.json" <<'EOF'
import collections, json, sys
from datetime import datetime
j = json.load(open(sys.argv[1]))
t = lambda k: datetime.fromisoformat(j[k].replace("Z", "+00:00"))
r = j.get("result") or {}
per = collections.Counter()
for c in r.get("children") or []:
    for w in c["workers"]:
        per[w.rsplit("/", 1)[0]] += 1
print("%.3f" % (t("finished_at") - t("started_at")).total_seconds())
print(1 if j["state"] == "succeeded" and r.get("safe_to_switch") else 0)
print(", ".join("%s: %d" % kv for kv in sorted(per.items())) or "-")
EOF
  )
  [ "$ok" = 1 ] || { log "job $id did not succeed: $(head -c 2000 "$work/job.json")"; return 1; }
  read -r got_count got_bytes < <(tree_size "$dst")
  [ "$got_count $got_bytes" = "$src_count $src_bytes" ] || {
    log "the target holds $got_count files, $got_bytes bytes; expected $src_count, $src_bytes"
    return 1
  }
  rss="" cpu=""
  for ((i = 0; i < n; i++)); do
    rss+="${rss:+ / }$(time_field "$work/time-$i.txt" "Maximum resident set size")"
    cpu+="${cpu:+ / }$(calc "$(time_field "$work/time-$i.txt" "User time") + $(time_field "$work/time-$i.txt" "System time")" 1)"
  done
}

run_rclone() { # CORES
  local cores=$1 dst="$work/dst-rclone-$1" t0 t1
  rm -rf "$dst"
  t0=$(now)
  taskset -c "$cores" /usr/bin/time -v -o "$work/time-rclone.txt" \
    rclone copy "$work/src" "$dst" --transfers 16 --checkers 16 >"$work/rclone.log" 2>&1
  t1=$(now)
  secs=$(calc "$t1 - $t0" 3)
  read -r got_count got_bytes < <(tree_size "$dst")
  [ "$got_count $got_bytes" = "$src_count $src_bytes" ] || { log "rclone copied $got_count files"; return 1; }
  rss=$(time_field "$work/time-rclone.txt" "Maximum resident set size")
  cpu=$(calc "$(time_field "$work/time-rclone.txt" "User time") + $(time_field "$work/time-rclone.txt" "System time")" 1)
  rm -rf "$dst"
}

mb=$(calc "$src_bytes / 1048576" 1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run_upkeep 1
one_secs=$secs one_spread=$spread one_rss=$rss one_cpu=$cpu
rm -rf "$work/dst-upkeep-1"
run_upkeep 2
two_secs=$secs two_spread=$spread two_rss=$rss two_cpu=$cpu
rm -rf "$work/dst-upkeep-2"
run_rclone 0
r1_secs=$secs r1_rss=$rss r1_cpu=$cpu
run_rclone 0,1
r2_secs=$secs r2_rss=$rss r2_cpu=$cpu
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

rate() { calc "$mb / $1" 1; }
cat <<EOF
## fan-out: one storage_migrate over 1 and 2 pinned daemons ($(date -u +%F), $(nproc) cores, $(rclone version 2>/dev/null | head -1))

\`$cmdline\`

$src_count files × $kb KiB ($mb MiB) in $tenants tenant prefixes, local directory to local directory, \`fan_out: $fan_out\`, \`concurrency: 4\` per child. Load average before / after: $load_before / $load_after.

| run | seconds | MiB/s | vs 1 daemon | children run per daemon | peak RSS kB (per daemon) | CPU s (per daemon) |
|---|---|---|---|---|---|---|
| Upkeep, 1 daemon on core 0 | $one_secs | $(rate "$one_secs") | 1.00 | $one_spread | $one_rss | $one_cpu |
| Upkeep, 2 daemons on cores 0 and 1 | $two_secs | $(rate "$two_secs") | $(calc "$one_secs / $two_secs") | $two_spread | $two_rss | $two_cpu |
| rclone copy --transfers 16, core 0 | $r1_secs | $(rate "$r1_secs") | $(calc "$one_secs / $r1_secs") | — | $r1_rss | $r1_cpu |
| rclone copy --transfers 16, cores 0 and 1 | $r2_secs | $(rate "$r2_secs") | $(calc "$one_secs / $r2_secs") | — | $r2_rss | $r2_cpu |
EOF
