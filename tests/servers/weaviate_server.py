#!/usr/bin/env python3
"""In-memory Weaviate stand-in for Upkeep's integration tests and benchmarks.

Standard library only (python3 >= 3.11). It speaks the part of Weaviate's REST
API (plus a small GraphQL subset) that a vector migration and a Dify-like test
fixture use, with the response shapes, status codes and cursor semantics of
Weaviate 1.27 (semitechnologies/weaviate:1.27.0, Dify's compose image). Each
behaviour names the Weaviate source file it follows (github.com/weaviate/weaviate
at tag v1.27.0 unless noted). See tests/servers/README.md, "Weaviate test server".

    python3 tests/servers/weaviate_server.py --host 127.0.0.1 --port 0 \
        [--version 1.27.0] [--api-key KEY] [--no-autoschema] [--float32-vectors]

Prints one line "READY <port>" on stdout once it serves; SIGTERM/SIGINT stop it.
"""

import argparse
import bisect
import json
import math
import os
import random
import re
import signal
import struct
import sys
import threading
import time
import uuid as _uuidlib
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

# ---------------------------------------------------------------------------
# configuration (set from the command line in main())

CFG = {
    "version": "1.27.0",
    "api_key": None,
    "autoschema": True,            # AUTOSCHEMA_ENABLED (default true; Dify compose does not set it)
    "query_defaults_limit": 25,    # QUERY_DEFAULTS_LIMIT (Dify compose: 25; Weaviate's own default 10)
    "query_maximum_results": 10000,  # QUERY_MAXIMUM_RESULTS default (usecases/config/environment.go)
    "default_vectorizer": "none",  # DEFAULT_VECTORIZER_MODULE (Dify compose: none)
    "float32": False,              # round vectors to float32 and print them as Go does
    "hostname": "http://[::]:8080",
}


def version_tuple(v=None):
    v = CFG["version"] if v is None else v
    out = []
    for part in re.split(r"[.\-+]", v.lstrip("v"))[:3]:
        m = re.match(r"\d+", part)
        out.append(int(m.group(0)) if m else 0)
    while len(out) < 3:
        out.append(0)
    return tuple(out)


# ---------------------------------------------------------------------------
# errors


class ApiError(Exception):
    """An HTTP answer other than success. body None means an empty body."""

    def __init__(self, status, body=None, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def err_payload(msg):
    # models.ErrorResponse, built by errPayloadFromSingleErr (adapters/handlers/rest/helpers.go)
    return {"error": [{"message": msg}]}


def weaviate_error(status, msg):
    return ApiError(status, err_payload(msg))


def openapi_error(code, msg, status=None):
    # go-openapi/errors ServeError: {"code":..,"message":..}; codes >= 600 map to HTTP 422
    if status is None:
        status = 422 if code >= 600 else code
    return ApiError(status, {"code": code, "message": msg})


def objects_error(msg, code, err):
    # usecases/objects/errors.go: (*Error).Error() = "msg:%s code:%v err:%v"
    return "msg:%s code:%s err:%s" % (msg, code, err)


# ---------------------------------------------------------------------------
# UUIDs (github.com/google/uuid Parse semantics, used all over Weaviate)

_HEX = "0123456789abcdefABCDEF"
_CANON_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def go_uuid_parse(s):
    """Returns (canonical lowercase uuid, None) or (None, error text as google/uuid words it)."""
    if not isinstance(s, str):
        return None, "invalid UUID format"
    n = len(s)
    if n == 36:
        pass
    elif n == 45:
        if s[:9].lower() != "urn:uuid:":
            return None, 'invalid urn prefix: "%s"' % s[:9]
        s = s[9:]
    elif n == 38:
        s = s[1:]
    elif n == 32:
        if all(c in _HEX for c in s):
            h = s.lower()
            return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:]), None
        return None, "invalid UUID format"
    else:
        return None, "invalid UUID length: %d" % n
    s = s[:36]
    if s[8] != "-" or s[13] != "-" or s[18] != "-" or s[23] != "-":
        return None, "invalid UUID format"
    h = s.replace("-", "")
    if len(h) != 32 or not all(c in _HEX for c in h):
        return None, "invalid UUID format"
    return s.lower(), None


def strfmt_is_uuid(s):
    """go-openapi strfmt "uuid" format check used by swagger validation of ids."""
    return isinstance(s, str) and bool(_CANON_RE.match(s))


# ---------------------------------------------------------------------------
# Go number formatting (encoding/json float encoder + strconv shortest)

_F32 = struct.Struct("<f")


def f32(x):
    return _F32.unpack(_F32.pack(x))[0]


_F32_LO = f32(1e-6)
_F32_HI = f32(1e21)


def _go_layout(s, absval, bits):
    """Re-lays a shortest decimal string out the way Go's encoding/json prints floats."""
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    s = s.lower()
    if "e" in s:
        mant, exp = s.split("e")
        exp = int(exp)
    else:
        mant, exp = s, 0
    if "." in mant:
        ip, fp = mant.split(".")
    else:
        ip, fp = mant, ""
    alld = ip + fp
    point = len(ip) + exp
    stripped = alld.lstrip("0")
    point -= len(alld) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return "-0" if neg else "0"
    if bits == 32:
        use_e = absval != 0 and (absval < _F32_LO or absval >= _F32_HI)
    else:
        use_e = absval != 0 and (absval < 1e-6 or absval >= 1e21)
    if use_e:
        e = point - 1
        out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        es = "%02d" % abs(e)
        if e < 0 and es[0] == "0" and len(es) == 2:
            es = es[1]
        out += "e" + ("-" if e < 0 else "+") + es
    else:
        if point <= 0:
            out = "0." + "0" * (-point) + digits
        elif point >= len(digits):
            out = digits + "0" * (point - len(digits))
        else:
            out = digits[:point] + "." + digits[point:]
    return ("-" if neg else "") + out


def go_float64(x):
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    return _go_layout(repr(float(x)), abs(x), 64)


def f32_shortest(v):
    """Shortest decimal that reads back as the float32 v (v already float32-exact)."""
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    for p in (6, 7, 8, 9):
        s = "%.*g" % (p, v)
        if f32(float(s)) == v:
            if p == 6:
                for q in (5, 4, 3, 2, 1):
                    t = "%.*g" % (q, v)
                    if f32(float(t)) == v:
                        s = t
                    else:
                        break
            return s
    return repr(v)


def go_float32(v):
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    return _go_layout(f32_shortest(v), abs(v), 32)


# ---------------------------------------------------------------------------
# JSON output helpers


class Raw:
    """Splices pre-encoded JSON text into a json.dumps result."""

    def __init__(self):
        self.items = []
        self.tok = os.urandom(6).hex()

    def add(self, text):
        if isinstance(text, bytes):
            text = text.decode()
        self.items.append(text)
        return "\x00%s:%d\x00" % (self.tok, len(self.items) - 1)

    def dumps(self, obj, sort_keys=True):
        s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        if self.items:
            pat = re.compile(r'"\\u0000' + self.tok + r':(\d+)\\u0000"')
            s = pat.sub(lambda m: self.items[int(m.group(1))], s)
        return s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def gojson_value(v, raw):
    """Makes numbers print as Go prints float64 (properties are stored as float64)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, float):
        if v == 0 and math.copysign(1.0, v) < 0:
            return raw.add("-0")
        if v.is_integer() and abs(v) < 1e21:
            return int(v)
        r = repr(v)
        if "e" in r:
            return raw.add(go_float64(v))
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        return {k: gojson_value(x, raw) for k, x in v.items()}
    if isinstance(v, list):
        return [gojson_value(x, raw) for x in v]
    return v


def dumps_go(obj):
    raw = Raw()
    return raw.dumps(gojson_value(obj, raw))


def jbytes(obj):
    """Compact JSON + trailing newline, as Go's json.Encoder writes it."""
    return (dumps_go(obj) + "\n").encode()


# ---------------------------------------------------------------------------
# dates (RFC 3339 as Go's time.Parse(time.RFC3339) accepts, printed as RFC3339Nano)

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(s):
    if not isinstance(s, str):
        return None
    m = _RFC3339.match(s)
    if not m:
        return None
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and se <= 59):
        return None
    frac = (m.group(7) or "")[1:]
    tz = m.group(8)
    if tz in ("Z", "z", "+00:00", "-00:00"):
        tz = "Z"
    frac = frac.rstrip("0")
    text = "%04d-%02d-%02dT%02d:%02d:%02d%s%s" % (y, mo, d, h, mi, se, ("." + frac) if frac else "", tz)
    # sortable key: UTC seconds + fraction
    off = 0
    if tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    import calendar
    try:
        secs = calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0)) - off
    except (ValueError, OverflowError):
        return None
    return text, (secs, float("0." + frac) if frac else 0.0)


# ---------------------------------------------------------------------------
# schema defaults (usecases/schema/class.go, entities/vectorindex/hnsw/*.go,
# usecases/sharding/config/config.go, usecases/config/config_handler.go)

PRIMITIVE_TYPES = {
    "text", "text[]", "string", "string[]", "int", "int[]", "number", "number[]",
    "boolean", "boolean[]", "date", "date[]", "uuid", "uuid[]", "geoCoordinates",
    "phoneNumber", "blob", "object", "object[]",
}
TOKENIZATIONS = {"word", "lowercase", "whitespace", "field", "trigram", "gse", "kagome_ja", "kagome_kr"}


def hnsw_defaults():
    vt = version_tuple()
    cfg = {
        "skip": False,
        "cleanupIntervalSeconds": 300,
        "maxConnections": 32 if vt >= (1, 26, 0) else 64,
        "efConstruction": 128,
        "ef": -1,
        "dynamicEfMin": 100,
        "dynamicEfMax": 500,
        "dynamicEfFactor": 8,
        "vectorCacheMaxObjects": 1000000000000,
        "flatSearchCutoff": 40000,
        "distance": "cosine",
        "pq": {
            "enabled": False, "bitCompression": False, "segments": 0, "centroids": 256,
            "trainingLimit": 100000, "encoder": {"type": "kmeans", "distribution": "log-normal"},
        },
        "bq": {"enabled": False},
    }
    if vt >= (1, 26, 0):
        cfg["sq"] = {"enabled": False, "trainingLimit": 100000, "rescoreLimit": 20}
    if vt >= (1, 27, 0):
        cfg["filterStrategy"] = "sweeping"
    return cfg


HNSW_INT_KEYS = ("maxConnections", "cleanupIntervalSeconds", "efConstruction", "ef", "dynamicEfFactor",
                 "dynamicEfMax", "dynamicEfMin", "vectorCacheMaxObjects", "flatSearchCutoff")


def parse_vector_index_config(index_type, given):
    if index_type not in ("hnsw", "flat", "dynamic"):
        raise ValueError('parse vector index config: unsupported vector index type: "%s"' % index_type)
    cfg = hnsw_defaults()
    if given is None:
        return cfg
    if not isinstance(given, dict):
        raise ValueError("parse vector index config: input must be a non-nil map")
    for k, v in given.items():
        if k in HNSW_INT_KEYS:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                raise ValueError("parse vector index config: %s must be an integer" % k)
            cfg[k] = int(v)
        elif k == "skip":
            cfg[k] = bool(v)
        elif k == "distance":
            if v not in ("cosine", "dot", "l2-squared", "manhattan", "hamming"):
                raise ValueError('parse vector index config: invalid hnsw config: distance "%s" not supported' % v)
            cfg[k] = v
        elif k in ("pq", "bq", "sq") and isinstance(v, dict) and k in cfg:
            merged = dict(cfg[k])
            merged.update(v)
            cfg[k] = merged
        elif k == "filterStrategy":
            cfg[k] = v
    return cfg


