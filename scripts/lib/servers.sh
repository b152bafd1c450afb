# Sourced by scripts: installs the storage test servers into .tools/ (git ignores it) and
# exports their absolute paths for the test harness (tests/it/support/servers.rs), which starts
# each one on a free port and kills it on drop:
#   UPKEEP_TEST_MOTO     moto_server           (S3, and OSS in path style)   PyPI moto[server]
#   UPKEEP_TEST_AZURITE  azurite-blob          (Azure Blob)                  npm azurite
#   UPKEEP_TEST_GCS      gcp-storage-emulator  (GCS, JSON API only)          PyPI gcp-storage-emulator
#   UPKEEP_TEST_QDRANT_PY  the venv's python, to run tests/servers/qdrant_standin.py (Qdrant gRPC
#                        stand-in over qdrant_client's local mode) PyPI qdrant-client, grpcio (+ pytest
#                        for its self-test, tests/servers/test_qdrant_standin.py)
#   UPKEEP_TEST_MILVUS_PY  the venv's python, to run tests/servers/milvus_server.py (a strict Milvus
#                        gRPC server over milvus-lite in the same process) PyPI milvus-lite, pymilvus
#                        (milvus-lite imports pymilvus's generated stubs and does not declare it;
#                        its self-test, tests/servers/test_milvus_server.py, drives it with pymilvus)
# A stamp file records the pinned versions: a rerun with the same pins and the binaries in place
# does nothing. Change a pin here and the next run reinstalls.

UPKEEP_PIN_MOTO="moto[server]==5.2.5"
UPKEEP_PIN_GCS="gcp-storage-emulator==2026.7.19"
UPKEEP_PIN_AZURITE="azurite@3.35.0"
# The Qdrant stand-in uses local-mode internals of this exact qdrant-client: bump it deliberately
# and rerun its self-test.
UPKEEP_PIN_QDRANT_CLIENT="qdrant-client==1.20.0"
UPKEEP_PIN_GRPCIO="grpcio==1.85.3"
UPKEEP_PIN_PYTEST="pytest==9.2.0"
# The Milvus test server subclasses milvus-lite's gRPC servicer and reads its collection state:
# bump milvus-lite deliberately and rerun its self-test. pymilvus follows Dify's pin (~=2.6.12).
UPKEEP_PIN_MILVUS_LITE="milvus-lite==3.2.2"
UPKEEP_PIN_PYMILVUS="pymilvus==2.6.17"

ensure_test_servers() {
  local root tools venv node stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  tools="$root/.tools"
  venv="$tools/venv"
  node="$tools/node"
  stamp="$tools/servers.stamp"
  want="$UPKEEP_PIN_MOTO $UPKEEP_PIN_GCS $UPKEEP_PIN_AZURITE $UPKEEP_PIN_QDRANT_CLIENT $UPKEEP_PIN_GRPCIO $UPKEEP_PIN_PYTEST $UPKEEP_PIN_MILVUS_LITE $UPKEEP_PIN_PYMILVUS python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  mkdir -p "$tools"

  # Two runs at once (e.g. two scripts/test) must not install into the same folders together.
  exec {_servers_lock}>"$tools/servers.lock"
  flock "$_servers_lock"

  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/gcp-storage-emulator" ] \
    || [ ! -x "$node/node_modules/.bin/azurite-blob" ] || [ ! -x "$venv/bin/pytest" ] \
    || ! compgen -G "$venv/lib/python3*/site-packages/qdrant_client/grpc" >/dev/null \
    || ! compgen -G "$venv/lib/python3*/site-packages/milvus_lite/adapter/grpc" >/dev/null \
    || ! compgen -G "$venv/lib/python3*/site-packages/pymilvus/grpc_gen" >/dev/null; then
    rm -f "$stamp"
    if ! _install_test_servers "$venv" "$node"; then
      flock -u "$_servers_lock"
      exec {_servers_lock}>&-
      echo "scripts: installing the storage test servers failed (see above)" >&2
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  flock -u "$_servers_lock"
  exec {_servers_lock}>&-

  export UPKEEP_TEST_MOTO="$venv/bin/moto_server"
  export UPKEEP_TEST_AZURITE="$node/node_modules/.bin/azurite-blob"
  export UPKEEP_TEST_GCS="$venv/bin/gcp-storage-emulator"
  export UPKEEP_TEST_QDRANT_PY="$venv/bin/python"
  export UPKEEP_TEST_MILVUS_PY="$venv/bin/python"
  echo "test server S3:    ${UPKEEP_PIN_MOTO} at ${UPKEEP_TEST_MOTO}" >&2
  echo "test server Azure: ${UPKEEP_PIN_AZURITE} at ${UPKEEP_TEST_AZURITE}" >&2
  echo "test server GCS:   ${UPKEEP_PIN_GCS} at ${UPKEEP_TEST_GCS}" >&2
  echo "test server Qdrant: tests/servers/qdrant_standin.py (${UPKEEP_PIN_QDRANT_CLIENT}, ${UPKEEP_PIN_GRPCIO}) with ${UPKEEP_TEST_QDRANT_PY}" >&2
  echo "test server Milvus: tests/servers/milvus_server.py (${UPKEEP_PIN_MILVUS_LITE}, ${UPKEEP_PIN_PYMILVUS}) with ${UPKEEP_TEST_MILVUS_PY}" >&2
}

_install_test_servers() {
  local venv="$1" node="$2"
  echo "scripts: installing the storage test servers into .tools/ ($UPKEEP_PIN_MOTO, $UPKEEP_PIN_GCS, $UPKEEP_PIN_AZURITE, $UPKEEP_PIN_QDRANT_CLIENT, $UPKEEP_PIN_GRPCIO, $UPKEEP_PIN_PYTEST, $UPKEEP_PIN_MILVUS_LITE, $UPKEEP_PIN_PYMILVUS)" >&2
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "scripts: installing Node.js from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || return 1
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "scripts: installing python3-venv from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null || return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || return 1
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$UPKEEP_PIN_MOTO" "$UPKEEP_PIN_GCS" \
    "$UPKEEP_PIN_QDRANT_CLIENT" "$UPKEEP_PIN_GRPCIO" "$UPKEEP_PIN_PYTEST" \
    "$UPKEEP_PIN_MILVUS_LITE" "$UPKEEP_PIN_PYMILVUS" || return 1
  mkdir -p "$node"
  npm install --prefix "$node" --no-audit --no-fund --loglevel=error --save-exact \
    "$UPKEEP_PIN_AZURITE" >/dev/null || return 1
  local bin
  for bin in "$venv/bin/moto_server" "$venv/bin/gcp-storage-emulator" "$node/node_modules/.bin/azurite-blob" \
    "$venv/bin/pytest"; do
    if [ ! -x "$bin" ]; then
      echo "scripts: $bin is missing after the install" >&2
      return 1
    fi
  done
  if ! "$venv/bin/python" -c 'import grpc, qdrant_client.grpc, qdrant_client.local.qdrant_local' >/dev/null 2>&1; then
    echo "scripts: qdrant-client/grpcio do not import in $venv after the install" >&2
    return 1
  fi
  if ! "$venv/bin/python" -c 'import milvus_lite.adapter.grpc.servicer, pymilvus.grpc_gen.milvus_pb2_grpc' >/dev/null 2>&1; then
    echo "scripts: milvus-lite/pymilvus do not import in $venv after the install" >&2
    return 1
  fi
}
