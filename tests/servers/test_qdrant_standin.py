"""Self-test of the Qdrant stand-in (tests/servers/qdrant_standin.py).

Run with the test-server venv (scripts/lib/servers.sh installs it):
    .tools/venv/bin/python -m pytest -q tests/servers/test_qdrant_standin.py
or  .tools/venv/bin/python tests/servers/test_qdrant_standin.py

Each server runs as a subprocess on a free port, in the version modes 1.8.3 (Dify's compose image)
and 1.13.0, plus small extra servers for the 1.17 answer format, 1.19's synchronous check and the
API key. The clients are qdrant_client in gRPC mode and raw gRPC stubs where a message must be
built by hand (qdrant_client 1.20 always sends `Vector.dense`, which a 1.8 server cannot read).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb
from google.protobuf.unknown_fields import UnknownFieldSet
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc, payload_to_grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "qdrant_standin.py")
SC = grpc.StatusCode

V18 = "1.8.3"
V113 = "1.13.0"


# ------------------------------------------------------------------------------------------------
# harness
# ------------------------------------------------------------------------------------------------


class Standin:
    def __init__(self, version: str, api_key: str | None = None, extra: list[str] | None = None):
        self.version = version
        self.api_key = api_key
        cmd = [sys.executable, SERVER, "--host", "127.0.0.1", "--port", "0", "--version", version]
        if api_key:
            cmd += ["--api-key", api_key]
        cmd += extra or []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        if not line or not line[0].startswith("READY "):
            self.proc.kill()
            err = self.proc.stderr.read()
            raise RuntimeError(f"stand-in did not become ready: {line!r}\n{err}")
        parts = line[0].split()
        assert len(parts) == 3, line[0]
        self.port = int(parts[1])
        self.control = int(parts[2])
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        )
        self.points = pb.PointsStub(self.channel)
        self.collections = pb.CollectionsStub(self.channel)
        self.qdrant = pb.QdrantStub(self.channel)

    def md(self):
        return [("api-key", self.api_key)] if self.api_key else None

    def client(self) -> QdrantClient:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # api key over plain http
            return QdrantClient(
                host="127.0.0.1", grpc_port=self.port, prefer_grpc=True, api_key=self.api_key,
                https=False, check_compatibility=False, timeout=30,
            )

    def http(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> int:
        self.channel.close()
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


@pytest.fixture(scope="module", params=[V18, V113])
def srv(request):
    s = Standin(request.param)
    yield s
    assert s.stop() == 0, "stand-in must exit 0 on SIGTERM"


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args, **kwargs)
    return exc.value


def coll_name() -> str:
    # Dify's naming: Vector_index_<uuid with _>_Node
    return "Vector_index_" + str(uuid.uuid4()).replace("-", "_") + "_Node"


def create_like_dify(s: Standin, name: str, dim: int = 4) -> None:
    """vectors.md §4.2: exactly what Dify's Qdrant factory sends (qdrant-client 1.9 API)."""
    c = s.client()
    c.create_collection(
        collection_name=name,
        vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        hnsw_config=models.HnswConfigDiff(
            m=0, payload_m=16, ef_construct=100, full_scan_threshold=10000,
            max_indexing_threads=0, on_disk=False,
        ),
        replication_factor=1,
        write_consistency_factor=1,
        timeout=20,
    )
    c.create_payload_index(name, "group_id", field_schema=models.PayloadSchemaType.KEYWORD)
    c.create_payload_index(name, "metadata.doc_id", field_schema=models.PayloadSchemaType.KEYWORD)
    c.create_payload_index(name, "metadata.document_id", field_schema=models.PayloadSchemaType.KEYWORD)
    c.create_payload_index(
        name, "page_content",
        field_schema=models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.MULTILINGUAL,
            min_token_len=2, max_token_len=20, lowercase=True,
        ),
    )
    c.close()


def dify_point(pid: str, vec: list[float], group: str, document: str = "doc-1", text: str = "hello world", dense=False):
    """A point as Dify writes it, with the vector in `data` (what a 1.8 server reads) or `dense`."""
    vector = pb.Vector(dense=pb.DenseVector(data=vec)) if dense else pb.Vector(data=vec)
    return pb.PointStruct(
        id=pb.PointId(uuid=pid),
        vectors=pb.Vectors(vector=vector),
        payload=payload_to_grpc({
            "page_content": text,
            "metadata": {"doc_id": pid, "doc_hash": "h", "document_id": document, "dataset_id": group},
            "group_id": group,
        }),
    )


