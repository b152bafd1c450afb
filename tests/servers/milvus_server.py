#!/usr/bin/env python3
"""Strict Milvus gRPC server for Upkeep's integration tests.

milvus-lite 3.2.x (PyPI `milvus-lite`, pure Python) ships a Milvus-protocol gRPC servicer,
`milvus_lite.adapter.grpc.servicer.MilvusServicer`, over its own storage engine. This file runs
it in the same process and subclasses that servicer, so inserts, filters, search, BM25 and
count(*) come from milvus-lite, and adds what a real Milvus 2.5/2.6 does and milvus-lite does not:

  * Dify's JSON-path `in` filter (`metadata["document_id"] in ["a","b"]`), which milvus-lite
    rejects, is accepted in Query, Search, HybridSearch and Delete (milvus-lite's parser and
    row evaluator are patched for it, see install_json_path_in);
  * load state: a new collection is not loaded, Search/Query refuse an unloaded collection
    (code 101), LoadCollection refuses a collection without vector indexes (code 700, or 65535
    when only some vector fields have one), GetLoadState/GetLoadingProgress report it;
  * the consistency level, shard count, properties and schema of CreateCollection are kept and
    answered by DescribeCollection (milvus-lite says Strong, field ids 0);
  * CreateIndex's key/value pairs are kept as sent and answered by DescribeIndex (milvus-lite
    drops HNSW `M`/`efConstruction`); an identical CreateIndex again is a no-op, a different one
    fails; AUTOINDEX on a BM25 sparse field works; GetIndexState, GetIndexBuildProgress and
    AllocTimestamp exist (pymilvus' synchronous create_index needs them);
  * BM25 search scores are positive, larger is better (milvus-lite answers them negated);
  * Query limits (offset+limit <= 16384, an empty filter needs a limit), output fields (none =
    primary key only, `*` = all but function outputs, a BM25 output field cannot be read);
  * Insert/Upsert checks: VARCHAR max_length in bytes, vector dim, no primary key data for an
    auto_id collection;
  * GetCollectionStatistics counts rows as of the last Flush and does not subtract deletes, as
    a real Milvus does until compaction (use count(*) for an exact number);
  * ShowCollections fills collection ids and creation timestamps (clients check those arrays);
  * every error Status carries both `code` and the legacy `error_code`, with Milvus' codes;
  * authentication (`--token`, or `--user`/`--password`): gRPC metadata `authorization` must be
    base64(token), else UNAUTHENTICATED with the messages of Milvus' proxy;
  * call counters, fault injection and a "server went away" switch on an HTTP side channel.

Start:  python tests/servers/milvus_server.py --host 127.0.0.1 --port 0 [--version v2.6.3]
            [--token T | --user U --password P] [--data-dir D] [--control-port 0]
            [--load-polls N] [--exit-on-stdin-eof]
When serving it prints one line on stdout:  READY <grpc_port> <control_port>
It stops on SIGTERM/SIGINT (exit 0), and with --exit-on-stdin-eof also when its stdin closes.

Side channel (HTTP/1.1, JSON, on <control_port>, never behind the token):
  GET  /layout       per collection: the schema as received, consistency level, index requests
                     as received, load state, ids
  GET  /calls        {"Insert": 3, ...} RPCs received per method
  GET  /requests     the last 1000 Query/Search/HybridSearch/Delete requests (filter, output
                     fields, limits, consistency level, guarantee timestamp)
  POST /fault        {"method": "Insert", "code": "UNAVAILABLE", "times": N, "after": K,
                      "message": "...", "phase": "before"} calls K+1.. of the method fail N
                     times (times null: forever); phase "after" runs the call, then fails it
  GET  /fault        the rules and how often each fired;  POST /fault/clear drops them
  POST /stop         every RPC fails UNAVAILABLE from now on (the server "went away")
  POST /start        undo /stop
  GET  /health       {"ok": true, "version": "v2.6.3"}

See tests/servers/README.md ("Milvus test server") for what is strict, why, and what is not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import functools
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import DEFAULT_DATABASE_NAME, MilvusLite
from milvus_lite.exceptions import CollectionNotFoundError
from milvus_lite.search.filter import parse_expr
from milvus_lite.search.filter import parser as fparser
from milvus_lite.search.filter.ast import CmpOp, FieldRef, InOp, MetaAccess, PathAccess
from milvus_lite.search.filter.eval import python_backend
from milvus_lite.search.filter.exceptions import FilterParseError
from milvus_lite.search.filter.tokens import TokenKind

DEFAULT_VERSION = "v2.6.3"  # Dify's docker compose image milvusdb/milvus:v2.6.3
MAX_QUERY_RESULT_WINDOW = 16384  # quotaAndLimits.limits.maxQueryResultWindow
STATE_FILE = "milvus-test-server-state.json"
TEMP_PREFIX = "milvus-test-server-"  # + <pid>-: temp dirs of servers killed with SIGKILL are swept

# merr codes (pkg/util/merr/errors.go) and the legacy ErrorCode each maps to (merr.oldCode)
CODE_UNEXPECTED = 65535
CODE_COLLECTION_NOT_FOUND = 100
CODE_COLLECTION_NOT_LOADED = 101
CODE_COLLECTION_NOT_FULLY_LOADED = 103
CODE_COLLECTION_LOADED = 104
CODE_INDEX_NOT_FOUND = 700
CODE_PARAMETER_INVALID = 1100
LEGACY = {
    CODE_COLLECTION_NOT_FOUND: common_pb2.ErrorCode.CollectionNotExists,  # 4
    CODE_INDEX_NOT_FOUND: common_pb2.ErrorCode.IndexNotExist,  # 25
    CODE_PARAMETER_INVALID: common_pb2.ErrorCode.IllegalArgument,  # 5
}

VECTOR_TYPES = {
    schema_pb2.DataType.FloatVector,
    schema_pb2.DataType.BinaryVector,
    schema_pb2.DataType.Float16Vector,
    schema_pb2.DataType.BFloat16Vector,
    schema_pb2.DataType.SparseFloatVector,
    schema_pb2.DataType.Int8Vector,
}
METHOD_PREFIX = "/milvus.proto.milvus.MilvusService/"
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

log = logging.getLogger("milvus-test-server")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


class Tso:
    """Milvus hybrid timestamps: physical milliseconds << 18 | a logical counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            ts = max(int(time.time() * 1000) << 18, self._last + 1)
            self._last = ts
            return ts


def status(code: int, reason: str, legacy: int | None = None) -> common_pb2.Status:
    if legacy is None:
        legacy = LEGACY.get(code, common_pb2.ErrorCode.UnexpectedError)
    return common_pb2.Status(code=code, error_code=legacy, reason=reason, detail=reason)


def answer(resp_type, st: common_pb2.Status):
    """An error answer of the RPC's response type (Status itself or a message with `status`)."""
    if resp_type is common_pb2.Status:
        return st
    return resp_type(status=st)


def invalid(msg: str) -> common_pb2.Status:
    """merr.WrapErrParameterInvalidMsg: code 1100, `<msg>: invalid parameter`."""
    return status(CODE_PARAMETER_INVALID, f"{msg}: invalid parameter")


