#!/usr/bin/env python3
"""Qdrant stand-in for Upkeep's integration tests.

A gRPC server that speaks Qdrant's own gRPC API (services `qdrant.Qdrant`, `qdrant.Collections`,
`qdrant.Points`, message definitions from the PyPI package `qdrant-client`) and forwards every
request to `qdrant_client`'s local mode (`QdrantClient(":memory:")`), so scroll, count, search,
filters and upsert follow Qdrant's Python implementation instead of code written here.

What this file adds on top of local mode:
  * the answers a real server of the chosen `--version` gives: its error messages and gRPC status
    codes, and the wire-level version skew (1.8 reads a dense vector only from `Vector.data`,
    `Vector.dense` arrived in 1.13; a server older than 1.17 answers vectors in `data`, 1.17 and
    later in `dense`);
  * a record of every CreateCollection and CreateFieldIndex request, returned by
    `Collections.Get` the way Qdrant does (`config`, `payload_schema`) and by the HTTP side channel;
  * an API key check, call counters and fault injection.

Start:  python tests/servers/qdrant_standin.py --host 127.0.0.1 --port 0 [--version 1.8.3]
                                               [--api-key KEY] [--control-port 0]
When serving it prints one line on stdout:  READY <grpc_port> <control_port>
It stops on SIGTERM/SIGINT (exit 0), and with --exit-on-stdin-eof also when its stdin closes.

Side channel (HTTP/1.1, JSON, on <control_port>, never behind the API key):
  GET  /__debug/collections   recorded create requests, field indexes, point counts per collection
  GET  /__debug/events        every create/delete of a collection or field index, in order
  GET  /__calls               {"Points/Upsert": 3, ...} calls received per method
  GET  /__timeline            [["Points/Upsert", start_s, end_s], ...] when each call's handler
                               ran (seconds on one monotonic clock; the last 100,000 calls)
  POST /__fault               {"fail_after": N, "code": "UNAVAILABLE", "stall_ms": 0,
                               "methods": ["Upsert"], "message": "...", "times": null}
  GET  /__fault               the fault rules and how often each fired
  POST /__fault/clear         drop every fault rule
  POST /__reset               drop collections, recordings, counters and faults
  GET  /__health              {"ok": true, "version": "1.8.3"}

See tests/servers/README.md ("Qdrant stand-in") for the details and what is not faithful.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
import numpy as np
import qdrant_client
from qdrant_client import QdrantClient
from qdrant_client import grpc as pb
from qdrant_client._pydantic_compat import construct
from qdrant_client.conversions.conversion import GrpcToRest, grpc_to_payload, payload_to_grpc
from qdrant_client.http import models
from qdrant_client.local import local_collection
from qdrant_client.local.payload_filters import calculate_payload_mask, check_match
from qdrant_client.local.payload_value_extractor import value_by_key

SC = grpc.StatusCode
TITLE = "qdrant - vector search engine"
DEFAULT_VERSION = "1.8.3"


# --------------------------------------------------------------------------------------------
# Keyword filters at index speed. Local mode checks a filter by walking its whole rule tree
# for every point, about a second per 100,000 points for Dify's `group_id` match, which a real
# server answers from its keyword index. Benches then counted that second against the client
# (verifying one dataset while another is still being written). The shape Dify and Upkeep send,
# `must` of keyword matches, is evaluated here with local mode's own `value_by_key` and
# `check_match`, point by point, so the answer is the same; a plain string value at a top-level
# key takes a shortcut with the same meaning. Any other filter goes to local mode unchanged.
# --------------------------------------------------------------------------------------------


def keyword_conditions(payload_filter) -> list[tuple[str, Any, frozenset]] | None:
    """(key, match, wanted strings) of each condition, if the filter is only keyword matches."""
    f = payload_filter
    # An empty `should` or `must_not` (as every filter arrives over gRPC) constrains nothing.
    if f is None or f.must_not or f.should or f.min_should is not None:
        return None
    must = f.must if isinstance(f.must, list) else [f.must] if f.must is not None else None
    if not must:
        return None
    out = []
    for c in must:
        if not isinstance(c, models.FieldCondition) or c.match is None:
            return None
        others = (c.range, c.geo_bounding_box, c.geo_radius, c.geo_polygon, c.values_count, c.is_empty, c.is_null)
        if any(o is not None for o in others):
            return None
        if isinstance(c.match, models.MatchValue) and type(c.match.value) is str:
            wanted = frozenset([c.match.value])
        elif isinstance(c.match, models.MatchAny) and all(type(v) is str for v in c.match.any):
            wanted = frozenset(c.match.any)
        else:
            return None
        out.append((c.key, c.match, wanted))
    return out


def keyword_mask(payloads, payload_filter, ids_inv, deleted_per_vector):
    """`calculate_payload_mask` with the same answer, fast for filters of keyword matches."""
    conditions = keyword_conditions(payload_filter)
    if conditions is None:
        return calculate_payload_mask(payloads, payload_filter, ids_inv, deleted_per_vector)
    keep = [True] * len(payloads)
    for key, match, wanted in conditions:
        top = "." not in key and "[" not in key

        def matches(payload) -> bool:
            if top:
                v = payload.get(key)
                if type(v) is str:
                    return v in wanted
            values = value_by_key(payload, key)
            return values is not None and any(check_match(match, v) for v in values)

        keep = [k and matches(p) for k, p in zip(keep, payloads)]
    return np.array(keep, dtype=bool)


local_collection.calculate_payload_mask = keyword_mask


# --------------------------------------------------------------------------------------------
# Version features. Each gate names the first Qdrant release that has the behaviour; the README
# lists the files of qdrant/qdrant they were read from.
# --------------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a version: {text!r} (want e.g. 1.8.3)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class Features:
    def __init__(self, version: str):
        self.version = version
        v = parse_version(version)
        self.tuple = v
        # lib/api/src/grpc/proto/collections_service.proto: CollectionExists since 1.8.0
        self.collection_exists = v >= (1, 8, 0)
        # lib/api/src/grpc/proto/points_service.proto: Query since 1.10.0
        self.query = v >= (1, 10, 0)
        # points.proto: `Vector` has the `oneof vector { DenseVector dense = 101; ... }` since 1.13
        self.vector_oneof_in = v >= (1, 13, 0)
        # points.proto: `Vector.vectors_count` (multivectors) since 1.10
        self.multivector = v >= (1, 10, 0)
        # lib/api/src/conversions/vectors.rs, `From<VectorInternal> for grpc::VectorOutput`:
        # up to 1.16 the server fills `data` (vector: None); from 1.17 `dense` (data empty)
        self.vector_oneof_out = v >= (1, 17, 0)
        # lib/segment/src/common/operation_error.rs: "Vector inserting error" until 1.9,
        # "Vector dimension error" from 1.10
        self.dim_error_word = "dimension" if v >= (1, 10, 0) else "inserting"
        # src/common/validate_vectors.rs (1.19): dimensions checked before the WAL write, so
        # wait=false upserts fail too; before 1.19 they are acknowledged and fail in the
        # update worker
        self.sync_dim_check = v >= (1, 19, 0)
        # src/tonic/auth.rs: 1.8 answers PERMISSION_DENIED, 1.9+ UNAUTHENTICATED; the health
        # check is exempt from 1.16
        self.auth_code = SC.UNAUTHENTICATED if v >= (1, 9, 0) else SC.PERMISSION_DENIED
        self.auth_invalid_msg = "Invalid API key or JWT" if v >= (1, 9, 0) else "Invalid API key or JWT token"
        self.health_without_key = v >= (1, 16, 0)
        # points.proto: UpsertPoints.update_filter since 1.16
        self.update_filter = v >= (1, 16, 0)
        # lib/collection/src/collection/collection_ops.rs: vectors_count hidden (None) from 1.9
        self.vectors_count = v < (1, 9, 0)
        # points.proto FieldType: FieldTypeUuid = 7 since 1.11
        self.field_types = set(range(8)) if v >= (1, 11, 0) else set(range(7))
        # collections.proto PayloadIndexParams: text + integer params only until 1.10
        if v >= (1, 11, 0):
            self.index_param_kinds = {
                "keyword_index_params", "integer_index_params", "float_index_params",
                "geo_index_params", "text_index_params", "bool_index_params",
                "datetime_index_params", "uuid_index_params",
            }
        else:
            self.index_param_kinds = {"text_index_params", "integer_index_params"}
        # TokenizerType: Prefix..Multilingual (1..4); Code = 5 is newer than 1.19
        self.tokenizers = {1, 2, 3, 4, 5} if v >= (1, 20, 0) else {1, 2, 3, 4}


# FieldType number -> (Rust Debug name, index-params oneof name, PayloadSchemaType number)
FIELD_TYPES = {
    0: ("Keyword", "keyword_index_params", 1),
    1: ("Integer", "integer_index_params", 2),
    2: ("Float", "float_index_params", 3),
    3: ("Geo", "geo_index_params", 4),
    4: ("Text", "text_index_params", 5),
    5: ("Bool", "bool_index_params", 6),
    6: ("Datetime", "datetime_index_params", 7),
    7: ("Uuid", "uuid_index_params", 8),
}

UPDATE_ACKNOWLEDGED = 1
UPDATE_COMPLETED = 2


class ApiError(Exception):
    """An answer the real server would give: a gRPC status code and Qdrant's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(name: str) -> ApiError:
    # lib/storage/src/content_manager/collections_ops.rs + errors.rs ("Not found: {description}")
    return ApiError(SC.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!")


def validation_error(field: str, what: str) -> ApiError:
    # src/tonic/api/mod.rs + lib/collection/src/operations/validation.rs (label_errors)
    return ApiError(SC.INVALID_ARGUMENT, f"Validation error in body: [{field}: {what}]")


_COLLECTION_NAME_BAD_CHARS = ['<', '>', ':', '"', '/', '\\', '|', '?', '*', '\0', '\u001f']


def check_collection_name(name: str) -> None:
    # lib/api/build.rs: collection_name length(min = 1, max = 255) (+ the character check on
    # CreateCollection, lib/common/common/src/validation.rs validate_collection_name)
    if not 1 <= len(name) <= 255:
        raise validation_error(
            "collection_name", f"value {json.dumps(name)} invalid, must be from 1 to 255 characters"
        )


def check_new_collection_name(name: str) -> None:
    check_collection_name(name)
    for c in _COLLECTION_NAME_BAD_CHARS:
        if c in name:
            raise validation_error("collection_name", f'collection name cannot contain "{c}" char')


def point_id_from_grpc(pid: pb.PointId) -> int | str:
    # lib/api/src/grpc/conversions.rs: `impl TryFrom<PointId> for PointIdType`
    which = pid.WhichOneof("point_id_options")
    if which == "num":
        return pid.num
    if which == "uuid":
        try:
            return str(uuid.UUID(pid.uuid))
        except ValueError:
            raise ApiError(SC.INVALID_ARGUMENT, f"Unable to parse UUID: {pid.uuid}") from None
    raise ApiError(SC.INVALID_ARGUMENT, "No ID options provided")


def point_id_to_grpc(pid: int | str) -> pb.PointId:
    if isinstance(pid, int):
        return pb.PointId(num=pid)
    return pb.PointId(uuid=str(pid))


def check_filter_ids(flt: pb.Filter) -> None:
    """Point ids inside has_id conditions are parsed by the server: a bad UUID is an error."""
    for cond in list(flt.must) + list(flt.should) + list(flt.must_not) + list(flt.min_should.conditions):
        which = cond.WhichOneof("condition_one_of")
        if which == "has_id":
            for pid in cond.has_id.has_id:
                point_id_from_grpc(pid)
        elif which == "filter":
            check_filter_ids(cond.filter)
        elif which == "nested":
            check_filter_ids(cond.nested.filter)


# --------------------------------------------------------------------------------------------
# Proto -> JSON for the side channel (ints stay ints, enums become their names)
# --------------------------------------------------------------------------------------------


def _scalar_to_json(fd, value):
    if fd.type == fd.TYPE_MESSAGE:
        return message_to_json(value)
    if fd.type == fd.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(value)
        return ev.name if ev is not None else value
    if fd.type == fd.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def message_to_json(msg) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _scalar_to_json(vfd, value[k]) for k in value}
        elif fd.is_repeated:
            out[fd.name] = [_scalar_to_json(fd, x) for x in value]
        else:
            out[fd.name] = _scalar_to_json(fd, value)
    return out


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class CollectionMeta:
    def __init__(self, request: pb.CreateCollection, raw: bytes):
        self.create = request
        self.create_raw = raw
        self.created_at = time.time()
        self.indexes: dict[str, pb.CreateFieldIndexCollection] = {}
        self.op_id = 0
        self.async_errors: list[dict[str, Any]] = []
        # Read caches (filter masks, id order), valid while `generation` is unchanged: every
        # write bumps it. They make a scroll page cost O(page) instead of O(collection).
        self.generation = 0
        self.cache_generation = -1
        self.masks: dict[bytes, np.ndarray] = {}
        self.hits: dict[bytes, np.ndarray] = {}
        self.order: tuple[np.ndarray, list, list] | None = None
        self.indexed_points: dict[tuple[str, int], int] = {}

    def changed(self) -> None:
        self.generation += 1

    def fresh_caches(self) -> None:
        if self.cache_generation != self.generation:
            self.masks.clear()
            self.hits.clear()
            self.order = None
            self.indexed_points.clear()
            self.cache_generation = self.generation

    def next_op(self) -> int:
        op = self.op_id
        self.op_id += 1
        return op