def property_with_defaults(prop, auto=False):
    p = dict(prop)
    name = p.get("name")
    if not isinstance(name, str) or not re.match(r"^[_A-Za-z][_0-9A-Za-z]{0,230}$", name or ""):
        raise ValueError("'%s' is not a valid property name. Property names in Weaviate are restricted to "
                         "valid GraphQL names, which must be \u201c/[_A-Za-z][_0-9A-Za-z]{0,230}/\u201d." % name)
    if name in ("_additional", "_id", "id"):
        raise ValueError("'%s' is a reserved property name" % name)
    p["name"] = name[0].lower() + name[1:]
    dt = p.get("dataType")
    if not isinstance(dt, list) or not dt:
        raise ValueError("property '%s': invalid dataType: dataType must have at least one element" % name)
    if len(dt) != 1 or dt[0] not in PRIMITIVE_TYPES:
        raise ValueError("property '%s': invalid dataType: stand-in supports primitive data types only, got %s"
                         % (name, dt))
    base = dt[0]
    # migratePropertyDataTypeAndTokenization: string -> text
    if base in ("string", "string[]"):
        base = "text" if base == "string" else "text[]"
        p["dataType"] = [base]
        if p.get("tokenization") in (None, "", "word"):
            p["tokenization"] = "whitespace"
    if base in ("text", "text[]"):
        tok = p.get("tokenization") or os.environ.get("DEFAULT_TOKENIZATION") or "word"
        if tok not in TOKENIZATIONS:
            raise ValueError('tokenization "%s" is not allowed for data type "%s"' % (tok, base))
        p["tokenization"] = tok
    elif p.get("tokenization"):
        raise ValueError('tokenization is not allowed for data type "%s"' % base)
    # setPropertyDefaultIndexing
    if not (p.get("indexInverted") is not None and p.get("indexFilterable") is None
            and p.get("indexSearchable") is None and p.get("indexRangeFilters") is None):
        if p.get("indexFilterable") is None:
            p["indexFilterable"] = True
        if p.get("indexSearchable") is None:
            p["indexSearchable"] = base in ("text", "text[]")
        if p.get("indexRangeFilters") is None and version_tuple() >= (1, 26, 0):
            p["indexRangeFilters"] = False
    else:
        inv = bool(p.pop("indexInverted"))
        p["indexFilterable"] = inv
        p["indexSearchable"] = inv and base in ("text", "text[]")
        if version_tuple() >= (1, 26, 0):
            p["indexRangeFilters"] = False
    if auto:
        p["description"] = "This property was generated by Weaviate's auto-schema feature on " + \
            time.strftime("%a %b %e %H:%M:%S %Y")
    return p


def class_with_defaults(body):
    """What POST /v1/schema stores and answers (AddClass + setNewClassDefaults + ParseClass)."""
    if not isinstance(body, dict):
        raise ApiError(422, err_payload("class cannot be nil"))
    cls = json.loads(json.dumps(body))
    name = cls.get("class") or ""
    if not isinstance(name, str):
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal '
                                 'into Go struct field Class.class of type string')
    if name:
        name = name[0].upper() + name[1:]
    cls["class"] = name
    if not re.match(r"^[A-Z][_0-9A-Za-z]{0,254}$", name):
        raise weaviate_error(422, "'%s' is not a valid class name" % name)
    if version_tuple() < (1, 24, 0):
        cls.pop("vectorConfig", None)  # unknown field before named vectors existed
    vector_config = cls.get("vectorConfig") or None
    if "vectorConfig" in cls and not vector_config:
        cls.pop("vectorConfig")
    props = cls.get("properties") or []
    if not isinstance(props, list):
        raise weaviate_error(422, "properties must be a list")
    seen = set()
    out_props = []
    for p in props:
        try:
            q = property_with_defaults(p)
        except ValueError as e:
            raise weaviate_error(422, str(e))
        if q["name"].lower() in seen:
            raise weaviate_error(422, 'class "%s": conflict for property "%s": already in use or provided '
                                      'multiple times' % (q["name"], name))
        seen.add(q["name"].lower())
        out_props.append(q)
    cls["properties"] = out_props
    try:
        if not vector_config:
            vz = cls.get("vectorizer") or CFG["default_vectorizer"]
            if vz != "none":
                raise ValueError('vectorizer: no module with name "%s" present' % vz)
            cls["vectorizer"] = vz
            vit = cls.get("vectorIndexType") or "hnsw"
            if vit not in ("hnsw", "flat", "dynamic"):
                raise ValueError('unrecognized or unsupported vectorIndexType "%s"' % vit)
            cls["vectorIndexType"] = vit
            cls["vectorIndexConfig"] = parse_vector_index_config(vit, cls.get("vectorIndexConfig"))
        else:
            if cls.get("vectorizer"):
                raise ValueError('class.vectorizer "%s" can not be set if class.vectorConfig is configured'
                                 % cls["vectorizer"])
            if cls.get("vectorIndexType"):
                raise ValueError('class.vectorIndexType "%s" can not be set if class.vectorConfig is configured'
                                 % cls["vectorIndexType"])
            if cls.get("vectorIndexConfig") is not None:
                raise ValueError("parse vector index config: class.vectorIndexConfig can not be set if "
                                 "class.vectorConfig is configured")
            for k in ("vectorizer", "vectorIndexType", "vectorIndexConfig"):
                cls.pop(k, None)
            if not isinstance(vector_config, dict):
                raise ValueError("vectorConfig must be a map")
            new_vc = {}
            for tv, vc in vector_config.items():
                if not re.match(r"^[_A-Za-z][_0-9A-Za-z]{0,229}$", tv):
                    raise ValueError('class.VectorConfig target vector name "%s" is not valid' % tv)
                if not isinstance(vc, dict):
                    raise ValueError("vectorConfig.%s must be an object" % tv)
                vz = vc.get("vectorizer")
                if not isinstance(vz, dict):
                    raise ValueError("class.VectorConfig.Vectorizer must be an object, got %s" % type(vz).__name__)
                if len(vz) != 1:
                    raise ValueError("class.VectorConfig.Vectorizer must consist only 1 configuration, got: %d"
                                     % len(vz))
                mod = next(iter(vz))
                if mod != "none":
                    raise ValueError('target vector "%s": vectorizer: no module with name "%s" present' % (tv, mod))
                vit = vc.get("vectorIndexType") or ""
                if vit not in ("hnsw", "flat", "dynamic"):
                    raise ValueError('target vector "%s": unrecognized or unsupported vectorIndexType "%s"'
                                     % (tv, vit))
                new_vc[tv] = {
                    "vectorizer": {"none": vz.get("none") or {}},
                    "vectorIndexType": vit,
                    "vectorIndexConfig": parse_vector_index_config(vit, vc.get("vectorIndexConfig")),
                }
            cls["vectorConfig"] = new_vc
    except ValueError as e:
        raise weaviate_error(422, str(e))
    inv = cls.get("invertedIndexConfig") or {}
    inv = dict(inv)
    if not inv.get("cleanupIntervalSeconds"):
        inv["cleanupIntervalSeconds"] = 60
    if inv.get("bm25") is None:
        inv["bm25"] = {"b": 0.75, "k1": 1.2}
    if inv.get("stopwords") is None:
        inv["stopwords"] = {"additions": None, "preset": "en", "removals": None}
    for k in ("indexNullState", "indexPropertyLength", "indexTimestamps"):
        if inv.get(k) is False:
            inv.pop(k)
    cls["invertedIndexConfig"] = inv
    mt = cls.get("multiTenancyConfig") or {}
    if mt.get("enabled"):
        raise weaviate_error(422, "weaviate stand-in: multi-tenancy is not supported")
    mtc = {"enabled": False}
    if version_tuple() >= (1, 25, 0):
        mtc["autoTenantCreation"] = False
    if version_tuple() >= (1, 25, 2):
        mtc["autoTenantActivation"] = False
    cls["multiTenancyConfig"] = mtc
    rep = dict(cls.get("replicationConfig") or {})
    if not rep.get("factor") or rep.get("factor", 0) < 1:
        rep["factor"] = 1
    vt = version_tuple()
    if vt >= (1, 26, 0):
        rep.setdefault("asyncEnabled", False)
    if vt >= (1, 27, 0) and not rep.get("deletionStrategy"):
        rep["deletionStrategy"] = ("DeleteOnConflict" if vt < (1, 28, 0) else
                                   "NoAutomatedResolution" if vt < (1, 36, 0) else "TimeBasedResolution")
    cls["replicationConfig"] = rep
    cls["shardingConfig"] = {
        "virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1, "desiredVirtualCount": 128,
        "actualVirtualCount": 128, "key": "_id", "strategy": "hash", "function": "murmur3",
    }
    if not cls.get("description"):
        cls.pop("description", None)
    if cls.get("moduleConfig") in ({}, None):
        cls.pop("moduleConfig", None)
    return cls


# ---------------------------------------------------------------------------
# storage


class Obj:
    """One stored object. The encoded JSON is built once: `head` (up to the properties) and `vpart`
    (",\"vector\":[...]" and/or ",\"vectors\":{...}"); single vectors are slices of `vpart`."""
    __slots__ = ("id", "cls", "props", "vec", "vecs", "spans", "created", "updated", "seq", "head", "vpart",
                 "_arr")

    def build(self):
        raw = Raw()
        props = raw.dumps(gojson_value(self.props, raw))
        self.head = ('{"class":%s,"creationTimeUnix":%d,"id":"%s","lastUpdateTimeUnix":%d,"properties":%s'
                     % (json.dumps(self.cls.name, ensure_ascii=False), self.created, self.id, self.updated,
                        props)).encode()
        parts, spans, pos = [], {}, 0

        def add(prefix, text, key):
            nonlocal pos
            parts.append(prefix)
            pos += len(prefix)
            parts.append(text)
            spans[key] = (pos, pos + len(text))
            pos += len(text)

        if self.vec is not None:
            add(b',"vector":', self.vec, None)
        if self.vecs:
            first = True
            for k in sorted(self.vecs):
                add((b',"vectors":{' if first else b",") + json.dumps(k).encode() + b":", self.vecs[k], k)
                first = False
            parts.append(b"}")
        self.vpart = b"".join(parts)
        self.spans = spans
        self.vec = None   # the text now lives in vpart only
        self.vecs = None

    def vector_text(self, target):
        """Raw JSON text of the legacy vector (target None) or a named vector; None when absent."""
        sp = self.spans.get(target)
        return None if sp is None else self.vpart[sp[0]:sp[1]]

    def json(self, include_vector):
        return self.head + (self.vpart if include_vector else b"") + b"}"

    def floats(self, target):
        """Decoded vector ('' = legacy unnamed vector), cached; None when absent."""
        if self._arr is None:
            self._arr = {}
        if target not in self._arr:
            text = self.vector_text(None if target == "" else target)
            self._arr[target] = None if text is None else array("d", json.loads(text))
        return self._arr[target]