def normalize_status(st: common_pb2.Status) -> None:
    """Give a milvus-lite Status the codes a real Milvus sends.

    milvus-lite answers some errors with `code` only (error_code 0 = Success for a client that
    reads the legacy field), uses code 1 (merr's retriable "service not ready") for unexpected
    errors and code 6 for bad parameters; Milvus uses 65535 and 1100, and always sets both."""
    if st.code == 0 and st.error_code == 0:
        return
    if st.code == 0:
        st.code = CODE_UNEXPECTED
    elif st.code == 1:
        st.code = CODE_UNEXPECTED
    elif st.code == 6:
        st.code = CODE_PARAMETER_INVALID
        if not st.reason.endswith(": invalid parameter"):
            st.reason = f"{st.reason}: invalid parameter"
    st.error_code = LEGACY.get(st.code, common_pb2.ErrorCode.UnexpectedError)
    if not st.detail:
        st.detail = st.reason


def response_status(resp) -> common_pb2.Status | None:
    if isinstance(resp, common_pb2.Status):
        return resp
    if resp is not None and hasattr(resp, "status") and resp.HasField("status"):
        return resp.status
    return None


def kv_dict(pairs) -> dict[str, str]:
    return {p.key: p.value for p in pairs}


def normalize_version(text: str) -> str:
    text = text.strip()
    if not re.match(r"^v?\d+\.\d+\.\d+", text):
        raise argparse.ArgumentTypeError(f"not a version: {text!r} (want e.g. v2.6.3)")
    return text if text.startswith("v") else f"v{text}"


def sweep_stale_temp_dirs() -> None:
    """Remove the temp data dirs of servers that are gone. The test harness kills a server with
    SIGKILL (kill_on_drop), which leaves no chance to clean up; the next start does it."""
    base = tempfile.gettempdir()
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for entry in entries:
        m = re.match(rf"^{re.escape(TEMP_PREFIX)}(\d+)-", entry)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its server still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


def version_tuple(version: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version)
    assert m is not None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# --------------------------------------------------------------------------------------------
# Filter expressions: JSON-path `in`
# --------------------------------------------------------------------------------------------


def install_json_path_in() -> None:
    """Teach milvus-lite's filter language `<json path> [not] in [v1, v2]`.

    Milvus accepts Dify's `metadata["document_id"] in ["a","b"]`; milvus-lite's parser wants a
    bare field on the left of `in` ("left side of 'in' must be a field reference"), although
    its type check and row evaluator handle any operand there. Two patches of this pinned
    milvus-lite: the parser takes a JSON path (or `$meta[...]`) on the left of `in`, and the row
    evaluator parses the row's JSON once and tests membership in the literal set (built once
    per expression), so a long list costs one JSON parse per row, not one per value (the
    `==`/`or` form Milvus would also take). A missing key or JSON null
    is null: it matches neither `in` nor `not in`, as milvus-lite treats nulls elsewhere."""
    if getattr(fparser.Parser, "_upkeep_json_path_in", False):
        return
    plain_in_tail = fparser.Parser._parse_in_tail

    def parse_in_tail(self, left, negate):
        if not isinstance(left, (PathAccess, MetaAccess)):
            return plain_in_tail(self, left, negate)
        in_tok = self._consume()  # IN
        if self._peek().kind != TokenKind.LBRACKET:
            tok = self._peek()
            raise FilterParseError(
                f"expected '[' after 'in', got {tok.text!r}", self.source, tok.pos,
                hint="'in' must be followed by a literal list, e.g. [1, 2, 3]",
            )
        return InOp(field=left, values=self.parse_list_literal(), negate=negate, pos=in_tok.pos)

    fparser.Parser._parse_in_tail = parse_in_tail
    fparser.Parser._upkeep_json_path_in = True

    @functools.lru_cache(maxsize=1024)
    def members(values) -> tuple[frozenset, tuple]:
        hashable, other = set(), []
        for el in values.elements:
            v = python_backend._eval_row(el, {})
            try:
                hashable.add(v)
            except TypeError:
                other.append(v)
        return frozenset(hashable), tuple(other)

    plain_eval_row = python_backend._eval_row

    def eval_row(node, row):
        if isinstance(node, InOp) and not isinstance(node.field, FieldRef):
            val = eval_row(node.field, row)
            if val is None:
                return None
            hashable, other = members(node.values)
            try:
                found = val in hashable
            except TypeError:  # a JSON object or array: compare by value
                found = False
            if not found and other:
                found = any(val == o for o in other)
            return (not found) if node.negate else found
        return plain_eval_row(node, row)

    # collection.py and the other backends look `_eval_row` up at call time
    python_backend._eval_row = eval_row


def is_primary_key_expr(expr: str, pk_name: str) -> bool:
    """Milvus deletes by `pk in [...]` / `pk == v` without a query (a "simple delete"), which
    needs no loaded collection; any other filter is queried first, which does."""
    if not expr:
        return False
    try:
        node = parse_expr(expr)
    except Exception:  # noqa: BLE001
        return False
    if isinstance(node, InOp):
        return isinstance(node.field, FieldRef) and node.field.name == pk_name and not node.negate
    if isinstance(node, CmpOp) and node.op == "==":
        sides = (node.left, node.right)
        return any(isinstance(s, FieldRef) and s.name == pk_name for s in sides)
    return False


# --------------------------------------------------------------------------------------------
# What this server keeps per collection (milvus-lite keeps the data)
# --------------------------------------------------------------------------------------------


@dataclass
class Index:
    field_name: str
    index_name: str
    index_name_requested: str
    index_id: int
    extra_params: list[tuple[str, str]]
    created_ts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "field_name": self.field_name,
            "index_name": self.index_name,
            "index_name_requested": self.index_name_requested,
            "index_id": self.index_id,
            "extra_params": {k: v for k, v in self.extra_params},
            "extra_params_kv": [[k, v] for k, v in self.extra_params],
        }


