#!/usr/bin/env python3
"""GEMM of `benign_kernels::gemm` against numpy's OpenBLAS on the same shapes, in interleaved
rounds.

Round r of a shape times ours (`kernels/examples/gemm_rate.rs`, its own process,
RAYON_NUM_THREADS=N), then OpenBLAS (numpy `matmul` into a preallocated `out=`, its own process,
OPENBLAS_NUM_THREADS=N); every other round OpenBLAS goes first, so a drift of the machine's load
hits both sides alike. Each side makes one warm-up call, then CALLS timed calls per round.
One-thread rows run both sides on the same CPU (`machine_info.pinned`): the vCPUs of a shared
VM can differ in speed for minutes at a time, and an unpinned process lands on either.

Per side: the rate at the median over rounds of each round's median call, the best call, the
range of the round medians (the spread) and the interquartile range of all calls. The ratio is
our GFLOP/s over OpenBLAS's; it is called faster or slower only when the two ranges of round
medians do not overlap.

The OpenBLAS process runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (OpenBLAS then
picks its kernels for this CPU) and OPENBLAS_VERBOSE=2, which makes it print the core it chose
("Core: SkylakeX"), recorded beside the figures. Transposed operands are `.T` views of
C-contiguous arrays: numpy then hands the stored arrays and `out` to cblas_?gemm with the
transpose flags instead of copying them; with gdb on the machine, `--check-no-copy` (run first by
default) proves it by stopping at cblas_?gemm and comparing the pointers it is given with the
arrays'.

    cargo build --release -p benign-kernels --example gemm_rate
    .venv/bin/python scripts/compare_openblas.py [--quick] [--rounds 3] [--json PATH]
    .venv/bin/python scripts/compare_openblas.py --cases 2000x2000x2000,3200x64x192-NT --dtypes f32
    python3 scripts/compare_openblas.py --self-test

Needs numpy built against OpenBLAS (e.g. the wheels on PyPI: scipy-openblas). Prints the
markdown block that `scripts/performance.py` writes into docs/performance.md.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from machine_info import format_loads, load_average, machine_description, pinned, pinning_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (spec, threads): spec `MxNxK[-TT]` as `gemm_rate` reads it; threads 0 stands for all cores.
ALL_CORES = 0
CASES = [
    ("256x256x256", 1), ("512x512x512", 1), ("1024x1024x1024", 1), ("2000x2000x2000", 1),
    ("2000x2000x2000", ALL_CORES),
    # The workload's shapes: the encoder's batch (160 or 20 rows) against d = 2000 weights, and
    # the pretraining model's attention-sized products (A B^T and A^T B).
    ("160x2000x2000", 1), ("2000x2000x160", 1), ("20x2000x2000", 1),
    ("3200x64x192-NT", 1), ("64x64x3200-TN", 1),
]
QUICK_CASES = [("96x80x64", 1), ("128x128x128", ALL_CORES), ("200x48x64-NT", 1), ("48x40x300-TN", 1)]
DTYPES = ("f32", "f64")
# Floating-point work per round and side that sets the number of calls (at least MIN_CALLS).
WORK_PER_ROUND = 3e10
QUICK_WORK_PER_ROUND = 2e7
MIN_CALLS, MAX_CALLS = 3, 200

ISA_OF_KERNEL = {"avx512": "AVX-512F, 512-bit vectors", "portable": "AVX2 + FMA, 256-bit vectors"}


def parse_spec(spec):
    """`MxNxK[-TT]` -> (m, n, k, transposes)."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)(?:-([NT]{2}))?", spec)
    if not match:
        raise ValueError(f"{spec}: expected MxNxK or MxNxK-TT with T in N, T")
    m, n, k = (int(g) for g in match.groups()[:3])
    return m, n, k, match.group(4) or "NN"


