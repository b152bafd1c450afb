"""Self-test of tests/servers/milvus_server.py, driven by pymilvus (Dify's client) and by raw gRPC.

Each strict behaviour has a test that fails when the server is as lax as milvus-lite: the
answer a real Milvus 2.5/2.6 gives (code and message) is asserted, not just "an error".

Run: $UPKEEP_TEST_MILVUS_PY -m pytest -q tests/servers/test_milvus_server.py
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import grpc
import pytest
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, MilvusException, RRFRanker
from pymilvus.client.prepare import Prepare
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "milvus_server.py")

DIM = 4
READY_DEADLINE = 60.0


class Server:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SCRIPT, "--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise AssertionError("milvus_server.py did not say READY in time")
            line = lines.get(timeout=remaining)
            if line is None:
                raise AssertionError(f"milvus_server.py exited early ({self.proc.wait()})")
            if line.startswith("READY "):
                grpc_port, control_port = line.split()[1:3]
                self.port = int(grpc_port)
                self.control = f"http://127.0.0.1:{int(control_port)}"
                break
        self.uri = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str):
        with urllib.request.urlopen(self.control + path, timeout=10) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict | None = None):
        req = urllib.request.Request(
            self.control + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stub(self, token: str | None = None):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        md = [("authorization", base64.b64encode(token.encode()).decode())] if token else []
        return milvus_pb2_grpc.MilvusServiceStub(channel), md


@pytest.fixture(scope="module")
def srv():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def authed():
    """User/password auth, an older version, and a load that takes two polls."""
    s = Server("--user", "root", "--password", "Milvus", "--version", "2.5.15", "--load-polls", "2")
    yield s
    s.close()


@pytest.fixture()
def client(srv):
    c = MilvusClient(uri=srv.uri)
    yield c
    c.close()


def name() -> str:
    return f"Vector_index_{uuid.uuid4().hex}_Node"


def dify_schema(hybrid: bool = False, max_length: int = 65535):
    """Dify's layout (dify_vdb_milvus/milvus_vector.py): metadata JSON, page_content VARCHAR,
    id INT64 auto_id primary, vector FLOAT_VECTOR; hybrid adds sparse_vector + BM25."""
    s = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    s.add_field("metadata", DataType.JSON, max_length=65535)
    if hybrid:
        s.add_field("page_content", DataType.VARCHAR, max_length=max_length, enable_analyzer=True)
    else:
        s.add_field("page_content", DataType.VARCHAR, max_length=max_length)
    s.add_field("id", DataType.INT64, is_primary=True, auto_id=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    if hybrid:
        s.add_field("sparse_vector", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(
            name="text_bm25_emb", function_type=FunctionType.BM25,
            input_field_names=["page_content"], output_field_names=["sparse_vector"],
        ))
    return s


def dify_index(hybrid: bool = False):
    ip = MilvusClient.prepare_index_params()
    ip.add_index("vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
    if hybrid:
        ip.add_index("sparse_vector", index_type="AUTOINDEX", metric_type="BM25")
    return ip


def create_dify(c: MilvusClient, coll: str, hybrid: bool = False, **kw) -> None:
    """As Dify does it: one create_collection with the index params (create, index, load)."""
    c.create_collection(coll, schema=dify_schema(hybrid, **kw), index_params=dify_index(hybrid),
                        consistency_level="Session")


def rows(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        out.append({
            "metadata": {"doc_id": f"d{i}", "document_id": f"D{i % 3}", "dataset_id": "ds"},
            "page_content": f"chunk number {i} about topic{i % 5}",
            "vector": [1.0, (i % 7) / 7.0, (i % 3) / 3.0, 0.5],
        })
    return out


def raw_fields(vec, with_id=False):
    """One row of Dify's layout as Insert's column data."""
    out = [
        schema_pb2.FieldData(type=schema_pb2.DataType.JSON, field_name="metadata",
                             scalars=schema_pb2.ScalarField(json_data=schema_pb2.JSONArray(data=[b"{}"]))),
        schema_pb2.FieldData(type=schema_pb2.DataType.VarChar, field_name="page_content",
                             scalars=schema_pb2.ScalarField(string_data=schema_pb2.StringArray(data=["x"]))),
        schema_pb2.FieldData(type=schema_pb2.DataType.FloatVector, field_name="vector",
                             vectors=schema_pb2.VectorField(dim=len(vec), float_vector=schema_pb2.FloatArray(data=vec))),
    ]
    if with_id:
        out.append(schema_pb2.FieldData(type=schema_pb2.DataType.Int64, field_name="id",
                                        scalars=schema_pb2.ScalarField(long_data=schema_pb2.LongArray(data=[7]))))
    return out


def milvus_error(call) -> MilvusException:
    with pytest.raises(MilvusException) as info:
        call()
    return info.value


# ------------------------------------------------------------------------------------------
# The normal path: Dify's layout end to end
# ------------------------------------------------------------------------------------------


def test_dify_round_trip(client, srv):
    coll = name()
    create_dify(client, coll)
    assert client.get_load_state(coll)["state"].name == "Loaded"
    ids = client.insert(coll, rows(40))["ids"]
    assert len(ids) == 40
    client.flush(coll)

    got = client.query(coll, filter='metadata["doc_id"] in ["d1", "d2"]', output_fields=["metadata", "page_content"])
    assert sorted(r["metadata"]["doc_id"] for r in got) == ["d1", "d2"]
    assert client.query(coll, filter='metadata["doc_id"] == "d7"', output_fields=["id"])[0]["id"] in ids

    # page by primary key, the way to read everything past the 16384 window
    seen, last = [], None
    while True:
        flt = f"id > {last}" if last is not None else "id >= 0"
        page = client.query(coll, filter=flt, output_fields=["id", "vector", "metadata"], limit=7)
        page.sort(key=lambda r: r["id"])
        if not page:
            break
        seen.extend(r["id"] for r in page)
        last = page[-1]["id"]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 40

    assert client.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 40

    hits = client.search(
        coll, data=[[1.0, 0.5, 0.5, 0.5]], anns_field="vector", limit=10,
        filter='metadata["document_id"] in ["D1", "D2"]', output_fields=["page_content", "metadata"],
    )[0]
    assert hits and all(h["entity"]["metadata"]["document_id"] in ("D1", "D2") for h in hits)

    doomed = ids[:5]
    client.delete(coll, filter=f"id in {doomed}")
    assert client.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 35
    assert client.query(coll, filter=f"id in {doomed}", output_fields=["id"]) == []
    client.drop_collection(coll)


def test_filters_milvus_accepts_and_milvus_lite_does_not(client):
    coll = name()
    create_dify(client, coll)
    ids = client.insert(coll, rows(12))["ids"]

    def q(flt):
        return sorted(r["metadata"]["doc_id"] for r in client.query(coll, filter=flt, output_fields=["metadata"]))

    assert q('metadata["document_id"] in ["D1","D2"]') == sorted(f"d{i}" for i in range(12) if i % 3 in (1, 2))
    assert q('metadata["doc_id"] in ["d3", "d4"]') == ["d3", "d4"]
    assert q(f'metadata["doc_id"] in ["d3", "d4", "d5"] and id > {ids[3]}') == ["d4", "d5"]
    assert q(f'id in [{ids[0]}, {ids[1]}] and metadata["document_id"] in ["D0"]') == ["d0"]
    assert q('metadata["doc_id"] not in ["d0", "d1"] and metadata["document_id"] in ["D0"]') == ["d3", "d6", "d9"]
    assert q('metadata["doc_id"] in []') == []
    assert q('metadata["doc_id"] in ["d1", "d2"] or metadata["nope"] in ["x"]') == ["d1", "d2"]
    assert q('metadata["doc_id"] not in ["d1"] and metadata["doc_id"] in ["d1", "d2"]') == ["d2"]
    many = ", ".join(f'"d{i}"' for i in range(0, 3000, 3))  # a long list, as delete_by_ids sends
    assert q(f'metadata["doc_id"] in [{many}]') == sorted(f"d{i}" for i in range(0, 12, 3))
    assert q('metadata["doc_id"] == "d11"') == ["d11"]
    assert q(f"id > {ids[9]}") == ["d10", "d11"]

    hits = client.search(coll, data=[[1.0, 0.0, 0.0, 0.5]], anns_field="vector", limit=20,
                         filter='metadata["document_id"] in ["D2"]', output_fields=["metadata"])[0]
    assert sorted(h["entity"]["metadata"]["doc_id"] for h in hits) == ["d11", "d2", "d5", "d8"]

    # Dify's delete_by_ids: query the PKs by doc_id, delete by PK; and a delete by JSON filter
    pks = [r["id"] for r in client.query(coll, filter='metadata["doc_id"] in ["d0", "d1"]', output_fields=["id"])]
    client.delete(coll, ids=pks)
    client.delete(coll, filter='metadata["document_id"] in ["D2"]')
    assert q("id >= 0") == ["d10", "d3", "d4", "d6", "d7", "d9"]


# ------------------------------------------------------------------------------------------
# Load state
# ------------------------------------------------------------------------------------------


def test_load_state_is_enforced(client, srv):
    coll = name()
    client.create_collection(coll, schema=dify_schema(), consistency_level="Session")
    assert client.get_load_state(coll)["state"].name == "NotLoad"
    client.insert(coll, rows(3))  # writes need no load

    e = milvus_error(lambda: client.query(coll, filter="id > 0", output_fields=["id"]))
    assert e.code == 101 and "collection not loaded" in e.message
    e = milvus_error(lambda: client.search(coll, data=[[1.0, 0, 0, 0]], anns_field="vector", limit=3))
    assert e.code == 101 and "collection not loaded" in e.message
    e = milvus_error(lambda: client.delete(coll, filter='metadata["doc_id"] in ["d1"]'))
    assert e.code == 101

    e = milvus_error(lambda: client.load_collection(coll))
    assert e.code == 700 and e.message == f"index not found[collection={coll}]"

    client.create_index(coll, dify_index())
    assert client.get_load_state(coll)["state"].name == "NotLoad"
    client.load_collection(coll)
    assert client.get_load_state(coll)["state"].name == "Loaded"
    assert len(client.query(coll, filter="id > 0", output_fields=["id"])) == 3

    client.release_collection(coll)
    assert client.get_load_state(coll)["state"].name == "NotLoad"
    assert milvus_error(lambda: client.query(coll, filter="id > 0")).code == 101
    client.drop_collection(coll)
    assert client.get_load_state(coll)["state"].name == "NotExist"


def test_load_needs_an_index_on_every_vector_field(client, srv):
    coll = name()
    client.create_collection(coll, schema=dify_schema(hybrid=True), consistency_level="Session")
    client.create_index(coll, dify_index(hybrid=False))  # the dense one only
    e = milvus_error(lambda: client.load_collection(coll))
    assert e.code == 65535
    assert e.message == "there is no vector index on field: [sparse_vector], please create index firstly"


def test_raw_status_codes_for_load(srv):
    stub, _ = srv.stub()
    coll = name()
    req = Prepare.create_collection_request(coll, dify_schema(), consistency_level=1)
    assert stub.CreateCollection(req).code == 0
    st = stub.LoadCollection(milvus_pb2.LoadCollectionRequest(collection_name=coll))
    assert (st.code, st.error_code) == (700, common_pb2.ErrorCode.IndexNotExist)
    r = stub.Query(milvus_pb2.QueryRequest(collection_name=coll, expr="id > 0", query_params=[
        common_pb2.KeyValuePair(key="limit", value="10")]))
    assert r.status.code == 101 and r.status.error_code == common_pb2.ErrorCode.UnexpectedError
    assert r.status.reason.startswith("failed to query: collection not loaded[collection=")
    r = stub.GetLoadingProgress(milvus_pb2.GetLoadingProgressRequest(collection_name=coll))
    assert r.status.code == 101


def test_loading_takes_polls(authed):
    stub, md = authed.stub("root:Milvus")
    c = MilvusClient(uri=authed.uri, user="root", password="Milvus")
    coll = name()
    c.create_collection(coll, schema=dify_schema(), consistency_level="Session")
    c.create_index(coll, dify_index())
    assert stub.LoadCollection(milvus_pb2.LoadCollectionRequest(collection_name=coll), metadata=md).code == 0
    r = stub.Query(milvus_pb2.QueryRequest(collection_name=coll, expr="id > 0"), metadata=md)
    assert r.status.code == 103 and "collection not fully loaded" in r.status.reason
    states = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states.append(stub.GetLoadState(milvus_pb2.GetLoadStateRequest(collection_name=coll), metadata=md).state)
        if states[-1] == common_pb2.LoadState.LoadStateLoaded:
            break
    assert states == [common_pb2.LoadState.LoadStateLoading, common_pb2.LoadState.LoadStateLoaded]
    assert c.query(coll, filter="id > 0") == []
    c.close()


# ------------------------------------------------------------------------------------------
# What CreateCollection / CreateIndex asked for is what Describe* answers
# ------------------------------------------------------------------------------------------


def test_consistency_level_is_kept(client, srv):
    a, b = name(), name()
    create_dify(client, a)
    client.create_collection(b, schema=dify_schema(), consistency_level="Bounded")
    assert client.describe_collection(a)["consistency_level"] == 1  # Session
    assert client.describe_collection(b)["consistency_level"] == 2  # Bounded
    layout = srv.get("/layout")
    assert layout[a]["consistency_level"] == "Session"
    assert layout[b]["consistency_level"] == "Bounded"


def test_describe_collection_answers_the_schema_as_created(client):
    coll = name()
    create_dify(client, coll, hybrid=True)
    d = client.describe_collection(coll)
    fields = {f["name"]: f for f in d["fields"]}
    assert [f["field_id"] for f in d["fields"]] == [100, 101, 102, 103, 104]
    assert fields["page_content"]["params"]["max_length"] == 65535
    assert fields["id"]["auto_id"] and fields["id"]["is_primary"]
    assert fields["sparse_vector"]["is_function_output"]
    assert d["functions"][0]["name"] == "text_bm25_emb"
    assert d["collection_id"] > 0


def test_index_params_are_kept_as_sent(client, srv):
    coll = name()
    create_dify(client, coll)
    client.insert(coll, rows(5))
    d = client.describe_index(coll, "vector")
    assert (d["index_type"], d["metric_type"], d["M"], d["efConstruction"]) == ("HNSW", "IP", "8", "64")
    assert d["state"] == "Finished" and d["indexed_rows"] == 5 and d["total_rows"] == 5

    stub, _ = srv.stub()
    r = stub.DescribeIndex(milvus_pb2.DescribeIndexRequest(collection_name=coll, index_name="vector"))
    params = {p.key: p.value for p in r.index_descriptions[0].params}
    assert params == {"index_type": "HNSW", "metric_type": "IP", "M": "8", "efConstruction": "64"}
    assert r.index_descriptions[0].state == common_pb2.IndexState.Finished

    layout = srv.get("/layout")[coll]
    assert layout["indexes"] == [{
        "field_name": "vector", "index_name": "vector", "index_name_requested": "",
        "index_id": layout["indexes"][0]["index_id"],
        "extra_params": {"index_type": "HNSW", "metric_type": "IP", "M": "8", "efConstruction": "64"},
        # pymilvus sends the build params as pairs of their own, before the type and metric
        "extra_params_kv": [["M", "8"], ["efConstruction", "64"], ["metric_type", "IP"], ["index_type", "HNSW"]],
    }]


def test_index_params_as_a_json_string_and_create_index_again(srv):
    stub, _ = srv.stub()
    coll = name()
    assert stub.CreateCollection(Prepare.create_collection_request(coll, dify_schema())).code == 0
    sent = [
        common_pb2.KeyValuePair(key="index_type", value="HNSW"),
        common_pb2.KeyValuePair(key="metric_type", value="IP"),
        common_pb2.KeyValuePair(key="params", value='{"M": 8, "efConstruction": 64}'),
    ]
    req = milvus_pb2.CreateIndexRequest(collection_name=coll, field_name="vector", extra_params=sent)
    assert stub.CreateIndex(req).code == 0
    r = stub.DescribeIndex(milvus_pb2.DescribeIndexRequest(collection_name=coll))
    assert [(p.key, p.value) for p in r.index_descriptions[0].params] == [(p.key, p.value) for p in sent]
    assert stub.GetIndexState(milvus_pb2.GetIndexStateRequest(collection_name=coll, index_name="vector")).state == 3
    p = stub.GetIndexBuildProgress(milvus_pb2.GetIndexBuildProgressRequest(collection_name=coll, index_name="vector"))
    assert (p.status.code, p.indexed_rows, p.total_rows) == (0, 0, 0)
    # what a client polling after CreateIndex asks first (milvus-lite answers UNIMPLEMENTED)
    t1 = stub.AllocTimestamp(milvus_pb2.AllocTimestampRequest()).timestamp
    t2 = stub.AllocTimestamp(milvus_pb2.AllocTimestampRequest()).timestamp
    assert 0 < t1 < t2 and abs((t1 >> 18) / 1000 - time.time()) < 60

    assert stub.CreateIndex(req).code == 0  # the same again: a no-op, as in Milvus
    other = milvus_pb2.CreateIndexRequest(collection_name=coll, field_name="vector", extra_params=sent[:2])
    st = stub.CreateIndex(other)
    assert (st.code, st.reason) == (65535, "CreateIndex failed: at most one distinct index is allowed per field")

    r = stub.DescribeIndex(milvus_pb2.DescribeIndexRequest(collection_name=coll, index_name="nope"))
    assert (r.status.code, r.status.error_code, r.status.reason) == (700, 25, "index not found[indexName=nope]")


def test_drop_index_needs_release(client):
    coll = name()
    create_dify(client, coll)
    e = milvus_error(lambda: client.drop_index(coll, "vector"))
    assert e.code == 104 and "index cannot be dropped, collection is loaded" in e.message
    client.release_collection(coll)
    client.drop_index(coll, "vector")
    assert client.list_indexes(coll) == []
    assert milvus_error(lambda: client.load_collection(coll)).code == 700


# ------------------------------------------------------------------------------------------
# Hybrid layout: BM25 function + sparse field
# ------------------------------------------------------------------------------------------


def test_bm25_layout_works_and_its_output_cannot_be_read(client):
    coll = name()
    create_dify(client, coll, hybrid=True)  # AUTOINDEX/BM25 on the sparse field, as Dify does
    client.insert(coll, rows(10))
    hits = client.search(coll, data=["topic3 number"], anns_field="sparse_vector", limit=4, output_fields=["metadata"])[0]
    assert sorted(h["entity"]["metadata"]["doc_id"] for h in hits[:2]) == ["d3", "d8"]
    scores = [h["distance"] for h in hits]
    assert scores[0] > 0 and scores == sorted(scores, reverse=True)  # BM25: a score, larger is better

    everything = client.query(coll, filter="id > 0", output_fields=["*"], limit=1)[0]
    assert set(everything) == {"id", "metadata", "page_content", "vector"}
    e = milvus_error(lambda: client.query(coll, filter="id > 0", output_fields=["sparse_vector"], limit=1))
    assert (e.code, e.message) == (65535, "not allowed to retrieve raw data of field sparse_vector")


def test_hybrid_search_takes_dify_s_filter_and_needs_a_load(client):
    coll = name()
    create_dify(client, coll, hybrid=True)
    client.insert(coll, rows(9))
    reqs = [
        AnnSearchRequest([[1.0, 0.0, 0.0, 0.5]], "vector", {}, 5, expr='metadata["document_id"] in ["D1"]'),
        AnnSearchRequest(["topic1 topic4"], "sparse_vector", {}, 5, expr='metadata["document_id"] in ["D1"]'),
    ]
    hits = client.hybrid_search(coll, reqs, RRFRanker(), limit=5, output_fields=["metadata"])[0]
    assert sorted(h["entity"]["metadata"]["doc_id"] for h in hits) == ["d1", "d4", "d7"]
    client.release_collection(coll)
    e = milvus_error(lambda: client.hybrid_search(coll, reqs, RRFRanker(), limit=5))
    assert e.code == 101


# ------------------------------------------------------------------------------------------
# Query limits and output fields
# ------------------------------------------------------------------------------------------


def test_query_window_and_empty_filter(client):
    coll = name()
    create_dify(client, coll)
    client.insert(coll, rows(3))
    assert len(client.query(coll, filter="id > 0", limit=16384)) == 3
    e = milvus_error(lambda: client.query(coll, filter="id > 0", limit=16000, offset=385))
    assert e.code == 65535
    assert e.message == "invalid max query result window, (offset+limit) should be in range [1, 16384], but got 16385"
    e = milvus_error(lambda: client.query(coll, filter="", output_fields=["id"]))
    assert (e.code, e.message) == (65535, "empty expression should be used with limit")
    assert len(client.query(coll, filter="", output_fields=["id"], limit=2)) == 2


def test_output_fields_default_to_the_primary_key(client, srv):
    coll = name()
    create_dify(client, coll)
    client.insert(coll, rows(2))
    stub, _ = srv.stub()
    r = stub.Query(milvus_pb2.QueryRequest(collection_name=coll, expr="id > 0"))
    assert [f.field_name for f in r.fields_data] == ["id"]
    assert r.session_ts > 0  # query iterators pin it
    # MilvusClient.query asks for "*" when given no fields; search sends none
    assert all(set(r) == {"id", "metadata", "page_content", "vector"} for r in client.query(coll, filter="id > 0"))
    hit = client.search(coll, data=[[1.0, 0, 0, 0]], anns_field="vector", limit=1)[0][0]
    assert hit["entity"] == {}


# ------------------------------------------------------------------------------------------
# Insert checks
# ------------------------------------------------------------------------------------------


def test_varchar_max_length_counts_bytes(client):
    coll = name()
    create_dify(client, coll, max_length=10)
    ok = rows(1)[0] | {"page_content": "é" * 5}  # 10 bytes
    client.insert(coll, [ok])
    bad = rows(1)[0] | {"page_content": "é" * 6}  # 6 characters, 12 bytes
    e = milvus_error(lambda: client.insert(coll, [ok, bad]))
    assert e.code == 1100
    assert e.message == ("length of varchar field page_content exceeds max length, row number: 1, "
                         "length: 12, max length: 10: invalid parameter")


def test_auto_id_primary_key_and_dim_are_checked(srv):
    stub, _ = srv.stub()
    c = MilvusClient(uri=srv.uri)
    coll = name()
    create_dify(c, coll)

    r = stub.Insert(milvus_pb2.InsertRequest(collection_name=coll, fields_data=raw_fields([1, 2, 3, 4], True), num_rows=1))
    assert r.status.code == 1100
    assert r.status.reason.startswith("can not assign primary field data when auto id enabled")
    r = stub.Insert(milvus_pb2.InsertRequest(collection_name=coll, fields_data=raw_fields([1, 2, 3]), num_rows=1))
    assert (r.status.code, r.status.reason) == (
        1100, "the dim (3) of field data(vector) is not equal to schema dim (4): invalid parameter[expected=4][actual=3]")
    r = stub.Insert(milvus_pb2.InsertRequest(collection_name=coll, fields_data=raw_fields([1, 2, 3, 4]), num_rows=1))
    assert r.status.code == 0 and r.timestamp > 0 and len(r.IDs.int_id.data) == 1
    c.close()


def test_statistics_count_flushed_rows_and_ignore_deletes(client):
    coll = name()
    create_dify(client, coll)
    ids = client.insert(coll, rows(5))["ids"]
    assert client.get_collection_stats(coll)["row_count"] == 0
    client.flush(coll)
    assert client.get_collection_stats(coll)["row_count"] == 5
    client.delete(coll, ids=ids[:2])
    client.flush(coll)
    assert client.get_collection_stats(coll)["row_count"] == 5
    assert client.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 3


# ------------------------------------------------------------------------------------------
# Misc answers a client reads
# ------------------------------------------------------------------------------------------


def test_show_collections_and_errors_look_like_milvus(srv, client):
    coll = name()
    create_dify(client, coll)
    stub, _ = srv.stub()
    r = stub.ShowCollections(milvus_pb2.ShowCollectionsRequest())
    assert len(r.collection_ids) == len(r.created_timestamps) == len(r.created_utc_timestamps) == len(r.collection_names)
    i = list(r.collection_names).index(coll)
    assert r.collection_ids[i] > 0 and r.created_timestamps[i] > 0 and r.query_service_available[i]

    d = stub.DescribeCollection(milvus_pb2.DescribeCollectionRequest(collection_name="Nope"))
    assert (d.status.code, d.status.error_code) == (100, common_pb2.ErrorCode.CollectionNotExists)
    assert d.status.reason == "can't find collection[database=default][collection=Nope]"
    q = stub.Query(milvus_pb2.QueryRequest(collection_name="Nope", expr="id > 0"), metadata=[("dbname", "default")])
    assert (q.status.code, q.status.reason) == (100, "collection not found[database=default][collection=Nope]")
    # a filter milvus-lite cannot parse: code 1100 and the legacy code set too (not 0 = Success)
    q = stub.Query(milvus_pb2.QueryRequest(collection_name=coll, expr="nosuchfield > 1", query_params=[
        common_pb2.KeyValuePair(key="limit", value="1")]))
    assert q.status.code == 1100 and q.status.error_code == common_pb2.ErrorCode.IllegalArgument
    st = stub.CreateCollection(milvus_pb2.CreateCollectionRequest(collection_name="bad-name"))
    assert st.code == 1100 and "collection name can only contain numbers, letters and underscores" in st.reason


def test_version(srv, authed):
    stub, _ = srv.stub()
    assert stub.GetVersion(milvus_pb2.GetVersionRequest()).version == "v2.6.3"
    stub, md = authed.stub("root:Milvus")
    assert stub.GetVersion(milvus_pb2.GetVersionRequest(), metadata=md).version == "v2.5.15"


def test_auth(authed):
    stub, _ = authed.stub()
    cases = [
        ([], "missing authorization in header"),
        ([("authorization", "%%%")], "invalid token format"),
        ([("authorization", base64.b64encode(b"root:wrong").decode())],
         "auth check failure, please check username and password are correct"),
        ([("authorization", base64.b64encode(b"some-api-key").decode())],
         "auth check failure, please check api key is correct"),
    ]
    for md, msg in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.HasCollection(milvus_pb2.HasCollectionRequest(collection_name="x"), metadata=md)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == msg
    good = [("authorization", base64.b64encode(b"root:Milvus").decode())]
    assert stub.HasCollection(milvus_pb2.HasCollectionRequest(collection_name="x"), metadata=good).status.code == 0
    for kw in ({"token": "root:Milvus"}, {"user": "root", "password": "Milvus"}):
        c = MilvusClient(uri=authed.uri, **kw)
        assert isinstance(c.list_collections(), list)
        c.close()


# ------------------------------------------------------------------------------------------
# Side channel: layout, calls, faults, stop
# ------------------------------------------------------------------------------------------


def test_layout_records_the_create_requests(client, srv):
    coll = name()
    create_dify(client, coll, hybrid=True)
    lay = srv.get("/layout")[coll]
    fields = {f["name"]: f for f in lay["schema"]["fields"]}
    assert [f["name"] for f in lay["schema"]["fields"]] == ["metadata", "page_content", "id", "vector", "sparse_vector"]
    assert fields["page_content"]["type_params"]["max_length"] == "65535"
    assert fields["page_content"]["data_type"] == "VarChar"
    assert fields["id"]["is_primary_key"] and fields["id"]["autoID"]
    assert fields["vector"]["type_params"] == {"dim": str(DIM)}
    assert fields["sparse_vector"]["data_type"] == "SparseFloatVector"
    assert lay["schema"]["functions"][0] | {"id": 0} == {
        "name": "text_bm25_emb", "id": 0, "type": "BM25", "input_field_names": ["page_content"],
        "output_field_names": ["sparse_vector"], "params": {}, "description": "",
    }
    assert lay["schema"]["enable_dynamic_field"] is False
    assert lay["consistency_level"] == "Session" and lay["load_state"] == "Loaded"
    by_field = {ix["field_name"]: ix["extra_params"] for ix in lay["indexes"]}
    assert by_field["sparse_vector"] == {"index_type": "AUTOINDEX", "metric_type": "BM25"}
    assert by_field["vector"]["M"] == "8"


def test_faults_and_calls(srv):
    stub, _ = srv.stub()
    c = MilvusClient(uri=srv.uri)
    coll = name()
    create_dify(c, coll)

    def insert():
        return stub.Insert(milvus_pb2.InsertRequest(collection_name=coll, fields_data=raw_fields([1, 2, 3, 4]), num_rows=1))

    before = srv.get("/calls").get("Insert", 0)
    srv.post("/fault", {"method": "Insert", "code": "UNAVAILABLE", "times": 2, "after": 1})
    assert insert().status.code == 0
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as info:
            insert()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert insert().status.code == 0
    assert srv.get("/calls")["Insert"] - before == 4

    srv.post("/fault", {"method": "Insert", "code": "DEADLINE_EXCEEDED", "times": 1, "phase": "after"})
    with pytest.raises(grpc.RpcError) as info:
        insert()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert c.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 3  # it was written
    srv.post("/fault/clear")

    srv.post("/stop")
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.HasCollection(milvus_pb2.HasCollectionRequest(collection_name=coll))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.post("/start")
    assert stub.HasCollection(milvus_pb2.HasCollectionRequest(collection_name=coll)).value
    c.close()


def test_requests_log_shows_consistency(client, srv):
    coll = name()
    create_dify(client, coll)
    client.query(coll, filter='metadata["doc_id"] in ["x"]', output_fields=["id"], consistency_level="Strong")
    last = [r for r in srv.get("/requests") if r["collection_name"] == coll and r["method"] == "Query"][-1]
    assert last["expr"] == 'metadata["doc_id"] in ["x"]'
    assert last["consistency_level"] == "Strong"


def test_data_dir_keeps_data_indexes_and_load_state(tmp_path):
    data = str(tmp_path / "milvus")
    coll = name()
    s = Server("--data-dir", data)
    try:
        c = MilvusClient(uri=s.uri)
        create_dify(c, coll)
        c.insert(coll, rows(6))
        c.flush(coll)
        c.close()
    finally:
        s.close()
    s = Server("--data-dir", data)
    try:
        c = MilvusClient(uri=s.uri)
        assert c.get_load_state(coll)["state"].name == "Loaded"
        assert c.describe_collection(coll)["consistency_level"] == 1
        assert c.describe_index(coll, "vector")["M"] == "8"
        assert c.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 6
        assert c.get_collection_stats(coll)["row_count"] == 6
        c.close()
    finally:
        s.close()