class FaultRule:
    def __init__(self, spec: dict[str, Any], rule_id: int):
        self.id = rule_id
        self.fail_after = int(spec.get("fail_after", 0))
        code = spec.get("code", "UNAVAILABLE")
        if code is None or str(code).upper() == "OK":
            self.code = None
        else:
            name = str(code).upper()
            if not hasattr(SC, name):
                raise ValueError(f"unknown gRPC status code {code!r}")
            self.code = getattr(SC, name)
        self.stall_ms = int(spec.get("stall_ms", 0) or 0)
        methods = spec.get("methods") or []
        if isinstance(methods, str):
            methods = [methods]
        self.methods = [str(m) for m in methods]
        self.message = spec.get("message")
        times = spec.get("times")
        self.times = None if times is None else int(times)
        self.seen = 0
        self.fired = 0
        self.spec = spec

    def matches(self, full_method: str) -> bool:
        if not self.methods:
            return True
        # full_method: "/qdrant.Points/Upsert"
        service, _, method = full_method.lstrip("/").partition("/")
        short_service = service.split(".")[-1]
        for m in self.methods:
            m = m.lstrip("/")
            if m in (method, f"{short_service}/{method}", f"{service}/{method}", f"{short_service}.{method}"):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fail_after": self.fail_after,
            "code": self.code.name if self.code is not None else None,
            "stall_ms": self.stall_ms,
            "methods": self.methods,
            "message": self.message,
            "times": self.times,
            "seen": self.seen,
            "fired": self.fired,
        }