def calls_for(spec, work):
    m, n, k, _ = parse_spec(spec)
    return int(min(MAX_CALLS, max(MIN_CALLS, work // (2 * m * n * k))))


# --- the OpenBLAS side (its own process) --------------------------------------------------------

def numpy_operands(spec, dtype):
    """(op(A), op(B), out, stored A, stored B): transposed operands as `.T` views."""
    import numpy as np

    m, n, k, transposes = parse_spec(spec)
    rng = np.random.default_rng(1)
    np_dtype = np.float32 if dtype == "f32" else np.float64
    a = rng.uniform(-1, 1, (k, m) if transposes[0] == "T" else (m, k)).astype(np_dtype)
    b = rng.uniform(-1, 1, (n, k) if transposes[1] == "T" else (k, n)).astype(np_dtype)
    out = np.empty((m, n), np_dtype)
    op_a = a.T if transposes[0] == "T" else a
    op_b = b.T if transposes[1] == "T" else b
    return op_a, op_b, out, a, b


def openblas_worker(spec, dtype, calls):
    """Prints one JSON line: the seconds of CALLS timed `matmul` calls after one warm-up."""
    import numpy as np

    op_a, op_b, out, _, _ = numpy_operands(spec, dtype)
    np.matmul(op_a, op_b, out=out)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        np.matmul(op_a, op_b, out=out)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds}))


def openblas_config():
    """numpy's record of its BLAS: name, version and OpenBLAS's build configuration."""
    import numpy as np

    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return {"numpy": np.__version__, "name": blas.get("name"), "version": blas.get("version"),
            "configuration": blas.get("openblas configuration")}


def openblas_env(threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OPENBLAS_VERBOSE="2")
    return env


def run_openblas(spec, dtype, calls, threads):
    """Times OpenBLAS in a child process; returns (seconds, the core OpenBLAS reported)."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--openblas-worker", spec, dtype, str(calls)],
        env=openblas_env(threads), check=True, capture_output=True, text=True,
    )
    core = re.search(r"Core: (\S+)", proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"], core.group(1) if core else None


def run_ours(gemm_rate, spec, dtype, calls, threads):
    """Times `benign_kernels::gemm` through the `gemm_rate` example; returns (seconds, kernel)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([gemm_rate, spec, dtype, str(calls)], env=env, check=True,
                         capture_output=True, text=True).stdout
    record = json.loads(out.strip().splitlines()[-1])
    if record["threads"] != threads:
        raise SystemExit(f"gemm_rate ran on {record['threads']} threads, asked for {threads}")
    return record["seconds"], record["gemm_kernel"]


# --- the no-copy check (gdb) ---------------------------------------------------------------------

CHECK_CASES = [(spec, dtype) for dtype in DTYPES for spec in ("48x40x32", "48x40x32-NT", "48x40x32-TN")]
CBLAS_TRANS, CBLAS_NO_TRANS = 112, 111


def pointer_worker():
    """Prints the stored arrays' addresses, then calls `matmul` once, for every check case."""
    for spec, dtype in CHECK_CASES:
        op_a, op_b, out, a, b = numpy_operands(spec, dtype)
        print(f"case {spec} {dtype} A={a.ctypes.data:#x} B={b.ctypes.data:#x} C={out.ctypes.data:#x}",
              flush=True)
        import numpy as np
        np.matmul(op_a, op_b, out=out)


