#!/usr/bin/env python3
"""Coefficients of the f32 GELU kernel (`kernels/src/activation.rs`), and their error.

Run with a Python that has numpy and mpmath (the row-wise venv has both):
    python3 scripts/fit_gelu_f32.py [--degree 8] [--scale 0.6875] [--exp-degree 6]

The kernel forms `r = 1 / (2 + scale |x|)`, `v = alpha r + beta` and `q = Phi(-|x|) =
r G(v) e^(-x^2 / 2)`, so `G = erfcx(z) (2 + scale |x|) / 2` with `z = |x| / sqrt 2`; `v` covers
`[-1, 1]` for `|x|` up to `F32_NEAR`. `G` is fitted by Chebyshev interpolation in `v` (40-digit
`erfc` through mpmath) against the f32-rounded `alpha` and `beta`, and `e^(-w / 2)` on `w` in
`[-ln 2, ln 2]` likewise; both are printed in monomial form rounded to f32 (the constants of
`activation.rs`), with the truncation error of the interpolant and the largest relative error
of Horner in f32 over a fine grid, in units of 2^-24.

Other scales trade the degree against the rounding of `2 + scale |x|` near x = 0 (the module
documentation of activation.rs); `cargo run --release -p benign-kernels --example
gelu_accuracy` measures the kernel as a whole.
"""
import argparse

import mpmath
import numpy as np

mpmath.mp.dps = 40
F32_NEAR = 12.5
NODES = 120


def f32(v):
    return float(np.float32(v))


def horner_f32(coefficients, v):
    """Horner with one rounding per step, as the FMAs do."""
    p = np.float32(coefficients[-1])
    for c in coefficients[-2::-1]:
        p = np.float32(np.float64(p) * np.float64(v) + np.float64(c))
    return float(p)


def chebyshev_monomial(f, degree, lo, hi):
    """Monomial coefficients (in t in [lo, hi]) of f's Chebyshev interpolant."""
    k = np.arange(NODES)
    s = np.cos(np.pi * (k + 0.5) / NODES)
    t = (lo + hi) / 2 + (hi - lo) / 2 * s
    c = np.polynomial.chebyshev.chebfit(s, [f(x) for x in t], degree)
    # back from s = (t - mid) / half to t
    mono_s = np.polynomial.Polynomial(np.polynomial.chebyshev.cheb2poly(c))
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return mono_s(np.polynomial.Polynomial([-mid / half, 1 / half])).coef


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--degree", type=int, default=8)
    ap.add_argument("--exp-degree", type=int, default=6)
    ap.add_argument("--scale", type=float, default=0.6875)
    a = ap.parse_args()
    scale = f32(a.scale)
    r_min, r_max = 1 / (2 + scale * F32_NEAR), 0.5
    alpha = f32(2 / (r_max - r_min))
    beta = f32(-(r_max + r_min) / (r_max - r_min))
    v_lo, v_hi = alpha * r_min + beta, alpha * r_max + beta

    def g_of_v(v):
        r = (mpmath.mpf(v) - beta) / alpha
        d = 1 / r
        ax = (d - 2) / scale
        z = ax / mpmath.sqrt(2)
        return float(mpmath.erfc(z) * mpmath.exp(z * z) * d / 2)

    g_exact = chebyshev_monomial(g_of_v, a.degree, v_lo, v_hi)
    g = [f32(c) for c in g_exact]
    grid = np.linspace(v_lo, v_hi, 20001).astype(np.float32)
    g_trunc = max(abs(np.polynomial.polynomial.polyval(float(v), g_exact) / g_of_v(float(v)) - 1)
                  for v in grid[::10]) / 2**-24
    g_err = max(abs(horner_f32(g, v) / g_of_v(float(v)) - 1) for v in grid) / 2**-24
    ln2 = float(mpmath.log(2))

    def exp_half(w):
        return float(mpmath.exp(-mpmath.mpf(float(w)) / 2))

    e = [f32(c) for c in chebyshev_monomial(exp_half, a.exp_degree, -ln2, ln2)]
    wgrid = np.linspace(-ln2, ln2, 20001).astype(np.float32)
    e_err = max(abs(horner_f32(e, w) / exp_half(w) - 1) for w in wgrid) / 2**-24
    g_values = [g_of_v(float(v)) for v in grid[::100]]
    print(f"scale {scale!r}, alpha {alpha!r}, beta {beta!r}, v in [{v_lo:.6f}, {v_hi:.6f}]")
    print(f"G: degree {a.degree}, values in [{min(g_values):.4f}, {max(g_values):.4f}], "
          f"truncation {g_trunc:.3f} x 2^-24, max relative error in f32 {g_err:.2f} x 2^-24")
    print("G coefficients:", ", ".join(repr(c) for c in g))
    print(f"e^(-w/2): degree {a.exp_degree}, max relative error {e_err:.2f} x 2^-24")
    print("exp coefficients:", ", ".join(repr(c) for c in e))


if __name__ == "__main__":
    main()
