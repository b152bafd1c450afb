#!/usr/bin/env bash
# Log purge benchmark: Upkeep's `purge_logs` (exporting every batch) beside a plain SQL loop
# deleting the same rows in the same batch size, on identical copies of a generated Dify
# database, with a Dify-like writer running during each.
# Usage: bench/purge.sh [--messages N] [--batch N] [--days N] [--release 1.9.2]
#                       [--graph-bytes N] [--upkeep-export on|both]
#   (release build; prints Markdown). --release: on that Dify release's real schema, from
#   ../shared/dify/schemas/, the loop also by 1.15's lookups and Upkeep also with temporary_indexes.
#   --graph-bytes: each workflow run carries a graph of about N bytes (Dify copies the
#   workflow's graph into every run; 5000 is a realistic size). --upkeep-export both: Upkeep
#   also runs with `export: false`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh
ensure_postgres
cargo build --release --locked --bin upkeep --example purge_bench >&2
echo "## purge_logs ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`bench/purge.sh $*\`"
echo
target/release/examples/purge_bench --pg "$UPKEEP_TEST_PG_URL" --upkeep target/release/upkeep "$@"
