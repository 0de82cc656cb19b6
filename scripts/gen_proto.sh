#!/usr/bin/env bash
# Generate the Python code of the ExternalTaskExecutor contract (gRPC).
#
#   scripts/gen_proto.sh            # regenerate in place, under src/legato/connectors/proto/
#   scripts/gen_proto.sh OUT_DIR    # write the generated files under OUT_DIR instead
#
# The generated *_pb2.py, *_pb2.pyi and *_pb2_grpc.py files are committed, so that users
# of Legato need only grpcio and protobuf, not grpcio-tools. Run this after editing
# executor.proto and commit the result; tests/unit/test_grpc_codegen.py fails when the
# committed files differ from what this script generates.
#
# PYTHON selects the interpreter that has grpcio-tools (default: .venv/bin/python if it
# exists, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_ROOT="$ROOT/src/legato/connectors/proto"
OUT="${1:-$PROTO_ROOT}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# The .proto path relative to PROTO_ROOT is the name the descriptor is registered under.
PROTO=legato/executor/v1/executor.proto
# The Python package the generated modules live in.
PACKAGE=legato.connectors.proto.legato.executor.v1

mkdir -p "$OUT"
"$PYTHON" -m grpc_tools.protoc \
  --proto_path="$PROTO_ROOT" \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  "$PROTO_ROOT/$PROTO"

# protoc names the generated module by the .proto path (`legato.executor.v1`), which in
# this source tree is `legato.connectors.proto.legato.executor.v1` (and `legato.executor`
# is another module): make the import in the gRPC module absolute within the package.
GRPC_FILE="$OUT/legato/executor/v1/executor_pb2_grpc.py"
"$PYTHON" - "$GRPC_FILE" "$PACKAGE" <<'EOF'
import sys

path, package = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    text = f.read()
old = "from legato.executor.v1 import executor_pb2 as"
if old not in text:
    sys.exit(f"{path}: expected the line {old!r}; has grpcio-tools changed its output?")
text = text.replace(old, f"from {package} import executor_pb2 as")
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
EOF

# Package markers, so the generated modules import as a regular package.
for dir in legato legato/executor legato/executor/v1; do
  marker="$OUT/$dir/__init__.py"
  [[ -f "$marker" ]] || printf '"""Generated code of executor.proto (scripts/gen_proto.sh)."""\n' > "$marker"
done
