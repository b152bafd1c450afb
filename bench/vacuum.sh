#!/usr/bin/env bash
# Vacuum benchmark: Upkeep's `vacuum` job (analyze and full, every Dify table) beside a psql
# session with one VACUUM per table, on identical copies of a generated Dify database.
# Usage: bench/vacuum.sh [--messages N]   (release build; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh
ensure_postgres
cargo build --release --locked --bin upkeep --example vacuum_bench
echo "## vacuum ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`bench/vacuum.sh $*\`"
echo
target/release/examples/vacuum_bench --pg "$UPKEEP_TEST_PG_URL" --upkeep target/release/upkeep "$@"