def short_method(full_method: str) -> str:
    service, _, method = full_method.lstrip("/").partition("/")
    return f"{service.split('.')[-1]}/{method}"


class Control:
    """Call counters and fault rules; shared by the gRPC interceptor and the HTTP side channel."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        # When each handler ran, for benches that ask how busy the server was and when.
        self.timeline: collections.deque = collections.deque(maxlen=100_000)
        self.rules: list[FaultRule] = []
        self.next_rule_id = 1

    def count(self, full_method: str) -> None:
        key = short_method(full_method)
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    def add_rule(self, spec: dict[str, Any]) -> FaultRule:
        with self.lock:
            rule = FaultRule(spec, self.next_rule_id)
            self.next_rule_id += 1
            self.rules.append(rule)
            return rule

    def clear_rules(self) -> None:
        with self.lock:
            self.rules = []

    def reset(self) -> None:
        with self.lock:
            self.rules = []
            self.calls = {}
            self.timeline.clear()

    def fault_for(self, full_method: str) -> tuple[int, grpc.StatusCode | None, str | None] | None:
        """Returns (stall_ms, code, message) of the first rule that fires for this call."""
        with self.lock:
            for rule in self.rules:
                if not rule.matches(full_method):
                    continue
                rule.seen += 1
                if rule.seen <= rule.fail_after:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                rule.fired += 1
                message = rule.message or (
                    f"stand-in fault injected: {rule.code.name if rule.code else 'stall'} "
                    f"after {rule.fail_after} calls"
                )
                return rule.stall_ms, rule.code, message
        return None


class Store:
    """Local mode plus what the stand-in records. One lock: local mode is not thread safe."""

    def __init__(self, features: Features):
        self.features = features
        self.lock = threading.RLock()
        self.client = QdrantClient(":memory:")
        self.local = self.client._client  # QdrantLocal: collection-level calls (search)
        self.meta: dict[str, CollectionMeta] = {}
        self.events: list[dict[str, Any]] = []
        # --sync-errors: report errors of wait=false updates to the client
        self.sync_async_errors = False

    def event(self, kind: str, collection: str, **extra: Any) -> None:
        self.events.append({"event": kind, "collection": collection, "at": time.time(), **extra})

    def reset(self) -> None:
        with self.lock:
            for name in list(self.meta):
                self.client.delete_collection(name)
            self.meta = {}
            self.events = []

    def collection(self, name: str):
        if name not in self.meta:
            raise not_found(name)
        return self.local._get_collection(name)

    # ---- cached reads (the filter itself is always evaluated by local mode) -------------------

    def indexed(self, name: str, coll, field: str, field_type: int) -> int:
        meta = self.meta[name]
        meta.fresh_caches()
        key = (field, field_type)
        if key not in meta.indexed_points:
            meta.indexed_points[key] = count_indexed(coll, field, field_type)
        return meta.indexed_points[key]

    def mask(self, name: str, coll, flt: models.Filter | None, key: bytes) -> np.ndarray:
        """local mode's `_payload_and_non_deleted_mask`, memoised per filter until the next write."""
        meta = self.meta[name]
        meta.fresh_caches()
        m = meta.masks.get(key)
        if m is None:
            m = coll._payload_and_non_deleted_mask(flt)
            if len(meta.masks) >= 32:
                meta.masks.clear()
                meta.hits.clear()
            meta.masks[key] = m
        return m

    def id_order(self, name: str, coll) -> tuple[np.ndarray, list, list]:
        """Internal indexes, sort keys and ids in local mode's scroll order (numbers, then UUIDs)."""
        meta = self.meta[name]
        meta.fresh_caches()
        if meta.order is None:
            items = sorted(coll.ids.items(), key=lambda kv: coll._universal_id(kv[0]))
            meta.order = (
                np.array([idx for _, idx in items], dtype=np.int64),
                [coll._universal_id(pid) for pid, _ in items],
                [pid for pid, _ in items],
            )
        return meta.order

    def scroll_by_id(self, name: str, coll, flt, key: bytes, limit: int, offset, with_payload, with_vectors):
        """LocalCollection._scroll_by_id (points in id order from `offset` on, `limit` of them, the
        id of the next one as next_page_offset) over the memoised mask and id order."""
        coll._validate_with_payload(with_payload)
        mask = self.mask(name, coll, flt, key)
        order_idx, keys, pids = self.id_order(name, coll)
        meta = self.meta[name]
        hits = meta.hits.get(key)
        if hits is None:
            hits = np.flatnonzero(mask[order_idx])
            meta.hits[key] = hits
        start = 0
        if offset is not None:
            start = bisect.bisect_left(keys, coll._universal_id(offset))
        first = int(np.searchsorted(hits, start))
        page = hits[first:first + limit + 1]
        records = []
        for j in page[:limit]:
            idx = int(order_idx[j])
            records.append(models.Record(
                id=pids[j],
                payload=coll._get_payload(idx, with_payload),
                vector=coll._get_vectors(idx, with_vectors),
            ))
        next_offset = pids[int(page[limit])] if len(page) > limit else None
        return records, next_offset

    # ---- layout as Qdrant reports it ---------------------------------------------------------

    def payload_schema(self, name: str) -> dict[str, pb.PayloadSchemaInfo]:
        meta = self.meta[name]
        coll = self.local._get_collection(name)
        out: dict[str, pb.PayloadSchemaInfo] = {}
        for field, req in meta.indexes.items():
            _, params_kind, schema_type = FIELD_TYPES[req.field_type]
            info = pb.PayloadSchemaInfo(data_type=schema_type, points=self.indexed(name, coll, field, req.field_type))
            kind = req.field_index_params.WhichOneof("index_params") if req.HasField("field_index_params") else None
            if kind is not None:
                info.params.CopyFrom(req.field_index_params)
            out[field] = info
        return out

    def collection_info(self, name: str) -> pb.CollectionInfo:
        f = self.features
        meta = self.meta[name]
        req = meta.create
        coll = self.local._get_collection(name)
        points = int(np.count_nonzero(~coll.deleted[: len(coll.ids_inv)])) if len(coll.ids_inv) else 0

        params = pb.CollectionParams(
            shard_number=req.shard_number if req.HasField("shard_number") else 1,
            replication_factor=req.replication_factor if req.HasField("replication_factor") else 1,
            write_consistency_factor=(
                req.write_consistency_factor if req.HasField("write_consistency_factor") else 1
            ),
            # storage.on_disk_payload in config/config.yaml
            on_disk_payload=req.on_disk_payload if req.HasField("on_disk_payload") else True,
        )
        if req.HasField("vectors_config"):
            params.vectors_config.CopyFrom(req.vectors_config)
        else:
            params.vectors_config.params_map.SetInParent()
        if req.HasField("sharding_method"):
            params.sharding_method = req.sharding_method
        if req.HasField("sparse_vectors_config"):
            params.sparse_vectors_config.CopyFrom(req.sparse_vectors_config)

        # storage.hnsw_index / storage.optimizers / storage.wal in config/config.yaml, then the
        # request's diff on top (lib/collection/src/operations/config_diff.rs)
        hnsw = pb.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10000, max_indexing_threads=0, on_disk=False)
        if req.HasField("hnsw_config"):
            hnsw.MergeFrom(req.hnsw_config)
        optimizers = pb.OptimizersConfigDiff(
            deleted_threshold=0.2, vacuum_min_vector_number=1000, default_segment_number=0,
            indexing_threshold=20000, flush_interval_sec=5,
        )
        if req.HasField("optimizers_config"):
            optimizers.MergeFrom(req.optimizers_config)
        wal = pb.WalConfigDiff(wal_capacity_mb=32, wal_segments_ahead=0)
        if req.HasField("wal_config"):
            wal.MergeFrom(req.wal_config)
        config = pb.CollectionConfig(params=params, hnsw_config=hnsw, optimizer_config=optimizers, wal_config=wal)
        if req.HasField("quantization_config"):
            config.quantization_config.CopyFrom(req.quantization_config)

        segments = optimizers.default_segment_number or 2
        info = pb.CollectionInfo(
            status=pb.CollectionStatus.Green,
            optimizer_status=pb.OptimizerStatus(ok=True),
            segments_count=segments,
            points_count=points,
            indexed_vectors_count=0,
            config=config,
            payload_schema=self.payload_schema(name),
        )
        if f.vectors_count:
            # `optional uint64 vectors_count = 3` of 1.8's CollectionInfo is gone from the current
            # proto: append it to the wire form, parsed back it travels as an unknown field
            n_vectors = len(coll.vectors) + len(coll.sparse_vectors) + len(coll.multivectors)
            raw = info.SerializeToString() + b"\x18" + encode_varint(points * max(n_vectors, 1))
            info = pb.CollectionInfo.FromString(raw)
        return info


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def count_indexed(coll, field: str, field_type: int) -> int:
    """Points whose payload holds a value of the index's type at `field` (PayloadSchemaInfo.points)."""

    def fits(v: Any) -> bool:
        if field_type in (0, 4, 6):  # keyword, text, datetime
            return isinstance(v, str)
        if field_type == 7:
            return isinstance(v, str)
        if field_type == 1:
            return isinstance(v, int) and not isinstance(v, bool)
        if field_type == 2:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if field_type == 5:
            return isinstance(v, bool)
        if field_type == 3:
            return isinstance(v, dict) and "lat" in v and "lon" in v
        return False

    n = 0
    deleted = coll.deleted
    for idx, payload in enumerate(coll.payload):
        if idx < len(deleted) and deleted[idx]:
            continue
        values = value_by_key(payload, field)
        if values and any(fits(v) for v in values):
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# Servicers
# --------------------------------------------------------------------------------------------