@dataclass
class Coll:
    db: str
    name: str
    collection_id: int
    created_ts: int
    created_ms: int
    schema: schema_pb2.CollectionSchema
    schema_raw: bytes
    consistency_level: int
    consistency_level_requested: int
    shards_num: int
    properties: list[tuple[str, str]]
    indexes: dict[str, Index] = field(default_factory=dict)
    load: str = "NotLoad"  # NotLoad | Loading | Loaded
    loading_polls: int = 0
    rows_written: int = 0
    rows_flushed: int = 0

    @property
    def pk(self) -> schema_pb2.FieldSchema:
        return next(f for f in self.schema.fields if f.is_primary_key)

    def function_outputs(self) -> set[str]:
        out: set[str] = set()
        for fn in self.schema.functions:
            out.update(fn.output_field_names)
        for f in self.schema.fields:
            if f.is_function_output:
                out.add(f.name)
        return out

    def bm25_outputs(self) -> set[str]:
        out: set[str] = set()
        for fn in self.schema.functions:
            if fn.type == schema_pb2.FunctionType.BM25:
                out.update(fn.output_field_names)
        return out

    def field_named(self, name: str) -> schema_pb2.FieldSchema | None:
        return next((f for f in self.schema.fields if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        fields = []
        for f in self.schema.fields:
            fields.append({
                "name": f.name,
                "field_id": f.fieldID,
                "data_type": schema_pb2.DataType.Name(f.data_type),
                "element_type": schema_pb2.DataType.Name(f.element_type) if f.element_type else None,
                "type_params": kv_dict(f.type_params),
                "index_params": kv_dict(f.index_params),
                "is_primary_key": f.is_primary_key,
                "autoID": f.autoID,
                "is_partition_key": f.is_partition_key,
                "is_clustering_key": f.is_clustering_key,
                "is_function_output": f.is_function_output,
                "is_dynamic": f.is_dynamic,
                "nullable": f.nullable,
                "description": f.description,
            })
        functions = [
            {
                "name": fn.name,
                "id": fn.id,
                "type": schema_pb2.FunctionType.Name(fn.type),
                "input_field_names": list(fn.input_field_names),
                "output_field_names": list(fn.output_field_names),
                "params": kv_dict(fn.params),
                "description": fn.description,
            }
            for fn in self.schema.functions
        ]
        return {
            "db_name": self.db,
            "collection_name": self.name,
            "collection_id": self.collection_id,
            "schema": {
                "name": self.schema.name,
                "description": self.schema.description,
                "auto_id": self.schema.autoID,
                "enable_dynamic_field": self.schema.enable_dynamic_field,
                "fields": fields,
                "functions": functions,
            },
            "schema_received": json_format.MessageToDict(
                schema_pb2.CollectionSchema.FromString(self.schema_raw),
                preserving_proto_field_name=True,
            ),
            "consistency_level": common_pb2.ConsistencyLevel.Name(self.consistency_level),
            "consistency_level_requested": self.consistency_level_requested,
            "shards_num": self.shards_num,
            "properties": {k: v for k, v in self.properties},
            "indexes": [ix.to_json() for ix in self.indexes.values()],
            "load_state": self.load,
            "rows_written": self.rows_written,
            "rows_flushed": self.rows_flushed,
        }

    # persistence (only with --data-dir: the data outlives the process, so must this)
    def dump(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "name": self.name,
            "collection_id": self.collection_id,
            "created_ts": self.created_ts,
            "created_ms": self.created_ms,
            "schema": base64.b64encode(self.schema.SerializeToString()).decode(),
            "schema_raw": base64.b64encode(self.schema_raw).decode(),
            "consistency_level": self.consistency_level,
            "consistency_level_requested": self.consistency_level_requested,
            "shards_num": self.shards_num,
            "properties": self.properties,
            "indexes": [
                {
                    "field_name": ix.field_name,
                    "index_name": ix.index_name,
                    "index_name_requested": ix.index_name_requested,
                    "index_id": ix.index_id,
                    "extra_params": ix.extra_params,
                    "created_ts": ix.created_ts,
                }
                for ix in self.indexes.values()
            ],
            "load": "Loaded" if self.load != "NotLoad" else "NotLoad",
            "rows_written": self.rows_written,
            "rows_flushed": self.rows_flushed,
        }

    @staticmethod
    def undump(d: dict[str, Any]) -> "Coll":
        c = Coll(
            db=d["db"],
            name=d["name"],
            collection_id=d["collection_id"],
            created_ts=d["created_ts"],
            created_ms=d["created_ms"],
            schema=schema_pb2.CollectionSchema.FromString(base64.b64decode(d["schema"])),
            schema_raw=base64.b64decode(d["schema_raw"]),
            consistency_level=d["consistency_level"],
            consistency_level_requested=d["consistency_level_requested"],
            shards_num=d["shards_num"],
            properties=[tuple(p) for p in d["properties"]],
            load=d["load"],
            rows_written=d["rows_written"],
            rows_flushed=d["rows_flushed"],
        )
        for ix in d["indexes"]:
            c.indexes[ix["field_name"]] = Index(
                field_name=ix["field_name"],
                index_name=ix["index_name"],
                index_name_requested=ix["index_name_requested"],
                index_id=ix["index_id"],
                extra_params=[tuple(p) for p in ix["extra_params"]],
                created_ts=ix["created_ts"],
            )
        return c


class State:
    """Everything the servicer and the side channel share. `lock` serialises every RPC:
    milvus-lite's engine is single-writer per collection."""

    def __init__(self, state_file: str | None) -> None:
        self.lock = threading.RLock()
        self.tso = Tso()
        self.colls: dict[tuple[str, str], Coll] = {}
        self.next_id = 457000000000000000 + (int(time.time()) % 100000) * 1000
        self.state_file = state_file
        self.requests: collections.deque = collections.deque(maxlen=1000)
        if state_file and os.path.exists(state_file):
            with open(state_file) as fh:
                data = json.load(fh)
            self.next_id = data["next_id"]
            for d in data["collections"]:
                c = Coll.undump(d)
                self.colls[(c.db, c.name)] = c

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def save(self) -> None:
        if not self.state_file:
            return
        data = {"next_id": self.next_id, "collections": [c.dump() for c in self.colls.values()]}
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.state_file)

    def layout(self) -> dict[str, Any]:
        with self.lock:
            out = {}
            for (db, name), c in sorted(self.colls.items()):
                key = name if db == DEFAULT_DATABASE_NAME else f"{db}/{name}"
                out[key] = c.to_json()
            return out


# --------------------------------------------------------------------------------------------
# The servicer: milvus-lite's, made strict
# --------------------------------------------------------------------------------------------


class StrictServicer(MilvusServicer):
    def __init__(self, db: MilvusLite, state: State, version: str, load_polls: int) -> None:
        super().__init__(db)
        self.state = state
        self.version = version
        self.load_polls = load_polls

    # ── lookups ────────────────────────────────────────────────

    def _db_name(self, request, context) -> str:
        return self._database_name(request, context)

    def _lookup(self, request, context, name: str | None = None):
        """(lite collection, record) or (None, None) when the collection does not exist."""
        db = self._db_name(request, context)
        try:
            col = self._db.get_collection(name if name is not None else request.collection_name, database_name=db)
        except CollectionNotFoundError:
            return None, None
        rec = self.state.colls.get((db, col.name))
        if rec is None:
            rec = self._adopt(db, col)
        return col, rec

    def _adopt(self, db: str, col) -> Coll:
        """A collection milvus-lite has and this server never saw created (a --data-dir from
        before the state file existed): describe it as milvus-lite does, not loaded."""
        from milvus_lite.adapter.grpc.translators.schema import milvus_lite_to_milvus_schema

        schema = milvus_lite_to_milvus_schema(col.name, col.schema)
        raw = schema.SerializeToString()
        self._assign_ids(schema)
        ts = self.state.tso.next()
        rec = Coll(
            db=db, name=col.name, collection_id=self.state.new_id(), created_ts=ts, created_ms=ts >> 18,
            schema=schema, schema_raw=raw, consistency_level=common_pb2.ConsistencyLevel.Bounded,
            consistency_level_requested=-1, shards_num=1, properties=[],
        )
        self.state.colls[(db, col.name)] = rec
        return rec

    @staticmethod
    def _assign_ids(schema: schema_pb2.CollectionSchema) -> None:
        # rootcoord: user fields from 100 (0 and 1 are RowID and Timestamp), functions from 100
        ids = {}
        for i, f in enumerate(schema.fields):
            f.fieldID = 100 + i
            ids[f.name] = f.fieldID
        for i, fn in enumerate(schema.functions):
            fn.id = 100 + i
            del fn.input_field_ids[:]
            del fn.output_field_ids[:]
            fn.input_field_ids.extend(ids.get(n, 0) for n in fn.input_field_names)
            fn.output_field_ids.extend(ids.get(n, 0) for n in fn.output_field_names)
            for n in fn.output_field_names:
                for f in schema.fields:
                    if f.name == n:
                        f.is_function_output = True

    def _not_found(self, request, context, name: str | None = None) -> common_pb2.Status:
        db = self._db_name(request, context)
        return status(
            CODE_COLLECTION_NOT_FOUND,
            f"collection not found[database={db}][collection={name or request.collection_name}]",
        )

    def _not_loaded(self, rec: Coll, what: str) -> common_pb2.Status | None:
        if rec.load == "Loaded":
            return None
        if rec.load == "Loading":
            return status(CODE_COLLECTION_NOT_FULLY_LOADED,
                          f"failed to {what}: collection not fully loaded[collection={rec.collection_id}]")
        return status(CODE_COLLECTION_NOT_LOADED,
                      f"failed to {what}: collection not loaded[collection={rec.collection_id}]")

    @staticmethod
    def _lite_loaded(col) -> None:
        # milvus-lite blocks reads of a collection with an index until load(); this server keeps
        # its own load state, so milvus-lite stays loaded.
        if col.load_state != "loaded":
            col.load()

    def _record(self, method: str, request, context, expr: str | None, **extra) -> None:
        self.state.requests.append({
            "method": method,
            "db_name": self._db_name(request, context),
            "collection_name": request.collection_name,
            "expr": expr,
            "consistency_level": common_pb2.ConsistencyLevel.Name(request.consistency_level)
            if hasattr(request, "consistency_level") else None,
            "use_default_consistency": getattr(request, "use_default_consistency", None),
            "guarantee_timestamp": getattr(request, "guarantee_timestamp", None),
            **extra,
        })

    def _output_fields(self, rec: Coll, requested: list[str], for_search: bool) -> tuple[list[str], common_pb2.Status | None]:
        """Milvus' translateOutputFields: `*` is every field a client may read back (not a
        function's output), a function output named explicitly is refused."""
        outputs = rec.function_outputs()
        names = [f.name for f in rec.schema.fields]
        result: list[str] = []
        for name in requested:
            if name == "*":
                for n in names:
                    if n not in outputs and n not in result:
                        result.append(n)
                continue
            if name in outputs:
                return [], status(CODE_UNEXPECTED, f"not allowed to retrieve raw data of field {name}")
            if name not in result:
                result.append(name)
        if not result and not for_search:
            result = [rec.pk.name]
        return result, None

    # ── connection ─────────────────────────────────────────────

    def Connect(self, request, context):
        return milvus_pb2.ConnectResponse(
            status=common_pb2.Status(),
            server_info=common_pb2.ServerInfo(build_tags=self.version, deploy_mode="STANDALONE"),
            identifier=self.state.new_id() % 1_000_000_000,
        )

    def GetVersion(self, request, context):
        return milvus_pb2.GetVersionResponse(status=common_pb2.Status(), version=self.version)

    def AllocTimestamp(self, request, context):
        return milvus_pb2.AllocTimestampResponse(status=common_pb2.Status(), timestamp=self.state.tso.next())

    # ── collections ────────────────────────────────────────────

    def CreateCollection(self, request, context):
        name = request.collection_name
        if not name:
            return invalid("Invalid collection name: . collection name should not be empty")
        if not (name[0].isalpha() or name[0] == "_") or not name[0].isascii():
            return invalid(f"Invalid collection name: {name}. the first character of a collection name must be an underscore or letter")
        if not COLLECTION_NAME.match(name):
            return invalid(f"Invalid collection name: {name}. collection name can only contain numbers, letters and underscores")
        db = self._db_name(request, context)
        schema = schema_pb2.CollectionSchema()
        try:
            schema.ParseFromString(request.schema)
        except Exception as e:  # noqa: BLE001
            return status(CODE_UNEXPECTED, f"failed to unmarshal collection schema: {e}")
        existing = self.state.colls.get((db, name))
        if existing is not None and self._db.has_collection(name, database_name=db):
            # rootcoord: the same request again is a no-op, a different one an error
            if existing.schema_raw == request.schema and existing.consistency_level_requested == request.consistency_level:
                return common_pb2.Status()
            return status(CODE_UNEXPECTED, f"create duplicate collection with different parameters, collection: {name}")
        st = super().CreateCollection(request, context)
        if st.code != 0 or st.error_code != 0:
            return st
        stored = schema_pb2.CollectionSchema()
        stored.CopyFrom(schema)
        stored.name = name
        self._assign_ids(stored)
        ts = self.state.tso.next()
        self.state.colls[(db, name)] = Coll(
            db=db, name=name, collection_id=self.state.new_id(), created_ts=ts, created_ms=ts >> 18,
            schema=stored, schema_raw=bytes(request.schema),
            consistency_level=request.consistency_level,
            consistency_level_requested=request.consistency_level,
            shards_num=request.shards_num or 1,
            properties=[(p.key, p.value) for p in request.properties],
        )
        self.state.save()
        return st

    def DropCollection(self, request, context):
        db = self._db_name(request, context)
        col, _rec = self._lookup(request, context)
        st = super().DropCollection(request, context)
        if st.code == 0 and st.error_code == 0 and col is not None:
            self.state.colls.pop((db, col.name), None)
            self.state.save()
        return st

    def RenameCollection(self, request, context):
        db = request.db_name or self._db_name(request, context)
        st = super().RenameCollection(request, context)
        if st.code == 0 and st.error_code == 0:
            rec = self.state.colls.pop((db, request.oldName), None)
            if rec is not None:
                rec.db = request.newDBName or db
                rec.name = request.newName
                rec.schema.name = request.newName
                self.state.colls[(rec.db, rec.name)] = rec
                self.state.save()
        return st

    def DescribeCollection(self, request, context):
        name = request.collection_name
        col, rec = self._lookup(request, context) if name else (None, None)
        resp = super().DescribeCollection(request, context)
        if col is None or rec is None:
            if resp.status.code != 0 or resp.status.error_code != 0:
                db = self._db_name(request, context)
                resp.status.CopyFrom(status(
                    CODE_COLLECTION_NOT_FOUND,
                    f"can't find collection[database={db}][collection={name}]",
                ))
            return resp
        resp.schema.CopyFrom(rec.schema)
        resp.collectionID = rec.collection_id
        resp.collection_name = rec.name
        resp.created_timestamp = rec.created_ts
        resp.created_utc_timestamp = rec.created_ms
        resp.consistency_level = rec.consistency_level
        resp.shards_num = rec.shards_num
        resp.db_name = rec.db
        del resp.properties[:]
        resp.properties.extend(common_pb2.KeyValuePair(key=k, value=v) for k, v in rec.properties)
        del resp.virtual_channel_names[:]
        del resp.physical_channel_names[:]
        for i in range(rec.shards_num):
            resp.physical_channel_names.append(f"by-dev-rootcoord-dml_{i}")
            resp.virtual_channel_names.append(f"by-dev-rootcoord-dml_{i}_{rec.collection_id}v{i}")
        return resp

    def ShowCollections(self, request, context):
        resp = super().ShowCollections(request, context)
        if resp.status.code != 0 or resp.status.error_code != 0:
            return resp
        db = self._db_name(request, context)
        del resp.inMemory_percentages[:]
        del resp.query_service_available[:]
        for name in resp.collection_names:
            _col, rec = self._lookup(request, context, name)
            if rec is None:
                rec = self.state.colls.get((db, name))
            loaded = rec is not None and rec.load == "Loaded"
            resp.collection_ids.append(rec.collection_id if rec else 0)
            resp.created_timestamps.append(rec.created_ts if rec else 0)
            resp.created_utc_timestamps.append(rec.created_ms if rec else 0)
            resp.inMemory_percentages.append(100 if loaded else 0)
            resp.query_service_available.append(loaded)
        return resp

    def GetCollectionStatistics(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.GetCollectionStatisticsResponse, self._not_found(request, context))
        resp = super().GetCollectionStatistics(request, context)
        if resp.status.code != 0:
            return resp
        # Milvus counts the rows of flushed segments; deleted rows stay in until compaction.
        del resp.stats[:]
        resp.stats.append(common_pb2.KeyValuePair(key="row_count", value=str(rec.rows_flushed)))
        return resp

    def Flush(self, request, context):
        resp = super().Flush(request, context)
        if resp.status.code != 0:
            return resp
        db = self._db_name(request, context)
        resp.db_name = db
        for name in request.collection_names:
            _col, rec = self._lookup(request, context, name)
            if rec is None:
                continue
            rec.rows_flushed = rec.rows_written
            resp.coll_flush_ts[name] = self.state.tso.next()
            resp.coll_seal_times[name] = int(time.time())
            resp.coll_segIDs[name].CopyFrom(schema_pb2.LongArray())
            resp.flush_coll_segIDs[name].CopyFrom(schema_pb2.LongArray())
        self.state.save()
        return resp

    # ── load state ─────────────────────────────────────────────

    def LoadCollection(self, request, context):
        col, rec = self._lookup(request, context)
        if rec is None:
            return self._not_found(request, context)
        if rec.load in ("Loaded", "Loading"):
            return common_pb2.Status()
        if not rec.indexes:
            return status(CODE_INDEX_NOT_FOUND, f"index not found[collection={rec.name}]")
        unindexed = [f.name for f in rec.schema.fields if f.data_type in VECTOR_TYPES and f.name not in rec.indexes]
        if unindexed:
            return status(
                CODE_UNEXPECTED,
                f"there is no vector index on field: [{' '.join(unindexed)}], please create index firstly",
            )
        self._lite_loaded(col)
        if self.load_polls > 0:
            rec.load = "Loading"
            rec.loading_polls = self.load_polls
        else:
            rec.load = "Loaded"
        self.state.save()
        return common_pb2.Status()

    def ReleaseCollection(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return self._not_found(request, context)
        rec.load = "NotLoad"
        self.state.save()
        return common_pb2.Status()

    def _poll_loading(self, rec: Coll) -> None:
        if rec.load == "Loading":
            rec.loading_polls -= 1
            if rec.loading_polls <= 0:
                rec.load = "Loaded"

    def GetLoadState(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return milvus_pb2.GetLoadStateResponse(
                status=common_pb2.Status(), state=common_pb2.LoadState.LoadStateNotExist
            )
        self._poll_loading(rec)
        state = {
            "NotLoad": common_pb2.LoadState.LoadStateNotLoad,
            "Loading": common_pb2.LoadState.LoadStateLoading,
            "Loaded": common_pb2.LoadState.LoadStateLoaded,
        }[rec.load]
        return milvus_pb2.GetLoadStateResponse(status=common_pb2.Status(), state=state)

    def GetLoadingProgress(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.GetLoadingProgressResponse, self._not_found(request, context))
        if rec.load == "NotLoad":
            return answer(
                milvus_pb2.GetLoadingProgressResponse,
                status(CODE_COLLECTION_NOT_LOADED, f"collection not loaded[collection={rec.collection_id}]"),
            )
        self._poll_loading(rec)
        progress = 100 if rec.load == "Loaded" else 50
        return milvus_pb2.GetLoadingProgressResponse(
            status=common_pb2.Status(), progress=progress, refresh_progress=progress
        )

    # ── indexes ────────────────────────────────────────────────

    def CreateIndex(self, request, context):
        col, rec = self._lookup(request, context)
        if rec is None:
            return self._not_found(request, context)
        fs = rec.field_named(request.field_name)
        if fs is None:
            return status(CODE_UNEXPECTED, f"cannot create index on non-exist field: {request.field_name}")
        sent = [(p.key, p.value) for p in request.extra_params]
        index_name = request.index_name or request.field_name
        existing = rec.indexes.get(fs.name)
        if existing is not None:
            if existing.extra_params == sent and existing.index_name == index_name:
                return common_pb2.Status()
            return status(CODE_UNEXPECTED, "CreateIndex failed: at most one distinct index is allowed per field")
        for other in rec.indexes.values():
            if other.index_name == index_name:
                return status(CODE_UNEXPECTED, "CreateIndex failed: index already exist, but parameters are inconsistent")
        lite_req = milvus_pb2.CreateIndexRequest()
        lite_req.CopyFrom(request)
        del lite_req.extra_params[:]
        lite_req.extra_params.extend(
            common_pb2.KeyValuePair(key=k, value=v) for k, v in self._lite_index_params(rec, fs, sent).items()
        )
        st = super().CreateIndex(lite_req, context)
        if st.code != 0 or st.error_code != 0:
            return st
        rec.indexes[fs.name] = Index(
            field_name=fs.name, index_name=index_name, index_name_requested=request.index_name,
            index_id=self.state.new_id(), extra_params=sent, created_ts=self.state.tso.next(),
        )
        self.state.save()
        return st

    @staticmethod
    def _lite_index_params(rec: Coll, fs: schema_pb2.FieldSchema, sent: list[tuple[str, str]]) -> dict[str, str]:
        """What milvus-lite understands: index_type, metric_type and one `params` JSON object
        (Milvus also takes build params as separate pairs, which is how pymilvus sends them)."""
        kv = dict(sent)
        build: dict[str, Any] = {}
        if kv.get("params"):
            try:
                parsed = json.loads(kv["params"])
                if isinstance(parsed, dict):
                    build.update(parsed)
            except ValueError:
                pass
        for k, v in sent:
            if k in ("index_type", "metric_type", "params", "search_params"):
                continue
            try:
                build[k] = json.loads(v)
            except ValueError:
                build[k] = v
        index_type = (kv.get("index_type") or "AUTOINDEX").upper()
        metric = kv.get("metric_type")
        out: dict[str, str] = {}
        if fs.data_type == schema_pb2.DataType.SparseFloatVector:
            if index_type == "AUTOINDEX":
                index_type = "SPARSE_INVERTED_INDEX"
            if not metric:
                metric = "BM25" if fs.name in rec.function_outputs() else "IP"
        elif fs.data_type in VECTOR_TYPES and not metric:
            metric = "COSINE"
        out["index_type"] = index_type
        if metric:
            out["metric_type"] = metric
        if build:
            out["params"] = json.dumps(build)
        if kv.get("search_params"):
            out["search_params"] = kv["search_params"]
        return out

    def _find_index(self, rec: Coll, index_name: str, field_name: str) -> list[Index]:
        found = list(rec.indexes.values())
        if index_name:
            found = [ix for ix in found if ix.index_name == index_name]
        if field_name:
            found = [ix for ix in found if ix.field_name == field_name]
        return found

    def _index_not_found(self, rec: Coll, index_name: str) -> common_pb2.Status:
        if index_name:
            return status(CODE_INDEX_NOT_FOUND, f"index not found[indexName={index_name}]")
        return status(CODE_INDEX_NOT_FOUND, f"index not found[collection={rec.name}]")

    def DescribeIndex(self, request, context):
        col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.DescribeIndexResponse, self._not_found(request, context))
        found = self._find_index(rec, request.index_name, request.field_name)
        if not found:
            return answer(milvus_pb2.DescribeIndexResponse, self._index_not_found(rec, request.index_name))
        rows = col.num_entities
        resp = milvus_pb2.DescribeIndexResponse(status=common_pb2.Status())
        for ix in found:
            resp.index_descriptions.append(milvus_pb2.IndexDescription(
                index_name=ix.index_name,
                indexID=ix.index_id,
                field_name=ix.field_name,
                params=[common_pb2.KeyValuePair(key=k, value=v) for k, v in ix.extra_params],
                indexed_rows=rows,
                total_rows=rows,
                pending_index_rows=0,
                state=common_pb2.IndexState.Finished,
                index_state_fail_reason="",
            ))
        return resp

    def GetIndexState(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.GetIndexStateResponse, self._not_found(request, context))
        found = self._find_index(rec, request.index_name, request.field_name)
        if not found:
            return answer(milvus_pb2.GetIndexStateResponse, self._index_not_found(rec, request.index_name))
        return milvus_pb2.GetIndexStateResponse(status=common_pb2.Status(), state=common_pb2.IndexState.Finished)

    def GetIndexBuildProgress(self, request, context):
        col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.GetIndexBuildProgressResponse, self._not_found(request, context))
        found = self._find_index(rec, request.index_name, request.field_name)
        if not found:
            return answer(milvus_pb2.GetIndexBuildProgressResponse, self._index_not_found(rec, request.index_name))
        rows = col.num_entities
        return milvus_pb2.GetIndexBuildProgressResponse(
            status=common_pb2.Status(), indexed_rows=rows, total_rows=rows
        )

    def DropIndex(self, request, context):
        col, rec = self._lookup(request, context)
        if rec is None:
            return self._not_found(request, context)
        found = self._find_index(rec, request.index_name, request.field_name)
        if not found:
            return self._index_not_found(rec, request.index_name)
        if rec.load != "NotLoad":
            return status(
                CODE_COLLECTION_LOADED,
                f"index cannot be dropped, collection is loaded, please release it first: "
                f"collection already loaded[collection={rec.collection_id}]",
            )
        col.release()
        try:
            for ix in found:
                col.drop_index(ix.field_name)
                del rec.indexes[ix.field_name]
        finally:
            self._lite_loaded(col)
        self.state.save()
        return common_pb2.Status()

    # ── writes ─────────────────────────────────────────────────

    def _check_rows(self, rec: Coll, request, insert: bool) -> common_pb2.Status | None:
        pk = rec.pk
        if insert and pk.autoID and any(fd.field_name == pk.name for fd in request.fields_data):
            if version_tuple(self.version) >= (2, 6, 0):
                return invalid(
                    f"can not assign primary field data when auto id enabled and allow_insert_auto_id is false {pk.name}"
                )
            return status(CODE_UNEXPECTED, f"can not assign primary field data when auto id enabled {pk.name}")
        for fd in request.fields_data:
            fs = rec.field_named(fd.field_name)
            if fs is None:
                continue
            if fs.data_type == schema_pb2.DataType.FloatVector and fd.type == schema_pb2.DataType.FloatVector:
                want = int(kv_dict(fs.type_params).get("dim", "0") or 0)
                got = fd.vectors.dim
                if want and got != want:
                    return status(
                        CODE_PARAMETER_INVALID,
                        f"the dim ({got}) of field data({fs.name}) is not equal to schema dim ({want}): "
                        f"invalid parameter[expected={want}][actual={got}]",
                    )
            if fs.data_type == schema_pb2.DataType.VarChar and not fs.autoID:
                limit = kv_dict(fs.type_params).get("max_length")
                if not limit:
                    continue
                limit_n = int(limit)
                for row, text in enumerate(fd.scalars.string_data.data):
                    size = len(text.encode("utf-8"))
                    if size > limit_n:
                        return invalid(
                            f"length of varchar field {fs.name} exceeds max length, row number: {row}, "
                            f"length: {size}, max length: {limit_n}"
                        )
        return None

    def Insert(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.MutationResult, self._not_found(request, context))
        bad = self._check_rows(rec, request, insert=True)
        if bad is not None:
            return answer(milvus_pb2.MutationResult, bad)
        resp = super().Insert(request, context)
        if resp.status.code == 0 and resp.status.error_code == 0:
            rec.rows_written += resp.insert_cnt
            resp.timestamp = self.state.tso.next()
            self.state.save()
        return resp

    def Upsert(self, request, context):
        _col, rec = self._lookup(request, context)
        if rec is None:
            return answer(milvus_pb2.MutationResult, self._not_found(request, context))
        bad = self._check_rows(rec, request, insert=False)
        if bad is not None:
            return answer(milvus_pb2.MutationResult, bad)
        resp = super().Upsert(request, context)
        if resp.status.code == 0 and resp.status.error_code == 0:
            rec.rows_written += resp.upsert_cnt
            resp.timestamp = self.state.tso.next()
            self.state.save()
        return resp

    def Delete(self, request, context):
        col, rec = self._lookup(request, context)
        self._record("Delete", request, context, request.expr)
        if rec is None:
            return answer(milvus_pb2.MutationResult, self._not_found(request, context))
        if not is_primary_key_expr(request.expr, rec.pk.name):
            bad = self._not_loaded(rec, "delete")
            if bad is not None:
                return answer(milvus_pb2.MutationResult, bad)
        self._lite_loaded(col)
        resp = super().Delete(request, context)
        if resp.status.code == 0 and resp.status.error_code == 0:
            resp.timestamp = self.state.tso.next()
        return resp

    # ── reads ──────────────────────────────────────────────────

    def Query(self, request, context):
        col, rec = self._lookup(request, context)
        expr = request.expr
        params = kv_dict(request.query_params)
        self._record("Query", request, context, expr,
                     output_fields=list(request.output_fields), query_params=params)
        if rec is None:
            return answer(milvus_pb2.QueryResults, self._not_found(request, context))
        is_count = any(f.strip().lower() == "count(*)" for f in request.output_fields)
        fields: list[str] = list(request.output_fields)
        if not is_count:
            fields, bad = self._output_fields(rec, list(request.output_fields), for_search=False)
            if bad is not None:
                return answer(milvus_pb2.QueryResults, bad)
        has_limit = "limit" in params
        if has_limit:
            try:
                limit = int(params["limit"])
            except ValueError:
                return answer(milvus_pb2.QueryResults, status(CODE_UNEXPECTED, f"limit [{params['limit']}] is invalid"))
            try:
                offset = int(params.get("offset", "0") or 0)
            except ValueError:
                return answer(milvus_pb2.QueryResults, status(CODE_UNEXPECTED, f"offset [{params['offset']}] is invalid"))
            problem = None
            if offset < 0:
                problem = f"offset [{offset}] is invalid, should be gte than 0"
            elif limit <= 0:
                problem = f"limit [{limit}] is invalid, should be greater than 0"
            elif offset + limit > MAX_QUERY_RESULT_WINDOW:
                problem = (f"(offset+limit) should be in range [1, {MAX_QUERY_RESULT_WINDOW}], "
                           f"but got {offset + limit}")
            if problem:
                return answer(milvus_pb2.QueryResults,
                              status(CODE_UNEXPECTED, f"invalid max query result window, {problem}"))
        elif not expr.strip() and not is_count:
            return answer(milvus_pb2.QueryResults, status(CODE_UNEXPECTED, "empty expression should be used with limit"))
        bad = self._not_loaded(rec, "query")
        if bad is not None:
            return answer(milvus_pb2.QueryResults, bad)
        fwd = milvus_pb2.QueryRequest()
        fwd.CopyFrom(request)
        del fwd.output_fields[:]
        fwd.output_fields.extend(fields)
        self._lite_loaded(col)
        resp = super().Query(fwd, context)
        if resp.status.code == 0:
            resp.session_ts = self.state.tso.next()  # the MVCC timestamp a query iterator pins
        return resp

    def _prepare_search(self, rec: Coll, request) -> tuple[list[str], common_pb2.Status | None]:
        fields, bad = self._output_fields(rec, list(request.output_fields), for_search=True)
        if bad is not None:
            return [], bad
        return fields, self._not_loaded(rec, "search")

    def Search(self, request, context):
        col, rec = self._lookup(request, context)
        self._record("Search", request, context, request.dsl,
                     output_fields=list(request.output_fields), search_params=kv_dict(request.search_params))
        if rec is None:
            return answer(milvus_pb2.SearchResults, self._not_found(request, context))
        fields, bad = self._prepare_search(rec, request)
        if bad is not None:
            return answer(milvus_pb2.SearchResults, bad)
        fwd = milvus_pb2.SearchRequest()
        fwd.CopyFrom(request)
        del fwd.output_fields[:]
        fwd.output_fields.extend(fields)
        self._lite_loaded(col)
        resp = super().Search(fwd, context)
        anns_field = kv_dict(request.search_params).get("anns_field")
        if resp.status.code == 0 and anns_field in rec.bm25_outputs():
            # milvus-lite answers BM25 scores negated (its smaller-is-better distance); Milvus
            # answers the score, larger is better
            resp.results.scores[:] = [-x for x in resp.results.scores]
        if not fields and resp.status.code == 0:
            # milvus-lite sends every field when none is asked for; Milvus sends ids and scores
            del resp.results.fields_data[:]
            del resp.results.output_fields[:]
        return resp

    def HybridSearch(self, request, context):
        col, rec = self._lookup(request, context)
        self._record("HybridSearch", request, context, None,
                     output_fields=list(request.output_fields),
                     sub_exprs=[r.dsl for r in request.requests])
        if rec is None:
            return answer(milvus_pb2.SearchResults, self._not_found(request, context))
        fields, bad = self._prepare_search(rec, request)
        if bad is not None:
            return answer(milvus_pb2.SearchResults, bad)
        fwd = milvus_pb2.HybridSearchRequest()
        fwd.CopyFrom(request)
        del fwd.output_fields[:]
        fwd.output_fields.extend(fields)
        self._lite_loaded(col)
        resp = super().HybridSearch(fwd, context)
        if not fields and resp.status.code == 0:
            del resp.results.fields_data[:]
            del resp.results.output_fields[:]
        return resp


# --------------------------------------------------------------------------------------------
# Interceptor: counters, auth, faults, "went away"; one RPC at a time
# --------------------------------------------------------------------------------------------


@dataclass
class FaultRule:
    method: str | None
    code: grpc.StatusCode
    after: int
    times: int | None
    message: str
    phase: str
    seen: int = 0
    fired: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method, "code": self.code.name, "after": self.after, "times": self.times,
            "message": self.message, "phase": self.phase, "seen": self.seen, "fired": self.fired,
        }


