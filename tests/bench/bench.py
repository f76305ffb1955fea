#!/usr/bin/env python3
"""Benchmarks varc against onnxruntime, OpenVINO and tract on the same models and inputs.

Usage (from anywhere):

    python3 tests/bench/bench.py [--iters N] [--threads 1,2] [--d16] [--peers ort,openvino,tract]
                                 [--out DIR] [MODEL.onnx ...]

Builds varc in release mode (`cargo build --release -p varc`), then for every model (default: all
of models/manifest.json, plus the VAR-d16-shaped model with --d16) and every thread count runs,
each in its own subprocess so that its peak RSS can be read with wait4():

  varc       `target/release/varc bench MODEL --json --iters N [--threads T]`
             (compile_ms and median_ms as varc reports them)
  ort        onnxruntime CPUExecutionProvider, default graph optimisations (ORT_ENABLE_ALL),
             intra_op_num_threads = T, inter_op_num_threads = 1; load = InferenceSession creation
  openvino   CPU device, INFERENCE_NUM_THREADS = T, NUM_STREAMS = 1, PERFORMANCE_HINT = LATENCY,
             INFERENCE_PRECISION_HINT = f32 (the default would be bf16 on CPUs with AMX/AVX512-BF16);
             load = read_model + compile_model
  tract      tract's Python package (tract-onnx): load + into_model + into_runnable (optimisation)
             = load. Its Python API has no thread setting (single-threaded), so it runs at T = 1 only.

on the model's shipped inputs (<stem>.inputs.safetensors). Every runner does the same warm-up
runs (2; 1 for the d16 model) and then N timed runs, and reports the median. The Python peers
also compare their outputs with the shipped onnxruntime goldens (<stem>.outputs.safetensors)
when there are some.

Outputs (DIR defaults to target/bench):
  stdout and DIR/results.md   Markdown tables: medians + ratios varc/peer (< 1: varc is faster),
                              and compile/load times + peak RSS per runner
  DIR/results.json            every figure, plus the environment (versions, CPU, thread support)
  DIR/ratios.png              log-scale bars of varc's median relative to each peer,
                              per model and thread count

--d16 builds (once; cached in target/bench/var_d16/, gitignored) the VAR-d16-shaped model with
`python3 models/generate.py --d16` (C = 1024, 16 heads, depth 16, ~310 M parameters, 1.24 GB)
and benchmarks it with --d16-iters (default 3) timed runs.

Re-executes itself inside the project's bench venv (scripts/python-env.sh bench).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = ["ort", "openvino", "tract"]
PEER_TITLE = {"varc": "varc", "ort": "onnxruntime", "openvino": "OpenVINO", "tract": "tract"}
D16_DIR = os.path.join(ROOT, "target", "bench", "var_d16")
D16_MODEL = os.path.join(D16_DIR, "var_d16_dyn18.onnx")


def ensure_venv():
    if os.environ.get("VARC_BENCH_REEXEC") == "1":
        return
    venv = subprocess.check_output([os.path.join(ROOT, "scripts/python-env.sh"), "bench"], text=True)
    py = os.path.join(venv.strip().splitlines()[-1], "bin/python")
    os.environ["VARC_BENCH_REEXEC"] = "1"
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


# ---------------------------------------------------------------------------------------------
# Workers: one runtime, one model, one thread count; print one JSON object on the last line.
# ---------------------------------------------------------------------------------------------
def timed_runs(run, warmup, iters):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def worker(runtime, model, threads, iters, warmup, outputs):
    from safetensors.numpy import load_file

    stem = model[: -len(".onnx")]
    inputs = load_file(stem + ".inputs.safetensors")
    golden_path = stem + ".outputs.safetensors"
    golden = load_file(golden_path) if os.path.exists(golden_path) and outputs else None
    res = {}
    if runtime == "ort":
        import onnxruntime as ort

        res["version"] = ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        t = time.perf_counter()
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        res["load_ms"] = (time.perf_counter() - t) * 1e3
        names = [o.name for o in sess.get_outputs()]
        feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
        got = dict(zip(names, sess.run(None, feed)))
        run = lambda: sess.run(None, feed)  # noqa: E731
    elif runtime == "openvino":
        import openvino as ov

        res["version"] = ov.__version__
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        t = time.perf_counter()
        m = core.read_model(model)
        t1 = time.perf_counter()
        compiled = core.compile_model(m, "CPU", config)
        t2 = time.perf_counter()
        res["load_ms"] = (t2 - t) * 1e3
        res["compile_model_ms"] = (t2 - t1) * 1e3
        res["threads_set"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        res["precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        req = compiled.create_infer_request()
        feed = {p.get_any_name(): inputs[(p.names & inputs.keys()).pop()] for p in compiled.inputs}
        r = req.infer(feed)
        got = {}
        for o in compiled.outputs:
            key = (o.names & set(outputs or [])) or o.names
            got[sorted(key)[0]] = r[o]
        run = lambda: req.infer(feed)  # noqa: E731
    elif runtime == "tract":
        import tract

        res["version"] = tract.version()
        t = time.perf_counter()
        im = tract.onnx().load(model)
        in_names = [im.input_name(i) for i in range(im.input_count())]
        runnable = im.into_model().into_runnable()
        res["load_ms"] = (time.perf_counter() - t) * 1e3
        feed = [inputs[n] for n in in_names]
        outs = [o.to_numpy() for o in runnable.run(feed)]
        # tract names outputs after their nodes; the graph's output order is what the manifest lists
        got = dict(zip(outputs, outs)) if outputs and len(outputs) == len(outs) else {}
        run = lambda: runnable.run(feed)  # noqa: E731
    else:
        raise SystemExit(f"unknown runtime {runtime}")
    if golden is not None:
        import numpy as np

        diffs = [float(np.abs(np.asarray(got[k], dtype=np.float64) - golden[k]).max())
                 for k in golden if k in got]
        res["max_abs_vs_golden"] = max(diffs) if len(diffs) == len(golden) else None
    times = timed_runs(run, max(warmup - 1, 0), iters)  # the output check above was one warm-up run
    res.update(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), iters=iters,
               threads=threads)
    try:  # this process's own peak (VmHWM of the post-exec address space), a cross-check of the RSS column
        res["vm_hwm_mb"] = next(int(ln.split()[1]) for ln in open("/proc/self/status")
                                if ln.startswith("VmHWM:")) / 1024.0
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
TIME = "/usr/bin/time"


def run_measured(cmd, timeout_s):
    """Runs cmd; returns (rc, stdout, stderr, peak RSS in MB, wall seconds).

    The peak RSS comes from GNU time (`/usr/bin/time -f %M`: wait4's ru_maxrss of a process forked
    from the small `time` process). Without it, from this script's own wait4(), whose ru_maxrss
    also counts the RSS this Python parent had when it forked (Linux carries the pre-exec peak
    over exec), so it is an upper bound."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("w+", suffix=".rss") as rssf:
        use_time = os.access(TIME, os.X_OK)
        full = [TIME, "-q", "-f", "%M", "-o", rssf.name] + cmd if use_time else cmd
        t = time.time()
        p = subprocess.Popen(full, stdout=out, stderr=err, cwd=ROOT, start_new_session=True)

        def kill():
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - t
        rss = ru.ru_maxrss / 1024.0
        if use_time:
            rssf.seek(0)
            lines = [ln for ln in rssf.read().split() if ln.strip().isdigit()]
            rss = int(lines[-1]) / 1024.0 if lines else None
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), rss, wall


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line")