def rpc(fn: Callable) -> Callable:
    """Turn ApiError into the server's status, anything else into INTERNAL; never crash."""

    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except ApiError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - the server must answer, not die
            if isinstance(e, ValueError) and raised_by_qdrant_client(e):
                # local mode raises ValueError for input it rejects
                context.abort(SC.INVALID_ARGUMENT, str(e))
            traceback.print_exc(file=sys.stderr)
            context.abort(SC.INTERNAL, f"stand-in internal error: {type(e).__name__}: {e}")

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper._implemented = True
    return wrapper


_QDRANT_CLIENT_DIR = os.path.dirname(os.path.abspath(qdrant_client.__file__))


def raised_by_qdrant_client(e: BaseException) -> bool:
    """True when the innermost frame of the exception is in the qdrant_client package."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    filename = os.path.abspath(last.tb_frame.f_code.co_filename)
    return filename.startswith(_QDRANT_CLIENT_DIR + os.sep)


def unimplemented_everything_else(cls):
    """Answer UNIMPLEMENTED (as tonic does for a route it lacks) without a traceback in the log."""
    for base in cls.__mro__[1:]:
        if not base.__name__.endswith("Servicer"):
            continue
        for attr, value in vars(base).items():
            if attr.startswith("_") or not callable(value):
                continue
            if getattr(getattr(cls, attr), "_implemented", False):
                continue

            def make(name):
                def method(self, request, context):
                    context.abort(SC.UNIMPLEMENTED, "")

                method.__name__ = name
                return method

            setattr(cls, attr, make(attr))
    return cls


class Base:
    def __init__(self, store: Store):
        self.store = store
        self.f = store.features

    # ---- vectors, version-aware ------------------------------------------------------------

    def vector_in(self, v: pb.Vector, named: bool) -> Any:
        """A request's `Vector` as the server of this version reads it."""
        f = self.f
        if f.vector_oneof_in:
            which = v.WhichOneof("vector")
            if which == "dense":
                return np.array(v.dense.data, dtype=np.float32)
            if which == "sparse":
                if not named:
                    raise ApiError(SC.INVALID_ARGUMENT, "Sparse vector must be named")
                return models.SparseVector(indices=list(v.sparse.indices), values=list(v.sparse.values))
            if which == "multi_dense":
                return [list(d.data) for d in v.multi_dense.vectors]
            if which is not None:
                raise ApiError(SC.INVALID_ARGUMENT, f"stand-in: inference input ({which}) is not supported")
        if v.HasField("indices"):
            if f.vector_oneof_in and not named:
                raise ApiError(SC.INVALID_ARGUMENT, "Sparse vector must be named")
            if named:
                return models.SparseVector(indices=list(v.indices.data), values=list(v.data))
            # 1.8-1.12: an unnamed vector is read from `data`, `indices` is ignored
        if f.multivector and v.HasField("vectors_count"):
            count = v.vectors_count
            data = list(v.data)
            if count == 0 or len(data) % count:
                raise ApiError(
                    SC.INVALID_ARGUMENT,
                    "Unable to convert to multi-dense vector: Validation failed: Data length is not "
                    f"divisible by vectors count. Data length: {len(data)}, vectors count: {count}",
                )
            dim = len(data) // count
            return [data[i * dim:(i + 1) * dim] for i in range(count)]
        return np.array(v.data, dtype=np.float32)

    def vectors_in(self, point: pb.PointStruct) -> dict[str, Any]:
        # lib/collection/src/operations/conversions.rs: `TryFrom<grpc::PointStruct>`
        if not point.HasField("vectors"):
            raise ApiError(SC.INVALID_ARGUMENT, "Expected some vectors")
        which = point.vectors.WhichOneof("vectors_options")
        if which == "vector":
            return {"": self.vector_in(point.vectors.vector, named=False)}
        if which == "vectors":
            return {name: self.vector_in(vec, named=True) for name, vec in point.vectors.vectors.vectors.items()}
        raise ApiError(SC.INVALID_ARGUMENT, "No Provided" if not self.f.vector_oneof_in else "No Vector Provided")

    def vector_out(self, v: Any) -> pb.VectorOutput:
        oneof = self.f.vector_oneof_out
        if isinstance(v, models.SparseVector):
            if oneof:
                return pb.VectorOutput(sparse=pb.SparseVector(values=v.values, indices=v.indices))
            return pb.VectorOutput(data=v.values, indices=pb.SparseIndices(data=v.indices))
        if len(v) and isinstance(v[0], list):
            if oneof:
                return pb.VectorOutput(multi_dense=pb.MultiDenseVector(vectors=[pb.DenseVector(data=x) for x in v]))
            return pb.VectorOutput(data=[x for row in v for x in row], vectors_count=len(v))
        if oneof:
            return pb.VectorOutput(dense=pb.DenseVector(data=v))
        return pb.VectorOutput(data=v)

    def vectors_out(self, vec: Any) -> pb.VectorsOutput | None:
        if vec is None:
            return None
        if isinstance(vec, dict):
            return pb.VectorsOutput(vectors=pb.NamedVectorsOutput(vectors={k: self.vector_out(v) for k, v in vec.items()}))
        return pb.VectorsOutput(vector=self.vector_out(vec))

    def dim_error(self, expected: int, got: int) -> ApiError:
        # OperationError::WrongVector -> CollectionError::BadInput -> "Wrong input: ..."
        return ApiError(
            SC.INVALID_ARGUMENT,
            f"Wrong input: Vector {self.f.dim_error_word} error: expected dim: {expected}, got {got}",
        )

    def check_dims(self, coll, vectors: dict[str, Any]) -> None:
        for name, vec in vectors.items():
            if name in coll.vectors:
                expected = coll.vectors_config[name].size
                if isinstance(vec, models.SparseVector):
                    raise ApiError(SC.INVALID_ARGUMENT, "Wrong input: Conversion between sparse and regular vectors failed")
                if len(vec) and isinstance(vec[0], list):
                    raise ApiError(SC.INVALID_ARGUMENT, "Wrong input: Conversion between multi and regular vectors failed")
                if len(vec) != expected:
                    raise self.dim_error(expected, len(vec))
            elif name in coll.multivectors:
                expected = coll.multivectors_config[name].size
                for sub in vec:
                    if len(sub) != expected:
                        raise self.dim_error(expected, len(sub))
            elif name not in coll.sparse_vectors:
                raise ApiError(SC.INVALID_ARGUMENT, f"Wrong input: Not existing vector name error: {name}")

    # ---- selectors ----------------------------------------------------------------------------

    @staticmethod
    def with_payload(request, default: Any) -> Any:
        if request.HasField("with_payload") and request.with_payload.WhichOneof("selector_options"):
            return GrpcToRest.convert_with_payload_selector(request.with_payload)
        return default

    @staticmethod
    def with_vectors(request) -> Any:
        if request.HasField("with_vectors") and request.with_vectors.WhichOneof("selector_options"):
            return GrpcToRest.convert_with_vectors_selector(request.with_vectors)
        return False

    def filter_in(self, request, field: str = "filter") -> models.Filter | None:
        if not request.HasField(field):
            return None
        flt = getattr(request, field)
        check_filter_ids(flt)
        return GrpcToRest.convert_filter(flt)

    def record_out(self, rec) -> pb.RetrievedPoint:
        out = pb.RetrievedPoint(id=point_id_to_grpc(rec.id), payload=payload_to_grpc(rec.payload or {}))
        vectors = self.vectors_out(rec.vector)
        if vectors is not None:
            out.vectors.CopyFrom(vectors)
        return out

    def scored_out(self, sp) -> pb.ScoredPoint:
        out = pb.ScoredPoint(
            id=point_id_to_grpc(sp.id), payload=payload_to_grpc(sp.payload or {}),
            score=sp.score, version=sp.version or 0,
        )
        vectors = self.vectors_out(sp.vector)
        if vectors is not None:
            out.vectors.CopyFrom(vectors)
        return out

    def update_result(self, meta: CollectionMeta, wait: bool, started: float) -> pb.PointsOperationResponse:
        return pb.PointsOperationResponse(
            result=pb.UpdateResult(operation_id=meta.next_op(), status=UPDATE_COMPLETED if wait else UPDATE_ACKNOWLEDGED),
            time=time.perf_counter() - started,
        )

    def apply_update(self, name: str, meta: CollectionMeta, wait: bool, what: str, fn: Callable[[], None]) -> None:
        """Run an update. Before 1.19 a wait=false update is acknowledged first and applied by the
        update worker, so an error there never reaches the client: it is logged (and recorded
        for /__debug/collections) instead."""
        if wait or self.f.sync_dim_check or self.store.sync_async_errors:
            fn()
            return
        try:
            fn()
        except (ApiError, ValueError) as e:
            msg = e.message if isinstance(e, ApiError) else str(e)
            meta.async_errors.append({"operation": what, "error": msg, "at": time.time()})
            print(f"qdrant-standin: async {what} on `{name}` failed (wait=false, acknowledged): {msg}", file=sys.stderr, flush=True)


