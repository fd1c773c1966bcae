#!/usr/bin/env python3
"""Regenerate the performance table of docs/performance.md from `benign bench --json`.

Builds the release binary, runs the full report on 1 thread, then on 2 threads (keeping only
GEMM 2000x2000x2000 from that run: the one kernel where the thread count is the question), and
rewrites the block between `<!-- perf-table:start -->` and `<!-- perf-table:end -->` in
docs/performance.md (written to a temporary file, then renamed over it).
`scripts/performance.py` calls `measure` for the same block among the others.

Usage (from anywhere): python3 scripts/perf_table.py [--threads-extra N]
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

from doc_block import check_block, replace_block
from machine_info import cpu_family_model, format_loads, load_average

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_FILE = os.path.join(ROOT, "docs", "performance.md")
BLOCK = "perf-table"
MULTI_THREAD_DIMS = (2000, 2000, 2000)  # GEMM m, n, k


# The machine figures repeat on every line of `benign bench --json`; these are the ones the
# table's header reads.
MACHINE_KEYS = (
    "cpu_model", "pool_threads", "compiled_features", "gemm_kernel",
    "gemm_peak_f32_gflops_per_core", "gemm_peak_f64_gflops_per_core",
    "fma_peak_f32_gflops_per_core", "fma_peak_f64_gflops_per_core",
    "fma_peak_f32_avx512_gflops_per_core", "fma_peak_f64_avx512_gflops_per_core",
    "fma_peak_f32_gflops_all_threads", "fma_peak_f64_gflops_all_threads",
    "fma_peak_f32_avx512_gflops_all_threads", "fma_peak_f64_avx512_gflops_all_threads",
    "triad_gbps", "triad_bytes_per_array", "machine_warnings",
)


def target_dir():
    """Cargo's target folder for this workspace (honours CARGO_TARGET_DIR and config)."""
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    ).stdout
    return json.loads(metadata)["target_directory"]


