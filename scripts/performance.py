#!/usr/bin/env python3
"""Regenerate every generated block of docs/performance.md with one command.

Run it with a Python that has numpy and PyTorch (the OpenBLAS table times numpy's OpenBLAS, the
row-wise and model tables time PyTorch), e.g. the venv of scripts/compare_rowwise.py:

    python3 -m venv .venv && .venv/bin/pip install torch numpy
    .venv/bin/python scripts/performance.py                  # all blocks, written
    .venv/bin/python scripts/performance.py --only openblas,startup
    .venv/bin/python scripts/performance.py --quick          # prints, never writes

It builds what it needs (`cargo build --release`: the `benign` binary and the `gemm_rate` and
`rowwise_bench` examples), then regenerates, in this order, the parts named by `--only`
(default: all):

- `gemm`: the kernel table (`perf-table` block): `scripts/perf_table.py`, `benign bench --json`
  on 1 thread and GEMM 2000^3 on 2, ours against `matrixmultiply`.
- `openblas`: GEMM against numpy's OpenBLAS (`openblas-table`): `scripts/compare_openblas.py`.
- `rowwise`: the row-wise kernels against PyTorch (`rowwise-table`): `scripts/compare_rowwise.py`,
  with the columns of this checkout's `rowwise_bench` built against the kernels of
  `--rowwise-baseline-commit` (default afda169, the kernels the table's older column has compared
  with; built once under the target folder) or of `--rowwise-baseline BIN`.
- `models`: model steps against PyTorch (`model-table`): `scripts/compare_encoder.py
  --torch-variant cls` and `scripts/compare_pretrain.py --torch-last-block cls` (MNIST from
  `--data-dir`), on 1 and 2 threads, in interleaved rounds.
- `startup`: the start-up targets (`startup-table`): wall and CPU time of
  `benign run -d 100000 --quiet --no-write` (target 50 s) and of the Figure-5 grid
  `benign sweep --grid d=250:5000:125 --grid signal_norm=5:100:2.5 --threads 2` (independent
  draws, each run its own W_0) into a temporary folder (target 90 s), in interleaved rounds;
  then where a grid run's time goes: the phases one-thread runs at five dimensions report, the
  grid's CPU seconds per phase estimated from them, and the grid's floor (its products with W_0
  at the f64 FMA peak that `gemm_rate peak` measures, plus the other phases as estimated).

Each block states the machine (CPU model, family and model), the date, the instruction set the
kernels ran, the 1-minute load average before and after, the rounds and the spread. Each block is
written as soon as its part is measured, in place, atomically (a temporary file renamed over
docs/performance.md), so an interrupted run keeps the blocks already done. `--quick` (small
shapes, few calls and rounds: a check of this script, not figures) prints the blocks and never
writes the doc. `--self-test` checks the script's own logic (block replacement, spreads,
verdicts) without measuring anything.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from doc_block import check_block, replace_block
from machine_info import format_loads, kernel_isa, load_average, machine_description

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
DOC = os.path.join(ROOT, "docs", "performance.md")
PARTS = ("gemm", "openblas", "rowwise", "models", "startup")
BLOCKS = {"gemm": "perf-table", "openblas": "openblas-table", "rowwise": "rowwise-table",
          "models": "model-table", "startup": "startup-table"}
NEEDS = {"gemm": (), "openblas": ("numpy",), "rowwise": ("numpy", "torch"),
         "models": ("numpy", "torch"), "startup": ()}
MODEL_THREADS = "1,2"
# The kernels the row-wise table's older column compares with (the GELU speed-up).
ROWWISE_BASELINE_COMMIT = "afda169"

# The start-up jobs: (name, arguments after `benign`, target wall seconds); --quick shrinks them.
STARTUP_JOBS = [
    ("d = 100,000, other defaults", ["run", "-d", "100000", "--quiet", "--no-write"], 50.0),
    ("Figure-5 grid, 1,521 runs, independent draws",
     ["sweep", "--grid", "d=250:5000:125", "--grid", "signal_norm=5:100:2.5",
      "--threads", "2", "--quiet"], 90.0),
]
# The start-up phases timed per run (fields of a run's summary.json), for the grid's breakdown.
STARTUP_PHASES = [("data", ("data_seconds",)),
                  ("Gram-Schmidt basis", ("startup", "basis_seconds")),
                  ("products with W_0 (two passes)", ("startup", "init_products_seconds")),
                  ("test projections", ("startup", "test_projection_seconds")),
                  ("training (1000 steps)", ("training_seconds",))]
# Dimensions of the single runs the breakdown times, and the grid it is summed over.
PHASE_DIMS = [250, 1250, 2500, 3750, 5000]
QUICK_PHASE_DIMS = [250, 500, 750]
GRID_DIMS = range(250, 5001, 125)
GRID_COLUMNS = 39
QUICK_STARTUP_JOBS = [
    ("d = 2,000 (quick)", ["run", "-d", "2000", "--quiet", "--no-write"], 50.0),
    ("9-run grid (quick)", ["sweep", "--grid", "d=250:750:250", "--grid", "signal_norm=5:100:47.5",
                            "--threads", "2", "--quiet"], 90.0),
]


def say(message):
    print(f"performance: {message}", file=sys.stderr, flush=True)


def require_modules(parts):
    missing = sorted({m for part in parts for m in NEEDS[part] if not module_available(m)})
    if missing:
        sys.exit(f"performance: {', '.join(parts)} need numpy and PyTorch, and this Python "
                 f"({sys.executable}) lacks {', '.join(missing)}. Run it with a venv that has them, "
                 "e.g. .venv/bin/python (python3 -m venv .venv && .venv/bin/pip install numpy torch).")


def module_available(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def build(parts):
    """Builds the release binary and the examples the parts run; returns the target folder."""
    subprocess.run(["cargo", "build", "--release", "--bin", "benign"], check=True, cwd=ROOT)
    wanted = (("openblas", "gemm_rate"), ("startup", "gemm_rate"), ("rowwise", "rowwise_bench"))
    examples = sorted({e for part, e in wanted if part in parts})
    if examples:
        command = ["cargo", "build", "--release", "-p", "benign-kernels"]
        for example in examples:
            command += ["--example", example]
        subprocess.run(command, check=True, cwd=ROOT)
    from perf_table import target_dir
    return target_dir()


def build_rowwise_baseline(commit, target):
    """Builds this checkout's `rowwise_bench` example against COMMIT's kernels (its whole tree
    from `git archive`, in TARGET/rowwise-baseline/COMMIT, kept for the next run); returns the
    binary."""
    folder = os.path.join(target, "rowwise-baseline", commit)
    source = os.path.join(folder, "source")
    if not os.path.isdir(source):
        os.makedirs(folder, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 stdout=subprocess.PIPE).stdout
        unpacking = tempfile.mkdtemp(dir=folder, prefix="source.")
        subprocess.run(["tar", "-x", "-C", unpacking], input=archive, check=True)
        os.rename(unpacking, source)
    shutil.copy(os.path.join(ROOT, "kernels", "examples", "rowwise_bench.rs"),
                os.path.join(source, "kernels", "examples", "rowwise_bench.rs"))
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(folder, "target"))
    subprocess.run(["cargo", "build", "--release", "-p", "benign-kernels", "--example", "rowwise_bench"],
                   check=True, cwd=source, env=env)
    return os.path.join(folder, "target", "release", "examples", "rowwise_bench")


def header(what, rounds, loads, quick, extra=""):
    """The first line of a block: machine, date, instruction set, rounds, load."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick_note = " QUICK RUN (tiny problems: checks the script, not figures)." if quick else ""
    return (f"Measured {stamp} on {machine_description()} by {what}; kernels on {kernel_isa()}"
            f"{extra}; {rounds} interleaved rounds; 1-minute load average before / after: "
            f"{format_loads(loads)}.{quick_note}")


