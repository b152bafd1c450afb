#!/usr/bin/env python3
"""Self-test for the Weaviate stand-in (tests/servers/weaviate_server.py).

Standard library only:  python3 tests/servers/test_weaviate_server.py [-v]
Each test class starts its own server on a free port and stops it with SIGTERM.
"""

import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "weaviate_server.py")
URL_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # uuid.NAMESPACE_URL, as Dify uses


def start_server(*args):
    errlog = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server can never block on it
    proc = subprocess.Popen([sys.executable, SERVER, "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=errlog)
    proc.errlog = errlog
    deadline = time.time() + 10
    line = b""
    while time.time() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line.startswith(b"READY "):
        proc.kill()
        proc.wait()
        errlog.seek(0)
        raise RuntimeError("server did not start: %r %r" % (line, errlog.read()))
    return proc, int(line.split()[1])


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.errlog.seek(0)
        err = proc.errlog.read()
        proc.errlog.close()
        if b"Traceback" in err:  # the stand-in hit a bug while serving
            sys.stderr.write(err.decode(errors="replace"))
            raise AssertionError("weaviate stand-in printed a traceback")


class Client:
    def __init__(self, port, key=None):
        self.base = "http://127.0.0.1:%d" % port
        self.key = key

    def call(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", "Bearer " + self.key)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def json(self, method, path, body=None, **kw):
        st, b, _ = self.call(method, path, body, **kw)
        return st, (json.loads(b) if b else None)

    def gql(self, query):
        st, b = self.json("POST", "/v1/graphql", {"query": query})
        assert st == 200, (st, b)
        return b


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_text(x):
    """Shortest decimal text of a float32, as a Rust/Go client would send it."""
    for p in range(1, 10):
        s = "%.*g" % (p, x)
        if f32(float(s)) == x:
            return s
    return repr(x)


def rand_vec(rng, dim):
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = sum(x * x for x in v) ** 0.5
    return [f32(x / n) for x in v]


def vec_json(v):
    return "[" + ",".join(f32_text(x) for x in v) + "]"


DATASET_A = "3f1c2a4b-1111-4c4c-8d8d-0123456789ab"
DATASET_B = "3f1c2a4b-2222-4c4c-8d8d-0123456789ab"


def class_name(dataset_id):
    return "Vector_index_%s_Node" % dataset_id.replace("-", "_")


V4_PROPS = [
    {"name": "text", "dataType": ["text"], "tokenization": "word"},
    {"name": "document_id", "dataType": ["text"]},
    {"name": "doc_id", "dataType": ["text"]},
    {"name": "doc_type", "dataType": ["text"]},
    {"name": "chunk_index", "dataType": ["int"]},
    {"name": "is_summary", "dataType": ["boolean"]},
    {"name": "original_chunk_id", "dataType": ["text"]},
]
V4_VECTOR_CONFIG = {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw", "vectorIndexConfig": {}}}


class DifyLayouts(unittest.TestCase):
    """The three layouts Dify writes (docs: /work/shared/dify/vectors.md §4.1) read back over REST."""

    DIM = 8

    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server()
        cls.c = Client(cls.port)
        cls.rng = random.Random(7)

    @classmethod
    def tearDownClass(cls):
        cls.rc = stop_server(cls.proc)

    # -- helpers
    def batch(self, objects, raw=False):
        if raw:
            body = ('{"objects":[' + ",".join(objects) + "]}").encode()
            st, b, _ = self.c.call("POST", "/v1/batch/objects", raw=body)
        else:
            st, b, _ = self.c.call("POST", "/v1/batch/objects", {"objects": objects})
        self.assertEqual(st, 200, b)
        res = json.loads(b)
        return res

    def make_docs(self, n, dataset, seed_text):
        docs = []
        for i in range(n):
            doc_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            docs.append({"text": "%s chunk %d" % (seed_text, i), "doc_id": doc_id,
                         "document_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                         "dataset_id": dataset, "doc_hash": "%064x" % self.rng.getrandbits(256),
                         "vector": rand_vec(self.rng, self.DIM)})
        return docs

    def list_all(self, cls_name, page, include_vector=True):
        seen, after, pages = [], None, 0
        while True:
            q = "/v1/objects?class=%s&limit=%d" % (cls_name, page)
            if include_vector:
                q += "&include=vector"
            if after:
                q += "&after=" + after
            st, b = self.c.json("GET", q)
            self.assertEqual(st, 200, b)
            objs = b["objects"]
            pages += 1
            if not objs:
                self.assertNotIn("totalResults", b)  # omitempty
                break
            self.assertEqual(b["totalResults"], len(objs))
            self.assertEqual(b["deprecations"], [])
            if after:
                self.assertTrue(all(o["id"] > after for o in objs), "after id must be excluded")
            seen.extend(objs)
            after = objs[-1]["id"]
            if len(objs) < page:
                break
        return seen, pages

    # -- legacy layout: Dify <= 1.9.1 (v3 client): only `text` declared, unnamed vector, id = doc_id
    def test_legacy_unnamed_vector(self):
        name = class_name(DATASET_A)
        st, b = self.c.json("POST", "/v1/schema", {"class": name, "properties": [
            {"name": "text", "dataType": ["text"]}]})
        self.assertEqual(st, 200, b)
        self.assertEqual(b["vectorizer"], "none")
        self.assertEqual(b["vectorIndexType"], "hnsw")
        self.assertEqual(b["vectorIndexConfig"]["distance"], "cosine")
        self.assertNotIn("vectorConfig", b)
        # duplicate class: 422 with Weaviate's message (cluster/schema/manager.go PreApplyFilter)
        st, b = self.c.json("POST", "/v1/schema", {"class": name})
        self.assertEqual(st, 422)
        self.assertEqual(b, {"error": [{"message": "class name %s already exists" % name}]})

        docs = self.make_docs(1050, DATASET_A, "legacy")
        # send float32 values as decimal text, the way a Rust client does
        for i in range(0, len(docs), 250):
            objs = []
            for d in docs[i:i + 250]:
                props = {k: d[k] for k in ("text", "doc_id", "document_id", "dataset_id", "doc_hash")}
                objs.append('{"class":"%s","id":"%s","properties":%s,"vector":%s}'
                            % (name, d["doc_id"], json.dumps(props), vec_json(d["vector"])))
            res = self.batch(objs, raw=True)
            self.assertEqual(len(res), len(objs))
            for r in res:
                self.assertEqual(r["result"], {"status": "SUCCESS"}, r)
                self.assertIsNone(r["deprecations"])
        # auto-schema typed the undeclared properties like Weaviate (uuid-parsable -> uuid)
        st, dump = self.c.json("GET", "/v1/schema")
        self.assertIn(name, [c["class"] for c in dump["classes"]])
        st, sch = self.c.json("GET", "/v1/schema/" + name)
        types = {p["name"]: p["dataType"][0] for p in sch["properties"]}
        self.assertEqual(types, {"text": "text", "doc_id": "uuid", "document_id": "uuid", "dataset_id": "uuid",
                                 "doc_hash": "text"})

        # cursor pagination: each object exactly once, in UUID order
        seen, pages = self.list_all(name, 100)
        ids = [o["id"] for o in seen]
        self.assertEqual(len(ids), 1050)
        self.assertEqual(len(set(ids)), 1050)
        self.assertEqual(ids, sorted(ids))
        # UUID order == byte order of the 16-byte uuid (the LSM objects bucket key)
        self.assertEqual(ids, [str(uuid.UUID(bytes=bb)) for bb in sorted(uuid.UUID(i).bytes for i in ids)])
        self.assertEqual(set(ids), {d["doc_id"] for d in docs})
        self.assertEqual(pages, 11)
        # legacy layout: "vector", no "vectors"; float32 text round trip is bit-exact
        by_id = {d["doc_id"]: d for d in docs}
        for o in seen:
            self.assertIn("vector", o)
            self.assertNotIn("vectors", o)
            self.assertEqual(o["class"], name)
            self.assertEqual(set(o), {"class", "creationTimeUnix", "id", "lastUpdateTimeUnix", "properties",
                                      "vector"})
            want = by_id[o["id"]]["vector"]
            self.assertEqual([struct.pack("<f", x) for x in o["vector"]], [struct.pack("<f", x) for x in want])
            self.assertEqual(o["properties"]["doc_id"], o["id"])
        # without include=vector there is no vector
        st, b = self.c.json("GET", "/v1/objects?class=%s&limit=5" % name)
        self.assertTrue(all("vector" not in o and "vectors" not in o for o in b["objects"]))

        # the `after` id itself is excluded, also when it does not exist
        mid = ids[500]
        st, b = self.c.json("GET", "/v1/objects?class=%s&limit=3&after=%s" % (name, mid))
        self.assertEqual([o["id"] for o in b["objects"]], ids[501:504])
        probe = ids[500][:-1] + ("0" if ids[500][-1] != "0" else "1")
        st, b = self.c.json("GET", "/v1/objects?class=%s&limit=1&after=%s" % (name, probe))
        self.assertEqual(b["objects"][0]["id"], min(i for i in ids if i > probe))
        # first page with after= (empty) is the plain first page; default limit is QUERY_DEFAULTS_LIMIT (25)
        st, b = self.c.json("GET", "/v1/objects?class=%s&after=" % name)
        self.assertEqual([o["id"] for o in b["objects"]], ids[:25])

        # single object read with vector
        st, b = self.c.json("GET", "/v1/objects/%s/%s?include=vector" % (name, ids[0]))
        self.assertEqual(st, 200)
        self.assertEqual(b["id"], ids[0])
        self.assertIn("vector", b)

        # GraphQL counts: whole class and per dataset / per document (uuid-typed props take valueText)
        r = self.c.gql("{ Aggregate { %s { meta { count } } } }" % name)
        self.assertEqual(r, {"data": {"Aggregate": {name: [{"meta": {"count": 1050}}]}}})
        r = self.c.gql('{ Aggregate { %s(where: {path: ["dataset_id"], operator: Equal, valueText: "%s"}) '
                     '{ meta { count } } } }' % (name, DATASET_A))
        self.assertEqual(r["data"]["Aggregate"][name][0]["meta"]["count"], 1050)
        r = self.c.gql('{ Aggregate { %s(where: {path: ["dataset_id"], operator: Equal, valueText: "%s"}) '
                     '{ meta { count } } } }' % (name, DATASET_B))
        self.assertEqual(r["data"]["Aggregate"][name][0]["meta"]["count"], 0)
        d0 = docs[17]
        r = self.c.gql('{ Aggregate { %s(where: {path: ["document_id"], operator: Equal, valueText: "%s"}) '
                     '{ meta { count } } } }' % (name, d0["document_id"]))
        self.assertEqual(r["data"]["Aggregate"][name][0]["meta"]["count"], 1)

        # nearVector: the stored vector itself is the top hit at distance ~0
        r = self.c.gql('{ Get { %s(nearVector: {vector: %s}, limit: 3) { doc_id text _additional { id distance } } } }'
                     % (name, vec_json(d0["vector"])))
        hits = r["data"]["Get"][name]
        self.assertEqual(len(hits), 3)
        self.assertEqual(hits[0]["_additional"]["id"], d0["doc_id"])
        self.assertEqual(hits[0]["doc_id"], d0["doc_id"])
        self.assertLess(abs(hits[0]["_additional"]["distance"]), 1e-5)
        self.assertLessEqual(hits[0]["_additional"]["distance"], hits[1]["_additional"]["distance"])
        # expected distance = 1 - cos
        a, bvec = d0["vector"], by_id[hits[1]["_additional"]["id"]]["vector"]
        cos = sum(x * y for x, y in zip(a, bvec)) / ((sum(x * x for x in a) * sum(y * y for y in bvec)) ** 0.5)
        self.assertAlmostEqual(hits[1]["_additional"]["distance"], 1 - cos, places=5)
        # Get with where + limit, returning vectors
        r = self.c.gql('{ Get { %s(where: {path: ["doc_id"], operator: Equal, valueText: "%s"}, limit: 5) '
                     '{ text doc_id _additional { id vector } } } }' % (name, d0["doc_id"]))
        got = r["data"]["Get"][name]
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["text"], d0["text"])
        self.assertEqual([f32(x) for x in got[0]["_additional"]["vector"]], d0["vector"])

        # wrong vector length: per-object error in a batch, 500 for a single create
        res = self.batch([{"class": name, "id": str(uuid.uuid4()), "properties": {"text": "x"},
                           "vector": [0.5] * (self.DIM + 1)}])
        self.assertEqual(res[0]["result"]["status"], "FAILED")
        msg = res[0]["result"]["errors"]["error"][0]["message"]
        self.assertIn("new node has a vector with length %d. Existing nodes have vectors with length %d"
                      % (self.DIM + 1, self.DIM), msg)
        st, b = self.c.json("POST", "/v1/objects", {"class": name, "properties": {"text": "y"},
                                                    "vector": [0.5] * 3})
        self.assertEqual(st, 500)
        self.assertIn("Existing nodes have vectors with length %d" % self.DIM, b["error"][0]["message"])
        st, b = self.c.json("GET", "/v1/objects?class=%s&limit=1&after=%s" % (name, ids[-1]))
        self.assertEqual(b["objects"], [])

    # -- v4 layout (Dify 1.9.2 .. 1.17.x): named vector "default", id = uuid5(NAMESPACE_URL, text)
    def test_named_default_vector_uuid5_ids(self):
        name = "Vector_index_%s_Node" % "aaaa1111_2222_4333_8444_555566667777"
        st, b = self.c.json("POST", "/v1/schema", {"class": name, "properties": V4_PROPS,
                                                   "vectorConfig": V4_VECTOR_CONFIG})
        self.assertEqual(st, 200, b)
        self.assertEqual(set(b["vectorConfig"]), {"default"})
        vc = b["vectorConfig"]["default"]
        self.assertEqual(vc["vectorizer"], {"none": {}})
        self.assertEqual(vc["vectorIndexType"], "hnsw")
        self.assertEqual(vc["vectorIndexConfig"]["distance"], "cosine")
        self.assertNotIn("vectorIndexConfig", b)
        self.assertNotIn("vectorizer", b)

        docs = self.make_docs(120, DATASET_B, "named")
        docs.append(dict(docs[0], doc_id=str(uuid.uuid4()), vector=rand_vec(self.rng, self.DIM)))  # same text
        objs = []
        for d in docs:
            props = {"text": d["text"], "doc_id": d["doc_id"], "document_id": d["document_id"],
                     "dataset_id": d["dataset_id"], "doc_hash": d["doc_hash"], "doc_type": "text"}
            objs.append({"class": name, "id": str(uuid.uuid5(URL_NS, d["text"])), "properties": props,
                         "vectors": {"default": d["vector"]}})
        res = self.batch(objs)
        self.assertTrue(all(r["result"]["status"] == "SUCCESS" for r in res))
        # identical texts collide (uuid5 of the text): 120 objects, the later write wins
        seen, _ = self.list_all(name, 50)
        self.assertEqual(len(seen), 120)
        for o in seen:
            self.assertNotIn("vector", o)  # named-vector class: only "vectors"
            self.assertEqual(set(o["vectors"]), {"default"})
            self.assertEqual(o["id"], str(uuid.uuid5(URL_NS, o["properties"]["text"])))
        dup = [o for o in seen if o["properties"]["text"] == docs[0]["text"]][0]
        self.assertEqual(dup["properties"]["doc_id"], docs[-1]["doc_id"])
        self.assertEqual(dup["vectors"]["default"], docs[-1]["vector"])
        # auto-schema added dataset_id (uuid) and doc_hash (text); declared doc_id stays text
        st, sch = self.c.json("GET", "/v1/schema/" + name)
        types = {p["name"]: p["dataType"][0] for p in sch["properties"]}
        self.assertEqual(types["dataset_id"], "uuid")
        self.assertEqual(types["doc_hash"], "text")
        self.assertEqual(types["doc_id"], "text")
        # nearVector on the single named vector (implicit and explicit target)
        target = docs[5]
        for tv in ("", ', targetVectors: ["default"]'):
            r = self.c.gql('{ Get { %s(nearVector: {vector: %s%s}, limit: 2, where: {path: ["document_id"], '
                         'operator: ContainsAny, valueText: ["%s"]}) { doc_id _additional { id distance '
                         'vectors { default } } } } }' % (name, vec_json(target["vector"]), tv,
                                                          target["document_id"]))
            hits = r["data"]["Get"][name]
            self.assertEqual(len(hits), 1)
            self.assertEqual(hits[0]["doc_id"], target["doc_id"])
            self.assertEqual(hits[0]["_additional"]["vectors"]["default"], target["vector"])
        # per-dataset count through a text-typed property (word tokenization)
        r = self.c.gql('{ Aggregate { %s(where: {path: ["document_id"], operator: Equal, valueText: "%s"}) '
                     '{ meta { count } } } }' % (name, docs[3]["document_id"]))
        self.assertEqual(r["data"]["Aggregate"][name][0]["meta"]["count"], 1)
        # wrong length for the named vector
        res = self.batch([{"class": name, "id": str(uuid.uuid4()), "properties": {"text": "zz"},
                           "vectors": {"default": [0.1, 0.2]}}])
        self.assertEqual(res[0]["result"]["status"], "FAILED")
        self.assertIn("Validate vector index default for target vector",
                      res[0]["result"]["errors"]["error"][0]["message"])

    # -- upstream main after 1.17 (fix for #41714): named "default" vector, id = doc_id
    def test_named_default_vector_doc_id_ids(self):
        name = "Vector_index_%s_Node" % "bbbb1111_2222_4333_8444_555566667777"
        st, b = self.c.json("POST", "/v1/schema", {"class": name, "properties": V4_PROPS,
                                                   "vectorConfig": V4_VECTOR_CONFIG})
        self.assertEqual(st, 200, b)
        docs = self.make_docs(60, DATASET_A, "docid")
        objs = [{"class": name, "id": d["doc_id"], "properties": {"text": d["text"], "doc_id": d["doc_id"],
                                                                  "dataset_id": d["dataset_id"]},
                 "vectors": {"default": d["vector"]}} for d in docs]
        self.batch(objs)
        seen, _ = self.list_all(name, 7)
        self.assertEqual(sorted(o["id"] for o in seen), sorted(d["doc_id"] for d in docs))
        self.assertTrue(all(o["id"] == o["properties"]["doc_id"] for o in seen))
        st, b = self.c.json("GET", "/v1/objects/%s/%s?include=vector" % (name, docs[0]["doc_id"]))
        self.assertEqual(b["vectors"]["default"], docs[0]["vector"])
        self.assertNotIn("vector", b)
        # delete: 204, then the object is gone (and deleting again is still 204)
        st, _, _ = self.c.call("DELETE", "/v1/objects/%s/%s" % (name, docs[0]["doc_id"]))
        self.assertEqual(st, 204)
        st, body, _ = self.c.call("GET", "/v1/objects/%s/%s" % (name, docs[0]["doc_id"]))
        self.assertEqual((st, body), (404, b""))
        st, _, _ = self.c.call("DELETE", "/v1/objects/%s/%s" % (name, docs[0]["doc_id"]))
        self.assertEqual(st, 204)
        r = self.c.gql("{ Aggregate { %s { meta { count } } } }" % name)
        self.assertEqual(r["data"]["Aggregate"][name][0]["meta"]["count"], 59)
        # drop the class
        st, _, _ = self.c.call("DELETE", "/v1/schema/" + name)
        self.assertEqual(st, 200)
        st, body, _ = self.c.call("GET", "/v1/schema/" + name)
        self.assertEqual((st, body), (404, b""))


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server()
        cls.c = Client(cls.port)
        st, b = cls.c.json("POST", "/v1/schema", {"class": "Err_class", "properties": [
            {"name": "text", "dataType": ["text"]}]})
        assert st == 200, b

    @classmethod
    def tearDownClass(cls):
        stop_server(cls.proc)

    def test_unknown_class_listing_is_404_with_empty_body(self):
        st, body, headers = self.c.call("GET", "/v1/objects?class=NoSuchClass&limit=10&include=vector")
        self.assertEqual(st, 404)
        self.assertEqual(body, b"")
        st, body, _ = self.c.call("GET", "/v1/objects?class=NoSuchClass&limit=10&after=" + str(uuid.uuid4()))
        self.assertEqual((st, body), (404, b""))

    def test_graphql_errors(self):
        st, b = self.c.json("POST", "/v1/graphql", {"query": "{ Aggregate { NoSuchClass { meta { count } } } }"})
        self.assertEqual(st, 200)
        self.assertNotIn("data", b)
        self.assertEqual(b["errors"][0]["message"], 'Cannot query field "NoSuchClass" on type "AggregateObjectsObj".')
        self.assertEqual(b["errors"][0]["locations"], [{"column": 15, "line": 1}])
        self.assertIsNone(b["errors"][0]["path"])
        st, b = self.c.json("POST", "/v1/graphql", {"query": '{ Get { Err_class(where: {path: ["nope"], '
                                                             'operator: Equal, valueText: "x"}) { text } } }'})
        self.assertEqual(st, 200)
        self.assertEqual(b["data"], {"Get": {"Err_class": None}})
        self.assertTrue(b["errors"][0]["message"].startswith("invalid 'where' filter: no such prop with name 'nope'"))
        self.assertEqual(b["errors"][0]["path"], ["Get", "Err_class"])
        st, b = self.c.json("POST", "/v1/graphql", {"query": ""})
        self.assertEqual((st, b), (422, {"error": [{"message": "query cannot be empty"}]}))

    def test_after_with_offset_is_422(self):
        q = "/v1/objects?class=Err_class&limit=10&offset=5&after=" + str(uuid.uuid4())
        st, b = self.c.json("GET", q)
        self.assertEqual(st, 422)
        self.assertEqual(b["error"][0]["message"],
                         "msg:cursor api: invalid 'after' parameter code:400 err:offset cannot be set with after "
                         "and limit parameters")
        st, b = self.c.json("GET", "/v1/objects?class=Err_class&after=" + str(uuid.uuid4()))
        self.assertEqual(st, 422)
        self.assertTrue(b["error"][0]["message"].endswith("err:limit parameter must be set"))
        st, b = self.c.json("GET", "/v1/objects?class=Err_class&limit=1&after=not-a-uuid")
        self.assertEqual(st, 422)
        self.assertIn("after parameter 'not-a-uuid' is not a valid uuid: invalid UUID length: 10",
                      b["error"][0]["message"])
        st, b = self.c.json("GET", "/v1/objects?limit=10&after=" + str(uuid.uuid4()))
        self.assertEqual(st, 500)
        self.assertIn("cursor must be specific to one class", b["error"][0]["message"])
        st, b = self.c.json("GET", "/v1/objects?class=Err_class&limit=10001")
        self.assertEqual(st, 422)
        self.assertEqual(b["error"][0]["message"],
                         "msg:offset or limit code:400 err:query maximum results exceeded")
        st, b = self.c.json("GET", "/v1/objects?class=Err_class&limit=abc")
        self.assertEqual((st, b), (422, {"code": 601, "message": 'limit in query must be of type int64: "abc"'}))

    def test_invalid_uuid_is_422(self):
        st, b = self.c.json("POST", "/v1/objects", {"class": "Err_class", "id": "abc", "properties": {}})
        self.assertEqual((st, b), (422, {"code": 601, "message": 'id in body must be of type uuid: "abc"'}))
        st, b = self.c.json("POST", "/v1/batch/objects", {"objects": [
            {"class": "Err_class", "id": str(uuid.uuid4())}, {"class": "Err_class", "id": "nope"}]})
        self.assertEqual((st, b), (422, {"code": 601,
                                         "message": 'body.objects.1.id in body must be of type uuid: "nope"'}))
        st, b = self.c.json("GET", "/v1/objects/Err_class/xyz")
        self.assertEqual((st, b), (422, {"code": 601, "message": 'id in path must be of type uuid: "xyz"'}))
        st, b = self.c.json("POST", "/v1/batch/objects", {"objects": []})
        self.assertEqual(st, 422)
        self.assertIn("cannot be empty", b["error"][0]["message"])

    def test_single_create_and_duplicate_id(self):
        oid = str(uuid.uuid4())
        st, b = self.c.json("POST", "/v1/objects", {"class": "Err_class", "id": oid,
                                                    "properties": {"text": "hello"}, "vector": [1, 0, 0]})
        self.assertEqual(st, 200, b)
        self.assertEqual(b["id"], oid)
        self.assertEqual(b["vector"], [1, 0, 0])
        st, b = self.c.json("POST", "/v1/objects", {"class": "Err_class", "id": oid, "properties": {"text": "x"}})
        self.assertEqual((st, b), (422, {"error": [{"message": "id '%s' already exists" % oid}]}))
        st, b = self.c.json("POST", "/v1/objects", {"class": "Err_class", "properties": {"text": 5}})
        self.assertEqual(st, 422)
        self.assertEqual(b["error"][0]["message"],
                         "invalid object: invalid text property 'text' on class 'Err_class': not a string, "
                         "but json.Number")

    def test_vector_text_kept_and_fallback_parsing(self):
        self.c.json("POST", "/v1/schema", {"class": "Fallback", "properties": [
            {"name": "text", "dataType": ["text"]}, {"name": "vector", "dataType": ["number[]"]}]})
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        # pretty-printed body, exponent notation: the text is kept as sent (fast path)
        body = ('{ "objects" : [ {"class": "Fallback", "id": "%s", "vector" : [ 1e-7 , -0.5,\n 2 ] } ] }'
                % a).encode()
        st, resp, _ = self.c.call("POST", "/v1/batch/objects", raw=body)
        self.assertEqual(st, 200, resp)
        st, raw, _ = self.c.call("GET", "/v1/objects/Fallback/%s?include=vector" % a)
        self.assertIn(b'"vector":[ 1e-7 , -0.5,\n 2 ]', raw)
        self.assertEqual(json.loads(raw)["vector"], [1e-7, -0.5, 2])
        # a property that is also called "vector": the whole body is parsed the slow way
        body = json.dumps({"objects": [{"class": "Fallback", "id": b, "properties": {"vector": [1.5, 2.5]},
                                        "vector": [0.25, 0.5, 0.75]}]}).encode()
        st, resp, _ = self.c.call("POST", "/v1/batch/objects", raw=body)
        self.assertEqual(json.loads(resp)[0]["result"], {"status": "SUCCESS"})
        st, o = self.c.json("GET", "/v1/objects/Fallback/%s?include=vector" % b)
        self.assertEqual(o["vector"], [0.25, 0.5, 0.75])
        self.assertEqual(o["properties"]["vector"], [1.5, 2.5])
        # not a number: rejected like Go's decoder would (400)
        st, b2 = self.c.json("POST", "/v1/batch/objects", {"objects": [{"class": "Fallback", "vector": [1, "x"]}]})
        self.assertEqual(st, 400)
        self.assertEqual(b2["code"], 400)

    def test_fault_injection_and_calls(self):
        st, b = self.c.json("POST", "/__fault", {"fail_after": 2, "status": 503, "paths": ["/v1/objects"]})
        self.assertEqual(st, 200)
        q = "/v1/objects?class=Err_class&limit=1"
        self.assertEqual(self.c.call("GET", q)[0], 200)
        self.assertEqual(self.c.call("GET", q)[0], 200)
        st, body, _ = self.c.call("GET", q)
        self.assertEqual(st, 503)
        self.assertEqual(json.loads(body), {"error": [{"message": "injected fault"}]})
        self.assertEqual(self.c.call("GET", q)[0], 503)
        self.assertEqual(self.c.call("GET", "/v1/meta")[0], 200)  # path not matched
        self.c.call("POST", "/__fault/clear")
        self.assertEqual(self.c.call("GET", q)[0], 200)
        # stall then succeed
        self.c.json("POST", "/__fault", {"fail_after": 0, "stall_ms": 300, "paths": ["/v1/meta"]})
        t = time.time()
        self.assertEqual(self.c.call("GET", "/v1/meta")[0], 200)
        self.assertGreaterEqual(time.time() - t, 0.29)
        self.c.call("POST", "/__fault/clear")
        st, calls = self.c.json("GET", "/__calls")
        self.assertGreaterEqual(calls["paths"]["/v1/objects"], 5)
        self.assertGreaterEqual(calls["calls"]["GET /v1/objects"], 5)

    def test_meta_and_well_known(self):
        st, b = self.c.json("GET", "/v1/meta")
        self.assertEqual(b["version"], "1.27.0")
        self.assertEqual(b["modules"], {})
        self.assertEqual(self.c.call("GET", "/v1/.well-known/ready")[:2], (200, b""))
        self.assertEqual(self.c.call("GET", "/v1/.well-known/live")[:2], (200, b""))


class ApiKey(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server("--api-key", "secret-key", "--version", "1.27.0")

    @classmethod
    def tearDownClass(cls):
        stop_server(cls.proc)

    def test_enforced(self):
        anon = Client(self.port)
        st, b = anon.json("GET", "/v1/meta")
        self.assertEqual((st, b), (401, {"code": 401, "message": "anonymous access not enabled, please provide an "
                                                                  "auth scheme such as OIDC"}))
        st, b = Client(self.port, "wrong").json("GET", "/v1/schema")
        self.assertEqual((st, b), (401, {"code": 401, "message": "invalid api key, please provide a valid api key"}))
        self.assertEqual(anon.call("GET", "/v1/.well-known/ready")[0], 200)
        self.assertEqual(anon.call("GET", "/v1/.well-known/live")[0], 200)
        good = Client(self.port, "secret-key")
        self.assertEqual(good.json("GET", "/v1/meta")[0], 200)
        self.assertEqual(good.json("GET", "/v1/objects?class=Nope&limit=1")[0], 404)
        st, b = anon.json("POST", "/v1/graphql", {"query": "{ Get { X { a } } }"})
        self.assertEqual(st, 401)


class NoAutoschemaAndFloat32(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server("--no-autoschema", "--float32-vectors")
        cls.c = Client(cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.rc = stop_server(cls.proc)

    def test_missing_class_and_undeclared_property(self):
        st, b = self.c.json("POST", "/v1/batch/objects", {"objects": [{"class": "Missing", "id": str(uuid.uuid4()),
                                                                       "vector": [0.1]}]})
        self.assertEqual(st, 200)
        self.assertEqual(b[0]["result"]["errors"]["error"][0]["message"], "class 'Missing' not present in schema")
        st, b = self.c.json("POST", "/v1/objects", {"class": "Missing", "vector": [0.1]})
        self.assertEqual((st, b), (422, {"error": [{"message": 'invalid object: class "Missing" not found in '
                                                               'schema'}]}))
        self.c.json("POST", "/v1/schema", {"class": "Declared", "properties": [{"name": "text",
                                                                                "dataType": ["text"]}]})
        st, b = self.c.json("POST", "/v1/batch/objects", {"objects": [{"class": "Declared", "id": str(uuid.uuid4()),
                                                                       "properties": {"other": "x"}}]})
        self.assertIn("no such prop with name 'other' found in class 'Declared'",
                      b[0]["result"]["errors"]["error"][0]["message"])

    def test_float32_rounding_like_weaviate(self):
        self.c.json("POST", "/v1/schema", {"class": "F32", "properties": []})
        oid = str(uuid.uuid4())
        body = ('{"objects":[{"class":"F32","id":"%s","vector":[0.10000000149011612,0.1,1e-7,0.000012,1.0,'
                '0.123456789012345]}]}' % oid).encode()
        st, b, _ = self.c.call("POST", "/v1/batch/objects", raw=body)
        self.assertEqual(st, 200, b)
        st, raw, _ = self.c.call("GET", "/v1/objects/F32/%s?include=vector" % oid)
        self.assertIn(b'"vector":[0.1,0.1,1e-7,0.000012,1,0.12345679]', raw)


class Shutdown(unittest.TestCase):
    def test_sigterm_exits_cleanly(self):
        proc, port = start_server()
        self.assertEqual(Client(port).call("GET", "/v1/meta")[0], 200)
        self.assertEqual(stop_server(proc), 0)


if __name__ == "__main__":
    unittest.main()