class Klass:
    def __init__(self, defn):
        self.defn = defn
        self.name = defn["class"]
        self.objects = {}
        self.sorted_ids = []
        self.pending = []
        self.dirty = False
        self.dims = {}  # target vector ('' = legacy) -> dimensions, kept until the class is dropped
        self.seq = 0
        self.shard = "".join(random.choice(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))

    @property
    def named(self):
        return bool(self.defn.get("vectorConfig"))

    def prop(self, name):
        for p in self.defn["properties"]:
            if p["name"] == name:
                return p
        return None

    def ids(self):
        if self.dirty:
            self.sorted_ids = sorted(self.objects)
            self.pending = []
            self.dirty = False
        elif self.pending:
            self.sorted_ids.extend(self.pending)
            self.sorted_ids.sort()
            self.pending = []
        return self.sorted_ids

    def put(self, obj):
        new = obj.id not in self.objects
        self.seq += 1
        obj.seq = self.seq
        self.objects[obj.id] = obj
        if new:
            self.pending.append(obj.id)

    def delete(self, oid):
        if oid in self.objects:
            del self.objects[oid]
            self.dirty = True
            return True
        return False


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.classes = {}  # exact name -> Klass (insertion order = creation order)

    def get_exact(self, name):
        return self.classes.get(name)

    def get_index(self, name):
        """Data paths find the index case-insensitively (adapters/repos/db/index.go indexID lowercases)."""
        k = self.classes.get(name)
        if k is not None:
            return k
        low = (name or "").lower()
        for n, k in self.classes.items():
            if n.lower() == low:
                return k
        return None


STORE = Store()


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.clear()
        self.reset_calls()

    def clear(self):
        self.rule = None
        self.seen = 0

    def count(self, method, path):
        with self.lock:
            self.total += 1
            self.calls[path] = self.calls.get(path, 0) + 1
            key = method + " " + path
            self.calls_m[key] = self.calls_m.get(key, 0) + 1

    def reset_calls(self):
        self.calls = {}
        self.calls_m = {}
        self.total = 0

    def check(self, method, path):
        with self.lock:
            r = self.rule
            if r is None:
                return None
            paths = r.get("paths")
            if paths and not any(path == p or path.startswith(p.rstrip("/") + "/") or
                                 (p.endswith("*") and path.startswith(p[:-1])) for p in paths):
                return None
            methods = r.get("methods")
            if methods and method not in [m.upper() for m in methods]:
                return None
            self.seen += 1
            if self.seen <= int(r.get("fail_after") or 0):
                return None
            times = r.get("times")
            if times is not None and self.seen - int(r.get("fail_after") or 0) > int(times):
                return None
            return r


FAULTS = Faults()


# ---------------------------------------------------------------------------
# vectors: keep the text the client sent (or Go float32 text with --float32-vectors)

_WS = rb"[ \t\n\r]*+"
_NUM = rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_ARRAY_RE = re.compile(rb"\[" + _WS + rb"(?:" + _NUM + _WS + rb"(?:," + _WS + _NUM + _WS + rb")*+)?\]")
_VEC_KEY = re.compile(rb'"vector"' + _WS + rb":" + _WS + rb"\[")
_VECS_KEY = re.compile(rb'"vectors"' + _WS + rb":" + _WS + rb"\{")
_VECS_NAME = re.compile(_WS + rb'"([_A-Za-z][_0-9A-Za-z]*)"' + _WS + rb":" + _WS + rb"(?=\[)")
_WS_RE = re.compile(_WS)


def _scan_vectors_object(body, start):
    """Parses `{"name": [numbers], ...}` starting at body[start] == '{'. Returns (end, [(name, text)])."""
    items = []
    pos = _WS_RE.match(body, start + 1).end()
    if body[pos:pos + 1] == b"}":
        return pos + 1, items
    while True:
        m = _VECS_NAME.match(body, pos)
        if not m:
            raise ValueError
        a = m.end()
        e = body.index(b"]", a) + 1
        if not _ARRAY_RE.fullmatch(body, a, e):
            raise ValueError
        items.append((m.group(1).decode(), body[a:e]))
        pos = _WS_RE.match(body, e).end()
        c = body[pos:pos + 1]
        if c == b",":
            pos += 1
        elif c == b"}":
            return pos + 1, items
        else:
            raise ValueError


class VecIn:
    """One incoming vector: the exact JSON text the client sent, or the parsed list (fallback path)."""
    __slots__ = ("text", "values", "n")

    def __init__(self, text=None, values=None):
        self.text = text
        self.values = values
        if values is not None:
            self.n = len(values)
        else:
            inner = text[1:-1].strip()
            self.n = inner.count(b",") + 1 if inner else 0

    def get_values(self):
        if self.values is None:
            self.values = json.loads(self.text)
        return self.values

    def json_text(self):
        return self.text if self.text is not None else json.dumps(self.values, separators=(",", ":")).encode()


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_NUM_TYPES = {int, float}


def check_vector(v, field):
    if isinstance(v, VecIn):
        return v
    if not isinstance(v, list) or not set(map(type, v)) <= _NUM_TYPES:
        what = "array" if isinstance(v, list) else GO_TYPE(v)
        if isinstance(v, list):
            bad = [x for x in v if not is_number(x)][0]
            what = "bool" if isinstance(bad, bool) else GO_TYPE(bad)
            if isinstance(bad, list):
                what = "array"
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into '
                                 'Go struct field %s of type float32' % (what, field))
    return VecIn(values=v)


def encode_vector(vin):
    if CFG["float32"]:
        try:
            a = array("f", vin.get_values())
        except OverflowError:
            raise UserError("vector value out of float32 range")
        return ("[" + ",".join(go_float32(x) for x in a.tolist()) + "]").encode()
    return vin.json_text()


def parse_with_vectors(body):
    """Parses a request body, keeping each object's "vector"/"vectors" as VecIn with the exact text sent.

    Fast path: finds the vector arrays in the raw text, checks they are flat JSON number arrays,
    parses the rest of the body with the arrays blanked out, and checks every blanked array is a
    top-level "vector"/"vectors" of an object. Anything unusual falls back to a full json.loads."""
    if not body:
        return parse_body_json(body)
    try:
        spans = []
        for m in _VEC_KEY.finditer(body):
            start = m.end() - 1
            end = body.index(b"]", start) + 1
            if not _ARRAY_RE.fullmatch(body, start, end):
                raise ValueError
            spans.append((start, end, "v"))
        vecs_items = {}
        for m in _VECS_KEY.finditer(body):
            start = m.end() - 1
            end, items = _scan_vectors_object(body, start)
            vecs_items[start] = items
            spans.append((start, end, "vs"))
        if not spans:
            return parse_body_json(body)
        spans.sort()
        for a, b in zip(spans, spans[1:]):
            if a[1] > b[0]:
                raise ValueError
        pieces, pos = [], 0
        for start, end, kind in spans:
            pieces.append(body[pos:start])
            pieces.append(b"[]" if kind == "v" else b"{}")
            pos = end
        pieces.append(body[pos:])
        reduced = json.loads(b"".join(pieces), parse_constant=_bad_constant)
        objs = reduced.get("objects") if isinstance(reduced, dict) and "objects" in reduced else [reduced]
        if not isinstance(objs, list):
            raise ValueError
        slots = []
        for o in objs:
            if isinstance(o, dict):
                if isinstance(o.get("vector"), list) and not o["vector"]:
                    slots.append((o, "v"))
                if isinstance(o.get("vectors"), dict) and not o["vectors"]:
                    slots.append((o, "vs"))
        # every span must be exactly one top-level vector(s) value, in textual order
        if len(slots) != len(spans):
            raise ValueError
        # objects are in textual order; within one object the two keys may come in either order
        by_obj = []
        for o, kind in slots:
            if not by_obj or by_obj[-1][0] is not o:
                by_obj.append((o, []))
            by_obj[-1][1].append(kind)
        it = iter(spans)
        for o, kinds in by_obj:
            got = [next(it) for _ in kinds]
            if sorted(kinds) != sorted(k for _, _, k in got):
                raise ValueError
            for start, end, kind in got:
                if kind == "v":
                    text = body[start:end]
                    if o.get("vector") != []:
                        raise ValueError
                    o["vector"] = VecIn(text=text)
                else:
                    if o.get("vectors") != {}:
                        raise ValueError
                    o["vectors"] = {name: VecIn(text=t) for name, t in vecs_items[start]}
        return reduced
    except (ValueError, TypeError, UnicodeDecodeError, StopIteration):
        return parse_body_json(body)


# ---------------------------------------------------------------------------
# properties: validation (usecases/objects/validation/properties_validation.go) and auto-schema
# (usecases/objects/auto_schema.go)


class UserError(Exception):
    pass


def lower_first(s):
    return s[:1].lower() + s[1:] if s else s


def autoschema_type(value):
    """determineType in auto_schema.go (defaults: string->text, number->number, date->date)."""
    if isinstance(value, str):
        if parse_rfc3339(value) is not None:
            return "date"
        if go_uuid_parse(value)[0] is not None:
            return "uuid"
        return "text"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        if "latitude" in value and "longitude" in value:
            return "geoCoordinates"
        if "input" in value and len(value) <= 2:
            return "phoneNumber"
        return "object"
    if isinstance(value, list):
        if not value:
            return "text[]"
        first = None
        for i, x in enumerate(value):
            if isinstance(x, str):
                t = "date[]" if parse_rfc3339(x) else "uuid[]" if go_uuid_parse(x)[0] else "text[]"
            elif isinstance(x, bool):
                t = "boolean[]"
            elif isinstance(x, (int, float)):
                t = "number[]"
            elif isinstance(x, dict):
                t = "object[]"
            else:
                raise UserError("element [%d]: unrecognized data type of value '%s'" % (i, x))
            if first is None:
                first = t
            elif t != first:
                raise UserError("element [%d]: mismatched data type - '%s' expected, got '%s'"
                                % (i, first[:-2], t[:-2]))
        return first
    if value is None:
        return "text"
    raise UserError("unrecognized data type of value '%s'" % (value,))


def run_autoschema(klass_name, props, create_ok=True):
    """Adds missing classes/properties like Weaviate's auto-schema. Returns the Klass (or None)."""
    k = STORE.get_exact(klass_name)
    new_props = []
    if isinstance(props, dict):
        existing = set()
        if k is not None:
            existing = {p["name"].lower() for p in k.defn["properties"]}
        for name, value in props.items():
            if value is None:
                continue
            try:
                dt = autoschema_type(value)
            except UserError as e:
                raise UserError("property '%s' on class '%s': %s" % (name, klass_name, e))
            if dt in ("object", "object[]", "geoCoordinates", "phoneNumber"):
                raise UserError("property '%s' on class '%s': weaviate stand-in does not support '%s' values"
                                % (name, klass_name, dt))
            if lower_first(name).lower() in existing:
                continue
            existing.add(lower_first(name).lower())
            new_props.append(property_with_defaults({"name": name, "dataType": [dt]}, auto=True))
    if k is None:
        if not create_ok:
            raise UserError("given class does not exist")
        defn = class_with_defaults({
            "class": klass_name,
            "properties": [],
            "description": "This property was generated by Weaviate's auto-schema feature on "
                           + time.strftime("%a %b %e %H:%M:%S %Y"),
        })
        defn["properties"] = new_props
        k = Klass(defn)
        STORE.classes[k.name] = k
    elif new_props:
        k.defn["properties"].extend(new_props)
    return k