def error_line(rc, stdout, stderr, timeout_s, wall):
    if rc in (-9, 137) and wall >= timeout_s - 1:
        return f"timed out after {timeout_s:.0f} s"
    lines = [ln for ln in (stderr + stdout).strip().splitlines() if ln.strip()]
    msg = lines[-1].strip() if lines else f"exit status {rc}"
    if rc in (-9, 137):
        msg = f"killed (signal 9; out of memory?): {msg}"
    return msg


def bench_varc(varc, model, threads, iters, warmup, varc_threads, timeout_s):
    cmd = [varc, "bench", model, "--json", "--iters", str(iters), "--warmup", str(warmup)]
    if varc_threads:
        cmd += ["--threads", str(threads)]
    rc, out, err, rss, wall = run_measured(cmd, timeout_s)
    if rc != 0:
        return {"error": error_line(rc, out, err, timeout_s, wall), "peak_rss_mb": rss, "wall_s": wall}
    v = last_json(out)
    return {"load_ms": v["compile_ms"], "median_ms": v["median_ms"], "min_ms": v.get("min_ms"),
            "max_ms": v.get("max_ms"), "gflops": v.get("gflops"), "kernels": v.get("kernels"),
            "threads": v.get("threads", 1 if not varc_threads else threads), "iters": iters,
            "peak_rss_mb": rss, "wall_s": wall}