def upsert(s: Standin, name: str, points, wait=True):
    return s.points.Upsert(pb.UpsertPoints(collection_name=name, wait=wait, points=points), metadata=s.md())


def group_filter(group: str) -> pb.Filter:
    return pb.Filter(must=[pb.Condition(field=pb.FieldCondition(key="group_id", match=pb.Match(keyword=group)))])


def unit(v):
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------


def test_keyword_filters_answer_as_local_mode():
    """The stand-in's fast path for keyword filters gives local mode's answer, point by point."""
    sys.path.insert(0, HERE)
    import qdrant_standin as standin

    payloads = [
        {"group_id": "a"}, {"group_id": "b"}, {"group_id": ["a", "c"]}, {"group_id": 1},
        {"group_id": True}, {}, {"group_id": None}, {"group_id": "A"}, {"group_id": ""},
        {"group_id": {"a": 1}}, {"group_id": ["b", 1]},
        {"group_id": "a", "metadata": {"doc_id": "x", "document_id": "d1"}},
        {"group_id": "a", "metadata": [{"document_id": "d1"}, {"document_id": "d3"}]},
        {"group_id": "a", "metadata": {"document_id": ["d2", 3]}},
        {"group_id": "a", "metadata": {"document_id": None}},
    ]
    ids = list(range(len(payloads)))
    deleted = {"": np.zeros(len(payloads), dtype=bool)}
    fc = models.FieldCondition
    value = lambda k, v: fc(key=k, match=models.MatchValue(value=v))  # noqa: E731
    any_of = lambda k, v: fc(key=k, match=models.MatchAny(any=v))  # noqa: E731
    dify = [
        models.Filter(must=[value("group_id", "a")]),
        models.Filter(must=value("group_id", "b")),
        models.Filter(must=[any_of("group_id", ["a", "b"])]),
        models.Filter(must=[value("group_id", "a"), any_of("metadata.document_id", ["d1", "d2"])]),
        models.Filter(must=[value("metadata.doc_id", "x")]),
        models.Filter(should=[], must=[value("group_id", "b")], must_not=[]),
    ]
    # As they arrive over gRPC.
    dify += [GrpcToRest.convert_filter(RestToGrpc.convert_filter(f)) for f in dify]
    others = [
        models.Filter(must=[value("group_id", 1)]),
        models.Filter(must=[value("group_id", True)]),
        models.Filter(must=[any_of("group_id", [1, 2])]),
        models.Filter(must_not=[value("group_id", "a")]),
        models.Filter(must=[]),
        models.Filter(must=[fc(key="group_id", match=models.MatchValue(value="a"), is_null=False)]),
    ]
    for f in dify + others:
        fast = standin.keyword_mask(payloads, f, ids, deleted)
        scanned = standin.calculate_payload_mask(payloads, f, ids, deleted)
        assert fast.tolist() == scanned.tolist(), f
    assert all(standin.keyword_conditions(f) is not None for f in dify)
    assert all(standin.keyword_conditions(f) is None for f in others)
    assert standin.local_collection.calculate_payload_mask is standin.keyword_mask


def test_health(srv):
    reply = srv.qdrant.HealthCheck(pb.HealthCheckRequest())
    assert reply.title == "qdrant - vector search engine"
    assert reply.version == srv.version
    c = srv.client()
    assert c.info().version == srv.version
    c.close()