def validate_value(dt, pname, cname, v):
    base = dt
    if dt.endswith("[]"):
        if not isinstance(v, list):
            raise UserError("invalid %s array property '%s' on class '%s': not a %s array, but %s"
                            % (TYPE_WORD.get(dt[:-2], dt[:-2]), pname, cname, dt[:-2], type(v).__name__))
        return [validate_value(dt[:-2], pname, cname, x) for x in v]
    if base == "text":
        if not isinstance(v, str):
            raise UserError("invalid text property '%s' on class '%s': not a string, but %s"
                            % (pname, cname, GO_TYPE(v)))
        return v
    if base == "uuid":
        c = go_uuid_parse(v)[0] if isinstance(v, str) else None
        if c is None:
            raise UserError("invalid uuid property '%s' on class '%s': requires a string of UUID format, "
                            "but the given value is '%s'" % (pname, cname, v))
        return c
    if base == "int":
        if is_number(v) and float(v).is_integer():
            return float(v)
        raise UserError("invalid integer property '%s' on class '%s': requires an integer, the given value is "
                        "'%s'" % (pname, cname, v))
    if base == "number":
        if is_number(v):
            return float(v)
        raise UserError("invalid number property '%s' on class '%s': requires a float, the given value is '%s'"
                        % (pname, cname, v))
    if base == "boolean":
        if isinstance(v, bool):
            return v
        raise UserError("invalid boolean property '%s' on class '%s': not a bool, but %s"
                        % (pname, cname, GO_TYPE(v)))
    if base == "date":
        d = parse_rfc3339(v)
        if d is None:
            raise UserError("invalid date property '%s' on class '%s': requires a string with a RFC3339 "
                            "formatted date, but the given value is '%s'" % (pname, cname, v))
        return d[0]
    return v


TYPE_WORD = {"text": "text", "int": "integer", "number": "number", "boolean": "boolean", "date": "date",
             "uuid": "uuid"}


def GO_TYPE(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "json.Number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return "<nil>"


def validate_properties(k, props):
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise UserError("could not recognize object's properties: %s" % (props,))
    out = {}
    for key, value in props.items():
        if value is None:
            continue
        pname = lower_first(key)
        p = k.prop(pname)
        if p is None:
            raise UserError("no such prop with name '%s' found in class '%s' in the schema. Check your schema "
                            "files for which properties in this class are available" % (pname, k.name))
        out[pname] = validate_value(p["dataType"][0], pname, k.name, value)
    return out


# ---------------------------------------------------------------------------
# object creation (shared by POST /v1/objects and POST /v1/batch/objects)


def now_ms():
    return int(time.time() * 1000)


def prepare_object(o, batch):
    """Validates one incoming object and returns (Obj, klass) or raises UserError.

    batch=True follows usecases/objects/batch_add.go messages, else add.go."""
    cname = o.get("class")
    if cname is None or cname == "":
        raise UserError("the given class is empty")
    props = o.get("properties")
    if CFG["autoschema"]:
        cname = cname[0].upper() + cname[1:]
        try:
            k = run_autoschema(cname, props)
        except UserError as e:
            raise UserError(("invalid object: %s" % e) if not batch else str(e))
        except ApiError as e:
            msg = e.body["error"][0]["message"] if isinstance(e.body, dict) and "error" in e.body else str(e)
            raise UserError(("invalid object: %s" % msg) if not batch else msg)
    else:
        k = STORE.get_exact(cname)
        if k is None:
            if batch:
                raise UserError("class '%s' not present in schema" % cname)
            raise UserError('invalid object: class "%s" not found in schema' % cname)
    try:
        vprops = validate_properties(k, props)
    except UserError as e:
        raise UserError(("invalid object: %s" % e) if not batch else str(e))
    obj = Obj()
    obj.cls = k
    obj.props = vprops
    obj._arr = None
    vec = o.get("vector")
    obj.vec = None
    if isinstance(vec, VecIn) and vec.n:
        obj.vec = encode_vector(vec)
    vecs = o.get("vectors") if version_tuple() >= (1, 24, 0) else None
    obj.vecs = None
    if isinstance(vecs, dict) and vecs:
        obj.vecs = {}
        for name, v in vecs.items():
            if isinstance(v, VecIn) and v.n:
                obj.vecs[name] = encode_vector(v)
    return obj, k, vec, vecs


def check_dims(k, obj, vec, vecs):
    """hnsw ValidateBeforeInsert (adapters/repos/db/vector/hnsw/insert.go) via putObjectLSM
    (adapters/repos/db/shard_write_put.go). Returns an error text or None."""
    checks = []
    if k.named:
        for name, v in (vecs or {}).items():
            if name in k.defn["vectorConfig"] and isinstance(v, VecIn) and v.n:
                checks.append((name, v.n))
    elif isinstance(vec, VecIn) and vec.n:
        checks.append(("", vec.n))
    for name, n in checks:
        have = k.dims.get(name)
        if have is not None and have != n:
            inner = "new node has a vector with length %d. Existing nodes have vectors with length %d" % (n, have)
            if name:
                return "Validate vector index %s for target vector %s: %s" % (name, obj.id, inner)
            return "Validate vector index for %s: %s" % (obj.id, inner)
    for name, n in checks:
        k.dims.setdefault(name, n)
    return None


def parse_body_json(body, required=True):
    if not body:
        if required:
            raise openapi_error(602, "body in body is required")
        return None
    try:
        return json.loads(body, parse_constant=_bad_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise openapi_error(400, 'parsing body body from "" failed, because %s' % e)


def _bad_constant(name):
    raise ValueError("invalid character '%s' looking for beginning of value" % name[0])


def check_object_shape(o, field_prefix="Object"):
    if not isinstance(o, dict):
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into Go '
                                 'value of type models.Object' % GO_TYPE(o))
    for key, want in (("class", str), ("id", str), ("tenant", str)):
        if key in o and o[key] is not None and not isinstance(o[key], want):
            raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into '
                                     'Go struct field %s.%s of type string' % (GO_TYPE(o[key]), field_prefix, key))
    if o.get("vector") is not None:
        o["vector"] = check_vector(o["vector"], field_prefix + ".vector")
    if o.get("vectors") is not None:
        if not isinstance(o["vectors"], dict):
            raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into '
                                     'Go struct field %s.vectors of type models.Vectors'
                                     % (GO_TYPE(o["vectors"]), field_prefix))
        for name in list(o["vectors"]):
            o["vectors"][name] = check_vector(o["vectors"][name], field_prefix + ".vectors")


# ---------------------------------------------------------------------------
# filters (GraphQL `where`, REST batch delete `where`)


OPERATORS = {"And", "Or", "Equal", "NotEqual", "GreaterThan", "GreaterThanEqual", "LessThan", "LessThanEqual",
             "Like", "WithinGeoRange", "IsNull", "ContainsAny", "ContainsAll"}
VALUE_KEYS = ("valueText", "valueString", "valueInt", "valueNumber", "valueBoolean", "valueDate",
              "valueGeoRange")


def tokenize(tok, s):
    if tok == "field":
        return [s.strip()]
    if tok == "whitespace":
        return s.split()
    if tok == "lowercase":
        return s.lower().split()
    return re.findall(r"[^\W_]+", s.lower())


def like_regex(pat):
    out = []
    for ch in pat:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.S)


def compile_filter(k, clause, inner=False):
    """Returns predicate(obj) -> bool. Raises UserError with Weaviate's validation words."""
    if not isinstance(clause, dict):
        raise UserError("invalid where filter: must be an object")
    op = clause.get("operator")
    if op not in OPERATORS:
        raise UserError('unrecognized operator: "%s"' % (op,))
    if op in ("And", "Or"):
        operands = clause.get("operands") or []
        preds, errs = [], []
        for i, c in enumerate(operands):
            try:
                preds.append(compile_filter(k, c, True))
            except UserError as e:
                errs.append("child operand at position %d: %s" % (i, e))
        if errs:
            raise UserError(", ".join(errs))
        if op == "And":
            return lambda o: all(p(o) for p in preds)
        return lambda o: any(p(o) for p in preds)
    path = clause.get("path")
    if not isinstance(path, list) or not path:
        raise UserError("filter: path is required")
    if len(path) != 1:
        raise UserError("weaviate stand-in: reference paths are not supported in filters")
    pname = path[0]
    vkeys = [key for key in VALUE_KEYS if key in clause and clause[key] is not None]
    vkey = vkeys[0] if vkeys else None
    value = clause.get(vkey) if vkey else None
    if pname in ("id", "_id"):
        if vkey not in ("valueText", "valueString"):
            raise UserError('using ["_id"] to filter by uuid: must use "valueText" to specify the id')
        vals = value if isinstance(value, list) else [value]
        vals = [(go_uuid_parse(v)[0] or v) if isinstance(v, str) else v for v in vals]
        return _cmp_pred(op, lambda o: o.id, vals, "uuid")
    if pname in ("_creationTimeUnix", "_lastUpdateTimeUnix"):
        attr = "created" if pname == "_creationTimeUnix" else "updated"
        vals = value if isinstance(value, list) else [value]
        conv = []
        for v in vals:
            if vkey == "valueDate":
                d = parse_rfc3339(v)
                conv.append(int(d[1][0] * 1000 + d[1][1] * 1000) if d else v)
            else:
                try:
                    conv.append(int(v))
                except (TypeError, ValueError):
                    conv.append(v)
        return _cmp_pred(op, lambda o: getattr(o, attr), conv, "int")
    prop = k.prop(pname)
    if prop is None:
        raise UserError("no such prop with name '%s' found in class '%s' in the schema. Check your schema files "
                        "for which properties in this class are available" % (pname, k.name))
    dt = prop["dataType"][0]
    base = dt[:-2] if dt.endswith("[]") else dt
    if op == "IsNull":
        if vkey != "valueBoolean":
            raise UserError('operator IsNull requires a booleanValue, got "%s" instead' % (vkey or ""))
        if not k.defn.get("invertedIndexConfig", {}).get("indexNullState"):
            raise UserError("Nullstate must be indexed to be filterable! Add `indexNullState: true` to the "
                            "invertedIndexConfig")
        want = bool(value)
        return lambda o: (o.props.get(pname) is None) == want
    if base == "uuid":
        if vkey not in ("valueText", "valueString"):  # valueString is a deprecated alias of text
            raise UserError('property "%s" is of type "uuid" or "uuid[]": specify uuid as string using '
                            '"valueText"' % pname)
        if op not in ("Equal", "NotEqual", "LessThan", "LessThanEqual", "GreaterThan", "GreaterThanEqual",
                      "ContainsAll", "ContainsAny"):
            raise UserError('operator "%s" cannot be used on uuid/uuid[] props' % op)
    else:
        expect = {"text": ("valueText", "valueString"), "int": ("valueInt",), "number": ("valueNumber",),
                  "boolean": ("valueBoolean",), "date": ("valueDate",)}.get(base, ())
        if vkey not in expect:
            exp_name = "value" + base[:1].upper() + base[1:]
            raise UserError('data type filter cannot use "%s" on type "%s", use "%s" instead'
                            % (vkey or "", dt, exp_name))
    vals = value if isinstance(value, list) else [value]
    if op not in ("ContainsAny", "ContainsAll") and isinstance(value, list):
        raise UserError("operator %s does not accept a list value" % op)
    if base == "text":
        tok = prop.get("tokenization") or "word"
        if op in ("Equal", "NotEqual", "ContainsAny", "ContainsAll"):
            qtoks = [tokenize(tok, v) for v in vals]

            def tokens_of(o):
                v = o.props.get(pname)
                if v is None:
                    return None
                items = v if isinstance(v, list) else [v]
                s = set()
                for it in items:
                    s.update(tokenize(tok, it))
                return s

            def eq(o, qt):
                ts = tokens_of(o)
                return ts is not None and bool(qt) and all(t in ts for t in qt)

            if op == "Equal":
                return lambda o: eq(o, qtoks[0])
            if op == "NotEqual":
                return lambda o: not eq(o, qtoks[0])
            if op == "ContainsAny":
                return lambda o: any(eq(o, q) for q in qtoks)
            return lambda o: all(eq(o, q) for q in qtoks)
        if op == "Like":
            rx = like_regex(vals[0] if tok == "field" else vals[0].lower() if tok != "whitespace" else vals[0])

            def like(o):
                v = o.props.get(pname)
                if v is None:
                    return False
                items = v if isinstance(v, list) else [v]
                for it in items:
                    for t in tokenize(tok, it):
                        if rx.match(t):
                            return True
                return False
            return like
        return _cmp_pred(op, lambda o: o.props.get(pname), vals, "text")
    if base == "uuid":
        vals = [(go_uuid_parse(v)[0] or v) if isinstance(v, str) else v for v in vals]
        return _cmp_pred(op, lambda o: o.props.get(pname), vals, "uuid")
    if base == "date":
        keys = []
        for v in vals:
            d = parse_rfc3339(v)
            if d is None:
                raise UserError("invalid date value '%s'" % v)
            keys.append(d[1])

        def dget(o):
            v = o.props.get(pname)
            if v is None:
                return None
            if isinstance(v, list):
                return [parse_rfc3339(x)[1] for x in v]
            return parse_rfc3339(v)[1]
        return _cmp_pred(op, dget, keys, "date")
    if base in ("int", "number"):
        return _cmp_pred(op, lambda o: o.props.get(pname), [float(v) for v in vals], "num")
    if base == "boolean":
        return _cmp_pred(op, lambda o: o.props.get(pname), vals, "bool")
    raise UserError("weaviate stand-in: filtering on %s properties is not supported" % dt)


