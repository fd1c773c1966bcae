#!/usr/bin/env python3
"""Row-wise kernels (GELU forward / backward, layer norm, row softmax; f32) in `benign` and in
PyTorch on one thread, in interleaved rounds, written into docs/performance.md.

Each round runs our kernels (`kernels/examples/rowwise_bench.rs`, its own process with
RAYON_NUM_THREADS=1), then PyTorch's on the same shapes (torch.set_num_threads(1), `out=`
variants so neither side allocates per call), then, with --baseline-bench, an older build of
the same example (e.g. the starting commit's kernels), or the same build under other
environment variables (--baseline-env, e.g. BENIGN_STREAMING_STORES=never to time the
kernels without streaming stores). A row's figure is the median over rounds of each round's
median call; the spread is the range of the round medians.

    python3 -m venv .venv && .venv/bin/pip install torch numpy
    cargo build --release -p benign-kernels --example rowwise_bench
    .venv/bin/python scripts/compare_rowwise.py \
        --bench target/release/examples/rowwise_bench [--baseline-bench OLD] [--write]

`scripts/performance.py` calls `measure` for the same block among the others.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import time

import numpy
import torch

from doc_block import replace_block
from machine_info import format_loads, kernel_isa, load_average, machine_description, pinned

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "performance.md")
BLOCK = "rowwise-table"


def run_bench(binary, reps, extra_env=None):
    env = dict(os.environ, RAYON_NUM_THREADS="1", **(extra_env or {}))
    out = subprocess.run([binary, str(reps)], env=env, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {(r["kernel"], r["rows"], r["cols"]): (r["median_seconds"], r["min_seconds"])
            for r in rows}


def torch_calls(kernel, rows, cols):
    """A no-argument call of PyTorch's kernel on this shape writing into preallocated outputs."""
    x = torch.randn(rows, cols) * 1.7
    y = torch.empty_like(x)
    if kernel == "gelu":
        return lambda: torch._C._nn.gelu(x, out=y)
    if kernel == "gelu_backward":
        dy = torch.randn(rows, cols)
        return lambda: torch.ops.aten.gelu_backward.grad_input(dy, x, grad_input=y)
    if kernel == "layer_norm":
        gamma, beta = torch.randn(cols), torch.randn(cols)
        mean, rstd = torch.empty(rows, 1), torch.empty(rows, 1)
        return lambda: torch.ops.aten.native_layer_norm.out(
            x, [cols], gamma, beta, 1e-5, out0=y, out1=mean, out2=rstd
        )
    if kernel == "softmax_rows":
        return lambda: torch.ops.aten._softmax.out(x, -1, False, out=y)
    raise ValueError(kernel)


def time_torch(keys, reps):
    """{key: (median, fastest)} seconds per call of PyTorch's kernel on each shape."""
    torch.set_num_threads(1)
    times = {}
    with torch.no_grad():
        for key in keys:
            call = torch_calls(*key)
            call()
            seconds = []
            for _ in range(reps):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
            times[key] = (statistics.median(seconds), min(seconds))
    return times


def copy_bandwidth(reps):
    """GB/s (read + write) of one-thread copies of 4096 x 2000 f32, the ceilings of the
    memory-bound rows: PyTorch's `y.copy_(x)`, whose ordinary stores read every output line
    before writing it, and numpy's `np.copyto` (glibc's memcpy), which writes a copy this large
    with streaming stores, as our kernels do past the last-level cache."""
    torch.set_num_threads(1)
    x = torch.randn(4096, 2000)
    y = torch.empty_like(x)
    xn, yn = x.numpy(), y.numpy()
    copies = {"torch": lambda: y.copy_(x), "numpy": lambda: numpy.copyto(yn, xn)}
    seconds = {name: [] for name in copies}
    for _ in range(reps + 1):
        for name, copy in copies.items():
            start = time.perf_counter()
            copy()
            seconds[name].append(time.perf_counter() - start)
    return {name: 2 * 4 * x.numel() / statistics.median(s[1:]) / 1e9 for name, s in seconds.items()}


def bytes_moved(kernel, rows, cols):
    # Every array read once and written once (STREAM convention), f32.
    arrays = {"gelu": 2, "gelu_backward": 3, "layer_norm": 2, "softmax_rows": 2}[kernel]
    return 4 * arrays * rows * cols


