#!/usr/bin/env bash
# Queue benchmark: submit→start latency (p50/p99 over 1000 jobs) and jobs/s through one and
# two `upkeep serve` processes on one database, beside a bare SKIP LOCKED loop (the ceiling).
# Usage: bench/queue.sh [--jobs N] [--pace JOBS_PER_S]   (release build; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh
ensure_postgres
cargo build --release --locked --bin upkeep --example queue_bench
echo "## queue ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`bench/queue.sh $*\`"
echo
target/release/examples/queue_bench --pg "$UPKEEP_TEST_PG_URL" --upkeep target/release/upkeep "$@"
