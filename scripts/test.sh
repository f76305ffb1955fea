#!/usr/bin/env bash
# The test command (README.md, .ci/run): sets up what the tests need, then
# runs formatting and lint checks and the whole test suite.
#   - a Python venv with the `onnx` package (scripts/python-env.sh test), which
#     generates the ONNX backend node test cases into tests/data/generated/node;
#   - a Python venv with NVIDIA's ptxas (scripts/python-env.sh ptx, the pip
#     wheel nvidia-cuda-nvcc-cu12), exported as VARC_PTXAS: tests/tests/ptxas.rs
#     assembles the CUDA backend's PTX for every shipped model with it;
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
ptx_venv="$(scripts/python-env.sh ptx)"
VARC_PTXAS="$(ls "$ptx_venv"/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas 2>/dev/null | head -n 1 || true)"
if [ -z "$VARC_PTXAS" ]; then
  echo "ptxas not found under $ptx_venv (pip package nvidia-cuda-nvcc-cu12)" >&2
  exit 1
fi
export VARC_PTXAS

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