def _cmp_pred(op, getter, vals, kind):
    import operator as _op
    cmpf = {"Equal": _op.eq, "NotEqual": _op.ne, "GreaterThan": _op.gt, "GreaterThanEqual": _op.ge,
            "LessThan": _op.lt, "LessThanEqual": _op.le}

    def items(o):
        v = getter(o)
        if v is None:
            return None
        return v if isinstance(v, list) else [v]

    if op in ("ContainsAny", "ContainsAll"):
        want = list(vals)

        def contains(o):
            its = items(o)
            if its is None:
                return False
            if op == "ContainsAny":
                return any(w in its for w in want)
            return all(w in its for w in want)
        return contains
    if op == "Like":
        rx = like_regex(str(vals[0]))
        return lambda o: any(rx.match(str(x)) for x in (items(o) or []))
    f = cmpf.get(op)
    if f is None:
        raise UserError("weaviate stand-in: operator %s is not supported here" % op)
    q = vals[0]
    if op == "NotEqual":
        return lambda o: not any(x == q for x in (items(o) or []))

    def pred(o):
        for x in items(o) or []:
            try:
                if f(x, q):
                    return True
            except TypeError:
                pass
        return False
    return pred


# ---------------------------------------------------------------------------
# GraphQL subset


class GqlError(Exception):
    def __init__(self, message, loc=None, path=None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.path = path


class Enum(str):
    pass


class StrLit(str):
    """A string literal written in the query (not allowed where an enum is expected)."""


class Field:
    def __init__(self, alias, name, args, selections, loc, arg_locs):
        self.alias = alias
        self.name = name
        self.args = args
        self.selections = selections
        self.loc = loc
        self.arg_locs = arg_locs

    @property
    def key(self):
        return self.alias or self.name


_GQL_TOKEN = re.compile(r'''
  (?P<ws>[\s,\ufeff]+|\#[^\n\r]*)
 |(?P<spread>\.\.\.)
 |(?P<punct>[!$()\[\]{}:=@|&])
 |(?P<block>"""(?:\\"""|[^"]|"(?!""))*""")
 |(?P<string>"(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\n\r])*")
 |(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
 |(?P<name>[_A-Za-z][_0-9A-Za-z]*)
''', re.X)


class GqlParser:
    def __init__(self, text, variables):
        self.text = text
        self.vars = variables or {}
        self.toks = []
        pos = 0
        while pos < len(text):
            m = _GQL_TOKEN.match(text, pos)
            if not m:
                raise GqlError("Syntax Error GraphQL request (%d:%d) Unexpected character \"%s\"."
                               % (self.lc(pos) + (text[pos],)), self.loc(pos))
            kind = m.lastgroup
            if kind != "ws":
                self.toks.append((kind, m.group(0), pos))
            pos = m.end()
        self.toks.append(("eof", "<EOF>", len(text)))
        self.i = 0

    def lc(self, pos):
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, col

    def loc(self, pos):
        line, col = self.lc(pos)
        return {"column": col, "line": line}

    def peek(self):
        return self.toks[self.i]

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, expected):
        kind, val, pos = self.peek()
        found = "EOF" if kind == "eof" else ('Name "%s"' % val if kind == "name" else '"%s"' % val)
        raise GqlError("Syntax Error GraphQL request (%d:%d) Expected %s, found %s"
                       % (self.lc(pos) + (expected, found)), self.loc(pos))

    def expect(self, val):
        kind, v, pos = self.peek()
        if v != val or kind not in ("punct",):
            self.fail(val)
        return self.next()

    def document(self):
        kind, v, pos = self.peek()
        if kind == "name" and v in ("query",):
            self.next()
            if self.peek()[0] == "name":
                self.next()
            if self.peek()[1] == "(":
                depth = 0
                while True:  # variable definitions: skip (values come from "variables")
                    t = self.next()
                    if t[1] == "(":
                        depth += 1
                    elif t[1] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    elif t[0] == "eof":
                        self.fail(")")
        elif kind == "name" and v in ("mutation", "subscription"):
            raise GqlError("Schema is not configured for %ss." % v, self.loc(pos))
        elif kind == "name" and v == "fragment":
            raise GqlError("weaviate stand-in: fragments are not supported", self.loc(pos))
        sel = self.selection_set()
        if self.peek()[0] != "eof":
            self.fail("EOF" if False else "{")
        return sel

    def selection_set(self):
        self.expect("{")
        out = []
        while self.peek()[1] != "}":
            if self.peek()[0] == "spread":
                raise GqlError("weaviate stand-in: fragments are not supported", self.loc(self.peek()[2]))
            out.append(self.field())
        self.expect("}")
        return out

    def field(self):
        kind, v, pos = self.peek()
        if kind != "name":
            self.fail("Name")
        self.next()
        alias, name = None, v
        if self.peek()[1] == ":" and self.peek()[0] == "punct":
            self.next()
            k2, v2, _ = self.peek()
            if k2 != "name":
                self.fail("Name")
            self.next()
            alias, name = v, v2
        args, arg_locs = {}, {}
        if self.peek()[1] == "(":
            self.next()
            while self.peek()[1] != ")":
                ka, va, pa = self.peek()
                if ka != "name":
                    self.fail("Name")
                self.next()
                self.expect(":")
                args[va] = self.value()
                arg_locs[va] = self.loc(pa)
            self.expect(")")
        sels = None
        if self.peek()[1] == "{":
            sels = self.selection_set()
        return Field(alias, name, args, sels, self.loc(pos), arg_locs)

    def value(self):
        kind, v, pos = self.next()
        if kind == "punct" and v == "$":
            k2, v2, _ = self.next()
            if k2 != "name":
                self.fail("Name")
            return self.vars.get(v2)
        if kind == "punct" and v == "[":
            out = []
            while self.peek()[1] != "]":
                if self.peek()[0] == "eof":
                    self.fail("]")
                out.append(self.value())
            self.next()
            return out
        if kind == "punct" and v == "{":
            out = {}
            while self.peek()[1] != "}":
                k2, v2, _ = self.next()
                if k2 != "name":
                    self.i -= 1
                    self.fail("Name")
                self.expect(":")
                out[v2] = self.value()
            self.next()
            return out
        if kind == "string":
            return StrLit(json.loads(v))
        if kind == "block":
            return v[3:-3].replace('\\"""', '"""')
        if kind == "number":
            if re.match(r"^-?\d+$", v):
                return int(v)
            return float(v)
        if kind == "name":
            if v == "true":
                return True
            if v == "false":
                return False
            if v == "null":
                return None
            return Enum(v)
        self.i -= 1
        self.fail("Value")


ADDITIONAL_FIELDS = {"id", "vector", "vectors", "distance", "certainty", "creationTimeUnix",
                     "lastUpdateTimeUnix", "score", "explainScore", "classification", "group", "isConsistent"}
GET_ARGS = {"after", "autocut", "bm25", "group", "groupBy", "hybrid", "limit", "nearObject", "nearVector",
            "offset", "sort", "tenant", "where", "consistencyLevel"}
AGG_ARGS = {"limit", "where", "groupBy", "nearVector", "nearObject", "objectLimit", "hybrid", "tenant"}


def where_to_filter(w):
    """GraphQL where input -> same dict shape as the REST filter (enum values become str)."""
    if isinstance(w, dict):
        return {k: where_to_filter(v) for k, v in w.items()}
    if isinstance(w, list):
        return [where_to_filter(x) for x in w]
    if isinstance(w, str):
        return str(w)
    return w


def gql_validate_where(w, loc, type_prefix):
    if not isinstance(w, dict):
        raise GqlError('Argument "where" has invalid value %s.\nExpected "%sWhereInpObj", found not an object.'
                       % (w, type_prefix), loc)
    allowed = {"operator", "path", "operands"} | set(VALUE_KEYS)
    for key, v in w.items():
        if key not in allowed:
            raise GqlError('Argument "where" has invalid value.\nIn field "%s": Unknown field.' % key, loc)
    op = w.get("operator")
    if op is None:
        raise GqlError('Argument "where" has invalid value.\nIn field "operator": Expected "%sWhereOperatorEnum!", '
                       'found null.' % type_prefix, loc)
    if not isinstance(op, str) or isinstance(op, StrLit) or op not in OPERATORS:
        raise GqlError('Argument "where" has invalid value.\nIn field "operator": Expected type '
                       '"%sWhereOperatorEnum", found %s.' % (type_prefix, op), loc)
    for sub in w.get("operands") or []:
        gql_validate_where(sub, loc, type_prefix)


def gql_execute(query, variables):
    """Returns the GraphQL response dict (HTTP 200) like graphql-go via adapters/handlers/rest/handlers_graphql.go."""
    raw = Raw()
    try:
        sels = GqlParser(query, variables).document()
    except GqlError as e:
        return {"errors": [{"locations": [e.loc] if e.loc else None, "message": e.message, "path": None}]}, raw
    with STORE.lock:
        errors = []
        # validation pass (graphql-go validates the whole document before executing)
        for f in sels:
            if f.name == "__typename":
                continue
            if f.name not in ("Get", "Aggregate", "Explore"):
                errors.append(GqlError('Cannot query field "%s" on type "WeaviateObj".' % f.name, f.loc))
                continue
            if f.name == "Explore":
                errors.append(GqlError('weaviate stand-in: Explore is not supported', f.loc))
                continue
            if f.selections is None:
                tn = "GetObjectsObj" if f.name == "Get" else "AggregateObjectsObj"
                errors.append(GqlError('Field "%s" of type "%s" must have a sub selection.' % (f.name, tn), f.loc))
                continue
            for cf in f.selections:
                if cf.name == "__typename":
                    continue
                errors.extend(gql_validate_class(f.name, cf))
        if errors:
            return {"errors": [{"locations": [e.loc] if e.loc else None, "message": e.message, "path": None}
                               for e in errors]}, raw
        data, errs = {}, []
        for f in sels:
            if f.name == "__typename":
                data[f.key] = "WeaviateObj"
                continue
            section = {}
            for cf in f.selections:
                if cf.name == "__typename":
                    section[cf.key] = "GetObjectsObj" if f.name == "Get" else "AggregateObjectsObj"
                    continue
                try:
                    if f.name == "Get":
                        section[cf.key] = gql_get(STORE.get_exact(cf.name), cf, raw)
                    else:
                        section[cf.key] = gql_aggregate(STORE.get_exact(cf.name), cf)
                except GqlError as e:
                    section[cf.key] = None
                    errs.append({"locations": [cf.loc], "message": e.message, "path": [f.key, cf.key]})
            data[f.key] = section
        out = {"data": data}
        if errs:
            out["errors"] = errs
        return out, raw