def bench_peer(peer, model, threads, iters, warmup, outputs, timeout_s):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", peer, model, str(threads), str(iters),
           str(warmup), ",".join(outputs or [])]
    rc, out, err, rss, wall = run_measured(cmd, timeout_s)
    if rc != 0:
        return {"error": error_line(rc, out, err, timeout_s, wall), "peak_rss_mb": rss, "wall_s": wall}
    r = last_json(out)
    r.update(peak_rss_mb=rss, wall_s=wall)
    return r


def peer_available(peer):
    """None, or why the peer cannot run (checked in a subprocess: the parent stays small)."""
    mod = {"ort": "onnxruntime", "openvino": "openvino", "tract": "tract"}[peer]
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines()
    return f"`import {mod}` failed: {lines[-1] if lines else r.returncode}"


def ensure_d16():
    if os.path.exists(D16_MODEL) and os.path.exists(D16_MODEL[:-5] + ".inputs.safetensors"):
        return
    print(f"generating the VAR-d16-shaped model into {D16_DIR} (once) ...", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VARC_BENCH_REEXEC", "VARC_MODELS_REEXEC")}
    subprocess.check_call(["python3", os.path.join(ROOT, "models/generate.py"), "--d16", D16_DIR], cwd=ROOT, env=env)


def fmt_ms(r):
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    m = r["median_ms"]
    s = f"{m:.3f}" if m < 10 else f"{m:.1f}" if m < 10000 else f"{m:.0f}"
    return s + ("¹" if r.get("varc_threads_fallback") else "")


def fmt_load(r):
    if r is None or "load_ms" not in r:
        return "—" if r is None or "error" not in r else "error"
    return f"{r['load_ms']:.0f}" if r["load_ms"] >= 10 else f"{r['load_ms']:.1f}"


def fmt_rss(r):
    return "—" if r is None or r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"


def ratio(v, p):
    if not v or not p or "median_ms" not in v or "median_ms" not in p:
        return None
    return v["median_ms"] / p["median_ms"]


def tables(results, peers, thread_counts):
    L = ["### Run time (median ms) and ratio varc / peer (< 1: varc faster)", ""]
    head = "| model | thr | varc | " + " | ".join(PEER_TITLE[p] for p in peers) + " | " + \
        " | ".join(f"varc/{p}" for p in peers) + " |"
    L += [head, "|---|---:|" + "---:|" * (1 + 2 * len(peers))]
    for row in results:
        r = row["runs"]
        cells = [os.path.basename(row["model"]), str(row["threads"]), fmt_ms(r.get("varc"))]
        cells += [fmt_ms(r.get(p)) for p in peers]
        for p in peers:
            q = ratio(r.get("varc"), r.get(p))
            cells.append("—" if q is None else f"{q:.2f}")
        L.append("| " + " | ".join(cells) + " |")
    L += ["", "### Compile/load ms and peak RSS MB", ""]
    L += ["| model | thr | " + " | ".join(f"{PEER_TITLE[p]} load" for p in ["varc"] + peers) + " | " +
          " | ".join(f"{PEER_TITLE[p]} RSS" for p in ["varc"] + peers) + " |",
          "|---|---:|" + "---:|" * (2 * (1 + len(peers)))]
    for row in results:
        r = row["runs"]
        cells = [os.path.basename(row["model"]), str(row["threads"])]
        cells += [fmt_load(r.get(p)) for p in ["varc"] + peers]
        cells += [fmt_rss(r.get(p)) for p in ["varc"] + peers]
        L.append("| " + " | ".join(cells) + " |")
    errors = [(os.path.basename(row["model"]), row["threads"], p, r["error"])
              for row in results for p, r in row["runs"].items() if r and "error" in r]
    if errors:
        L += ["", "Errors:", ""]
        L += [f"- {m} ({t} thr) {PEER_TITLE[p]}: `{e}`" for m, t, p, e in errors]
    return "\n".join(L)


def plot(results, peers, thread_counts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, axes = plt.subplots(len(thread_counts), 1, squeeze=False,
                             figsize=(max(10, 0.2 * len(results) / len(thread_counts) * len(peers) + 3),
                                      4.2 * len(thread_counts)))
    width = 0.8 / len(peers)
    colors = {p: f"C{i}" for i, p in enumerate(peers)}
    for ax, t in zip(axes[:, 0], thread_counts):
        rows = [row for row in results if row["threads"] == t]
        names = [os.path.basename(row["model"])[: -len(".onnx")] for row in rows]
        ys_all = [1.0]
        for j, p in enumerate(peers):
            xs, ys = [], []
            for i, row in enumerate(rows):
                q = ratio(row["runs"].get("varc"), row["runs"].get(p))
                if q is not None:
                    xs.append(i + (j - (len(peers) - 1) / 2) * width)
                    ys.append(q)
            if xs:  # bars grow from 1 (parity): up = varc slower, down = varc faster
                ax.bar(xs, [y - 1.0 for y in ys], width=width, bottom=1.0, color=colors[p],
                       label=f"varc / {PEER_TITLE[p]}")
                ys_all += ys
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        lo, hi = min(ys_all), max(ys_all)
        ax.set_ylim(min(lo / 1.3, 0.5), max(hi * 1.3, 2.0))
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylabel("varc median / peer median")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}: varc run time relative to each peer (log; below 1: varc faster)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def environment(varc, varc_threads, peers, unavailable):
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "varc_threads_flag": varc_threads, "unavailable_peers": unavailable}
    try:
        env["cpu"] = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except Exception:  # noqa: BLE001
        pass
    try:
        env["varc_commit"] = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                     text=True).strip()
        env["varc_tree_dirty"] = bool(subprocess.check_output(["git", "status", "--porcelain"], cwd=ROOT, text=True))
    except Exception:  # noqa: BLE001
        pass
    return env


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        runtime, model, threads, iters, warmup, outputs = sys.argv[2:8]
        worker(runtime, model, int(threads), int(iters), int(warmup), [o for o in outputs.split(",") if o])
        return
    ensure_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="ONNX files (default: every model of models/manifest.json)")
    ap.add_argument("--iters", type=int, default=20, help="timed runs per runner (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--peers", default=",".join(PEERS), help="subset of ort,openvino,tract")
    ap.add_argument("--d16", action="store_true", help="also the VAR-d16-shaped model (built once, cached)")
    ap.add_argument("--d16-only", action="store_true", help="only the VAR-d16-shaped model")
    ap.add_argument("--d16-iters", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per runner before it is killed")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/varc")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            sys.exit(f"unknown peer {p!r}; known: {', '.join(PEERS)}")
    os.makedirs(args.out, exist_ok=True)

    varc = os.path.join(ROOT, "target/release/varc")
    if args.no_build:
        if not os.path.exists(varc):
            sys.exit(f"--no-build: {varc} does not exist")
    elif subprocess.call(["cargo", "build", "--release", "-q", "-p", "varc"], cwd=ROOT) != 0:
        sys.exit("cargo build --release -p varc failed (use --no-build to benchmark the existing "
                 "target/release/varc)")
    varc_threads = "--threads" in subprocess.run([varc, "bench", "--help"], capture_output=True, text=True).stdout
    notes = []
    if not varc_threads and any(t > 1 for t in thread_counts):
        notes.append("¹ this varc's `bench` has no `--threads`: varc ran on 1 thread in every row "
                     "(its 1-thread figure is repeated in the rows with more threads).")
    unavailable = {p: why for p in peers if (why := peer_available(p))}
    for p, why in unavailable.items():
        notes.append(f"{PEER_TITLE[p]} unavailable: {why}")
    peers = [p for p in peers if p not in unavailable]
    if not os.access(TIME, os.X_OK):
        notes.append(f"{TIME} missing: peak RSS from wait4(), an upper bound that includes this script's RSS at fork.")
    if "tract" in peers and any(t > 1 for t in thread_counts):
        notes.append("tract's Python package (PyPI `tract`) has no thread setting and runs single-threaded: "
                     "it is measured in the 1-thread rows only.")

    manifest = {m["file"]: m for m in json.load(open(os.path.join(ROOT, "models/manifest.json")))}
    models = [os.path.abspath(m) for m in args.models]
    if not models and not args.d16_only:
        models = [os.path.join(ROOT, "models", f) for f in manifest]
    if args.d16 or args.d16_only:
        ensure_d16()
        models.append(D16_MODEL)

    results = []
    t_start = time.time()
    for model in models:
        is_d16 = os.path.abspath(model) == os.path.abspath(D16_MODEL)
        iters, warmup = (args.d16_iters, 1) if is_d16 else (args.iters, args.warmup)
        entry = manifest.get(os.path.basename(model)) if os.path.dirname(os.path.abspath(model)) == \
            os.path.join(ROOT, "models") else None
        outputs = [o["name"] for o in entry["graph_outputs"]] if entry else None
        varc_1thr = None
        for t in thread_counts:
            runs = {}
            if varc_threads or t == 1 or varc_1thr is None:
                runs["varc"] = bench_varc(varc, model, t, iters, warmup, varc_threads, args.timeout)
                if t == 1 or not varc_threads:
                    varc_1thr = runs["varc"]
            else:
                runs["varc"] = dict(varc_1thr, varc_threads_fallback=True)
            for p in peers:
                if p == "tract" and t > 1:
                    continue
                runs[p] = bench_peer(p, model, t, iters, warmup, outputs, args.timeout)
            row = {"model": os.path.relpath(model, ROOT), "threads": t, "iters": iters, "warmup": warmup,
                   "runs": runs}
            results.append(row)
            brief = ", ".join(f"{k} {fmt_ms(v)}" + (f" ({v['error'][:80]})" if "error" in v else "")
                              for k, v in runs.items())
            print(f"[{time.time() - t_start:6.0f} s] {os.path.basename(model)} {t} thr: {brief}",
                  file=sys.stderr, flush=True)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump({"partial": True, "results": results}, f, indent=1)

    env = environment(varc, varc_threads, peers, unavailable)
    env["varc_binary_built"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(varc)))
    env["varc_build_skipped"] = args.no_build
    env["wall_s"] = round(time.time() - t_start, 1)
    for row in results:
        for p, r in row["runs"].items():
            if p != "varc" and r and "version" in r:
                env.setdefault("versions", {})[p] = r["version"]
    md = tables(results, peers, thread_counts)
    header = (f"varc vs {', '.join(PEER_TITLE[p] for p in peers)} on {env.get('cpu', '?')} "
              f"({env['cpus']} CPUs), varc {env.get('varc_commit', '?')}"
              f"{' (dirty tree)' if env.get('varc_tree_dirty') else ''}; "
              f"{args.iters} timed runs after {args.warmup} warm-up ({args.d16_iters} after 1 for var_d16); "
              f"peer versions: {', '.join(f'{PEER_TITLE[k]} {v}' for k, v in env.get('versions', {}).items())}.")
    text = header + "\n\n" + md + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"
    print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"environment": env, "notes": notes, "thread_counts": thread_counts, "peers": peers,
                   "results": results}, f, indent=1)
    try:
        plot(results, peers, thread_counts, os.path.join(args.out, "ratios.png"))
    except Exception as e:  # noqa: BLE001
        print(f"plot failed: {e}", file=sys.stderr)
    print(f"wrote {os.path.relpath(args.out, ROOT)}/results.md, results.json, ratios.png", file=sys.stderr)


if __name__ == "__main__":
    main()
