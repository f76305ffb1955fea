#!/usr/bin/env bash
# Creates (once) and prints the path of a project virtual environment.
# Usage: scripts/python-env.sh test|models|ptx
# - test:   what the test suite needs (onnx for the ONNX node tests, numpy)
# - models: what models/generate.py needs to regenerate the shipped models
# - ptx:    NVIDIA's ptxas (nvidia-cuda-nvcc-cu12) to validate emitted PTX
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kind="${1:-test}"
venv="$root/.venv-$kind"
req="$root/scripts/requirements-$kind.txt"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
  if ! python3 -m venv "$venv" >&2; then
    # Debian's python3 splits venv out into its own package.
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv"