def gql_validate_class(root, cf):
    errs = []
    k = STORE.get_exact(cf.name)
    parent = "GetObjectsObj" if root == "Get" else "AggregateObjectsObj"
    if k is None:
        return [GqlError('Cannot query field "%s" on type "%s".' % (cf.name, parent), cf.loc)]
    allowed = GET_ARGS if root == "Get" else AGG_ARGS
    for a in cf.args:
        if a not in allowed:
            errs.append(GqlError('Unknown argument "%s" on field "%s" of type "%s".' % (a, cf.name, parent),
                                 cf.arg_locs.get(a)))
    prefix = ("GetObjects%s" if root == "Get" else "AggregateObjects%s") % k.name
    if "where" in cf.args and cf.args["where"] is not None:
        try:
            gql_validate_where(cf.args["where"], cf.arg_locs.get("where"), prefix)
        except GqlError as e:
            errs.append(e)
    for a in ("limit", "offset", "objectLimit"):
        if a in cf.args and cf.args[a] is not None and (not isinstance(cf.args[a], int) or
                                                        isinstance(cf.args[a], bool)):
            errs.append(GqlError('Argument "%s" has invalid value %s.\nExpected type "Int", found %s.'
                                 % (a, cf.args[a], cf.args[a]), cf.arg_locs.get(a)))
    if cf.selections is None:
        tn = k.name if root == "Get" else "Aggregate" + k.name
        return errs + [GqlError('Field "%s" of type "[%s]" must have a sub selection.' % (cf.name, tn), cf.loc)]
    if root == "Get":
        for sf in cf.selections:
            if sf.name in ("__typename",):
                continue
            if sf.name == "_additional":
                if sf.selections is None:
                    errs.append(GqlError('Field "_additional" of type "%sAdditional" must have a sub selection.'
                                         % k.name, sf.loc))
                    continue
                for af in sf.selections:
                    if af.name not in ADDITIONAL_FIELDS or (af.name == "vectors" and not k.named) or \
                            (af.name == "isConsistent"):
                        errs.append(GqlError('Cannot query field "%s" on type "%sAdditional".' % (af.name, k.name),
                                             af.loc))
                    elif af.name == "vectors":
                        if af.selections is None:
                            errs.append(GqlError('Field "vectors" of type "%sAdditionalVectors" must have a sub '
                                                 'selection.' % k.name, af.loc))
                        else:
                            for vf in af.selections:
                                if vf.name not in k.defn["vectorConfig"]:
                                    errs.append(GqlError('Cannot query field "%s" on type "%sAdditionalVectors".'
                                                         % (vf.name, k.name), vf.loc))
                continue
            p = k.prop(sf.name)
            if p is None:
                errs.append(GqlError('Cannot query field "%s" on type "%s".' % (sf.name, k.name), sf.loc))
            elif sf.selections is not None:
                errs.append(GqlError('Field "%s" must not have a selection since type "%s" has no subfields.'
                                     % (sf.name, p["dataType"][0]), sf.loc))
    else:
        for sf in cf.selections:
            if sf.name == "__typename":
                continue
            if sf.name == "meta":
                for mf in sf.selections or []:
                    if mf.name != "count":
                        errs.append(GqlError('Cannot query field "%s" on type "Aggregate%sMetaObject".'
                                             % (mf.name, k.name), mf.loc))
                if sf.selections is None:
                    errs.append(GqlError('Field "meta" of type "Aggregate%sMetaObject" must have a sub selection.'
                                         % k.name, sf.loc))
                continue
            if sf.name == "groupedBy" or k.prop(sf.name) is not None:
                errs.append(GqlError("weaviate stand-in: only meta { count } is supported in Aggregate", sf.loc))
                continue
            errs.append(GqlError('Cannot query field "%s" on type "Aggregate%s".' % (sf.name, k.name), sf.loc))
    return errs


def gql_filter(k, cf):
    w = cf.args.get("where")
    if w is None:
        return None
    try:
        return compile_filter(k, where_to_filter(w))
    except UserError as e:
        raise GqlError("invalid 'where' filter: %s" % e)


def _cos_distance(a, b):
    dot = na = nb = 0.0
    for x, y in zip(a, b):
        dot += x * y
        na += x * x
        nb += y * y
    if na == 0 or nb == 0:
        return 1.0
    return 1.0 - dot / math.sqrt(na * nb)


def _distance(metric, a, b):
    if metric == "cosine":
        return _cos_distance(a, b)
    if metric == "dot":
        return -sum(x * y for x, y in zip(a, b))
    if metric == "l2-squared":
        return sum((x - y) * (x - y) for x, y in zip(a, b))
    if metric == "manhattan":
        return sum(abs(x - y) for x, y in zip(a, b))
    if metric == "hamming":
        return float(sum(1 for x, y in zip(a, b) if x != y))
    return _cos_distance(a, b)


def near_vector_search(k, nv, pred, limit):
    if not isinstance(nv, dict) or not isinstance(nv.get("vector"), list):
        raise GqlError("weaviate stand-in: nearVector needs a vector list")
    q = nv["vector"]
    tvs = nv.get("targetVectors")
    if tvs:
        if not k.named:
            raise GqlError("class %s does not have named vector %s configured. Available named vectors map[]"
                           % (k.name, tvs[0]))
        if len(tvs) > 1:
            raise GqlError("weaviate stand-in: multiple target vectors are not supported")
        target = tvs[0]
        if target not in k.defn["vectorConfig"]:
            raise GqlError("class %s does not have named vector %s configured" % (k.name, target))
    else:
        vc = k.defn.get("vectorConfig") or {}
        if len(vc) > 1:
            raise GqlError("multiple vectorizers configuration found, please specify target vector name")
        target = next(iter(vc)) if vc else ""
    if CFG["float32"]:
        q = array("f", q).tolist()
    metric = (k.defn["vectorConfig"][target]["vectorIndexConfig"] if target else
              k.defn.get("vectorIndexConfig") or {}).get("distance", "cosine")
    dims = k.dims.get(target)
    if dims is not None and dims != len(q):
        raise GqlError("explorer: get class: vector search: object vector search at index %s: shard %s_%s: "
                       "vector search: knn search: distance between entrypoint and query node: vector lengths "
                       "don't match: %d vs %d" % (k.name.lower(), k.name.lower(), k.shard, len(q), dims))
    res = []
    for oid in k.ids():
        o = k.objects[oid]
        if pred is not None and not pred(o):
            continue
        v = o.floats(target)
        if v is None:
            continue
        d = f32(_distance(metric, q, v))
        res.append((d, o))
    res.sort(key=lambda t: t[0])
    if nv.get("distance") is not None:
        res = [t for t in res if t[0] <= float(nv["distance"])]
    if nv.get("certainty") is not None and metric == "cosine":
        res = [t for t in res if 1 - t[0] / 2 >= float(nv["certainty"])]
    return res


def gql_get(k, cf, raw):
    pred = gql_filter(k, cf)
    limit = cf.args.get("limit")
    offset = cf.args.get("offset") or 0
    if limit is None:
        limit = CFG["query_defaults_limit"]
    if offset + limit > CFG["query_maximum_results"]:
        raise GqlError("explorer: list class: search: invalid pagination params: query maximum results exceeded")
    after = cf.args.get("after")
    nv = cf.args.get("nearVector")
    for a in ("bm25", "hybrid", "nearObject", "groupBy", "group", "sort"):
        if cf.args.get(a) is not None:
            raise GqlError("weaviate stand-in: Get argument %s is not supported" % a)
    if after is not None:
        if pred is not None or nv is not None or offset:
            raise GqlError("explorer: invalid cursor parameters: other params cannot be set with after and limit "
                           "parameters")
        if cf.args.get("limit") is None:
            raise GqlError("explorer: invalid cursor parameters: limit parameter must be set")
    if nv is not None:
        hits = near_vector_search(k, nv, pred, limit)
        rows = [(o, d) for d, o in hits][offset:offset + limit]
    elif pred is not None:
        matched = [o for o in k.objects.values() if pred(o)]
        matched.sort(key=lambda o: o.seq)  # inverted-index order: docID
        rows = [(o, None) for o in matched[offset:offset + limit]]
    else:
        ids = k.ids()
        start = 0
        if after:
            a, err = go_uuid_parse(after)
            if a is None:
                raise GqlError("explorer: invalid cursor parameters: after parameter '%s' is not a valid uuid: %s"
                               % (after, err))
            start = bisect.bisect_right(ids, a)
        rows = [(k.objects[i], None) for i in ids[start + offset:start + offset + limit]]
    out = []
    for o, dist in rows:
        item = {}
        for sf in cf.selections:
            if sf.name == "__typename":
                item[sf.key] = k.name
            elif sf.name == "_additional":
                add = {}
                for af in sf.selections:
                    n = af.name
                    if n == "id":
                        add[af.key] = o.id
                    elif n == "vector":
                        add[af.key] = gql_vector(o.vector_text(None), raw)
                    elif n == "vectors":
                        add[af.key] = {vf.key: gql_vector(o.vector_text(vf.name), raw)
                                       for vf in af.selections}
                    elif n == "distance":
                        add[af.key] = None if dist is None else raw.add(go_float64(dist))
                    elif n == "certainty":
                        add[af.key] = None if dist is None else raw.add(go_float64(f32(1 - dist / 2)))
                    elif n == "creationTimeUnix":
                        add[af.key] = str(o.created)
                    elif n == "lastUpdateTimeUnix":
                        add[af.key] = str(o.updated)
                    else:
                        add[af.key] = None
                item[sf.key] = add
            else:
                v = o.props.get(sf.name)
                p = k.prop(sf.name)
                if v is not None and p is not None and p["dataType"][0] in ("int", "int[]"):
                    v = [int(x) for x in v] if isinstance(v, list) else int(v)
                item[sf.key] = gojson_value(v, raw)
        out.append(item)
    return out


def gql_vector(text, raw):
    if text is None:
        return None
    if CFG["float32"]:
        # graphql-go widens float32 to float64 before encoding
        return raw.add("[" + ",".join(go_float64(x) for x in array("f", json.loads(text)).tolist()) + "]")
    return raw.add(text)


def gql_aggregate(k, cf):
    pred = gql_filter(k, cf)
    for a in ("nearVector", "nearObject", "hybrid", "groupBy"):
        if cf.args.get(a) is not None:
            raise GqlError("weaviate stand-in: Aggregate argument %s is not supported" % a)
    if pred is None:
        n = len(k.objects)
    else:
        n = sum(1 for o in k.objects.values() if pred(o))
    out = {}
    for sf in cf.selections:
        if sf.name == "__typename":
            out[sf.key] = "Aggregate" + k.name
        elif sf.name == "meta":
            out[sf.key] = {mf.key: n for mf in sf.selections}
    return [out]


# ---------------------------------------------------------------------------
# HTTP layer


ROUTES = []


def route(method, pattern):
    rx = re.compile("^" + pattern + "$")

    def deco(fn):
        ROUTES.append((method, rx, fn))
        return fn
    return deco


class Req:
    def __init__(self, handler, method, path, query, body):
        self.h = handler
        self.method = method
        self.path = path
        self.query = query  # dict of last values (go-swagger binds the last one)
        self.body = body
        self.headers = handler.headers