class Control:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.rules: list[FaultRule] = []
        self.stopped = False

    def add_rule(self, spec: dict[str, Any]) -> FaultRule:
        method = spec.get("method")
        if method in ("", "*"):
            method = None
        if method is not None:
            method = str(method).rsplit("/", 1)[-1]
        code_name = str(spec.get("code", "UNAVAILABLE")).upper()
        try:
            code = grpc.StatusCode[code_name]
        except KeyError:
            raise ValueError(f"unknown gRPC status code {code_name!r}") from None
        if code == grpc.StatusCode.OK:
            raise ValueError("code OK is not a fault")
        phase = spec.get("phase", "before")
        if phase not in ("before", "after"):
            raise ValueError("phase must be 'before' or 'after'")
        times = spec.get("times")
        rule = FaultRule(
            method=method, code=code, after=int(spec.get("after", 0) or 0),
            times=None if times is None else int(times),
            message=str(spec.get("message") or f"injected fault: {code.name}"), phase=phase,
        )
        with self.lock:
            self.rules.append(rule)
        return rule

    def fault_for(self, method: str) -> FaultRule | None:
        """Counts the call against every matching rule; the first one that fires wins."""
        hit = None
        with self.lock:
            for rule in self.rules:
                if rule.method is not None and rule.method != method:
                    continue
                rule.seen += 1
                if hit is None and rule.seen > rule.after and (rule.times is None or rule.fired < rule.times):
                    rule.fired += 1
                    hit = rule
        return hit