def test_create_like_dify_and_layout_is_recorded(srv):
    name = coll_name()
    create_like_dify(srv, name)
    group = str(uuid.uuid4())
    pts = [dify_point(str(uuid.uuid4()), unit([1, i, 0, 0.5]), group) for i in range(5)]
    assert upsert(srv, name, pts).result.status == 2  # Completed

    info = srv.collections.Get(pb.GetCollectionInfoRequest(collection_name=name)).result
    params = info.config.params
    assert params.vectors_config.WhichOneof("config") == "params"
    assert params.vectors_config.params.size == 4
    assert params.vectors_config.params.distance == pb.Distance.Cosine
    assert not params.vectors_config.params.HasField("on_disk")
    # not set by Dify: server defaults
    assert params.shard_number == 1
    assert params.on_disk_payload is True
    assert params.replication_factor == 1
    assert params.write_consistency_factor == 1
    h = info.config.hnsw_config
    assert (h.m, h.payload_m, h.ef_construct, h.full_scan_threshold, h.max_indexing_threads, h.on_disk) == (
        0, 16, 100, 10000, 0, False)
    assert info.config.optimizer_config.indexing_threshold == 20000
    assert info.config.wal_config.wal_capacity_mb == 32
    assert info.points_count == 5
    assert info.status == pb.CollectionStatus.Green
    # vectors_count is reported by 1.8 only (hidden from 1.9)
    unknown = {f.field_number: f.data for f in UnknownFieldSet(info)}
    assert unknown == ({3: 5} if srv.version == V18 else {})

    schema = info.payload_schema
    assert set(schema) == {"group_id", "metadata.doc_id", "metadata.document_id", "page_content"}
    for key in ("group_id", "metadata.doc_id", "metadata.document_id"):
        assert schema[key].data_type == pb.PayloadSchemaType.Keyword
        assert schema[key].points == 5
    text = schema["page_content"]
    assert text.data_type == pb.PayloadSchemaType.Text
    assert text.params.text_index_params.tokenizer == pb.TokenizerType.Multilingual
    assert text.params.text_index_params.lowercase is True
    assert (text.params.text_index_params.min_token_len, text.params.text_index_params.max_token_len) == (2, 20)

    # the same through qdrant_client's own reading of CollectionInfo
    c = srv.client()
    ci = c.get_collection(name)
    assert ci.config.hnsw_config.m == 0 and ci.config.hnsw_config.payload_m == 16
    assert ci.config.params.vectors.size == 4
    assert ci.payload_schema["group_id"].data_type == models.PayloadSchemaType.KEYWORD
    assert c.collection_exists(name)
    assert name in [d.name for d in c.get_collections().collections]
    c.close()

    # side channel: the request exactly as received
    dbg = srv.http("GET", "/__debug/collections")[name]
    create = dbg["create"]
    assert create["vectors_config"] == {"params": {"size": 4, "distance": "Cosine"}}
    assert create["hnsw_config"] == {
        "m": 0, "payload_m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
        "max_indexing_threads": 0, "on_disk": False,
    }
    assert create["replication_factor"] == 1 and create["write_consistency_factor"] == 1
    assert create["timeout"] == 20
    for unset in ("shard_number", "on_disk_payload", "optimizers_config", "quantization_config", "wal_config"):
        assert unset not in create, unset
    raw = pb.CreateCollection()
    raw.ParseFromString(base64.b64decode(dbg["create_raw_b64"]))
    assert raw.hnsw_config.HasField("m") and raw.hnsw_config.m == 0
    idx = dbg["field_indexes"]
    assert idx["group_id"]["field_type"] == "FieldTypeKeyword" and idx["group_id"]["points"] == 5
    assert idx["metadata.doc_id"]["field_type"] == "FieldTypeKeyword"
    assert idx["metadata.document_id"]["field_type"] == "FieldTypeKeyword"
    assert idx["page_content"]["field_type"] == "FieldTypeText"
    assert idx["page_content"]["params_kind"] == "text_index_params"
    assert idx["page_content"]["params"] == {
        "tokenizer": "Multilingual", "lowercase": True, "min_token_len": 2, "max_token_len": 20,
    }
    assert dbg["points_count"] == 5
    events = [e["event"] for e in srv.http("GET", "/__debug/events") if e["collection"] == name]
    assert events == ["create_collection"] + ["create_field_index"] * 4


def test_dense_only_vector_by_version(srv):
    name = coll_name()
    create_like_dify(srv, name)
    pid = str(uuid.uuid4())
    point = dify_point(pid, unit([1, 2, 3, 4]), "g", dense=True)
    if srv.version == V18:
        err = rpc_error(upsert, srv, name, [point])
        assert err.code() == SC.INVALID_ARGUMENT
        assert err.details() == "Wrong input: Vector inserting error: expected dim: 4, got 0"
        # wait=false: 1.8 acknowledges and fails in the update worker, the point is never stored
        resp = upsert(srv, name, [point], wait=False)
        assert resp.result.status == 1  # Acknowledged
        assert srv.points.Count(pb.CountPoints(collection_name=name, exact=True)).result.count == 0
        errs = srv.http("GET", "/__debug/collections")[name]["async_errors"]
        assert errs and errs[-1]["error"] == "Wrong input: Vector inserting error: expected dim: 4, got 0"
        # qdrant_client 1.20 itself sends `dense`: a 1.8 server cannot read it
        c = srv.client()
        with pytest.raises(Exception, match="expected dim: 4, got 0"):
            c.upsert(name, [models.PointStruct(id=str(uuid.uuid4()), vector=[1, 0, 0, 0])])
        c.close()
    else:
        assert upsert(srv, name, [point]).result.status == 2
        c = srv.client()
        c.upsert(name, [models.PointStruct(id=str(uuid.uuid4()), vector=[0, 1, 0, 0])])
        assert c.count(name).count == 2
        c.close()
    # `data` works in both
    assert upsert(srv, name, [dify_point(str(uuid.uuid4()), unit([1, 1, 1, 1]), "g")]).result.status == 2


