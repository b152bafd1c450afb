#!/usr/bin/env bash
# Storage benchmark: Upkeep's `storage_migrate` job beside `rclone copy`, in one run, on the same
# generated files (a local directory laid out like Dify's upload_files/<tenant>/<uuid>.bin),
# into the same S3 server (moto on a free 127.0.0.1 port; a fresh moto process with an empty
# bucket per run).
# Data sets: (A) many small files, (B) a few large ones. Per data set: Upkeep at its defaults
# (concurrency 8, verify checksum), Upkeep with verify size, rclone at its defaults, and rclone
# at Upkeep's parallelism (--transfers 8 --checkers 8). After each run the bucket is listed and
# its object count and bytes checked, so a broken run cannot look fast. The four runs are made
# in rounds, each round starting one run later in the list, and each row shows its median run.
# Usage: bench/storage.sh [--small N] [--large N] [--large-mb M] [--rounds R]
#   (release build; prints Markdown)
#   --small N     files in set A, 10 KB each (default 10000)
#   --large N     files in set B (default 20)
#   --large-mb M  size of each file in set B, in MB of 10^6 bytes (default 50)
#   --rounds R    rounds per data set (default 3)
# Smoke test: bench/storage.sh --small 500 --large 2 --large-mb 10 --rounds 1
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="bench/storage.sh $*"

small=10000 large=20 large_mb=50 rounds=3
small_bytes=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --small) small=${2:?--small needs a number}; shift 2 ;;
    --large) large=${2:?--large needs a number}; shift 2 ;;
    --large-mb) large_mb=${2:?--large-mb needs a number}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "bench/storage.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$small" "$large" "$large_mb" "$rounds"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench/storage.sh: $n is not a positive integer" >&2; exit 2; }
done

. scripts/lib/postgres.sh
. scripts/lib/servers.sh
ensure_postgres
ensure_test_servers
if ! command -v rclone >/dev/null; then
  echo "bench/storage.sh: installing rclone from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null
fi
cargo build --release --locked --bin upkeep >&2
upkeep_bin="$PWD/target/release/upkeep"
# A real interpreter, not a pyenv shim: it is called between timed steps.
py=$(python3 -c 'import sys; print(sys.executable)')

token="bench-token-0123456789abcdef"
# The S3 keys in the job params are secrets, sealed at rest under this key.
secret_key="bench-secret-key-0123456789abcdef"
db_name=upkeep_bench_storage
db_url="${UPKEEP_TEST_PG_URL%/*}/$db_name"
work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-bench-storage.XXXXXX")
moto_pid="" time_pid="" daemon_pid=""

cleanup() {
  set +e
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null; fi
  if [ -n "$time_pid" ]; then wait "$time_pid" 2>/dev/null; fi
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null; wait "$moto_pid" 2>/dev/null; fi
  psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db_name with (force)" >/dev/null 2>&1
  rm -rf "$work"
  stop_postgres
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench/storage.sh: $*" >&2; }

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }

# calc EXPR [DECIMALS]: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", ($1) }"; }

# Waits until `curl URL` succeeds (30 s at most).
wait_http() {
  local url=$1 i
  for i in $(seq 300); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.1
  done
  log "$url did not answer within 30 s"
  return 1
}

# ---- The S3 server ---------------------------------------------------------------------------
moto_port=$(free_port)
endpoint="http://127.0.0.1:$moto_port"
start_moto() {
  "$UPKEEP_TEST_MOTO" -H 127.0.0.1 -p "$moto_port" >>"$work/moto.log" 2>&1 &
  moto_pid=$!
  wait_http "$endpoint/moto-api/"
}
stop_moto() {
  kill "$moto_pid" 2>/dev/null
  wait "$moto_pid" 2>/dev/null || true
  moto_pid=""
}
start_moto
moto_version=$("$(dirname "$UPKEEP_TEST_MOTO")/python" -c 'import moto; print(moto.__version__)')
rclone_version=$(rclone version 2>/dev/null | head -1 | awk '{print $2}')
clk_tck=$(getconf CLK_TCK)