def spread(values, digits, scale=1.0):
    """`median (min-max)` of VALUES times SCALE."""
    values = [v * scale for v in values]
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def compare(ours, theirs, higher_is_better):
    """faster / slower / within spread of two samples: only when their ranges do not overlap."""
    if min(ours) > max(theirs):
        return "faster" if higher_is_better else "slower"
    if max(ours) < min(theirs):
        return "slower" if higher_is_better else "faster"
    return "within spread"


# --- parts ---------------------------------------------------------------------------------------

def part_gemm(args, target):
    import perf_table
    return perf_table.measure(os.path.join(target, "release", "benign"), 2, args.quick)


def part_openblas(args, target):
    import compare_openblas
    result = compare_openblas.measure(os.path.join(target, "release", "examples", "gemm_rate"),
                                      args.rounds, args.quick)
    return compare_openblas.table(result)


def part_rowwise(args, target):
    import compare_rowwise
    if args.rowwise_baseline is None:
        say("rowwise: no baseline build, so the table has no column of an older build")
    return compare_rowwise.measure(os.path.join(target, "release", "examples", "rowwise_bench"),
                                   args.rowwise_baseline, args.rowwise_baseline_name, args.rounds,
                                   3 if args.quick else 20)


def run_json_lines(command):
    say(" ".join(command))
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def part_models(args, target):
    binary = os.path.join(target, "release", "benign")
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="performance-encoder-") as work:
        encoder_cmd = [sys.executable, os.path.join(SCRIPTS, "compare_encoder.py"), "--benign", binary,
                       "--threads", MODEL_THREADS, "--torch-variant", "cls", "--rounds", str(args.rounds),
                       "--json", "--workdir", work]
        if args.quick:
            encoder_cmd += ["--dim", "200", "--time-steps", "2", "--steps-compare", "3"]
        encoder = run_json_lines(encoder_cmd)[-1]
    pretrain_cmd = [sys.executable, os.path.join(SCRIPTS, "compare_pretrain.py"), "--benign", binary,
                    "--data-dir", args.data_dir, "--threads", MODEL_THREADS, "--torch-last-block", "cls",
                    "--rounds", str(args.rounds), "--json"]
    if args.quick:
        pretrain_cmd += ["--subset", "128"]
    pretrain_lines = run_json_lines(pretrain_cmd)
    loads.append(load_average())
    pretrain_head = pretrain_lines[0]["header"]
    trajectory = encoder["trajectory"]
    lines = [
        header("`scripts/compare_encoder.py --torch-variant cls --json` and `scripts/compare_pretrain.py"
               " --torch-last-block cls --json`", args.rounds, loads, args.quick,
               f", PyTorch {encoder['torch']}"),
        "",
        f"- Encoder: the synthetic task's one-layer encoder, d = mlp = {encoder['dim']}, full batch"
        " (n = 20, T = 8 + [CLS]), one SGD step: the mean of"
        f" {encoder['time_steps']} steps after two per round on both sides (benign: the difference"
        " of two runs' step times, evaluations excluded), and the evaluation of the 1000 test"
        " samples; PyTorch computes only the [CLS] query as `benign`"
        f" does. Same data and initial parameters: training losses over {trajectory['steps']} steps"
        f" agree to {trajectory['max_relative_difference']:.1e} (relative).",
        f"- Pretraining: `benign pretrain` against the same classifier in PyTorch ({pretrain_head});"
        " examples per second over the training steps.",
        "- Figures: median over rounds (range over rounds). *benign / PyTorch* is how many times"
        " faster `benign` is (PyTorch's time over ours, or our examples/s over PyTorch's), called"
        " faster or slower only when the two ranges do not overlap.",
        "",
        "| model | measure | threads | benign | PyTorch | benign / PyTorch |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in encoder["rows"]:
        for what, key, scale, unit in (("training step", "step_seconds", 1e3, "ms"),
                                       ("evaluation, 1000 samples", "eval_seconds", 1.0, "s")):
            ours, theirs = row[f"benign_{key}"], row[f"torch_{key}"]
            ratio = statistics.median(theirs) / statistics.median(ours)
            lines.append(f"| encoder | {what}, {unit} | {row['threads']} | {spread(ours, 2 if scale == 1 else 1, scale)}"
                         f" | {spread(theirs, 2 if scale == 1 else 1, scale)} | {ratio:.2f}"
                         f" ({compare(ours, theirs, higher_is_better=False)}) |")
    by_threads = {}
    for row in pretrain_lines[1:]:
        by_threads.setdefault(row["threads"], []).append(row)
    for threads, rows in by_threads.items():
        ours = [r["benign_examples_per_s"] for r in rows]
        theirs = [r["torch_examples_per_s"] for r in rows]
        ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(f"| pretrain | examples/s | {threads} | {spread(ours, 0)} | {spread(theirs, 0)}"
                     f" | {ratio:.2f} ({compare(ours, theirs, higher_is_better=True)}) |")
    return "\n".join(lines)


GNU_TIME = "/usr/bin/time"


def timed_child(command):
    """Runs COMMAND; returns (wall seconds, CPU seconds, peak RSS in bytes or None) of it.

    The peak comes from GNU time, which runs the command from its own small process: a process
    forked from this Python (which holds numpy and PyTorch) starts with this Python's resident
    pages, and Linux keeps that high-water mark across exec, so `wait4` would report ours. Without
    GNU time the peak is not reported."""
    say(" ".join(command))
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        wrapper = [GNU_TIME, "-f", "%U %S %M", "-o", report.name] if os.path.exists(GNU_TIME) else []
        start = time.perf_counter()
        proc = subprocess.Popen(wrapper + command, cwd=ROOT, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"performance: failed: {' '.join(command)}")
        if not wrapper:
            return wall, usage.ru_utime + usage.ru_stime, None
        user, system, peak_kb = report.read().split()[-3:]
    return wall, float(user) + float(system), int(peak_kb) * 1024


def part_startup(args, target):
    binary = os.path.join(target, "release", "benign")
    jobs = QUICK_STARTUP_JOBS if args.quick else STARTUP_JOBS
    loads = [load_average()]
    times = {name: [] for name, _, _ in jobs}
    with tempfile.TemporaryDirectory(prefix="performance-startup-") as work:
        for round_index in range(args.rounds):
            for name, job, _ in jobs:
                extra = ["--out", os.path.join(work, f"sweep-{round_index}")] if job[0] == "sweep" else []
                times[name].append(timed_child([binary] + job + extra))
        phase_lines = startup_phases(args, binary, work, target)
    loads.append(load_average())
    lines = [
        header("`scripts/performance.py --only startup`", args.rounds, loads, args.quick),
        "",
        "Wall and CPU seconds (user + system) of each command, median over rounds (range), and"
        " its peak resident memory (GNU time's); the sweep writes into a fresh temporary folder each round."
        " A target is met when the median wall time is at most the target.",
        "",
        "| job | command | wall s | CPU s | peak MB | target | met |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for name, job, target_seconds in jobs:
        walls = [t[0] for t in times[name]]
        cpus = [t[1] for t in times[name]]
        peaks = [t[2] for t in times[name] if t[2] is not None]
        peak = f"{max(peaks) / 2**20:.0f}" if peaks else "-"
        met = "yes" if statistics.median(walls) <= target_seconds else "no"
        command = "benign " + " ".join(job) + (" --out TMP" if job[0] == "sweep" else "")
        lines.append(f"| {name} | `{command}` | {spread(walls, 1)} | {spread(cpus, 1)} | {peak}"
                     f" | {target_seconds:.0f} s | {met} |")
    return "\n".join(lines + phase_lines)


def solve3(m, v):
    """The solution of the 3 x 3 system m x = v (Cramer's rule)."""
    def det(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))
    whole = det(m)
    return [det([[v[r] if c == k else m[r][c] for c in range(3)] for r in range(3)]) / whole
            for k in range(3)]


def quadratic_fit(xs, ys):
    """Least-squares coefficients (a, b, c) of y = a + b x + c x^2."""
    moments = [sum(x ** k for x in xs) for k in range(5)]
    normal = [[moments[r + c] for c in range(3)] for r in range(3)]
    return solve3(normal, [sum(y * x ** r for x, y in zip(xs, ys)) for r in range(3)])


def startup_phases(args, binary, work, target):
    """The phase table: each phase's seconds in single one-thread runs at PHASE_DIMS (median over
    rounds, interleaved), and the grid's CPU seconds per phase estimated by a quadratic in d
    through them, summed over the grid's dimensions and columns; then the grid's floor: its
    products with W_0 at the f64 FMA peak (`gemm_rate peak`) plus the other phases' estimate."""
    dims = QUICK_PHASE_DIMS if args.quick else PHASE_DIMS
    seconds = {(name, d): [] for name, _ in STARTUP_PHASES for d in dims}
    ranks = set()
    for round_index in range(args.rounds):
        for d in dims:
            out = os.path.join(work, f"phases-{round_index}-{d}")
            command = [binary, "run", "-d", str(d), "--signal-norm", "5", "--eval-every", "1000",
                       "--threads", "1", "--quiet", "--no-plot", "--out", out]
            say(" ".join(command))
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            ranks.add(summary["subspace_rank"])
            for name, path in STARTUP_PHASES:
                value = summary
                for key in path:
                    value = value[key]
                seconds[(name, d)].append(value)
    grid_dims = list(range(250, 751, 250)) if args.quick else list(GRID_DIMS)
    columns = 3 if args.quick else GRID_COLUMNS
    estimates = {}
    for name, _ in STARTUP_PHASES:
        a, b, c = quadratic_fit(dims, [statistics.median(seconds[(name, d)]) for d in dims])
        estimates[name] = columns * sum(max(a + b * d + c * d * d, 0.0) for d in grid_dims)
    total = sum(estimates.values())
    lines = [
        "",
        f"Where a grid run's time goes: the phases a run reports (its `summary.json`), in one-thread"
        f" runs `benign run -d D --signal-norm 5 --eval-every 1000 --threads 1` (a sweep evaluates"
        f" only at the last step), median over the rounds; the last columns estimate the"
        f" grid's CPU seconds per phase from a quadratic in d through these points, summed over the"
        f" grid's {len(grid_dims)} dimensions x {columns} columns.",
        "",
        "| phase | " + " | ".join(f"d = {d}" for d in dims) + " | grid CPU s (estimate) | share |",
        "|---|" + "--:|" * (len(dims) + 2),
    ]
    for name, _ in STARTUP_PHASES:
        cells = " | ".join(f"{1e3 * statistics.median(seconds[(name, d)]):.1f} ms" for d in dims)
        lines.append(f"| {name} | {cells} | {estimates[name]:.1f} | {estimates[name] / total:.0%} |")
    return lines + grid_floor(target, ranks, grid_dims, columns, estimates)


def grid_floor(target, ranks, grid_dims, columns, estimates):
    """What the grid would take with its products with W_0 at the f64 FMA peak (the core count
    the grid job uses: its --threads 2) and every other phase as estimated, as text lines."""
    if len(ranks) != 1:
        sys.exit(f"performance: the phase runs reported subspace ranks {sorted(ranks)}, not one")
    (rank,) = ranks
    threads = 2
    peak = json.loads(subprocess.run(
        [os.path.join(target, "release", "examples", "gemm_rate"), "peak"],
        check=True, capture_output=True, text=True).stdout)["fma_peak_f64_gflops_per_core"]
    # two passes over W_0 a run, d^2 r multiply-adds each, two flops a multiply-add
    flops = columns * sum(2 * 2 * d * d * rank for d in grid_dims)
    products_wall = flops / (peak * 1e9 * threads)
    others_wall = sum(v for name, v in estimates.items() if "W_0" not in name) / threads
    return [
        "",
        f"The grid's floor on this machine: its products with W_0 are two passes of d^2 r"
        f" multiply-adds a run (r = {rank}), {flops / 2:.3g} over the grid; at the f64 FMA peak"
        f" measured after the runs (`gemm_rate peak`: {peak:.1f} GFLOP/s a core) they would take"
        f" {products_wall:.0f} s of wall time on {threads} threads, and the other phases as"
        f" estimated above {others_wall:.0f} s more: {products_wall + others_wall:.0f} s"
        f" with every product at the peak.",
    ]


def self_test():
    """Checks the block replacement, the spreads and verdicts, and that the doc has every block."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "doc.md")
        with open(path, "w") as f:
            f.write("a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n")
        os.chmod(path, 0o644)
        replace_block(path, "x", "new\n")
        assert os.stat(path).st_mode & 0o777 == 0o644, "the doc's permissions changed"
        with open(path) as f:
            assert f.read() == "a\n<!-- x:start -->\nnew\n<!-- x:end -->\nb\n"
        assert os.listdir(folder) == ["doc.md"], "a temporary file was left behind"
        for broken in ("<!-- x:end -->\n<!-- x:start -->\n", "<!-- x:start -->\n"):
            with open(path, "w") as f:
                f.write(broken)
            try:
                replace_block(path, "x", "new")
            except SystemExit:
                continue
            raise AssertionError(f"replaced a block in {broken!r}")
    assert spread([3.0, 1.0, 2.0], 1) == "2.0 (1.0-3.0)"
    assert spread([0.001, 0.002, 0.003], 1, 1e3) == "2.0 (1.0-3.0)"
    assert compare([2.0, 2.1], [1.0, 1.5], higher_is_better=True) == "faster"
    assert compare([2.0, 2.1], [1.0, 1.5], higher_is_better=False) == "slower"
    assert compare([1.0, 2.1], [1.5, 3.0], higher_is_better=True) == "within spread"
    fit = quadratic_fit([1.0, 2.0, 3.0, 4.0], [2.0 + 0.5 * x + 0.25 * x * x for x in (1, 2, 3, 4)])
    assert all(abs(got - want) < 1e-9 for got, want in zip(fit, (2.0, 0.5, 0.25))), fit
    for name in BLOCKS.values():
        check_block(DOC, name)
    print("performance: self-test passed")


PART_FUNCTIONS = {"gemm": part_gemm, "openblas": part_openblas, "rowwise": part_rowwise,
                  "models": part_models, "startup": part_startup}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts (default all: {','.join(PARTS)})")
    ap.add_argument("--quick", action="store_true", help="tiny problems, prints the blocks, never writes the doc")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of every part but gemm (default 3, at least 3)")
    ap.add_argument("--data-dir", default=os.environ.get("BENIGN_DATA_DIR", os.path.join(ROOT, "..", "shared", "data")),
                    help="the data folder (MNIST for the pretraining comparison) [default: BENIGN_DATA_DIR]")
    ap.add_argument("--rowwise-baseline-commit", default=ROWWISE_BASELINE_COMMIT, metavar="COMMIT",
                    help="the row-wise table's older build: this checkout's rowwise_bench built against "
                         f"COMMIT's kernels (default {ROWWISE_BASELINE_COMMIT}; none: no such column)")
    ap.add_argument("--rowwise-baseline", metavar="BIN", help="an older rowwise_bench already built "
                    "(instead of --rowwise-baseline-commit)")
    ap.add_argument("--rowwise-baseline-name", help="its column name (default: the commit, or baseline)")
    ap.add_argument("--self-test", action="store_true", help=self_test.__doc__)
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: parts are {', '.join(PARTS)}")
    args.rounds = 3 if args.rounds is None else args.rounds
    if args.rounds < 3:
        ap.error("--rounds: at least 3")
    require_modules(parts)
    if "models" in parts and not os.path.isdir(os.path.join(args.data_dir, "mnist")):
        sys.exit(f"performance: models: no MNIST under {args.data_dir} (--data-dir or BENIGN_DATA_DIR)")
    if not args.quick:
        for part in parts:
            check_block(DOC, BLOCKS[part])
    target = build(parts)
    if "rowwise" in parts and args.rowwise_baseline is None and args.rowwise_baseline_commit != "none":
        args.rowwise_baseline = build_rowwise_baseline(args.rowwise_baseline_commit, target)
        args.rowwise_baseline_name = args.rowwise_baseline_name or args.rowwise_baseline_commit
    args.rowwise_baseline_name = args.rowwise_baseline_name or "baseline"
    for part in PARTS:
        if part not in parts:
            continue
        say(f"{part}: measuring")
        block = PART_FUNCTIONS[part](args, target)
        if args.quick:
            print(f"<!-- {BLOCKS[part]} (quick, not written) -->\n{block}\n")
        else:
            replace_block(DOC, BLOCKS[part], block)
            say(f"{part}: wrote the {BLOCKS[part]} block of {DOC}")


if __name__ == "__main__":
    main()
