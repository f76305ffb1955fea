#!/usr/bin/env bash
# The test command (README.md, .ci/run): sets up what the tests need, then
# runs formatting and lint checks and the whole test suite.
#   - a Python venv with the `onnx` package (scripts/python-env.sh test), which
#     generates the ONNX backend node test cases into tests/data/generated/node;
#   - cargo fmt --check, cargo clippy -D warnings, cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
venv="$(scripts/python-env.sh test)"

cases=tests/data/generated/node
stamp="$cases/index.json"
if [ ! -f "$stamp" ] || [ tests/onnx_node/generate.py -nt "$stamp" ] || [ scripts/requirements-test.txt -nt "$stamp" ]; then
  rm -rf "$cases"
  "$venv/bin/python" tests/onnx_node/generate.py "$cases"
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast "$@"
