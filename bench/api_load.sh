#!/usr/bin/env bash
# API load benchmark: `GET /v1/jobs` (first, filtered and deep pages), a job, and a big job's
# events with 100,000 finished jobs and 1,000,000 events in the tables, from a second process;
# beside the same statements sent straight to Postgres; then under TTL pruning of most jobs.
# Usage: bench/api_load.sh [--seconds N] [--concurrency N] [--ttl-days N] [--jobs N] [--events N]
#   (release build; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh
ensure_postgres
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bin upkeep --example api_load_bench >&2
echo "## API under load ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`bench/api_load.sh $*\`"
echo
"$target/release/examples/api_load_bench" --pg "$UPKEEP_TEST_PG_URL" --upkeep "$target/release/upkeep" "$@"