@unimplemented_everything_else
class QdrantService(Base, pb.QdrantServicer):
    @rpc
    def HealthCheck(self, request, context):
        return pb.HealthCheckReply(title=TITLE, version=self.f.version)


@unimplemented_everything_else
class CollectionsService(Base, pb.CollectionsServicer):
    @rpc
    def List(self, request, context):
        t = time.perf_counter()
        with self.store.lock:
            names = list(self.store.meta)
        return pb.ListCollectionsResponse(
            collections=[pb.CollectionDescription(name=n) for n in names], time=time.perf_counter() - t
        )

    @rpc
    def Get(self, request, context):
        t = time.perf_counter()
        check_collection_name(request.collection_name)
        with self.store.lock:
            if request.collection_name not in self.store.meta:
                raise not_found(request.collection_name)
            info = self.store.collection_info(request.collection_name)
        return pb.GetCollectionInfoResponse(result=info, time=time.perf_counter() - t)

    @rpc
    def CollectionExists(self, request, context):
        if not self.f.collection_exists:
            raise ApiError(SC.UNIMPLEMENTED, "")
        t = time.perf_counter()
        check_collection_name(request.collection_name)
        with self.store.lock:
            exists = request.collection_name in self.store.meta
        return pb.CollectionExistsResponse(result=pb.CollectionExists(exists=exists), time=time.perf_counter() - t)

    @rpc
    def Create(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_new_collection_name(name)
        vectors_config = None
        if request.HasField("vectors_config"):
            which = request.vectors_config.WhichOneof("config")
            params_list = []
            if which == "params":
                params_list = [("", request.vectors_config.params)]
            elif which == "params_map":
                params_list = list(request.vectors_config.params_map.map.items())
            for _vname, p in params_list:
                if not 1 <= p.size <= 65536:
                    raise validation_error(
                        "vectors_config.config.params.size" if which == "params" else "vectors_config.config.params_map.map.size",
                        f"value {p.size} invalid, must be from 1 to 65536",
                    )
                if p.distance == 0:
                    raise ApiError(SC.INVALID_ARGUMENT, "Malformed distance parameter: UnknownDistance")
                if p.distance not in (1, 2, 3, 4):
                    raise ApiError(SC.INVALID_ARGUMENT, f"Malformed distance parameter, unexpected value: {p.distance}")
            if which is not None:
                vectors_config = self.local_vectors_config(request.vectors_config)
        sparse = None
        if request.HasField("sparse_vectors_config"):
            sparse = GrpcToRest.convert_sparse_vector_config(request.sparse_vectors_config)
        if request.HasField("hnsw_config") and request.hnsw_config.HasField("ef_construct") and request.hnsw_config.ef_construct < 4:
            raise validation_error("hnsw_config.ef_construct", f"value {request.hnsw_config.ef_construct} invalid, must be 4 or larger")
        with self.store.lock:
            if name in self.store.meta:
                # collections_ops.rs validate_collection_not_exists: StorageError::AlreadyExists
                raise ApiError(SC.ALREADY_EXISTS, f"Wrong input: Collection `{name}` already exists!")
            self.store.client.create_collection(name, vectors_config=vectors_config, sparse_vectors_config=sparse)
            recorded = pb.CreateCollection()
            recorded.CopyFrom(request)
            self.store.meta[name] = CollectionMeta(recorded, request.SerializeToString())
            self.store.event("create_collection", name, request=message_to_json(request))
        return pb.CollectionOperationResponse(result=True, time=time.perf_counter() - t)

    def local_vectors_config(self, vc: pb.VectorsConfig):
        def one(p: pb.VectorParams) -> models.VectorParams:
            multivector = None
            if self.f.multivector and p.HasField("multivector_config"):
                multivector = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
            return models.VectorParams(
                size=p.size, distance=GrpcToRest.convert_distance(p.distance), multivector_config=multivector
            )

        if vc.WhichOneof("config") == "params":
            return one(vc.params)
        return {k: one(v) for k, v in vc.params_map.map.items()}

    @rpc
    def Delete(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        with self.store.lock:
            existed = name in self.store.meta
            if existed:
                self.store.client.delete_collection(name)
                del self.store.meta[name]
                self.store.event("delete_collection", name)
        return pb.CollectionOperationResponse(result=existed, time=time.perf_counter() - t)


@unimplemented_everything_else
class PointsService(Base, pb.PointsServicer):
    @rpc
    def Upsert(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        # grpc -> internal conversion happens before the collection is looked up
        ids = []
        vectors = []
        payloads = []
        for point in request.points:
            v = self.vectors_in(point)
            if not point.HasField("id"):
                raise ApiError(SC.INVALID_ARGUMENT, "Empty ID is not allowed")
            ids.append(point_id_from_grpc(point.id))
            vectors.append(v)
            payloads.append(grpc_to_payload(point.payload) if len(point.payload) else None)
        # UpsertPoints.update_filter arrived in 1.16: older servers never see it
        update_filter = self.filter_in(request, "update_filter") if self.f.update_filter else None
        wait = request.wait if request.HasField("wait") else False
        with self.store.lock:
            coll = self.store.collection(name)
            meta = self.store.meta[name]

            def apply():
                meta.changed()
                for v in vectors:
                    self.check_dims(coll, v)
                points = [
                    construct(models.PointStruct, id=i, vector=v, payload=p)
                    for i, v, p in zip(ids, vectors, payloads)
                ]
                if points:
                    coll.upsert(points, update_filter=update_filter)

            self.apply_update(name, meta, wait, "upsert", apply)
            return self.update_result(meta, wait, t)

    @rpc
    def Delete(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        if not request.HasField("points") or request.points.WhichOneof("points_selector_one_of") is None:
            raise ApiError(SC.INVALID_ARGUMENT, "Malformed PointsSelector type")
        if request.points.WhichOneof("points_selector_one_of") == "points":
            ids = [point_id_from_grpc(p) for p in request.points.points.ids]
            selector = models.PointIdsList(points=ids)
        else:
            check_filter_ids(request.points.filter)
            selector = models.FilterSelector(filter=GrpcToRest.convert_filter(request.points.filter))
        wait = request.wait if request.HasField("wait") else False
        with self.store.lock:
            coll = self.store.collection(name)
            meta = self.store.meta[name]
            def apply():
                meta.changed()
                coll.delete(selector)

            self.apply_update(name, meta, wait, "delete", apply)
            return self.update_result(meta, wait, t)

    @rpc
    def Get(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        ids = [point_id_from_grpc(p) for p in request.ids]
        with_payload = self.with_payload(request, False)
        with_vectors = self.with_vectors(request)
        with self.store.lock:
            coll = self.store.collection(name)
            records = coll.retrieve(ids, with_payload, with_vectors)
            result = [self.record_out(r) for r in records]
        return pb.GetResponse(result=result, time=time.perf_counter() - t)

    @rpc
    def Scroll(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        if request.HasField("limit") and request.limit < 1:
            raise validation_error("limit", f"value {request.limit} invalid, must be 1 or larger")
        limit = request.limit if request.HasField("limit") else 10
        offset = point_id_from_grpc(request.offset) if request.HasField("offset") else None
        flt = self.filter_in(request)
        order_by = GrpcToRest.convert_order_by(request.order_by) if request.HasField("order_by") else None
        with_payload = self.with_payload(request, True)
        with_vectors = self.with_vectors(request)
        key = request.filter.SerializeToString(deterministic=True) if request.HasField("filter") else b""
        with self.store.lock:
            coll = self.store.collection(name)
            if order_by is None and len(coll.ids) > 0:
                records, next_offset = self.store.scroll_by_id(
                    name, coll, flt, key, limit, offset, with_payload, with_vectors
                )
            else:
                records, next_offset = coll.scroll(
                    scroll_filter=flt, limit=limit, order_by=order_by, offset=offset,
                    with_payload=with_payload, with_vectors=with_vectors,
                )
            result = [self.record_out(r) for r in records]
        response = pb.ScrollResponse(result=result, time=time.perf_counter() - t)
        if next_offset is not None:
            response.next_page_offset.CopyFrom(point_id_to_grpc(next_offset))
        return response

    @rpc
    def Count(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        flt = self.filter_in(request)
        key = request.filter.SerializeToString(deterministic=True) if request.HasField("filter") else b""
        with self.store.lock:
            coll = self.store.collection(name)
            if len(coll.ids) > 0:
                count = np.count_nonzero(self.store.mask(name, coll, flt, key))
            else:
                count = coll.count(count_filter=flt).count
        return pb.CountResponse(result=pb.CountResult(count=int(count)), time=time.perf_counter() - t)

    @rpc
    def Search(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        if request.limit < 1:
            raise validation_error("limit", f"value {request.limit} invalid, must be 1 or larger")
        flt = self.filter_in(request)
        with_payload = self.with_payload(request, False)
        with_vectors = self.with_vectors(request)
        vector_name = request.vector_name if request.HasField("vector_name") else ""
        with self.store.lock:
            coll = self.store.collection(name)
            if request.HasField("sparse_indices"):
                query: Any = models.SparseVector(indices=list(request.sparse_indices.data), values=list(request.vector))
            else:
                query = np.array(request.vector, dtype=np.float32)
                if vector_name in coll.vectors:
                    expected = coll.vectors_config[vector_name].size
                    if len(query) != expected:
                        raise self.dim_error(expected, len(query))
                elif vector_name not in coll.multivectors and vector_name not in coll.sparse_vectors:
                    raise ApiError(SC.INVALID_ARGUMENT, f"Wrong input: Not existing vector name error: {vector_name}")
            hits = coll.search(
                query_vector=(vector_name, query) if vector_name else query,
                query_filter=flt,
                limit=int(request.limit),
                offset=int(request.offset) if request.HasField("offset") else None,
                with_payload=with_payload,
                with_vectors=with_vectors,
                score_threshold=request.score_threshold if request.HasField("score_threshold") else None,
            )
            result = [self.scored_out(h) for h in hits]
        return pb.SearchResponse(result=result, time=time.perf_counter() - t)

    @rpc
    def Query(self, request, context):
        if not self.f.query:
            raise ApiError(SC.UNIMPLEMENTED, "")
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        if request.HasField("limit") and request.limit < 1:
            raise validation_error("limit", f"value {request.limit} invalid, must be 1 or larger")
        if request.HasField("filter"):
            check_filter_ids(request.filter)
        q = GrpcToRest.convert_query_points(request)
        with self.store.lock:
            coll = self.store.collection(name)
            using = q.using or ""
            nearest = getattr(q.query, "nearest", None)
            if isinstance(nearest, list) and nearest and not isinstance(nearest[0], list) and using in coll.vectors:
                expected = coll.vectors_config[using].size
                if len(nearest) != expected:
                    raise self.dim_error(expected, len(nearest))
            resp = self.store.local.query_points(
                name,
                query=q.query,
                using=q.using,
                prefetch=q.prefetch,
                query_filter=q.filter,
                search_params=q.params,
                limit=q.limit if q.limit is not None else 10,
                offset=q.offset,
                with_payload=q.with_payload if q.with_payload is not None else False,
                with_vectors=q.with_vector if q.with_vector is not None else False,
                score_threshold=q.score_threshold,
                lookup_from=q.lookup_from,
            )
            result = [self.scored_out(p) for p in resp.points]
        return pb.QueryResponse(result=result, time=time.perf_counter() - t)

    @rpc
    def CreateFieldIndex(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        if not request.field_name:
            raise validation_error("field_name", "must be at least 1 characters")
        # src/tonic/api/points_common.rs convert_field_type (update_common.rs in later releases)
        if not request.HasField("field_type"):
            raise ApiError(SC.INVALID_ARGUMENT, "cannot convert field_type")
        field_type = request.field_type
        known_type = field_type in self.f.field_types
        kind = None
        if request.HasField("field_index_params"):
            kind = request.field_index_params.WhichOneof("index_params")
            if kind is not None and kind not in self.f.index_param_kinds:
                kind = None  # a field this version does not know: dropped on decoding
        recorded = pb.CreateFieldIndexCollection()
        recorded.CopyFrom(request)
        if known_type and kind is not None:
            type_name, expected_kind, _ = FIELD_TYPES[field_type]
            if kind != expected_kind:
                raise ApiError(SC.INVALID_ARGUMENT, f"field_type ({type_name}) and field_index_params do not match")
            if kind == "text_index_params":
                tok = request.field_index_params.text_index_params.tokenizer
                if tok not in self.f.tokenizers:
                    raise ApiError(SC.INVALID_ARGUMENT, "unknown tokenizer type")
        elif not known_type and kind is not None:
            raise ApiError(SC.INVALID_ARGUMENT, "field type is missing")
        elif not known_type:
            # src/common/points.rs do_create_index: no schema -> StorageError::BadRequest
            raise ApiError(
                SC.INVALID_ARGUMENT,
                "Bad request: Can't auto-detect field type, please specify `field_schema` in the request",
            )
        if request.HasField("field_index_params") and kind is None:
            recorded.ClearField("field_index_params")
        wait = request.wait if request.HasField("wait") else False
        with self.store.lock:
            if name not in self.store.meta:
                raise not_found(name)
            meta = self.store.meta[name]
            meta.indexes[request.field_name] = recorded
            self.store.event("create_field_index", name, field_name=request.field_name, request=message_to_json(request))
            return self.update_result(meta, wait, t)

    @rpc
    def DeleteFieldIndex(self, request, context):
        t = time.perf_counter()
        name = request.collection_name
        check_collection_name(name)
        wait = request.wait if request.HasField("wait") else False
        with self.store.lock:
            if name not in self.store.meta:
                raise not_found(name)
            meta = self.store.meta[name]
            meta.indexes.pop(request.field_name, None)
            self.store.event("delete_field_index", name, field_name=request.field_name)
            return self.update_result(meta, wait, t)


# --------------------------------------------------------------------------------------------
# Interceptor: call counts, API key, faults
# --------------------------------------------------------------------------------------------


class Gate(grpc.ServerInterceptor):
    def __init__(self, control: Control, features: Features, api_key: str | None, stopping: threading.Event):
        self.control = control
        self.features = features
        self.api_key = api_key
        self.stopping = stopping

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        self.control.count(method)
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        metadata = handler_call_details.invocation_metadata or ()
        gate = self

        def behaviour(request, context):
            gate.check_auth(method, metadata, context)
            fault = gate.control.fault_for(method)
            if fault is not None:
                stall_ms, code, message = fault
                if stall_ms and gate.stopping.wait(stall_ms / 1000.0):
                    context.abort(SC.UNAVAILABLE, "stand-in is shutting down")
                if code is not None:
                    context.abort(code, message)
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                with gate.control.lock:
                    gate.control.timeline.append((short_method(method), start, time.perf_counter()))

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def check_auth(self, method: str, metadata, context) -> None:
        if self.api_key is None:
            return
        if self.features.health_without_key and method in ("/qdrant.Qdrant/HealthCheck", "/grpc.health.v1.Health/Check"):
            return
        key = None
        for k, v in metadata:
            if k == "api-key":
                key = v
                break
        if key is None:
            for k, v in metadata:
                if k == "authorization" and isinstance(v, str) and v.startswith("Bearer "):
                    key = v[len("Bearer "):]
                    break
        if key is None:
            context.abort(self.features.auth_code, "Must provide an API key or an Authorization bearer token")
        if key != self.api_key:
            context.abort(self.features.auth_code, self.features.auth_invalid_msg)


# --------------------------------------------------------------------------------------------
# HTTP side channel
# --------------------------------------------------------------------------------------------


def make_control_handler(store: Store, control: Control):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep stderr quiet
            pass

        def send_json(self, status: int, body: Any) -> None:
            data = json.dumps(body, indent=1, sort_keys=True).encode()
            self.send_response(status)
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
                if path == "/__debug/collections":
                    self.send_json(200, debug_collections(store))
                elif path == "/__debug/events":
                    with store.lock:
                        self.send_json(200, list(store.events))
                elif path == "/__calls":
                    with control.lock:
                        self.send_json(200, dict(control.calls))
                elif path == "/__timeline":
                    with control.lock:
                        self.send_json(200, [list(t) for t in control.timeline])
                elif path == "/__fault":
                    with control.lock:
                        self.send_json(200, [r.to_json() for r in control.rules])
                elif path == "/__health":
                    self.send_json(200, {"ok": True, "version": store.features.version})
                else:
                    self.send_json(404, {"error": f"no such endpoint: GET {path}"})
            except Exception as e:  # noqa: BLE001
                self.send_json(500, {"error": f"{type(e).__name__}: {e}"})

        def do_POST(self):
            try:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/__fault":
                    spec = self.read_json()
                    if not isinstance(spec, dict):
                        raise ValueError("body must be a JSON object")
                    rule = control.add_rule(spec)
                    self.send_json(200, rule.to_json())
                elif path == "/__fault/clear":
                    self.read_json()
                    control.clear_rules()
                    self.send_json(200, {"ok": True})
                elif path == "/__reset":
                    self.read_json()
                    store.reset()
                    control.reset()
                    self.send_json(200, {"ok": True})
                else:
                    self.send_json(404, {"error": f"no such endpoint: POST {path}"})
            except (ValueError, TypeError) as e:
                self.send_json(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001
                self.send_json(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


def debug_collections(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with store.lock:
        for name, meta in store.meta.items():
            coll = store.local._get_collection(name)
            indexes = {}
            for field, req in meta.indexes.items():
                params = req.field_index_params.WhichOneof("index_params") if req.HasField("field_index_params") else None
                indexes[field] = {
                    "field_type": pb.FieldType.Name(req.field_type),
                    "params_kind": params,
                    "params": message_to_json(getattr(req.field_index_params, params)) if params else None,
                    "points": store.indexed(name, coll, field, req.field_type),
                    "request": message_to_json(req),
                }
            out[name] = {
                "create": message_to_json(meta.create),
                "create_raw_b64": base64.b64encode(meta.create_raw).decode(),
                "field_indexes": indexes,
                # `deleted` holds 0/1 integers: `~` would count the deleted ones too.
                "points_count": int(np.count_nonzero(coll.deleted[: len(coll.ids_inv)] == 0)),
                "async_errors": list(meta.async_errors),
                "next_operation_id": meta.op_id,
            }
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Qdrant gRPC stand-in backed by qdrant_client local mode")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="gRPC port, 0 = pick a free one")
    ap.add_argument("--control-port", type=int, default=0, help="HTTP side-channel port, 0 = pick a free one")
    ap.add_argument("--version", default=DEFAULT_VERSION, help="Qdrant version to behave as (default 1.8.3)")
    ap.add_argument("--api-key", default=None, help="require metadata `api-key: KEY` on every call")
    ap.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    ap.add_argument(
        "--sync-errors", action="store_true",
        help="report update errors of wait=false calls to the client (real servers before 1.19 only log them)",
    )
    ap.add_argument(
        "--exit-on-stdin-eof", action="store_true",
        help="stop when stdin closes (give it a pipe: the server then dies with the test process)",
    )
    args = ap.parse_args(argv)
    parse_version(args.version)
    # local mode warns about large collections and ignored search params: noise here
    warnings.filterwarnings("ignore", category=UserWarning)

    features = Features(args.version.lstrip("v"))
    store = Store(features)
    store.sync_async_errors = args.sync_errors
    control = Control()

    stop = threading.Event()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="qdrant-standin"),
        interceptors=[Gate(control, features, args.api_key, stop)],
        options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb.add_QdrantServicer_to_server(QdrantService(store), server)
    pb.add_CollectionsServicer_to_server(CollectionsService(store), server)
    pb.add_PointsServicer_to_server(PointsService(store), server)
    host = args.host
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    grpc_port = server.add_insecure_port(f"{bind_host}:{args.port}")
    if grpc_port == 0:
        print(f"qdrant-standin: cannot bind gRPC to {host}:{args.port}", file=sys.stderr, flush=True)
        return 1

    httpd = ThreadingHTTPServer((host, args.control_port), make_control_handler(store, control))
    httpd.daemon_threads = True
    control_port = httpd.server_address[1]

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server.start()
    http_thread = threading.Thread(target=httpd.serve_forever, name="qdrant-standin-control", daemon=True)
    http_thread.start()
    print(
        f"qdrant-standin: Qdrant {features.version} gRPC on {host}:{grpc_port}, control http://{host}:{control_port}"
        + (" (api key required)" if args.api_key else ""),
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

        threading.Thread(target=watch_stdin, name="qdrant-standin-stdin", daemon=True).start()

    while not stop.wait(0.5):
        pass
    server.stop(grace=0.5).wait(2)
    httpd.shutdown()
    httpd.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    # a worker still inside local mode must not keep the process alive
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
