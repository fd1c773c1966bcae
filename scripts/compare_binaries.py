#!/usr/bin/env python3
"""Golden outputs: checks that two builds of benign compute bit-identical results.

Runs the same jobs with an OLD and a NEW binary and compares their numbers, timing fields aside:
the default `benign run` (metrics.jsonl, attention.csv), a small sweep with independent draws and
one with common random numbers (results.jsonl), `benign gradcheck --json`, and, when a data
folder with MNIST is given, a one-epoch `benign pretrain` and a tiny `benign finetune`. Use it
around any refactor that must not change the science:

    git stash; cargo build --release; cp target/release/benign /tmp/benign-old; git stash pop
    cargo build --release
    python3 scripts/compare_binaries.py /tmp/benign-old target/release/benign [--data-dir DIR]

Seeds written as JSON numbers by older builds and as strings by newer ones compare equal.
Exit status 0 when every job matches, 1 otherwise (each difference is printed).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMING = {"wall_seconds", "seconds", "examples_per_second", "train_seconds",
          "wall_seconds_total", "data_seconds", "startup_seconds", "training_seconds",
          "startup", "provenance", "out_dir", "run_dir", "threads"}
SEEDS = {"seed", "test_seed"}


def normalise(value):
    """Drops timing and provenance fields; seeds as integers."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in TIMING or k.endswith("_seconds"):
                continue
            if k in SEEDS and isinstance(v, str):
                v = int(v)
            out[k] = normalise(v)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def json_lines(path):
    return [normalise(json.loads(line)) for line in Path(path).read_text().splitlines() if line]


def sorted_records(path):
    return sorted(json_lines(path), key=lambda r: r["index"])


def run(binary, args, cwd):
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True)
    return result


def jobs(data_dir):
    sweep = ["--grid", "d=250:1000:250", "--grid", "signal_norm=5:20:5", "--seeds", "2",
             "--quiet", "--no-plot"]
    yield ("run, defaults", ["run", "--quiet", "--out", "run"],
           lambda d: (json_lines(d / "run/metrics.jsonl"), (d / "run/attention.csv").read_text()))
    yield ("sweep, independent draws", ["sweep", *sweep, "--out", "sweep"],
           lambda d: sorted_records(d / "sweep/results.jsonl"))
    yield ("sweep, common random numbers", ["sweep", *sweep, "--common-random-numbers", "--out", "crn"],
           lambda d: sorted_records(d / "crn/results.jsonl"))
    yield ("gradcheck --json", ["gradcheck", "--json"], None)
    if data_dir:
        common = ["--threads", "2", "--quiet", "--data-dir", str(data_dir), "--checkpoints", "ck"]
        yield ("pretrain, 1 epoch", ["pretrain", "--dataset", "mnist", "--subset", "500",
                                     "--epochs", "1", "--json", *common], None)
        yield ("finetune, tiny", ["finetune", "--dataset", "mnist", "--pretrain-subset", "500",
                                  "--n", "10", "--eta", "0.2", "--seeds", "1", "--epochs", "5",
                                  "--no-plot", "--out", "ft", *common],
               lambda d: normalise(json.loads(next(d.glob("ft/*/table.json")).read_text())))


def stdout_json(text):
    """One JSON document (possibly pretty-printed), else JSON lines, else the raw text."""
    try:
        return normalise([json.loads(text)])
    except json.JSONDecodeError:
        pass
    try:
        lines = [json.loads(l) for l in text.splitlines() if l.strip().startswith(("{", "["))]
    except json.JSONDecodeError:
        return text
    return normalise(lines) if lines else text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--data-dir", type=Path, help="folder with mnist/ for pretrain and finetune")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        roots = {side: Path(tmp) / side for side in ("old", "new")}
        for root in roots.values():
            root.mkdir()
        for name, command, read in jobs(args.data_dir):
            outputs = {}
            for side, binary in (("old", args.old), ("new", args.new)):
                result = run(Path(binary).resolve(), command, roots[side])
                if result.returncode != 0:
                    outputs[side] = f"exit {result.returncode}: {result.stderr.strip()[-300:]}"
                else:
                    outputs[side] = read(roots[side]) if read else stdout_json(result.stdout)
            same = outputs["old"] == outputs["new"]
            failures += not same
            print(f"{'same     ' if same else 'DIFFERENT'}  {name}")
    print("all jobs bit-identical" if not failures else f"{failures} jobs differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
