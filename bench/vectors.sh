#!/usr/bin/env bash
# Vector migration benchmark: Upkeep's `vector_migrate` from the Weaviate test server to a
# target test server (tests/servers/: the Qdrant stand-in answering as Qdrant 1.8.3, or the
# Milvus server on milvus-lite), beside the ceiling: a loop that only writes the same points
# into the same server (Qdrant upserts, Milvus plain inserts), sequentially, with Upkeep's
# parallelism, and with two batches in flight per dataset as Upkeep writes them, in the same
# run. Every run's points are counted afterwards.
# --target pgvector writes into the PostgreSQL 16 + pgvector server of scripts/lib/pgvector.sh;
# its ceiling is a COPY loop into the same tables.
# Usage: bench/vectors.sh [--target qdrant|milvus|pgvector] [--points N] [--datasets N] [--dim N]
#                         [--batch N] [--concurrency N] [--floats f32|f64]
#   defaults: qdrant, 100000 points in 4 datasets, 1536 dims, batch 256, concurrency 4
# Smoke test: bench/vectors.sh --target milvus --points 4000 --dim 64
# (release build; prints Markdown; needs 2 cores: the target server is pinned to core 0,
# everything else to core 1)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh
. scripts/lib/servers.sh
. scripts/lib/pgvector.sh
ensure_postgres
ensure_test_servers
ensure_pgvector
cargo build --release --locked --bin upkeep --example vector_bench >&2
echo "## vector_migrate ($(date -u +%F), $(nproc) cores, $(psql "$UPKEEP_TEST_PG_URL" -Atc 'show server_version' | cut -d' ' -f1))"
echo
echo "\`bench/vectors.sh $*\`"
echo
# Core 1 for this program and its children; the Qdrant stand-in takes core 0 (see the program).
taskset -c 1 target/release/examples/vector_bench --pg "$UPKEEP_TEST_PG_URL" --upkeep target/release/upkeep \
  --python "$UPKEEP_TEST_QDRANT_PY" --pgvector "$UPKEEP_TEST_PGVECTOR_URL" "$@"