class Resp:
    def __init__(self, status, body=None, ctype="application/json", headers=None):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.headers = headers or {}


def ok_json(obj, status=200):
    return Resp(status, jbytes(obj))


# ---- misc


@route("GET", r"/v1/meta")
def h_meta(req, m):
    return ok_json({"hostname": CFG["hostname"], "modules": {}, "version": CFG["version"]})


@route("GET", r"/v1")
def h_root(req, m):
    links = [{"href": "/v1/meta", "name": "Meta information about this instance/cluster"},
             {"documentationHref": "https://weaviate.io/developers/weaviate/api/rest#tag/schema/get/schema",
              "href": "/v1/schema", "name": "view complete schema"}]
    return ok_json({"links": links})


@route("GET", r"/v1/nodes(?:/(?P<cls>[^/]+))?")
def h_nodes(req, m):
    with STORE.lock:
        shards = []
        total = 0
        for k in STORE.classes.values():
            if m.group("cls") and k.name != m.group("cls"):
                continue
            n = len(k.objects)
            total += n
            shards.append({"class": k.name, "compressed": False, "loaded": True, "name": k.shard,
                           "objectCount": n, "vectorIndexingStatus": "READY", "vectorQueueLength": 0})
    node = {"batchStats": {"queueLength": 0, "ratePerSecond": 0}, "gitHash": "standin", "name": "node1",
            "stats": {"objectCount": total, "shardCount": len(shards)}, "status": "HEALTHY",
            "version": CFG["version"]}
    if req.query.get("output") == "verbose":
        node["shards"] = shards
    else:
        node["shards"] = None
    return ok_json({"nodes": [node]})


# ---- schema (adapters/handlers/rest/handlers_schema.go)


@route("GET", r"/v1/schema")
def h_schema_dump(req, m):
    with STORE.lock:
        return ok_json({"classes": [k.defn for k in STORE.classes.values()]})


@route("POST", r"/v1/schema")
def h_schema_create(req, m):
    body = parse_body_json(req.body)
    cls = class_with_defaults(body)
    with STORE.lock:
        for n in STORE.classes:
            if n == cls["class"]:
                raise weaviate_error(422, "class name %s already exists" % cls["class"])
            if n.lower() == cls["class"].lower():
                raise weaviate_error(422, 'class already exists: found similar class "%s"' % n)
        STORE.classes[cls["class"]] = Klass(cls)
    return ok_json(cls)


@route("GET", r"/v1/schema/(?P<cls>[^/]+)")
def h_schema_get(req, m):
    with STORE.lock:
        k = STORE.get_exact(unquote(m.group("cls")))
        if k is None:
            return Resp(404)  # SchemaObjectsGetNotFound: empty body
        return ok_json(k.defn)


@route("DELETE", r"/v1/schema/(?P<cls>[^/]+)")
def h_schema_delete(req, m):
    with STORE.lock:
        STORE.classes.pop(unquote(m.group("cls")), None)  # deleting an absent class is a no-op (200)
    return Resp(200)


@route("PUT", r"/v1/schema/(?P<cls>[^/]+)")
def h_schema_update(req, m):
    raise weaviate_error(422, "weaviate stand-in: class update is not supported")


@route("POST", r"/v1/schema/(?P<cls>[^/]+)/properties")
def h_schema_add_prop(req, m):
    body = parse_body_json(req.body)
    with STORE.lock:
        k = STORE.get_exact(unquote(m.group("cls")))
        if k is None:
            raise weaviate_error(422, "class not found")  # ErrNotFound wording is not verified
        try:
            p = property_with_defaults(body if isinstance(body, dict) else {})
        except ValueError as e:
            raise weaviate_error(422, str(e))
        if any(q["name"].lower() == p["name"].lower() for q in k.defn["properties"]):
            raise weaviate_error(422, 'class "%s": conflict for property "%s": already in use or provided '
                                      'multiple times' % (p["name"], k.name))
        k.defn["properties"].append(p)
    return ok_json(p)


# ---- objects (adapters/handlers/rest/handlers_objects.go, usecases/objects/*.go)


def parse_include(req):
    inc = req.query.get("include")
    if inc is None or inc == "":
        return False
    vec = False
    for part in inc.split(","):
        if part == "vector":
            vec = True
        elif part == "classification":
            continue
        else:
            raise weaviate_error(400, "unrecognized property '%s' in ?include list" % part)
    return vec


def parse_int_param(req, name):
    v = req.query.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v, 10)
    except ValueError:
        raise openapi_error(601, '%s in query must be of type int64: "%s"' % (name, v))


def list_response(objs, include_vector, with_class):
    parts = [b'{"deprecations":', b"[]" if with_class else b"null", b',"objects":[']
    first = True
    for o in objs:
        if not first:
            parts.append(b",")
        first = False
        parts.append(o.head)
        if include_vector:
            parts.append(o.vpart)
        parts.append(b"}")
    parts.append(b"]")
    if objs:
        parts.append(b',"totalResults":%d' % len(objs))  # omitempty: absent when zero
    parts.append(b"}\n")
    return Resp(200, b"".join(parts))


@route("GET", r"/v1/objects")
def h_objects_list(req, m):
    include_vector = parse_include(req)
    cls = req.query.get("class")
    offset = parse_int_param(req, "offset") or 0
    limit = parse_int_param(req, "limit")
    after = req.query.get("after") or None  # "after=" binds as absent
    sort = req.query.get("sort") or None
    maxr = CFG["query_maximum_results"]
    eff_limit = CFG["query_defaults_limit"] if limit is None else limit
    if not cls:
        # getObjects without class (usecases/objects/get.go getObjectsFromRepo)
        if offset + eff_limit > maxr:
            raise weaviate_error(500, "list objects: query maximum results exceeded")
        if after is not None:
            raise weaviate_error(500, "list objects: after parameter not allowed, cursor must be specific to "
                                      "one class, set class query param")
        if sort:
            raise weaviate_error(500, "list objects: weaviate stand-in does not support sort")
        with STORE.lock:
            out = []
            need = offset + eff_limit
            for k in STORE.classes.values():
                for oid in k.ids():
                    out.append(k.objects[oid])
                    if len(out) >= need:
                        break
                if len(out) >= need:
                    break
            return list_response(out[offset:offset + max(eff_limit, 0)], include_vector, False)
    # query path (usecases/objects/query.go + adapters/repos/db/search.go DB.Query)
    if offset + eff_limit > maxr:
        raise weaviate_error(422, objects_error("offset or limit", 400, "query maximum results exceeded"))
    if offset + eff_limit == 0:
        return list_response([], include_vector, True)
    with STORE.lock:
        k = STORE.get_index(cls)
        if sort:
            if k is None or k.prop(sort.split(",")[0]) is None:
                raise weaviate_error(422, objects_error(
                    "sorting", 400, 'sort parameter at position 0: no such prop with name \'%s\' found in class '
                                    "'%s' in the schema. Check your schema files for which properties in this "
                                    "class are available" % (sort.split(",")[0], cls)))
        if k is None:
            return Resp(404)  # ObjectsListNotFound: empty body
        if after is not None:
            bad = []
            if offset > 0:
                bad.append("offset")
            if sort:
                bad.append("sort")
            if bad:
                raise weaviate_error(422, objects_error("cursor api: invalid 'after' parameter", 400,
                                                        "%s cannot be set with after and limit parameters"
                                                        % ",".join(bad)))
            a, err = go_uuid_parse(after)
            if a is None:
                raise weaviate_error(422, objects_error("cursor api: invalid 'after' parameter", 400,
                                                        "after parameter '%s' is not a valid uuid: %s"
                                                        % (after, err)))
            if limit is None or limit < 0:
                raise weaviate_error(422, objects_error("cursor api: invalid 'after' parameter", 400,
                                                        "limit parameter must be set"))
            ids = k.ids()
            start = bisect.bisect_right(ids, a)  # Seek(after); skip the id itself when present
            page = [k.objects[i] for i in ids[start:start + limit]]
            return list_response(page, include_vector, True)
        if sort:
            raise weaviate_error(500, "weaviate stand-in: sort is not supported")
        if eff_limit < 0:
            raise weaviate_error(500, "search index %s: negative limit" % k.name.lower())
        ids = k.ids()
        page = [k.objects[i] for i in ids[offset:offset + eff_limit]]
        return list_response(page, include_vector, True)


def _check_path_id(raw_id):
    oid = unquote(raw_id)
    if not strfmt_is_uuid(oid):
        raise openapi_error(601, 'id in path must be of type uuid: "%s"' % oid)
    return oid.lower()


@route("GET|HEAD", r"/v1/objects/(?P<cls>[^/]+)/(?P<id>[^/]+)")
def h_object_get(req, m):
    include_vector = parse_include(req) if req.method == "GET" else False
    oid = _check_path_id(m.group("id"))
    with STORE.lock:
        k = STORE.get_index(unquote(m.group("cls")))
        o = k.objects.get(oid) if k is not None else None
        if req.method == "HEAD":
            return Resp(204 if o is not None else 404)
        if o is None:
            return Resp(404)  # ObjectsClassGetNotFound: empty body
        return Resp(200, o.json(include_vector) + b"\n")


@route("GET|HEAD", r"/v1/objects/(?P<id>[^/]+)")
def h_object_get_deprecated(req, m):
    include_vector = parse_include(req) if req.method == "GET" else False
    oid = _check_path_id(m.group("id"))
    with STORE.lock:
        for k in STORE.classes.values():
            o = k.objects.get(oid)
            if o is not None:
                if req.method == "HEAD":
                    return Resp(204)
                return Resp(200, o.json(include_vector) + b"\n")
    return Resp(404)


@route("DELETE", r"/v1/objects/(?P<cls>[^/]+)/(?P<id>[^/]+)")
def h_object_delete(req, m):
    oid = _check_path_id(m.group("id"))
    cname = unquote(m.group("cls"))
    with STORE.lock:
        k = STORE.get_index(cname)
        if k is None:
            # DB.DeleteObject: "delete from non-existing index" -> NewErrInternal -> 500
            raise weaviate_error(500, "could not delete object from vector repo: delete from non-existing index "
                                      "for %s" % cname)
        k.delete(oid)  # absent object: Shard.DeleteObject returns nil -> 204
    return Resp(204)


@route("DELETE", r"/v1/objects/(?P<id>[^/]+)")
def h_object_delete_deprecated(req, m):
    oid = _check_path_id(m.group("id"))
    with STORE.lock:
        n = sum(1 for k in STORE.classes.values() if k.delete(oid))
    return Resp(204 if n else 404)


@route("POST", r"/v1/objects")
def h_object_create(req, m):
    body = parse_with_vectors(req.body)
    check_object_shape(body)
    if body.get("id") not in (None, "") and not strfmt_is_uuid(body["id"]):
        raise openapi_error(601, 'id in body must be of type uuid: "%s"' % body["id"])
    with STORE.lock:
        oid = (body.get("id") or "").lower() or str(_uuidlib.uuid4())
        cname = body.get("class") or ""
        if cname:
            k0 = STORE.get_index(cname[0].upper() + cname[1:] if CFG["autoschema"] else cname)
            if k0 is not None and oid in k0.objects:
                raise weaviate_error(422, "id '%s' already exists" % body.get("id"))
        try:
            obj, k, vec, vecs = prepare_object(body, batch=False)
        except UserError as e:
            raise weaviate_error(422, str(e))
        obj.id = oid
        obj.created = obj.updated = now_ms()
        err = check_dims(k, obj, vec, vecs)
        if err:
            raise weaviate_error(500, 'put object: import into index %s: put local object: shard="%s": store '
                                      "object in LSM store: %s" % (k.name.lower(), k.shard, err))
        obj.build()
        k.put(obj)
        return Resp(200, obj.json(True) + b"\n")


