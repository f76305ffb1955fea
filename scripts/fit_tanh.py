#!/usr/bin/env python3
"""Fits the rational tanh of backends/cpu/src/math.rs and checks it in f32.

tanh(x) ≈ x·P(x²)/Q(x²) with P, Q of degree 4 (Q(0) = 1) on [0, C]:
linearised least squares on the relative error, reweighted towards the
minimax solution (Lawson's iteration). Prints the f32 coefficients (highest
degree first, as `Fx::horner` takes them) and the error of an f32 Horner
evaluation over a dense sweep. Needs numpy (e.g. the .venv-bench venv of
scripts/python-env.sh bench).
"""
import numpy as np

C = 7.9
DP, DQ = 4, 4


def fit(iters=80):
    x = np.concatenate([np.linspace(1e-4, C, 40000), np.geomspace(1e-6, 1e-4, 200)])
    t, z = np.tanh(x), x * x
    w, qprev, best = np.ones_like(x), np.ones_like(x), None
    for _ in range(iters):
        a = np.concatenate(
            [x[:, None] * z[:, None] ** np.arange(DP + 1), -t[:, None] * z[:, None] ** np.arange(1, DQ + 1)],
            axis=1,
        )
        scale = w / (t * qprev)
        sol, *_ = np.linalg.lstsq(a * scale[:, None], t * scale, rcond=None)
        p, q = sol[: DP + 1], np.concatenate([[1.0], sol[DP + 1 :]])
        qprev = np.polyval(q[::-1], z)
        err = (x * np.polyval(p[::-1], z) / qprev - t) / t
        w = w * np.abs(err)
        w = np.maximum(w / w.sum() * len(w), 1e-12)
        if best is None or np.abs(err).max() < best[0]:
            best = (np.abs(err).max(), p, q)
    return best


def horner(c, z):
    acc = np.full_like(z, c[-1])
    for k in c[-2::-1]:
        acc = (acc * z + k).astype(np.float32)
    return acc


m, p, q = fit()
p32, q32 = np.float32(p), np.float32(q)
assert (q32 > 0).all(), "Q must have no positive root"
xs = np.concatenate([np.linspace(-C, C, 2_000_001), np.geomspace(1e-30, 1, 4001)]).astype(np.float32)
z = (xs * xs).astype(np.float32)
y = (xs * horner(p32, z) / horner(q32, z)).astype(np.float32)
ref = np.tanh(xs.astype(np.float64))
rel = np.abs(y - ref) / np.where(ref == 0, 1, np.abs(ref))
print(f"f64 fit max rel {m:.3e}; f32 max rel {rel.max():.3e}, max |y| {np.abs(y).max():.9f}")
print("P (highest first):", [float(v) for v in p32[::-1]])
print("Q (highest first):", [float(v) for v in q32[::-1]])