class Gate(grpc.ServerInterceptor):
    def __init__(self, control: Control, state: State, token: str | None) -> None:
        self.control = control
        self.state = state
        self.token = token

    def intercept_service(self, continuation, handler_call_details):
        full = handler_call_details.method
        method = full[len(METHOD_PREFIX):] if full.startswith(METHOD_PREFIX) else full
        with self.control.lock:
            self.control.calls[method] += 1
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        metadata = handler_call_details.invocation_metadata or ()
        gate = self

        def behaviour(request, context):
            if gate.control.stopped:
                context.abort(grpc.StatusCode.UNAVAILABLE, "milvus test server: stopped (POST /stop)")
            gate.check_auth(metadata, context)
            fault = gate.control.fault_for(method)
            if fault is not None and fault.phase == "before":
                context.abort(fault.code, fault.message)
            with gate.state.lock:
                try:
                    resp = inner(request, context)
                except Exception as e:  # noqa: BLE001 - a bug here must not kill the server
                    if isinstance(e, grpc.RpcError) or context.code() not in (None, grpc.StatusCode.OK):
                        raise
                    log.exception("%s failed", method)
                    context.abort(grpc.StatusCode.INTERNAL, f"milvus test server internal error: {type(e).__name__}: {e}")
                st = response_status(resp)
                if st is not None:
                    normalize_status(st)
            if fault is not None and fault.phase == "after":
                context.abort(fault.code, fault.message)
            return resp

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def check_auth(self, metadata, context) -> None:
        """internal/proxy/authentication_interceptor.go: `authorization` is base64(user:password)
        or base64(api key); failures are gRPC UNAUTHENTICATED, not a Status in the body."""
        if self.token is None:
            return
        value = None
        for k, v in metadata:
            if k.lower() == "authorization":
                value = v
                break
        if value is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing authorization in header")
        try:
            raw = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token format")
        if raw == self.token:
            return
        if ":" not in raw:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "auth check failure, please check api key is correct")
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "auth check failure, please check username and password are correct",
        )