@route("POST", r"/v1/batch/objects")
def h_batch_create(req, m):
    body = parse_with_vectors(req.body)
    if not isinstance(body, dict):
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into Go '
                                 'value of type batch.BatchObjectsCreateBody' % GO_TYPE(body))
    objs = body.get("objects")
    if objs is not None and not isinstance(objs, list):
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into Go '
                                 'struct field BatchObjectsCreateBody.objects of type []*models.Object'
                                 % GO_TYPE(objs))
    objs = objs or []
    for i, o in enumerate(objs):
        if o is None:
            continue
        check_object_shape(o)
        if o.get("id") not in (None, "") and not strfmt_is_uuid(o["id"]):
            raise openapi_error(601, 'body.objects.%d.id in body must be of type uuid: "%s"' % (i, o["id"]))
    if not objs:
        raise weaviate_error(422, "invalid param 'objects': cannot be empty, need at least one object for batching")
    out = []
    now = now_ms()
    with STORE.lock:
        results = []
        last_index = {}
        for i, o in enumerate(objs):
            if o is None:
                results.append((None, None, "the given object is empty", o))
                continue
            oid = (o.get("id") or "").lower() or str(_uuidlib.uuid4())
            try:
                obj, k, vec, vecs = prepare_object(o, batch=True)
            except UserError as e:
                results.append((oid, None, str(e), o))
                continue
            obj.id = oid
            obj.created = obj.updated = now
            err = check_dims(k, obj, vec, vecs)
            if err:
                results.append((oid, None, err, o))
                continue
            obj.build()
            results.append((oid, obj, None, o))
            last_index[(k.name, oid)] = i
        # duplicates inside one batch: the last one wins (findDuplicatesInBatchObjects)
        for i, (oid, obj, err, o) in enumerate(results):
            if obj is not None and last_index.get((obj.cls.name, oid)) == i:
                obj.cls.put(obj)
        for i, (oid, obj, err, o) in enumerate(results):
            if obj is not None:
                head = obj.json(True)[:-1]
                res = b'"result":{"status":"SUCCESS"}'
            else:
                echo = {}
                if isinstance(o, dict):
                    for key in ("class", "id", "properties", "tenant"):
                        if o.get(key) not in (None, ""):
                            echo[key] = o[key]
                    echo["creationTimeUnix"] = now
                    echo["lastUpdateTimeUnix"] = now
                    echo["id"] = oid
                    echo.setdefault("properties", {})
                head = dumps_go(echo).encode()[:-1]
                vp = b""
                if isinstance(o, dict):
                    if isinstance(o.get("vector"), VecIn) and o["vector"].n:
                        vp += b',"vector":' + o["vector"].json_text()
                    if isinstance(o.get("vectors"), dict) and o["vectors"]:
                        vp += b',"vectors":{' + b",".join(
                            json.dumps(n).encode() + b":" + v.json_text()
                            for n, v in sorted(o["vectors"].items()) if isinstance(v, VecIn)) + b"}"
                head += vp
                res = b'"result":{"errors":' + dumps_go(err_payload(err)).encode() + b',"status":"FAILED"}'
            sep = b"," if head != b"{" else b""
            out.append(head + sep + b'"deprecations":null,' + res + b"}")
    return Resp(200, b"[" + b",".join(out) + b"]\n")


@route("DELETE", r"/v1/batch/objects")
def h_batch_delete(req, m):
    body = parse_body_json(req.body)
    if not isinstance(body, dict) or not isinstance(body.get("match"), dict):
        raise weaviate_error(422, "validate: empty match clause")
    match = body["match"]
    dry = bool(body.get("dryRun"))
    output = body.get("output") or "minimal"
    with STORE.lock:
        k = STORE.get_exact(match.get("class") or "")
        if k is None:
            raise weaviate_error(422, "validate: class: %s doesn't exist" % match.get("class"))
        if match.get("where") is None:
            raise weaviate_error(422, "validate: invalid where filter: filter cannot be empty")
        try:
            pred = compile_filter(k, match["where"])
        except UserError as e:
            raise weaviate_error(422, "validate: invalid where filter: %s" % e)
        limit = 10000
        hits = [o for o in sorted(k.objects.values(), key=lambda o: o.seq) if pred(o)][:limit]
        objs = []
        for o in hits:
            if not dry:
                k.delete(o.id)
            if output == "verbose":
                objs.append({"id": o.id, "status": "DRYRUN" if dry else "SUCCESS"})
        res = {"matches": len(hits), "limit": limit, "successful": 0 if dry else len(hits), "failed": 0}
        if output == "verbose":
            res["objects"] = objs
        return ok_json({"match": match, "output": output, "dryRun": dry, "results": res})


# ---- GraphQL (adapters/handlers/rest/handlers_graphql.go)


@route("POST", r"/v1/graphql")
def h_graphql(req, m):
    body = parse_body_json(req.body)
    if not isinstance(body, dict):
        raise openapi_error(400, 'parsing body body from "" failed, because json: cannot unmarshal %s into Go '
                                 'value of type models.GraphQLQuery' % GO_TYPE(body))
    query = body.get("query") or ""
    if not query:
        raise weaviate_error(422, "query cannot be empty")
    with STORE.lock:
        if not STORE.classes:
            raise weaviate_error(422, "no graphql provider present, this is most likely because no schema is "
                                      "present. Import a schema first!")
    result, raw = gql_execute(query, body.get("variables") if isinstance(body.get("variables"), dict) else None)
    return Resp(200, (raw.dumps(result) + "\n").encode())


# ---- test control


@route("POST", r"/__fault")
def h_fault(req, m):
    body = parse_body_json(req.body) or {}
    with FAULTS.lock:
        FAULTS.rule = body
        FAULTS.seen = 0
    return ok_json({"ok": True, "rule": body})


@route("POST", r"/__fault/clear")
def h_fault_clear(req, m):
    with FAULTS.lock:
        FAULTS.clear()
    return ok_json({"ok": True})


@route("GET", r"/__calls")
def h_calls(req, m):
    with FAULTS.lock:
        return ok_json({"total": FAULTS.total, "paths": dict(FAULTS.calls), "calls": dict(FAULTS.calls_m)})


@route("POST", r"/__reset")
def h_reset(req, m):
    with STORE.lock:
        STORE.reset()
    with FAULTS.lock:
        FAULTS.clear()
        FAULTS.reset_calls()
    return ok_json({"ok": True})


def is_control(path):
    return path.startswith("/__")


NO_AUTH = {"/v1/.well-known/live", "/v1/.well-known/ready", "/v1/.well-known/openid-configuration", "/v1"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if os.environ.get("WEAVIATE_STANDIN_LOG"):
            sys.stderr.write("weaviate-standin: " + (fmt % args) + "\n")

    def send_response(self, code, message=None):
        # like Go's net/http: Date, no Server header
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    def write(self, resp):
        self.send_response(resp.status)
        body = resp.body or b""
        if resp.body is not None and resp.ctype:
            self.send_header("Content-Type", resp.ctype)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def dispatch(self, method):
        try:
            parts = urlsplit(self.path)
            path = parts.path
            query = {}
            for k, v in parse_qsl(parts.query, keep_blank_values=True):
                query[k] = v
            body = self.read_body()
            if not is_control(path):
                FAULTS.count(method, path)
                rule = FAULTS.check(method, path)
                if rule is not None:
                    stall = float(rule.get("stall_ms") or 0)
                    if stall > 0:
                        time.sleep(stall / 1000.0)
                    if rule.get("drop"):
                        self.close_connection = True
                        try:
                            self.connection.shutdown(2)
                        except OSError:
                            pass
                        return
                    status = rule.get("status")
                    if status:
                        msg = rule.get("message") or "injected fault"
                        self.write(Resp(int(status), jbytes(err_payload(msg))))
                        return
            self.write(self.handle_api(method, path, query, body))
        except ApiError as e:
            b = None if e.body is None else (e.body if isinstance(e.body, bytes) else jbytes(e.body))
            self.write(Resp(e.status, b, headers=e.headers))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - a bug in the stand-in
            import traceback
            traceback.print_exc()
            try:
                self.write(Resp(500, jbytes(err_payload("weaviate stand-in internal error: %r" % (e,)))))
            except OSError:
                self.close_connection = True

    def handle_api(self, method, path, query, body):
        if path == "/v1/.well-known/live":
            return Resp(200)
        if path == "/v1/.well-known/ready":
            return Resp(200)
        if method == "OPTIONS":
            return Resp(200)
        if path == "/":
            return Resp(301, b'{"links":{"href":"/v1","name":"api v1","documentationHref":'
                             b'"https://weaviate.io/developers/weaviate/current/"}}', headers={"Location": "/v1"})
        control = is_control(path)
        key = CFG["api_key"]
        token = None
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
        if not token:
            token = query.get("access_token") or None
        # usecases/auth/authentication/anonymous/middleware.go: runs before routing
        if key and not control and path not in NO_AUTH and not token:
            raise ApiError(401, b'{"code":401,"message":"anonymous access not enabled, please provide an auth '
                                b'scheme such as OIDC"}')
        if path == "/v1/.well-known/openid-configuration" and method == "GET":
            return Resp(404)
        allowed = []
        for rmethod, rx, fn in ROUTES:
            mm = rx.match(path)
            if not mm:
                continue
            methods = rmethod.split("|")
            if method not in methods:
                allowed.extend(methods)
                continue
            if not control and path not in NO_AUTH and token is not None:
                # composer/token_validation.go: apikey client when configured, else OIDC (unconfigured)
                if key:
                    if token != key:
                        raise openapi_error(401, "invalid api key, please provide a valid api key")
                else:
                    raise openapi_error(401, "oidc auth is not configured, please try another auth scheme or set "
                                             "up weaviate with OIDC configured")
            return fn(Req(self, method, path, query, body), mm)
        if allowed:
            al = sorted(set(allowed))
            raise ApiError(405, {"code": 405, "message": "method %s is not allowed, but [%s] are"
                                                        % (method, ",".join(al))}, headers={"Allow": ",".join(al)})
        raise openapi_error(404, "path %s was not found" % path)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None):
    ap = argparse.ArgumentParser(description="In-memory Weaviate REST stand-in (see tests/servers/README.md)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--version", default="1.27.0", help="Weaviate version to answer as (default 1.27.0)")
    ap.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    ap.add_argument("--no-autoschema", action="store_true", help="AUTOSCHEMA_ENABLED=false")
    ap.add_argument("--query-defaults-limit", type=int, default=25, help="QUERY_DEFAULTS_LIMIT (Dify compose: 25)")
    ap.add_argument("--query-maximum-results", type=int, default=10000, help="QUERY_MAXIMUM_RESULTS")
    ap.add_argument("--float32-vectors", action="store_true",
                    help="store vectors as float32 and print them as Weaviate (Go) does; slower")
    a = ap.parse_args(argv)
    CFG["version"] = a.version.lstrip("v")
    CFG["api_key"] = a.api_key
    CFG["autoschema"] = not a.no_autoschema
    CFG["query_defaults_limit"] = a.query_defaults_limit
    CFG["query_maximum_results"] = a.query_maximum_results
    CFG["float32"] = a.float32_vectors
    srv = Server((a.host, a.port), Handler)
    port = srv.server_address[1]
    CFG["hostname"] = "http://[::]:%d" % port

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