def test_vectors_answered_in_the_version_format(srv):
    name = coll_name()
    create_like_dify(srv, name)
    pid = str(uuid.uuid4())
    upsert(srv, name, [dify_point(pid, [3, 0, 4, 0], "g")])
    got = srv.points.Get(pb.GetPoints(
        collection_name=name, ids=[pb.PointId(uuid=pid)],
        with_vectors=pb.WithVectorsSelector(enable=True), with_payload=pb.WithPayloadSelector(enable=True),
    )).result
    assert len(got) == 1
    v = got[0].vectors.vector
    # 1.8 and 1.13-1.16 answer in `data` only (cosine vectors come back normalised)
    assert [round(x, 6) for x in v.data] == [0.6, 0.0, 0.8, 0.0]
    assert v.WhichOneof("vector") is None
    assert got[0].payload["group_id"].string_value == "g"
    assert got[0].payload["metadata"].struct_value.fields["doc_id"].string_value == pid
    # without selectors: Get answers neither payload nor vectors
    bare = srv.points.Get(pb.GetPoints(collection_name=name, ids=[pb.PointId(uuid=pid)])).result[0]
    assert len(bare.payload) == 0 and not bare.HasField("vectors")


def test_errors_match_the_server(srv):
    name = coll_name()
    create_like_dify(srv, name)
    word = "inserting" if srv.version == V18 else "dimension"

    # wrong dimension
    err = rpc_error(upsert, srv, name, [dify_point(str(uuid.uuid4()), [1, 0, 0], "g")])
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, f"Wrong input: Vector {word} error: expected dim: 4, got 3")
    err = rpc_error(srv.points.Search, pb.SearchPoints(collection_name=name, vector=[1, 0], limit=3))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, f"Wrong input: Vector {word} error: expected dim: 4, got 2")

    # unknown collection
    missing = "nope_" + uuid.uuid4().hex
    expected = (SC.NOT_FOUND, f"Not found: Collection `{missing}` doesn't exist!")
    for call, req in [
        (srv.collections.Get, pb.GetCollectionInfoRequest(collection_name=missing)),
        (srv.points.Scroll, pb.ScrollPoints(collection_name=missing)),
        (srv.points.Count, pb.CountPoints(collection_name=missing)),
        (srv.points.Search, pb.SearchPoints(collection_name=missing, vector=[1, 0, 0, 0], limit=1)),
        (srv.points.Upsert, pb.UpsertPoints(collection_name=missing, points=[dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g")])),
        (srv.points.CreateFieldIndex, pb.CreateFieldIndexCollection(collection_name=missing, field_name="x", field_type=pb.FieldType.FieldTypeKeyword)),
    ]:
        err = rpc_error(call, req)
        assert (err.code(), err.details()) == expected, call
    assert srv.collections.Delete(pb.DeleteCollection(collection_name=missing)).result is False
    assert srv.collections.CollectionExists(pb.CollectionExistsRequest(collection_name=missing)).result.exists is False

    # invalid point id
    bad = dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g")
    bad.id.uuid = "not-a-uuid"
    err = rpc_error(upsert, srv, name, [bad])
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "Unable to parse UUID: not-a-uuid")
    err = rpc_error(srv.points.Get, pb.GetPoints(collection_name=name, ids=[pb.PointId(uuid="42x")]))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "Unable to parse UUID: 42x")
    # conversion errors come before the collection lookup, as in the server
    err = rpc_error(upsert, srv, missing, [bad])
    assert err.code() == SC.INVALID_ARGUMENT
    # numeric ids are fine; upper-case UUIDs come back normalised
    upper = str(uuid.uuid4()).upper()
    p = dify_point(upper, [1, 0, 0, 0], "g")
    upsert(srv, name, [p, pb.PointStruct(id=pb.PointId(num=7), vectors=pb.Vectors(vector=pb.Vector(data=[0, 1, 0, 0])))])
    ids = {r.id.uuid or r.id.num for r in srv.points.Scroll(pb.ScrollPoints(collection_name=name, limit=10)).result}
    assert ids == {upper.lower(), 7}

    # duplicate create
    err = rpc_error(srv.collections.Create, pb.CreateCollection(
        collection_name=name, vectors_config=pb.VectorsConfig(params=pb.VectorParams(size=4, distance=pb.Distance.Cosine))))
    assert (err.code(), err.details()) == (SC.ALREADY_EXISTS, f"Wrong input: Collection `{name}` already exists!")

    # payload index types
    err = rpc_error(srv.points.CreateFieldIndex, pb.CreateFieldIndexCollection(collection_name=name, field_name="x", field_type=99))
    assert (err.code(), err.details()) == (
        SC.INVALID_ARGUMENT, "Bad request: Can't auto-detect field type, please specify `field_schema` in the request")
    err = rpc_error(srv.points.CreateFieldIndex, pb.CreateFieldIndexCollection(collection_name=name, field_name="x"))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "cannot convert field_type")
    err = rpc_error(srv.points.CreateFieldIndex, pb.CreateFieldIndexCollection(
        collection_name=name, field_name="x", field_type=pb.FieldType.FieldTypeKeyword,
        field_index_params=pb.PayloadIndexParams(text_index_params=pb.TextIndexParams(tokenizer=pb.TokenizerType.Word))))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "field_type (Keyword) and field_index_params do not match")
    err = rpc_error(srv.points.CreateFieldIndex, pb.CreateFieldIndexCollection(
        collection_name=name, field_name="x", field_type=pb.FieldType.FieldTypeText,
        field_index_params=pb.PayloadIndexParams(text_index_params=pb.TextIndexParams(tokenizer=pb.TokenizerType.Unknown))))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "unknown tokenizer type")
    # FieldTypeUuid (7) arrived in 1.11
    req = pb.CreateFieldIndexCollection(collection_name=name, field_name="u", field_type=pb.FieldType.FieldTypeUuid)
    if srv.version == V18:
        assert rpc_error(srv.points.CreateFieldIndex, req).code() == SC.INVALID_ARGUMENT
    else:
        srv.points.CreateFieldIndex(req)

    # missing vectors / bad distance / zero size
    err = rpc_error(upsert, srv, name, [pb.PointStruct(id=pb.PointId(num=1))])
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "Expected some vectors")
    err = rpc_error(srv.collections.Create, pb.CreateCollection(
        collection_name=coll_name(), vectors_config=pb.VectorsConfig(params=pb.VectorParams(size=4))))
    assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "Malformed distance parameter: UnknownDistance")
    err = rpc_error(srv.collections.Create, pb.CreateCollection(
        collection_name=coll_name(), vectors_config=pb.VectorsConfig(params=pb.VectorParams(size=0, distance=pb.Distance.Cosine))))
    assert err.code() == SC.INVALID_ARGUMENT and "must be from 1 to 65536" in err.details()