def measure(bench, baseline_bench=None, baseline_name="afda169", rounds=3, reps=20,
            baseline_env=None):
    """Times both sides in ROUNDS interleaved rounds of REPS calls; returns the block's text.
    BASELINE_ENV (a dict) is added to the baseline's environment."""
    # every side on one CPU: the vCPUs of a shared VM can differ in speed for minutes
    with pinned(1) as cpu:
        copy_gbps = copy_bandwidth(reps)
        loads = [load_average()]
        sides = {"ours": [], "torch": [], "baseline": []}
        for _ in range(rounds):
            sides["ours"].append(run_bench(bench, reps))
            sides["torch"].append(time_torch(list(sides["ours"][-1]), reps))
            if baseline_bench:
                sides["baseline"].append(run_bench(baseline_bench, reps, baseline_env))
            loads.append(load_average())

    def summary(side, key):
        values = [r[key][0] for r in sides[side] if key in r]
        return (statistics.median(values), min(values), max(values)) if values else None

    def fastest(side, key):
        return min(r[key][1] for r in sides[side] if key in r)

    lines = [
        f"Measured {datetime.date.today()} on {machine_description()},"
        f" ours on {kernel_isa()} vectors, PyTorch {torch.__version__} (CPU capability"
        f" {torch.backends.cpu.get_cpu_capability()}), f32, 1 thread each"
        f" ({'both on CPU %d' % cpu if cpu is not None else 'not pinned'}), {rounds}"
        f" interleaved rounds of {reps} calls; 1-minute load average before and after each"
        f" round: {format_loads(loads)}. The machine is shared: compare the"
        " ratios, measured side by side, rather than absolute figures. One-thread copy"
        " bandwidth (4096x2000 f32, read + write), the ceiling of the 4096-row shapes (the"
        " 180-row ones, 2.9 MB in and out, stay in cache):"
        f" {copy_gbps['torch']:.1f} GB/s with ordinary stores (PyTorch"
        " `y.copy_(x)`: each output line is read before it is written) and"
        f" {copy_gbps['numpy']:.1f} GB/s with streaming stores (numpy `copyto`, glibc's memcpy,"
        " which streams copies this large; ours stream outputs of calls larger than the"
        " last-level cache).",
        "",
        "Time per call: median over rounds of each round's median (range of the round medians)."
        " *vs PyTorch* is PyTorch's time over ours (above 1: ours is faster)"
        + (f"; *vs {baseline_name}* is that side's time over ours" if baseline_bench else "")
        + "; *fastest* is the same ratio of each side's fastest call over all rounds, the"
        " figure least moved by the host's slower spells.",
        "",
        "| kernel | shape | ours ms | GB/s | PyTorch ms | vs PyTorch | fastest"
        + (f" | {baseline_name} ms | vs {baseline_name} | fastest |" if baseline_bench else " |"),
        "|---|---|--:|--:|--:|--:|--:" + ("|--:|--:|--:|" if baseline_bench else "|"),
    ]
    for key in sides["ours"][0]:
        kernel, rows, cols = key
        ours, torch_t = summary("ours", key), summary("torch", key)
        cell = lambda s: f"{1e3 * s[0]:.3f} ({1e3 * s[1]:.3f}-{1e3 * s[2]:.3f})"
        row = (
            f"| {kernel} | {rows}x{cols} | {cell(ours)} | {bytes_moved(*key) / ours[0] / 1e9:.1f}"
            f" | {cell(torch_t)} | {torch_t[0] / ours[0]:.2f}"
            f" | {fastest('torch', key) / fastest('ours', key):.2f}"
        )
        if baseline_bench:
            base = summary("baseline", key)
            row += (f" | {cell(base)} | {base[0] / ours[0]:.2f}"
                    f" | {fastest('baseline', key) / fastest('ours', key):.2f}"
                    if base else " | - | - | -")
        lines.append(row + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bench", default="target/release/examples/rowwise_bench")
    p.add_argument("--baseline-bench", help="an older build of the same example")
    p.add_argument("--baseline-name", default="afda169")
    p.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the baseline side (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--write", action="store_true", help="rewrite the block in docs/performance.md")
    args = p.parse_args()
    if args.rounds < 3:
        p.error("--rounds: at least 3")
    if args.reps < 1:
        p.error("--reps: at least 1")
    if args.baseline_env and not args.baseline_bench:
        p.error("--baseline-env: needs --baseline-bench")
    baseline_env = {}
    for item in args.baseline_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--baseline-env: {item!r} is not NAME=VALUE")
        baseline_env[name] = value
    table = measure(args.bench, args.baseline_bench, args.baseline_name, args.rounds, args.reps,
                    baseline_env)
    print(table)
    if args.write:
        replace_block(DOC, BLOCK, table)


if __name__ == "__main__":
    main()
