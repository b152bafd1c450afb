#!/usr/bin/env bash
# The Qdrant stand-in's keyword-filter shortcut against local mode's own filter check, side by
# side in one run: a local-mode collection of N points laid out as Dify's (group_id,
# metadata.doc_id, metadata.document_id; 4 groups), then for Dify's filters the mask computed
# by qdrant_client's `calculate_payload_mask` and by the stand-in's `keyword_mask` (the answers
# compared), and a filtered Count through the client with the shortcut in place.
# Usage: bench/standin_filters.sh [--points N]   (default 100000; pinned to core 0; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/servers.sh
ensure_test_servers >&2
points=100000
if [[ "${1:-}" == "--points" ]]; then points=$2; fi
echo "## Qdrant stand-in: keyword filters ($(date -u +%F), $(nproc) cores, qdrant-client $("$UPKEEP_TEST_QDRANT_PY" -c 'import importlib.metadata as m; print(m.version("qdrant-client"))' 2>/dev/null || echo '?'))"
echo
echo "\`bench/standin_filters.sh --points $points\`"
echo
taskset -c 0 "$UPKEEP_TEST_QDRANT_PY" - "$points" <<'PY'
import sys, time, uuid, warnings
sys.path.insert(0, "tests/servers")
warnings.filterwarnings("ignore")
import numpy as np
import qdrant_standin as standin  # puts the shortcut in place
from qdrant_client import QdrantClient, models

n = int(sys.argv[1])
c = QdrantClient(":memory:")
c.create_collection("c", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
groups = [str(uuid.uuid4()) for _ in range(4)]
rng = np.random.default_rng(1)
for k in range(0, n, 5000):
    c.upsert("c", [models.PointStruct(
        id=str(uuid.uuid4()), vector=rng.random(8).tolist(),
        payload={"page_content": f"chunk {i}", "group_id": groups[i % 4],
                 "metadata": {"doc_id": str(i), "document_id": f"d{i % 50}", "page": i % 300}})
        for i in range(k, min(k + 5000, n))])
col = c._client.collections["c"]
fc = models.FieldCondition
filters = {
    "`group_id` (count, search)": models.Filter(must=[fc(key="group_id", match=models.MatchValue(value=groups[0]))]),
    "`group_id` + `metadata.document_id` any of 3 (search by document)": models.Filter(must=[
        fc(key="group_id", match=models.MatchValue(value=groups[0])),
        fc(key="metadata.document_id", match=models.MatchAny(any=["d1", "d2", "d3"]))]),
}
print(f"{n} points in one local-mode collection, 4 groups.")
print()
print("| filter | local mode's check, s | the stand-in's, s | speed-up | same answer |")
print("|---|---|---|---|---|")
for name, f in filters.items():
    t = time.perf_counter()
    scanned = standin.calculate_payload_mask(col.payload, f, col.ids_inv, col.deleted_per_vector)
    slow = time.perf_counter() - t
    t = time.perf_counter()
    fast = standin.keyword_mask(col.payload, f, col.ids_inv, col.deleted_per_vector)
    quick = time.perf_counter() - t
    print(f"| {name} | {slow:.3f} | {quick:.3f} | {slow / quick:.0f}× | {bool((scanned == fast).all())} ({int(fast.sum())} points) |")
t = time.perf_counter()
counted = c.count("c", count_filter=filters["`group_id` (count, search)"], exact=True).count
print()
print(f"A filtered Count through the client with the shortcut in place: {time.perf_counter() - t:.3f} s ({counted} points).")
PY