GDB_SCRIPT = """set breakpoint pending on
set pagination off
set confirm off
{breaks}
run
quit
"""
# Registers at entry of cblas_?gemm(order, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta,
# C, ldc) under the System V ABI: six integers in registers, the floats in xmm registers, the
# pointers and leading dimensions on the stack above the return address.
GDB_BREAK = """break {symbol}
commands
silent
printf "gemm order=%d ta=%d tb=%d m=%d n=%d k=%d A=%#lx B=%#lx C=%#lx\\n", (int)$rdi, (int)$rsi, (int)$rdx, (int)$rcx, (int)$r8, (int)$r9, *(unsigned long*)($rsp+8), *(unsigned long*)($rsp+24), *(unsigned long*)($rsp+40)
continue
end"""
GEMM_SYMBOLS = [f"{prefix}cblas_{t}gemm{suffix}" for t in "sd"
                for prefix, suffix in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", ""))]


def check_no_copy():
    """Runs `pointer_worker` under gdb; returns (verdict, detail). Verdict True: every call reached
    cblas_?gemm with the stored arrays, `out` and the expected transpose flags; False: one did
    not; None: not checked (no gdb, or no cblas_?gemm call seen)."""
    if not shutil.which("gdb"):
        return None, "not checked: no gdb on this machine"
    breaks = "\n".join(GDB_BREAK.format(symbol=s) for s in GEMM_SYMBOLS)
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
        f.write(GDB_SCRIPT.format(breaks=breaks))
        script = f.name
    try:
        proc = subprocess.run(
            ["gdb", "-q", "-batch", "-nx", "-x", script, "--args", sys.executable,
             os.path.abspath(__file__), "--pointer-worker"],
            env=openblas_env(1), capture_output=True, text=True, timeout=300,
        )
    finally:
        os.unlink(script)
    return judge_gemm_calls(proc.stdout)


def judge_gemm_calls(gdb_output):
    """Pairs each `case` line with the `gemm` line after it (see `check_no_copy`)."""
    lines = [line for line in gdb_output.splitlines() if line.startswith(("case ", "gemm "))]
    cases = [line for line in lines if line.startswith("case ")]
    if len(cases) != len(CHECK_CASES):
        return None, f"not checked: the worker printed {len(cases)} of {len(CHECK_CASES)} cases under gdb"
    for i, line in enumerate(lines):
        if not line.startswith("case "):
            continue
        _, spec, dtype, *addresses = line.split()
        expected = dict(a.split("=") for a in addresses)
        call = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("gemm ") else None
        if call is None:
            return None, f"not checked: no cblas_?gemm call seen for {spec} {dtype}"
        got = dict(field.split("=") for field in call.split()[1:])
        _, _, _, transposes = parse_spec(spec)
        flags = [CBLAS_TRANS if t == "T" else CBLAS_NO_TRANS for t in transposes]
        same = all(int(got[key], 16) == int(expected[key], 16) for key in ("A", "B", "C"))
        if not same or [int(got["ta"]), int(got["tb"])] != flags:
            return False, f"{spec} {dtype}: numpy called {call} for {line}"
    return True, (f"checked under gdb: each of {len(cases)} calls (NN, NT, TN; f32, f64) reached "
                  "cblas_?gemm with the stored arrays, `out` and the transpose flags, no copy")


# --- rounds and figures --------------------------------------------------------------------------

def side_summary(rounds, flops):
    """Figures of one side from its per-round call times."""
    medians = [statistics.median(r) for r in rounds]
    calls = sorted(t for r in rounds for t in r)
    median = statistics.median(medians)
    quartiles = statistics.quantiles(calls, n=4) if len(calls) >= 2 else [calls[0]] * 3
    return {
        "median_seconds": median,
        "gflops": flops / median / 1e9,
        "best_gflops": flops / calls[0] / 1e9,
        "round_medians": medians,
        "range_pct": 100 * (max(medians) - min(medians)) / median,
        "iqr_pct": 100 * (quartiles[2] - quartiles[0]) / statistics.median(calls),
        "calls": len(calls),
    }


def verdict(ours, theirs):
    """faster / slower when the ranges of round medians do not overlap (times: lower is faster)."""
    if max(ours["round_medians"]) < min(theirs["round_medians"]):
        return "faster"
    if min(ours["round_medians"]) > max(theirs["round_medians"]):
        return "slower"
    return "within spread"


def peak(gemm_rate, earlier=None):
    """The FMA peaks `gemm_rate peak` measures, or EARLIER's where those are higher: a probe
    sharing the core with another process reads low, so the best of several probes is kept."""
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run([gemm_rate, "peak"], env=env, check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    for key in ("fma_peak_f32_gflops_per_core", "fma_peak_f64_gflops_per_core"):
        figures[key] = max(figures[key], (earlier or {}).get(key, 0.0))
    return figures


def parse_cases(text):
    """`SPEC[@THREADS],...` (THREADS a count or `all`, default 1) -> [(spec, threads)]."""
    cases = []
    for item in text.split(","):
        spec, _, threads = item.strip().partition("@")
        parse_spec(spec)
        cases.append((spec, ALL_CORES if threads == "all" else int(threads or 1)))
    return cases


def measure(gemm_rate, rounds=3, quick=False, all_threads=None, check_copies=True, log=sys.stderr,
            cases=None, dtypes=DTYPES):
    """Runs every case (default: the full list, or the quick one); returns a dict with the
    machine figures and one record per case."""
    all_threads = all_threads or os.cpu_count() or 1
    cases = cases or (QUICK_CASES if quick else CASES)
    work = QUICK_WORK_PER_ROUND if quick else WORK_PER_ROUND
    copies = check_no_copy() if check_copies else (None, "not checked (--no-copy-check)")
    if copies[0] is False:
        raise SystemExit(f"compare_openblas: numpy copied an operand: {copies[1]}")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine_description(), "openblas": openblas_config(), "peak": peak(gemm_rate),
              "rounds": rounds, "quick": quick, "no_copy_check": copies[1],
              "pinned_cpu": pinning_cpu(),
              "loads": [load_average()], "records": [], "openblas_cores": set(), "our_kernels": set()}
    for dtype in dtypes:
        for spec, threads in cases:
            threads = threads or all_threads
            m, n, k, transposes = parse_spec(spec)
            calls = calls_for(spec, work)
            print(f"compare_openblas: {spec} {dtype} {threads} thread(s), {rounds} rounds of {calls} calls",
                  file=log)
            ours, theirs = [], []
            for r in range(rounds):
                order = ("ours", "openblas") if r % 2 == 0 else ("openblas", "ours")
                for side in order:
                    with pinned(threads):
                        if side == "ours":
                            seconds, kernel = run_ours(gemm_rate, spec, dtype, calls, threads)
                            ours.append(seconds)
                            result["our_kernels"].add(kernel)
                        else:
                            seconds, core = run_openblas(spec, dtype, calls, threads)
                            theirs.append(seconds)
                            result["openblas_cores"].add(core or "not reported")
            flops = 2.0 * m * n * k
            record = {"shape": f"{m}x{n}x{k}", "transposes": transposes, "dtype": dtype,
                      "threads": threads, "ours": side_summary(ours, flops),
                      "openblas": side_summary(theirs, flops)}
            record["ratio"] = record["ours"]["gflops"] / record["openblas"]["gflops"]
            record["verdict"] = verdict(record["ours"], record["openblas"])
            result["records"].append(record)
    result["loads"].append(load_average())
    result["peak"] = peak(gemm_rate, result["peak"])
    result["openblas_cores"] = sorted(result["openblas_cores"])
    result["our_kernels"] = sorted(result["our_kernels"])
    return result


def table(result):
    """The markdown block for docs/performance.md."""
    blas = result["openblas"]
    peaks = result["peak"]
    kernels = ", ".join(f"`{k}` ({ISA_OF_KERNEL.get(k, k)})" for k in result["our_kernels"])
    lines = [
        f"Measured {result['date']} on {result['machine']}{' (QUICK: small shapes, not figures)' if result['quick'] else ''}"
        f" by `scripts/compare_openblas.py`; 1-minute load average before / after: {format_loads(result['loads'])}.",
        "",
        f"- Ours: `benign_kernels::gemm`, kernel {kernels}, through `kernels/examples/gemm_rate.rs`.",
        f"- OpenBLAS: {blas['name']} {blas['version']} through numpy {blas['numpy']} `matmul(a, b, out=c)`"
        f" (build: {blas['configuration']}); core chosen at load: {', '.join(result['openblas_cores'])}"
        " (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset).",
        f"- Transposed operands are `.T` views; {result['no_copy_check']}.",
        f"- FMA peak per core at the GEMM kernel's vector width (best of a probe before and one after the"
        f" rows): {peaks['fma_peak_f32_gflops_per_core']:.1f}"
        f" GFLOP/s f32, {peaks['fma_peak_f64_gflops_per_core']:.1f} GFLOP/s f64; *of peak* is GFLOP/s over"
        " that peak times the threads.",
        f"- {result['rounds']} interleaved rounds per row (ours first in even rounds, OpenBLAS first in odd"
        " ones), each one warm-up call and then *calls* / rounds timed calls per side. GFLOP/s at the median"
        " over rounds of each round's median call; *best* at the fastest call; *range* is the spread of the"
        " round medians and *IQR* the interquartile range of all calls, both in % of the median.",
        "- *ours / OpenBLAS*: our GFLOP/s over OpenBLAS's; called faster or slower only when the two"
        " ranges of round medians do not overlap.",
        "- One-thread rows: " + (f"both sides pinned to CPU {result['pinned_cpu']}."
                                 if result.get("pinned_cpu") is not None
                                 else "not pinned (not possible here)."),
        "",
        "| shape | op | dtype | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS | best: ours, OpenBLAS"
        " | of peak: ours, OpenBLAS | range %: ours, OpenBLAS | IQR %: ours, OpenBLAS | calls |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    over_peak = False
    for r in result["records"]:
        ours, theirs = r["ours"], r["openblas"]
        per_core = peaks[f"fma_peak_{r['dtype']}_gflops_per_core"] * r["threads"]
        op = {"NN": "A B", "NT": "A B^T", "TN": "A^T B", "TT": "A^T B^T"}[r["transposes"]]
        lines.append(
            f"| {r['shape']} | {op} | {r['dtype']} | {r['threads']} | {ours['gflops']:.1f} | {theirs['gflops']:.1f}"
            f" | {r['ratio']:.2f} ({r['verdict']}) | {ours['best_gflops']:.1f}, {theirs['best_gflops']:.1f}"
            f" | {ours['gflops'] / per_core:.2f}, {theirs['gflops'] / per_core:.2f}"
            f" | {ours['range_pct']:.1f}, {theirs['range_pct']:.1f} | {ours['iqr_pct']:.1f}, {theirs['iqr_pct']:.1f}"
            f" | {ours['calls']} |"
        )
        over_peak = over_peak or max(ours["gflops"], theirs["gflops"]) > per_core
    if over_peak:
        lines += ["", "A rate above the FMA peak means the peak probe ran while other processes used"
                  " the core: the *of peak* figures of this run are not to be trusted."]
    return "\n".join(lines)


# --- self-test -----------------------------------------------------------------------------------

def self_test():
    """Checks the parsing, the figures, the verdicts and the gdb-output judge on made-up input."""
    assert parse_spec("3200x64x192-NT") == (3200, 64, 192, "NT")
    assert parse_spec("20x2000x2000") == (20, 2000, 2000, "NN")
    for bad in ("20x2000", "1x2x3-NX", "1x2x3-N"):
        try:
            parse_spec(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} parsed")
    assert parse_cases("2000x2000x2000@all, 64x64x3200-TN") == [("2000x2000x2000", ALL_CORES),
                                                               ("64x64x3200-TN", 1)]
    assert calls_for("2000x2000x2000", WORK_PER_ROUND) == MIN_CALLS
    assert calls_for("256x256x256", WORK_PER_ROUND) == MAX_CALLS
    # Round medians 1, 2, 3 s of a 2-GFLOP product: the median round is 2 s, i.e. 1 GFLOP/s.
    summary = side_summary([[1.0, 1.0, 9.0], [2.0, 2.0, 2.0], [3.0, 0.5, 3.0]], 2e9)
    assert summary["round_medians"] == [1.0, 2.0, 3.0] and summary["gflops"] == 1.0
    assert summary["best_gflops"] == 4.0 and summary["range_pct"] == 100.0 and summary["calls"] == 9
    fast, slow = {"round_medians": [1.0, 1.1]}, {"round_medians": [1.2, 1.5]}
    assert verdict(fast, slow) == "faster" and verdict(slow, fast) == "slower"
    assert verdict(fast, {"round_medians": [1.05, 2.0]}) == "within spread"
    good = []
    for spec, dtype in CHECK_CASES:
        _, _, _, transposes = parse_spec(spec)
        ta, tb = (CBLAS_TRANS if t == "T" else CBLAS_NO_TRANS for t in transposes)
        good += [f"case {spec} {dtype} A=0x10 B=0x20 C=0x30",
                 f"gemm order=101 ta={ta} tb={tb} m=48 n=40 k=32 A=0x10 B=0x20 C=0x30"]
    assert judge_gemm_calls("\n".join(good))[0] is True
    copied = [line.replace("B=0x20 C", "B=0x99 C") if line.startswith("gemm") else line for line in good]
    assert judge_gemm_calls("\n".join(copied))[0] is False
    flipped = [line.replace("ta=112", "ta=111") for line in good]
    assert judge_gemm_calls("\n".join(flipped))[0] is False
    assert judge_gemm_calls("\n".join(line for line in good if line.startswith("case")))[0] is None
    if hasattr(os, "sched_getaffinity"):
        before = os.sched_getaffinity(0)
        with pinned(2) as cpu:
            assert cpu is None and os.sched_getaffinity(0) == before
        with pinned(1) as cpu:
            assert os.sched_getaffinity(0) == {cpu} and cpu == min(before)
        assert os.sched_getaffinity(0) == before
    print("compare_openblas: self-test passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemm-rate", help="the gemm_rate example [default: TARGET/release/examples/gemm_rate]")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per shape, at least 3")
    ap.add_argument("--quick", action="store_true", help="small shapes and few calls: checks the script")
    ap.add_argument("--all-threads", type=int, help="the thread count of the all-cores rows [default: all CPUs]")
    ap.add_argument("--no-copy-check", action="store_true", help="skip the gdb check of numpy's gemm calls")
    ap.add_argument("--cases", help="comma list of SPEC[@THREADS] (THREADS a count or all) "
                    "instead of the default shapes, e.g. 2000x2000x2000@all,3200x64x192-NT")
    ap.add_argument("--dtypes", default="f32,f64", help="comma list of f32, f64 (default both)")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    ap.add_argument("--self-test", action="store_true", help=self_test.__doc__)
    ap.add_argument("--openblas-worker", nargs=3, metavar=("SPEC", "DTYPE", "CALLS"), help=argparse.SUPPRESS)
    ap.add_argument("--pointer-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.openblas_worker:
        spec, dtype, calls = args.openblas_worker
        return openblas_worker(spec, dtype, int(calls))
    if args.pointer_worker:
        return pointer_worker()
    if args.rounds < 3:
        ap.error("--rounds: at least 3")
    gemm_rate = args.gemm_rate
    if gemm_rate is None:
        from perf_table import target_dir
        gemm_rate = os.path.join(target_dir(), "release", "examples", "gemm_rate")
    if not os.path.exists(gemm_rate):
        sys.exit(f"compare_openblas: {gemm_rate} missing: cargo build --release -p benign-kernels --example gemm_rate")
    try:
        cases = parse_cases(args.cases) if args.cases else None
    except ValueError as error:
        ap.error(f"--cases: {error}")
    dtypes = tuple(args.dtypes.split(","))
    if not dtypes or any(d not in DTYPES for d in dtypes):
        ap.error("--dtypes: a comma list of f32, f64")
    result = measure(gemm_rate, args.rounds, args.quick, args.all_threads, not args.no_copy_check,
                     cases=cases, dtypes=dtypes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result))


if __name__ == "__main__":
    main()
