#!/usr/bin/env python3
"""Benchmarks varc against onnxruntime on the shipped models, side by side.

Usage: python3 tests/bench/bench.py [--iters N] [--threads T] [MODEL.onnx ...]

Builds varc in release mode, then for every model (default: all of
models/manifest.json) runs `varc bench --json` and onnxruntime (CPU, graph
optimisations on, the same thread count) on the model's shipped inputs, and
prints a Markdown table of medians and the ratio varc/onnxruntime (< 1 means
varc is faster). Re-executes itself inside the project's bench venv.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ensure_venv():
    try:
        import onnxruntime  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError:
        venv = subprocess.check_output([os.path.join(ROOT, "scripts/python-env.sh"), "bench"], text=True).strip()
        os.execv(os.path.join(venv, "bin/python"), [os.path.join(venv, "bin/python")] + sys.argv)


def ort_median_ms(model, inputs, iters, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    for _ in range(2):
        sess.run(None, inputs)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, inputs)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ensure_venv()
    from safetensors.numpy import load_file

    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "varc"], cwd=ROOT)
    varc = os.path.join(ROOT, "target/release/varc")
    models = args.models or [
        os.path.join(ROOT, "models", m["file"]) for m in json.load(open(os.path.join(ROOT, "models/manifest.json")))
    ]
    print(f"| model | varc compile ms | varc median ms | onnxruntime median ms | varc / ort |")
    print(f"|---|---:|---:|---:|---:|")
    for model in models:
        stem = model[: -len(".onnx")]
        inputs = load_file(stem + ".inputs.safetensors")
        try:
            out = subprocess.run(
                [varc, "bench", model, "--json", "--iters", str(args.iters)],
                capture_output=True, text=True, check=True,
            ).stdout
            v = json.loads(out)
            varc_cell = (f"{v['compile_ms']:.1f}", f"{v['median_ms']:.3f}")
        except subprocess.CalledProcessError as e:
            v = None
            varc_cell = ("—", "error: " + e.stderr.strip().splitlines()[-1][:60])
        o = ort_median_ms(model, inputs, args.iters, args.threads)
        ratio = f"{v['median_ms'] / o:.2f}" if v else "—"
        print(f"| {os.path.basename(model)} | {varc_cell[0]} | {varc_cell[1]} | {o:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