def test_scroll_pagination_count_and_search(srv):
    name = coll_name()
    create_like_dify(srv, name)
    g1, g2 = str(uuid.uuid4()), str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    pts = []
    for i, pid in enumerate(ids):
        angle = i / 1000.0
        pts.append(dify_point(pid, unit([1.0, angle, 0.25, (i % 7) / 7.0]), g1 if i % 3 else g2, document=f"d{i % 10}"))
    for start in range(0, len(pts), 256):
        assert upsert(srv, name, pts[start:start + 256]).result.status == 2

    # scroll everything, 64 a page: every point exactly once, in id order, then no next page
    seen: list[str] = []
    offset = None
    pages = 0
    while True:
        req = pb.ScrollPoints(collection_name=name, limit=64, with_payload=pb.WithPayloadSelector(enable=True),
                              with_vectors=pb.WithVectorsSelector(enable=True))
        if offset is not None:
            req.offset.CopyFrom(offset)
        resp = srv.points.Scroll(req)
        pages += 1
        for r in resp.result:
            assert len(r.vectors.vector.data) == 4
            assert r.payload["metadata"].struct_value.fields["doc_id"].string_value == r.id.uuid
        seen += [r.id.uuid for r in resp.result]
        if not resp.HasField("next_page_offset"):
            break
        offset = resp.next_page_offset
    assert pages == 16
    assert len(seen) == len(set(seen)) == 1000
    assert set(seen) == set(ids)
    assert seen == sorted(seen)

    # scroll with a group filter through qdrant_client (the shape Upkeep reads with)
    c = srv.client()
    flt = models.Filter(must=[models.FieldCondition(key="group_id", match=models.MatchValue(value=g2))])
    got, nxt = [], None
    while True:
        page, nxt = c.scroll(name, scroll_filter=flt, limit=100, offset=nxt, with_payload=True, with_vectors=True)
        got += page
        if nxt is None:
            break
    expected_g2 = {pid for i, pid in enumerate(ids) if i % 3 == 0}
    assert {str(p.id) for p in got} == expected_g2
    assert all(p.payload["group_id"] == g2 for p in got)

    # count with a group_id filter
    assert srv.points.Count(pb.CountPoints(collection_name=name, filter=group_filter(g2), exact=True)).result.count == len(expected_g2)
    assert c.count(name, count_filter=flt, exact=True).count == len(expected_g2)
    assert srv.points.Count(pb.CountPoints(collection_name=name)).result.count == 1000

    # search with Dify's filter: group + document_id MatchAny; the nearest comes first
    target = 500  # in g1 (500 % 3 != 0), document d0
    query = unit([1.0, target / 1000.0, 0.25, (target % 7) / 7.0])
    flt_pb = pb.Filter(must=[
        pb.Condition(field=pb.FieldCondition(key="group_id", match=pb.Match(keyword=g1))),
        pb.Condition(field=pb.FieldCondition(key="metadata.document_id", match=pb.Match(keywords=pb.RepeatedStrings(strings=["d0", "d1"])))),
    ])
    res = srv.points.Search(pb.SearchPoints(
        collection_name=name, vector=query, filter=flt_pb, limit=5,
        with_payload=pb.WithPayloadSelector(enable=True), with_vectors=pb.WithVectorsSelector(enable=True),
        score_threshold=0.5,
    )).result
    assert res[0].id.uuid == ids[target]
    assert res[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(res) == 5
    for hit in res:
        assert hit.payload["group_id"].string_value == g1
        assert hit.payload["metadata"].struct_value.fields["document_id"].string_value in ("d0", "d1")
        assert len(hit.vectors.vector.data) == 4
    assert [h.score for h in res] == sorted((h.score for h in res), reverse=True)
    # a threshold above every score: nothing
    assert len(srv.points.Search(pb.SearchPoints(collection_name=name, vector=query, limit=5, score_threshold=1.01)).result) == 0

    # has_id, must_not
    hid = pb.Filter(must=[pb.Condition(has_id=pb.HasIdCondition(has_id=[pb.PointId(uuid=ids[1]), pb.PointId(uuid=ids[2])]))])
    assert srv.points.Count(pb.CountPoints(collection_name=name, filter=hid)).result.count == 2
    not_g2 = pb.Filter(must_not=group_filter(g2).must)
    assert srv.points.Count(pb.CountPoints(collection_name=name, filter=not_g2)).result.count == 1000 - len(expected_g2)

    # Query: 1.10+
    qreq = pb.QueryPoints(collection_name=name, query=pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=query))),
                          filter=flt_pb, limit=3)
    if srv.version == V18:
        assert rpc_error(srv.points.Query, qreq).code() == SC.UNIMPLEMENTED
    else:
        qres = srv.points.Query(qreq).result
        assert qres[0].id.uuid == ids[target]
        assert c.query_points(name, query=query, query_filter=flt, limit=1).points[0].id in {i for i in expected_g2}

    # deletes the way Dify does them: by filter on group_id, by metadata.doc_id MatchAny
    srv.points.Delete(pb.DeletePoints(collection_name=name, wait=True, points=pb.PointsSelector(filter=group_filter(g2))))
    assert srv.points.Count(pb.CountPoints(collection_name=name)).result.count == 1000 - len(expected_g2)
    doc_ids = pb.Filter(must=[pb.Condition(field=pb.FieldCondition(
        key="metadata.doc_id", match=pb.Match(keywords=pb.RepeatedStrings(strings=[ids[1], ids[2]]))))])
    srv.points.Delete(pb.DeletePoints(collection_name=name, wait=True, points=pb.PointsSelector(filter=doc_ids)))
    srv.points.Delete(pb.DeletePoints(collection_name=name, wait=True, points=pb.PointsSelector(
        points=pb.PointsIdsList(ids=[pb.PointId(uuid=ids[4])]))))
    assert srv.points.Count(pb.CountPoints(collection_name=name)).result.count == 1000 - len(expected_g2) - 3
    info = srv.collections.Get(pb.GetCollectionInfoRequest(collection_name=name)).result
    assert info.payload_schema["group_id"].points == 1000 - len(expected_g2) - 3
    # the side channel counts only the points left
    assert srv.http("GET", "/__debug/collections")[name]["points_count"] == 1000 - len(expected_g2) - 3

    # field index removal and collection drop
    srv.points.DeleteFieldIndex(pb.DeleteFieldIndexCollection(collection_name=name, field_name="page_content", wait=True))
    assert "page_content" not in srv.collections.Get(pb.GetCollectionInfoRequest(collection_name=name)).result.payload_schema
    assert srv.collections.Delete(pb.DeleteCollection(collection_name=name)).result is True
    assert not c.collection_exists(name)
    c.close()