# moto's CPU seconds so far (user + system).
moto_cpu() { awk -v t="$clk_tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$moto_pid/stat"; }
# moto's peak RSS: the peak of one run, as each run has a moto process of its own.
moto_peak_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$moto_pid/status"; }
# moto logs one line per request: the count, and the requests since line N by method.
moto_log_lines() { wc -l <"$work/moto.log"; }
moto_requests_since() {
  tail -n +"$(($1 + 1))" "$work/moto.log" | awk '
    match($0, /(GET|HEAD|PUT|POST|DELETE) \/[^ ]* HTTP\//) { split(substr($0, RSTART), w, " "); n[w[1]]++; t++ }
    END {
      s = ""
      split("PUT POST GET HEAD DELETE", order, " ")
      for (i = 1; i <= 5; i++) if (n[order[i]]) s = s (s ? ", " : "") order[i] " " n[order[i]]
      printf "%d (%s)", t, s
    }'
}

# A new moto process with one empty bucket: every run meets the same fresh server, whatever
# the runs before it left in moto's memory.
fresh_bucket() {
  stop_moto
  start_moto
  curl -sf -X PUT "$endpoint/$1" -o /dev/null
}

cat >"$work/rclone.conf" <<EOF
[moto]
type = s3
provider = Other
endpoint = $endpoint
access_key_id = x
secret_access_key = x
region = us-east-1
force_path_style = true
EOF
# rclone 1.60's AWS SDK refuses a custom CA bundle on its own transport; plain http needs none.
rclone_env=(env -u AWS_CA_BUNDLE)
rclone_cmd() { "${rclone_env[@]}" rclone --config "$work/rclone.conf" "$@"; }

# "count bytes" of what the bucket holds.
bucket_size() {
  rclone_cmd size "moto:$1" --json | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["count"], d["bytes"])'
}

# ---- Upkeep's queue database -----------------------------------------------------------------
psql "$UPKEEP_TEST_PG_URL" -qc "drop database if exists $db_name with (force)" >/dev/null
psql "$UPKEEP_TEST_PG_URL" -qc "create database $db_name" >/dev/null

# ---- Data ------------------------------------------------------------------------------------
# make_set DIR FILES BYTES_EACH TENANTS: random bytes, upload_files/<tenant>/<uuid>.bin.
make_set() {
  "$py" - "$@" <<'EOF'
import os, random, sys, uuid
root, n, size, tenants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(20261125)
ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(tenants)]
for i in range(n):
    d = os.path.join(root, "upload_files", ids[i % tenants])
    os.makedirs(d, exist_ok=True)
    name = str(uuid.UUID(int=rnd.getrandbits(128), version=4)) + ".bin"
    with open(os.path.join(d, name), "wb") as f:
        left = size
        while left:
            chunk = min(left, 4 << 20)
            f.write(os.urandom(chunk))
            left -= chunk
EOF
}

small_tenants=$((small < 50 ? small : 50))
large_tenants=$((large < 4 ? large : 4))
large_bytes=$((large_mb * 1000000))
t=$(now)
make_set "$work/small" "$small" "$small_bytes" "$small_tenants"
make_set "$work/large" "$large" "$large_bytes" "$large_tenants"
gen_secs=$(calc "$(now) - $t" 1)
log "generated the data sets in ${gen_secs}s under $work"
# Written back to disk and read once, so that no run pays for the write-back of freshly written
# files or reads them cold: every run reads the same cached, clean source. (The first run of
# set B is still the slowest whichever tool or mode it is; the rotated rounds below keep that
# from deciding a row.)
sync
find "$work/small" "$work/large" -type f -exec cat {} + >/dev/null

# ---- One run of each tool --------------------------------------------------------------------
# Each run sets: secs (the copy itself), wall (as the client sees it), rss_kb, cpu (user + sys of
# the tool's process), ok (1 when the tool reported success), note (tool-side detail).
time_field() { # FILE "Label": the value after the label in /usr/bin/time -v output
  awk -F': ' -v k="$2" '$1 ~ k {print $2}' "$1" | tail -1
}

run_rclone() { # SRC BUCKET EXTRA_FLAGS...
  local src=$1 bucket=$2
  shift 2
  local t0 t1 rc=0
  t0=$(now)
  "${rclone_env[@]}" /usr/bin/time -v -o "$work/time.txt" \
    rclone --config "$work/rclone.conf" copy "$src" "moto:$bucket" "$@" \
    >"$work/rclone.log" 2>&1 || rc=$?
  t1=$(now)
  secs=$(calc "$t1 - $t0" 3)
  wall=$secs
  rss_kb=$(time_field "$work/time.txt" "Maximum resident set size")
  cpu=$(calc "$(time_field "$work/time.txt" "User time") + $(time_field "$work/time.txt" "System time")")
  if [ "$rc" = 0 ]; then ok=1; note="exit 0"; else
    ok=0; note="exit $rc"
    log "rclone failed (exit $rc):"; tail -20 "$work/rclone.log" >&2
  fi
}

