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
# The AOT tests (tests/tests/aot.rs) cross-link aarch64 objects and run them
# under qemu; they fail, naming the tool, when these are missing.
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    $sudo apt-get update -qq && $sudo apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null ||
      echo "warning: could not install gcc-aarch64-linux-gnu and qemu-user" >&2
  fi
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