def bench(binary, threads, quick):
    """Runs `benign bench --json --threads N [--quick]`; returns (machine figures, records)."""
    print(f"perf_table: benign bench --json --threads {threads}", file=sys.stderr)
    # matrixmultiply must get the same thread count: let `benign bench` set it.
    env = {k: v for k, v in os.environ.items() if k != "MATMUL_NUM_THREADS"}
    out = subprocess.run(
        [binary, "bench", "--json", "--threads", str(threads)] + (["--quick"] if quick else []),
        check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    if not records or any(key not in records[0] for key in MACHINE_KEYS):
        sys.exit("perf_table: `benign bench --json` printed no records with the machine figures")
    return {key: records[0][key] for key in MACHINE_KEYS}, records


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def avx512_line(machine1, machine2):
    """The 512-bit FMA peaks, or a note that this CPU has none."""
    f32_peak = machine1.get("fma_peak_f32_avx512_gflops_per_core")
    f64_peak = machine1.get("fma_peak_f64_avx512_gflops_per_core")
    if f32_peak is None or f64_peak is None:
        return "- FMA peak per core, 512-bit vectors: - (no AVX-512 on this CPU)."
    return (
        f"- FMA peak per core, 512-bit vectors (AVX-512): {f32_peak:.1f} GFLOP/s f32, {f64_peak:.1f} GFLOP/s f64 "
        f"({machine2['pool_threads']} threads at once: "
        f"{fmt(machine2.get('fma_peak_f32_avx512_gflops_all_threads'), 1)} f32, "
        f"{fmt(machine2.get('fma_peak_f64_avx512_gflops_all_threads'), 1)} f64)."
    )


def table(machine1, machine2, records, loads, quick):
    today = datetime.date.today().isoformat()
    family_model = cpu_family_model()
    lines = [
        f"Measured {today} on {machine1['cpu_model']} "
        f"({family_model + ', ' if family_model else ''}"
        f"built for {machine1['compiled_features']}, {os.cpu_count()} logical CPUs) "
        f"with `benign bench --json{' --quick' if quick else ''}`; 1-minute load average "
        f"before / between / after the runs: {format_loads(loads)}.",
        "",
        f"- FMA peak per core, 256-bit vectors: {machine1['fma_peak_f32_gflops_per_core']:.1f} GFLOP/s f32, "
        f"{machine1['fma_peak_f64_gflops_per_core']:.1f} GFLOP/s f64 "
        f"({machine2['pool_threads']} threads at once: {machine2['fma_peak_f32_gflops_all_threads']:.1f} f32, "
        f"{machine2['fma_peak_f64_gflops_all_threads']:.1f} f64).",
        avx512_line(machine1, machine2),
        f"- GEMM kernel: `{machine1['gemm_kernel']}`; its *of peak* is against "
        f"{machine1['gemm_peak_f32_gflops_per_core']:.1f} GFLOP/s f32, "
        f"{machine1['gemm_peak_f64_gflops_per_core']:.1f} GFLOP/s f64 per core, "
        "the FMA peak of the vector width it runs.",
        f"- STREAM triad: {machine1['triad_gbps']:.1f} GB/s on 1 thread, "
        f"{machine2['triad_gbps']:.1f} GB/s on {machine2['pool_threads']} "
        f"(3 x {machine1['triad_bytes_per_array'] >> 20} MB arrays, 24 bytes per element, write-allocate not counted).",
        "- *vs matrixmultiply*: our GFLOP/s over `matrixmultiply`'s on the same shape in the same run; "
        "above 1 is faster. `benign bench` sets `MATMUL_NUM_THREADS` to its thread count (matrixmultiply "
        "caps it at 4), so both run on the same number of threads: see the `matrixmultiply::gemm` rows.",
        "- *of peak*: GEMM: GFLOP/s / (GEMM kernel's FMA peak per core of that dtype x threads) [fma]; "
        "the other kernels are memory-bound: GB/s / triad GB/s [triad] (inputs that fit in cache can exceed 1).",
        "- GB/s counts every array read once and written once (STREAM convention).",
        "- Ours and `matrixmultiply` run in interleaved rounds; rates are at the median call; *IQR* is "
        "the interquartile range of the call times in % of the median, over *runs* calls; *runs* 1* "
        "marks a row that is a single call (it overran its time budget: no spread). The ratio is called "
        "*faster* or *slower* only when the two IQRs do not overlap.",
        "",
        "| kernel | shape | dtype | threads | GFLOP/s | GB/s | vs matrixmultiply | of peak | IQR % | runs |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    warnings = []
    for r in records:
        peak = "-" if r["frac_of_peak"] is None else f"{r['frac_of_peak']:.2f} {r['peak']}"
        ratio = fmt(r["ratio_vs_matrixmultiply"])
        if r["vs_matrixmultiply"] is not None:
            ratio += f" ({r['vs_matrixmultiply'].replace('_', ' ')})"
        spread = "-" if r["single_call"] else f"{100 * r['iqr_seconds'] / r['median_seconds']:.1f}"
        runs = "1*" if r["single_call"] else str(r["runs"])
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['dtype']} | {r['threads']} | {fmt(r['gflops'])} | "
            f"{fmt(r['gbps'])} | {ratio} | {peak} | {spread} | {runs} |"
        )
        name = f"{r['kernel']} {r['shape']} {r['dtype']}, {r['threads']} threads"
        warnings += [f"{name}: {w}" for w in r["warnings"]]
    for machine in (machine1, machine2):
        warnings += [w for w in machine["machine_warnings"] if w not in warnings]
    if warnings:
        lines += ["", "Warnings of these runs:", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines)


def measure(binary, threads_extra=2, quick=False):
    """Runs the two `benign bench` reports with BINARY; returns the block's text."""
    loads = [load_average()]
    machine1, records = bench(binary, 1, quick)
    loads.append(load_average())
    machine2, records2 = bench(binary, threads_extra, quick)
    loads.append(load_average())
    cpus = os.cpu_count() or 1
    if any(v is not None and v > cpus for v in loads):
        print(f"perf_table: warning: load average above {cpus} during the runs; figures are low", file=sys.stderr)
    records += [r for r in records2 if r["kernel"].endswith("gemm") and (r["m"], r["n"], r["k"]) == MULTI_THREAD_DIMS]
    return table(machine1, machine2, records, loads, quick)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-extra", type=int, default=2,
                        help="thread count of the second run (GEMM 2000^3 only); default 2")
    args = parser.parse_args()
    if args.threads_extra < 1:
        sys.exit("perf_table: --threads-extra must be at least 1")

    check_block(TABLE_FILE, BLOCK)
    subprocess.run(["cargo", "build", "--release", "--bin", "benign"], check=True, cwd=ROOT)
    binary = os.path.join(target_dir(), "release", "benign")
    replace_block(TABLE_FILE, BLOCK, measure(binary, args.threads_extra))
    print(f"perf_table: wrote {TABLE_FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()