run_upkeep() { # SRC BUCKET VERIFY
  local src=$1 bucket=$2 verify=$3 port body resp id job t0 t1 i
  port=$(free_port)
  UPKEEP_DATABASE_URL="$db_url" UPKEEP_LISTEN="127.0.0.1:$port" UPKEEP_ADMIN_TOKEN="$token" \
    UPKEEP_WORKERS=1 UPKEEP_LOG=warn UPKEEP_SECRET_KEY="$secret_key" \
    /usr/bin/time -v -o "$work/time.txt" "$upkeep_bin" serve >"$work/daemon.log" 2>&1 &
  time_pid=$!
  wait_http "http://127.0.0.1:$port/readyz"
  daemon_pid=$(ps --ppid "$time_pid" -o pid= | tr -d ' ')
  body=$("$py" -c '
import json, sys
src, bucket, endpoint, verify = sys.argv[1:]
print(json.dumps({"kind": "storage_migrate", "params": {
    "source": {"type": "local", "root": src},
    "target": {"type": "s3", "bucket_name": bucket, "endpoint": endpoint,
               "access_key": "x", "secret_key": "x", "address_style": "path"},
    "concurrency": 8, "verify": verify, "update_db": False}}))' "$src" "$bucket" "$endpoint" "$verify")
  t0=$(now)
  resp=$(curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$body" "http://127.0.0.1:$port/v1/jobs")
  id=$("$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$resp") || {
    log "submit failed: $resp"
    return 1
  }
  # Poll every 0.1 s; the job's own started_at/finished_at give the precise time.
  while :; do
    job=$(curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/jobs/$id")
    [[ $job =~ \"state\":[[:space:]]*\"(succeeded|failed|cancelled)\" ]] && break
    sleep 0.1
  done
  t1=$(now)
  kill -TERM "$daemon_pid"
  wait "$time_pid" || true
  time_pid="" daemon_pid=""
  wall=$(calc "$t1 - $t0" 3)
  printf '%s\n' "$job" >"$work/job.json"
  {
    read -r secs
    read -r ok
    read -r note
  } < <("$py" - "$work/job.json" <<'EOF'
import json, sys
from datetime import datetime
j = json.load(open(sys.argv[1]))
secs = (datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00"))
        - datetime.fromisoformat(j["started_at"].replace("Z", "+00:00"))).total_seconds()
r = j.get("result") or {}
print("%.3f" % secs)
print(1 if j["state"] == "succeeded" else 0)
print("%s: copied %s, already_there %s, failed %s" % (
    j["state"], r.get("copied"), r.get("already_there"), r.get("failed")))
EOF
  )
  if [ "$ok" != 1 ]; then
    log "Upkeep's job $id ended $note:"
    "$py" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(json.dumps({k: j.get(k) for k in ("state","error","progress","result")}, indent=1))' "$work/job.json" >&2
  fi
  rss_kb=$(time_field "$work/time.txt" "Maximum resident set size")
  cpu=$(calc "$(time_field "$work/time.txt" "User time") + $(time_field "$work/time.txt" "System time")")
}

# ---- The runs --------------------------------------------------------------------------------
run_no=0
max_load=0
# bench_set NAME SRC FILES BYTES_EACH OUT: writes the data set's table to OUT.
bench_set() {
  local name=$1 src=$2 files=$3 each=$4 out=$5 exp_bytes label kind arg m0 m1 l0 reqs count bytes check
  exp_bytes=$((files * each))
  local rows=()
  local runs=(
    "Upkeep, defaults (concurrency 8, verify checksum)|upkeep|checksum"
    "Upkeep, concurrency 8, verify size|upkeep|size"
    "rclone copy, defaults (--transfers 4 --checkers 8)|rclone|"
    "rclone copy --transfers 8 --checkers 8|rclone|--transfers 8 --checkers 8"
  )
  # Every run as "index|seconds|row"; round r starts with run r of the list.
  local results=() n=${#runs[@]} round i idx
  for round in $(seq "$rounds"); do
  for i in $(seq 0 $((n - 1))); do
    idx=$(((i + round - 1) % n))
    IFS='|' read -r label kind arg <<<"${runs[$idx]}"
    run_no=$((run_no + 1))
    local bucket="bench-storage-$run_no"
    fresh_bucket "$bucket"
    m0=$(moto_cpu)
    l0=$(moto_log_lines)
    log "set $name, round $round: $label into $bucket"
    if [ "$kind" = upkeep ]; then
      run_upkeep "$src" "$bucket" "$arg"
    else
      # shellcheck disable=SC2086 # the flags are words
      run_rclone "$src" "$bucket" $arg
    fi
    m1=$(moto_cpu)
    reqs=$(moto_requests_since "$l0")
    local moto_mb
    moto_mb=$(calc "$(moto_peak_kb) * 1024 / 1000000" 0)
    read -r count bytes < <(bucket_size "$bucket")
    if [ "$ok" = 1 ] && [ "$count" = "$files" ] && [ "$bytes" = "$exp_bytes" ]; then
      check="$count objects, $bytes bytes: ok"
    else
      check="**$count objects, $bytes bytes, expected $files, $exp_bytes: FAILED** ($note)"
    fi
    local rate mbs client load
    load=$(cut -d' ' -f1 /proc/loadavg)
    max_load=$(calc "$load > $max_load ? $load : $max_load")
    rate=$(calc "$files / $secs" 1)
    mbs=$(calc "$exp_bytes / 1000000 / $secs" 1)
    client=$(calc "$wall" 2)
    log "  $(calc "$secs") s (client $client s), $check; rss ${rss_kb} kB, cpu $cpu s, moto cpu $(calc "$m1 - $m0") s, moto requests $reqs; load $(cut -d" " -f1-3 /proc/loadavg)"
    results+=("$idx|$secs|| $label | $(calc "$secs") | $client | $rate | $mbs | $(calc "$rss_kb * 1024 / 1000000" 1) | $(calc "$cpu" 1) | $(calc "$m1 - $m0" 1) | $moto_mb | $reqs | $check |")
  done
  done
  # Per run of the list, its median round (the upper one of an even count), with every round's
  # seconds in the order they ran.
  local mine median every line
  for idx in $(seq 0 $((n - 1))); do
    mapfile -t mine < <(printf '%s\n' "${results[@]}" | awk -F'|' -v i="$idx" '$1 == i')
    median=$(printf '%s\n' "${mine[@]}" | sort -t'|' -k2,2g | sed -n "$((${#mine[@]} / 2 + 1))p")
    every=""
    for line in "${mine[@]}"; do
      line=${line#*|}
      every="$every${every:+, }$(calc "${line%%|*}")"
    done
    line=${median#*|}
    rows+=("${line#*|} $every |")
  done
  {
    echo "### $name"
    echo
    echo "| tool / settings | seconds | client wall s | objects/s | MB/s | peak RSS MB | tool CPU s | moto CPU s | moto peak RSS MB | moto requests | bucket after the run | seconds, every round |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
  } >"$out"
}

mb() { calc "$1 / 1000000" 1; }
bench_set "A: $small files × $((small_bytes / 1000)) KB ($(mb $((small * small_bytes))) MB in $small_tenants tenant prefixes)" \
  "$work/small" "$small" "$small_bytes" "$work/table_a.md"
bench_set "B: $large files × $large_mb MB ($(mb $((large * large_bytes))) MB in $large_tenants tenant prefixes)" \
  "$work/large" "$large" "$large_bytes" "$work/table_b.md"

echo "## storage_migrate vs rclone ($(date -u +%F), $(nproc) cores, rclone $rclone_version, moto $moto_version)"
echo
echo "\`$cmdline\`"
echo
echo "Source: a local directory of random bytes, \`upload_files/<tenant>/<uuid>.bin\` (generated in $gen_secs s)."
echo "Target: moto's S3 on 127.0.0.1 (one Python process, bound by its GIL; objects held in memory), a fresh moto process with an empty bucket per run."
echo "Highest 1-minute load average seen at the end of a run: $max_load. Rounds: $rounds; each row is its median round."
echo
cat "$work/table_a.md" "$work/table_b.md"
cat <<EOF
seconds: Upkeep, the job's started_at → finished_at (listing, copy, verification, the ledger,
the cross-check); rclone, the process's wall time. client wall s: Upkeep from the submit request
to the poll (every 0.1 s) that saw the job end. MB = 10^6 bytes. Peak RSS: \`/usr/bin/time -v\`
of the rclone process, or of a fresh \`upkeep serve\` (1 worker) per run, stopped after its job.
tool CPU s: user + system of that process. moto: CPU seconds used, peak RSS, and the requests
it logged during the run, by method.
Bucket after the run: \`rclone size --json\` of the run's bucket against the files generated.
rclone: \`rclone copy SRC moto:BUCKET [flags]\`, an S3 remote with provider Other, moto's
endpoint, force_path_style. Upkeep: \`POST /v1/jobs\` with
\`{"kind":"storage_migrate","params":{"source":{"type":"local",...},"target":{"type":"s3",...,"address_style":"path"},"concurrency":8,"verify":...,"update_db":false}}\`.
EOF
