#!/usr/bin/env python3
"""Two (or more) builds of `kernels/examples/gemm_rate.rs` timed on the same GEMM shapes, in
interleaved rounds, to measure a kernel change: the same work on both sides, so the ratio is a
same-work speed-up.

Each round runs every build once per shape, each in its own process (`CALLS` timed calls after
one warm-up call, `C <- A B`, alpha 1, beta 0), in an order that alternates between rounds, on
the CPUs of `--cpus` (taskset) with `RAYON_NUM_THREADS=--threads`. A build's figure for a shape
is the median over rounds of each round's median call; the spread is the range of the round
medians, in % of that median. *vs first* is the first build's median time over this one's
(above 1: faster than the first). *best* is the fastest call of all rounds, and *best vs first*
the same ratio at it: on a shared machine whose neighbours only ever slow a call down, the
fastest calls are the steadier comparison when the round medians spread widely.

    cargo build --release -p benign-kernels --example gemm_rate   # and keep a copy of the old one
    python3 scripts/compare_gemm_builds.py OLD_gemm_rate target/release/examples/gemm_rate \\
        --shapes 20x2000x2000-NT,2000x2000x20-TN --dtypes f32,f64 --calls 40 --rounds 5
    python3 scripts/compare_gemm_builds.py --self-test

Shapes are `gemm_rate`'s: `MxNxK`, optionally `-NT`, `-TN` or `-TT` for transposed operands.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys


def flops(shape):
    """2 m n k of a `gemm_rate` shape such as `20x2000x2000-NT`."""
    m, n, k = (int(x) for x in shape.split("-")[0].split("x"))
    return 2 * m * n * k


def summary(round_medians):
    """(median, spread %) of one build's round medians: the median over rounds and the range of
    the round medians in % of it."""
    median = statistics.median(round_medians)
    spread = 100.0 * (max(round_medians) - min(round_medians)) / median
    return median, spread


def order(builds, round_index):
    """The builds in the order of one round: as given in even rounds, reversed in odd ones."""
    return list(builds) if round_index % 2 == 0 else list(reversed(builds))


def time_once(build, shape, dtype, calls, threads, cpus):
    """(median, fastest) seconds of the calls of one process of `build` on `shape`."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    command = [build, shape, dtype, str(calls)]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus] + command
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    seconds = json.loads(result.stdout)["seconds"]
    return statistics.median(seconds), min(seconds)


def table(builds, results):
    """Markdown rows: per shape and dtype, each build's GFLOP/s, spread and ratio to the first,
    at the median and at the fastest call. `results[(shape, dtype)][build]` lists one
    `(median, fastest)` pair per round."""
    lines = ["| shape | dtype | build | median ms | GFLOP/s | range % | vs first "
             "| best ms | best vs first |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for (shape, dtype), per_build in results.items():
        first, _ = summary([m for m, _ in per_build[builds[0]]])
        first_best = min(b for _, b in per_build[builds[0]])
        for build in builds:
            median, spread = summary([m for m, _ in per_build[build]])
            best = min(b for _, b in per_build[build])
            lines.append(f"| {shape} | {dtype} | `{build}` | {median * 1e3:.3f} | "
                         f"{flops(shape) / median / 1e9:.1f} | {spread:.1f} | {first / median:.3f} "
                         f"| {best * 1e3:.3f} | {first_best / best:.3f} |")
    return "\n".join(lines)


def self_test():
    """Checks the helpers on made-up figures (no build needed)."""
    assert flops("20x2000x2000-NT") == 2 * 20 * 2000 * 2000
    assert flops("64x64x3200") == 2 * 64 * 64 * 3200
    median, spread = summary([1.0, 2.0, 4.0])
    assert median == 2.0 and spread == 150.0
    assert order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert order(["a", "b", "c"], 1) == ["c", "b", "a"]
    rows = table(["old", "new"], {("8x8x8", "f32"): {"old": [(2.0, 1.5), (2.0, 1.8)],
                                                      "new": [(1.0, 0.5), (1.0, 0.9)]}})
    assert "| 8x8x8 | f32 | `new` | 1000.000 | 0.0 | 0.0 | 2.000 | 500.000 | 3.000 |" in rows, rows
    print("compare_gemm_builds: self-test passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="*", help="gemm_rate binaries; the first is the baseline")
    parser.add_argument("--shapes", default="20x2000x2000,20x2000x2000-NT,2000x2000x20-TN")
    parser.add_argument("--dtypes", default="f32,f64")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpus", default="0", help="taskset CPU list ('' for none)")
    parser.add_argument("--self-test", action="store_true", help=self_test.__doc__)
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    if len(args.builds) < 2:
        parser.error("give at least two gemm_rate builds")
    if args.rounds < 3:
        parser.error(f"--rounds {args.rounds}: at least 3 rounds are needed for a spread")
    if args.calls < 1:
        parser.error(f"--calls {args.calls}: at least 1")
    results = {}
    for shape in args.shapes.split(","):
        for dtype in args.dtypes.split(","):
            per_build = {build: [] for build in args.builds}
            for round_index in range(args.rounds):
                for build in order(args.builds, round_index):
                    per_build[build].append(
                        time_once(build, shape, dtype, args.calls, args.threads, args.cpus))
            results[(shape, dtype)] = per_build
            print(f"compare_gemm_builds: {shape} {dtype} done", file=sys.stderr)
    print(f"{args.rounds} interleaved rounds of {args.calls} calls per build, "
          f"{args.threads} thread(s), CPUs {args.cpus or 'any'}\n")
    print(table(args.builds, results))


if __name__ == "__main__":
    main()