def test_fault_injection_and_call_counts(srv):
    name = coll_name()
    create_like_dify(srv, name)
    before = srv.http("GET", "/__calls")
    timeline_before = srv.http("GET", "/__timeline")
    rule = srv.http("POST", "/__fault", {"fail_after": 2, "code": "UNAVAILABLE", "stall_ms": 0, "methods": ["Upsert"]})
    assert rule["fail_after"] == 2
    try:
        for _ in range(2):
            upsert(srv, name, [dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g")])
        for _ in range(2):  # third and later fail
            err = rpc_error(upsert, srv, name, [dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g")])
            assert err.code() == SC.UNAVAILABLE
        # other methods are untouched
        assert srv.points.Count(pb.CountPoints(collection_name=name)).result.count == 2
        assert srv.http("GET", "/__fault")[0]["fired"] == 2
    finally:
        srv.http("POST", "/__fault/clear", {})
    upsert(srv, name, [dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g")])
    assert srv.points.Count(pb.CountPoints(collection_name=name)).result.count == 3

    # a stall without an error, once, on Scroll only ("Points/Scroll" form)
    srv.http("POST", "/__fault", {"fail_after": 0, "code": "OK", "stall_ms": 300, "methods": ["Points/Scroll"], "times": 1})
    try:
        t = time.monotonic()
        srv.points.Scroll(pb.ScrollPoints(collection_name=name))
        assert time.monotonic() - t >= 0.3
        t = time.monotonic()
        srv.points.Scroll(pb.ScrollPoints(collection_name=name))
        assert time.monotonic() - t < 0.3
    finally:
        srv.http("POST", "/__fault/clear", {})

    # a failure of every method, with a custom message, for one call
    srv.http("POST", "/__fault", {"fail_after": 0, "code": "INTERNAL", "message": "disk on fire", "times": 1})
    err = rpc_error(srv.collections.List, pb.ListCollectionsRequest())
    assert (err.code(), err.details()) == (SC.INTERNAL, "disk on fire")
    srv.collections.List(pb.ListCollectionsRequest())
    srv.http("POST", "/__fault/clear", {})

    after = srv.http("GET", "/__calls")
    assert after["Points/Upsert"] - before.get("Points/Upsert", 0) == 5
    assert after["Points/Scroll"] - before.get("Points/Scroll", 0) == 2
    assert after["Collections/List"] - before.get("Collections/List", 0) == 2

    # the timeline holds the handlers that ran (a call refused by a fault never reaches one),
    # each with its start before its end; the 300 ms stall is before the start
    timeline = srv.http("GET", "/__timeline")[len(timeline_before):]
    upserts = [t for t in timeline if t[0] == "Points/Upsert"]
    scrolls = [t for t in timeline if t[0] == "Points/Scroll"]
    assert (len(upserts), len(scrolls)) == (3, 2)
    assert all(start <= end for _, start, end in timeline)
    assert all(end - start < 0.3 for _, start, end in scrolls)

    # a bad fault spec is refused
    with pytest.raises(urllib.error.HTTPError) as exc:
        srv.http("POST", "/__fault", {"code": "NOT_A_CODE"})
    assert exc.value.code == 400


def test_unimplemented_methods(srv):
    err = rpc_error(srv.points.SetPayload, pb.SetPayloadPoints(collection_name="x"))
    assert err.code() == SC.UNIMPLEMENTED
    err = rpc_error(srv.collections.Update, pb.UpdateCollection(collection_name="x"))
    assert err.code() == SC.UNIMPLEMENTED


def test_version_117_answers_dense():
    s = Standin("1.17.0")
    try:
        name = coll_name()
        create_like_dify(s, name)
        pid = str(uuid.uuid4())
        upsert(s, name, [dify_point(pid, [0, 0, 0, 2], "g", dense=True)])
        r = s.points.Get(pb.GetPoints(collection_name=name, ids=[pb.PointId(uuid=pid)],
                                      with_vectors=pb.WithVectorsSelector(enable=True))).result[0]
        assert list(r.vectors.vector.dense.data) == [0, 0, 0, 1]
        assert len(r.vectors.vector.data) == 0
        # wait=false before 1.19: acknowledged, error only logged
        resp = upsert(s, name, [dify_point(str(uuid.uuid4()), [1, 0], "g")], wait=False)
        assert resp.result.status == 1
    finally:
        assert s.stop() == 0


def test_version_119_checks_dimensions_of_async_upserts():
    s = Standin("1.19.0")
    try:
        name = coll_name()
        create_like_dify(s, name)
        err = rpc_error(upsert, s, name, [dify_point(str(uuid.uuid4()), [1, 0], "g")], wait=False)
        assert (err.code(), err.details()) == (SC.INVALID_ARGUMENT, "Wrong input: Vector dimension error: expected dim: 4, got 2")
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("version,code,invalid_msg,health_free", [
    (V18, SC.PERMISSION_DENIED, "Invalid API key or JWT token", False),
    (V113, SC.UNAUTHENTICATED, "Invalid API key or JWT", False),
    ("1.16.0", SC.UNAUTHENTICATED, "Invalid API key or JWT", True),
])
def test_api_key(version, code, invalid_msg, health_free):
    s = Standin(version, api_key="difyai123456")
    try:
        for call, req in [
            (s.collections.List, pb.ListCollectionsRequest()),
            (s.points.Count, pb.CountPoints(collection_name="x")),
        ]:
            err = rpc_error(call, req)
            assert (err.code(), err.details()) == (code, "Must provide an API key or an Authorization bearer token")
            err = rpc_error(call, req, metadata=[("api-key", "wrong")])
            assert (err.code(), err.details()) == (code, invalid_msg)
        if health_free:
            s.qdrant.HealthCheck(pb.HealthCheckRequest())
        else:
            assert rpc_error(s.qdrant.HealthCheck, pb.HealthCheckRequest()).code() == code
        # the right key, as metadata or bearer token, and through qdrant_client
        s.collections.List(pb.ListCollectionsRequest(), metadata=[("api-key", "difyai123456")])
        s.collections.List(pb.ListCollectionsRequest(), metadata=[("authorization", "Bearer difyai123456")])
        name = coll_name()
        create_like_dify(s, name)
        c = s.client()
        assert c.collection_exists(name)
        c.close()
        # the side channel is not behind the key
        assert name in s.http("GET", "/__debug/collections")
    finally:
        assert s.stop() == 0


def test_reset_and_sync_errors_flag():
    s = Standin(V18, extra=["--sync-errors"])
    try:
        name = coll_name()
        create_like_dify(s, name)
        err = rpc_error(upsert, s, name, [dify_point(str(uuid.uuid4()), [1, 0, 0, 0], "g", dense=True)], wait=False)
        assert err.details() == "Wrong input: Vector inserting error: expected dim: 4, got 0"
        s.http("POST", "/__reset", {})
        assert s.http("GET", "/__debug/collections") == {}
        assert s.http("GET", "/__calls") == {}
        assert list(s.collections.List(pb.ListCollectionsRequest()).collections) == []
    finally:
        assert s.stop() == 0


def test_own_errors_are_internal_local_mode_errors_invalid_argument():
    sys.path.insert(0, HERE)
    try:
        import qdrant_standin as qs
    finally:
        sys.path.remove(HERE)
    from qdrant_client.local.local_collection import validate_vector_dimension

    class Aborted(Exception):
        pass

    class Context:
        def abort(self, code, details):
            self.code, self.details = code, details
            raise Aborted()

    class Svc:
        @qs.rpc
        def Bug(self, request, context):
            return {}["missing"]

        @qs.rpc
        def OwnValueError(self, request, context):
            raise ValueError("own bug")

        @qs.rpc
        def LocalModeRejects(self, request, context):
            validate_vector_dimension(3, 4, "")

    for method, code, details in [
        ("Bug", SC.INTERNAL, "stand-in internal error: KeyError: 'missing'"),
        ("OwnValueError", SC.INTERNAL, "stand-in internal error: ValueError: own bug"),
        ("LocalModeRejects", SC.INVALID_ARGUMENT, "Wrong input: Vector dimension error: expected dim: 4, got 3 for vector ''"),
    ]:
        ctx = Context()
        with pytest.raises(Aborted):
            getattr(Svc(), method)(None, ctx)
        assert (ctx.code, ctx.details) == (code, details)


def test_exit_on_stdin_eof():
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--port", "0", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("READY ")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))