# --------------------------------------------------------------------------------------------
# HTTP side channel
# --------------------------------------------------------------------------------------------


def make_control_handler(state: State, control: Control, version: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep stderr quiet
            pass

        def send_json(self, code: int, body: Any) -> None:
            data = json.dumps(body, indent=1, sort_keys=True).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def read_json(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw.strip() else {}

        def do_GET(self):
            try:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/layout":
                    self.send_json(200, state.layout())
                elif path == "/calls":
                    with control.lock:
                        self.send_json(200, dict(control.calls))
                elif path == "/requests":
                    with state.lock:
                        self.send_json(200, list(state.requests))
                elif path == "/fault":
                    with control.lock:
                        self.send_json(200, [r.to_json() for r in control.rules])
                elif path == "/health":
                    self.send_json(200, {"ok": True, "version": version, "stopped": control.stopped})
                else:
                    self.send_json(404, {"error": f"no such endpoint: GET {path}"})
            except Exception as e:  # noqa: BLE001
                self.send_json(500, {"error": f"{type(e).__name__}: {e}"})

        def do_POST(self):
            try:
                path = self.path.split("?")[0].rstrip("/")
                body = self.read_json()
                if path == "/fault":
                    if not isinstance(body, dict):
                        raise ValueError("body must be a JSON object")
                    self.send_json(200, control.add_rule(body).to_json())
                elif path == "/fault/clear":
                    with control.lock:
                        control.rules.clear()
                    self.send_json(200, {"ok": True})
                elif path == "/stop":
                    control.stopped = True
                    self.send_json(200, {"ok": True, "stopped": True})
                elif path == "/start":
                    control.stopped = False
                    self.send_json(200, {"ok": True, "stopped": False})
                else:
                    self.send_json(404, {"error": f"no such endpoint: POST {path}"})
            except (ValueError, TypeError) as e:
                self.send_json(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001
                self.send_json(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Strict Milvus gRPC test server over milvus-lite")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="gRPC port, 0 = pick a free one")
    ap.add_argument("--control-port", type=int, default=0, help="HTTP side-channel port, 0 = pick a free one")
    ap.add_argument("--version", type=normalize_version, default=DEFAULT_VERSION,
                    help="what GetVersion answers, e.g. v2.5.15 or v2.6.3 (default v2.6.3)")
    ap.add_argument("--data-dir", default=None, help="keep the data here (default: a temp dir removed on exit)")
    ap.add_argument("--token", default=None, help="require authorization = base64(TOKEN) (user:password or api key)")
    ap.add_argument("--user", default=None, help="with --password: the same as --token USER:PASSWORD")
    ap.add_argument("--password", default=None)
    ap.add_argument("--load-polls", type=int, default=0,
                    help="LoadCollection leaves the collection Loading for N GetLoadState/GetLoadingProgress calls")
    ap.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="stop when stdin closes (give it a pipe: the server then dies with the test process)")
    args = ap.parse_args(argv)

    token = args.token
    if args.user is not None or args.password is not None:
        if token is not None:
            ap.error("--token and --user/--password are exclusive")
        if args.user is None or args.password is None:
            ap.error("--user and --password go together")
        token = f"{args.user}:{args.password}"

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="milvus-test-server: %(message)s")
    temp_dir = None
    if args.data_dir:
        data_dir = args.data_dir
        os.makedirs(data_dir, exist_ok=True)
        state_file = os.path.join(data_dir, STATE_FILE)
    else:
        sweep_stale_temp_dirs()
        temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        data_dir = os.path.join(temp_dir, "data")
        state_file = None

    install_json_path_in()
    db = MilvusLite(data_dir)
    state = State(state_file)
    control = Control()
    stop = threading.Event()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="milvus-test-server"),
        interceptors=[Gate(control, state, token)],
        options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(
        StrictServicer(db, state, args.version, args.load_polls), server
    )
    host = args.host
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    grpc_port = server.add_insecure_port(f"{bind_host}:{args.port}")
    if grpc_port == 0:
        print(f"milvus-test-server: cannot bind gRPC to {host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    httpd = ThreadingHTTPServer((host, args.control_port), make_control_handler(state, control, args.version))
    httpd.daemon_threads = True
    control_port = httpd.server_address[1]

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server.start()
    threading.Thread(target=httpd.serve_forever, name="milvus-test-server-control", daemon=True).start()
    print(
        f"milvus-test-server: Milvus {args.version} (milvus-lite) gRPC on {host}:{grpc_port}, "
        f"control http://{host}:{control_port}, data {data_dir}" + (" (auth required)" if token else ""),
        file=sys.stderr, flush=True,
    )
    sys.stdout.write(f"READY {grpc_port} {control_port}\n")
    sys.stdout.flush()

    if args.exit_on_stdin_eof:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="milvus-test-server-stdin", daemon=True).start()

    while not stop.wait(0.5):
        pass
    server.stop(grace=0.5).wait(2)
    httpd.shutdown()
    httpd.server_close()
    try:
        with state.lock:
            state.save()
            db.close()
    except Exception:  # noqa: BLE001
        log.exception("closing milvus-lite")
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # a worker still inside milvus-lite must not keep the process alive
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
