#!/usr/bin/env bash
# Regenerates the Python modules for lifeboat's own etcd v3 API message definitions.
# The generated files are committed, so users never need grpcio-tools.
set -euo pipefail
cd "$(dirname "$0")/../src"
# protoc finds the mypy-protobuf plugin (protoc-gen-mypy) on PATH.
export PATH="$PWD/../.venv/bin:$PATH"
../.venv/bin/python -m grpc_tools.protoc -I. \
  --python_out=. --grpc_python_out=. --mypy_out=. \
  lifeboat/etcdapi/proto/*.proto
