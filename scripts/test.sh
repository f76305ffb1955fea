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
log="$(mktemp)"
status=0
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
