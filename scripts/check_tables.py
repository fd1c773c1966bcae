#!/usr/bin/env python3
"""Checks that benign's tables load cleanly in pandas: float fields as float64 columns, integer
fields as integers, seeds exact (64-bit, no rounding through floats), accuracies as fractions.

Runs a small `benign run` and a small `benign sweep` into DIR, then reads metrics.csv,
attention.csv and results.csv with pandas and compares them with the JSON they come from.

    python3 scripts/check_tables.py --benign target/release/benign --dir /tmp/tables
    python3 scripts/check_tables.py --self-test      # the checks themselves, on made-up tables

Exit status 0 when every check passes, 1 otherwise (each failure is printed).
"""

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

FAILURES = []
SHOW = [True]


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        if SHOW[0]:
            print(f"FAIL: {message}", file=sys.stderr)


def float_columns(frame, columns, name):
    for column in columns:
        check(column in frame.columns, f"{name}: column {column} missing")
        if column in frame.columns:
            check(
                frame[column].dtype == "float64",
                f"{name}: {column} loads as {frame[column].dtype}, not float64",
            )


def integer_columns(frame, columns, name):
    for column in columns:
        check(column in frame.columns, f"{name}: column {column} missing")
        if column in frame.columns:
            check(
                pd.api.types.is_integer_dtype(frame[column]),
                f"{name}: {column} loads as {frame[column].dtype}, not an integer",
            )


def fractions(frame, columns, name):
    for column in columns:
        values = frame[column].dropna()
        check(
            ((values >= 0.0) & (values <= 1.0)).all(),
            f"{name}: {column} is not a fraction in [0, 1]",
        )


def check_metrics(run_dir):
    metrics = pd.read_csv(run_dir / "metrics.csv")
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    check(len(metrics) == len(lines), "metrics.csv and metrics.jsonl differ in length")
    integer_columns(metrics, ["step"], "metrics.csv")
    floats = [c for c in metrics.columns if c != "step"]
    float_columns(metrics, floats, "metrics.csv")
    fractions(
        metrics,
        [c for c in metrics.columns if "acc" in c or c.startswith("attention_")],
        "metrics.csv",
    )
    # Nested objects are flat columns with the same values as the JSON.
    for row, line in zip(metrics.itertuples(index=False), lines):
        row = row._asdict()
        check(row["train_loss"] == line["train_loss"], "train_loss differs from the JSON")
        if line.get("attention_clean"):
            check(
                row["attention_clean_relevant"] == line["attention_clean"]["relevant"],
                "attention_clean_relevant differs from the JSON",
            )
    attention = pd.read_csv(run_dir / "attention.csv")
    integer_columns(attention, ["step", "sample", "token"], "attention.csv")
    float_columns(attention, ["probability"], "attention.csv")


def check_results(sweep_dir):
    results = pd.read_csv(sweep_dir / "results.csv")
    records = [
        json.loads(l) for l in (sweep_dir / "results.jsonl").read_text().splitlines()
    ]
    check(len(results) == len(records), "results.csv and results.jsonl differ in length")
    integer_columns(
        results,
        ["index", "seed_index", "samples", "tokens", "dim", "steps", "test_size"],
        "results.csv",
    )
    float_columns(
        results,
        ["signal_norm", "rho", "eta", "sigma", "lr", "snr", "train_loss", "train_acc",
         "test_loss", "test_acc", "attention_clean_relevant", "p_norm", "wall_seconds"],
        "results.csv",
    )
    fractions(results, ["train_acc", "test_acc", "attention_clean_relevant"], "results.csv")
    # Seeds: decimal strings in JSON, exact unsigned 64-bit integers in the CSV.
    check(
        results["seed"].dtype in ("uint64", "int64", "object"),
        f"results.csv: seed loads as {results['seed'].dtype}, which rounds",
    )
    by_index = {r["index"]: r for r in records}
    for index, seed in zip(results["index"], results["seed"]):
        record = by_index[int(index)]
        check(isinstance(record["seed"], str), "results.jsonl: seed is not a string")
        check(int(seed) == int(record["seed"]), f"run {index}: seed {seed} != {record['seed']}")
    check(
        any(int(r["seed"]) > 2**53 for r in records),
        "no seed above 2^53 was exercised",
    )


def run(benign, out):
    out.mkdir(parents=True, exist_ok=True)
    common = ["--quiet", "--no-plot"]
    subprocess.run(
        [benign, "run", "-d", "80", "--steps", "50", "--test-size", "60", "--out",
         str(out / "run"), *common],
        check=True,
    )
    subprocess.run(
        [benign, "sweep", "--grid", "d=50,70", "--grid", "signal_norm=5,7.5", "--seeds", "3",
         "--steps", "20", "--test-size", "30", "--out", str(out / "sweep"), *common],
        check=True,
    )
    check_metrics(out / "run")
    check_results(out / "sweep")


def self_test():
    """The checks must catch what they are for."""
    SHOW[0] = False
    good = pd.read_csv(io.StringIO("a,b\n1.0,2\n0.5,3\n"))
    float_columns(good, ["a"], "t")
    integer_columns(good, ["b"], "t")
    assert not FAILURES, FAILURES
    # Display-formatted floats (`5` for 5.0) turn a float column into integers.
    bad = pd.read_csv(io.StringIO("a\n5\n6\n"))
    float_columns(bad, ["a"], "t")
    assert len(FAILURES) == 1, FAILURES
    fractions(pd.read_csv(io.StringIO("acc\n94.2\n")), ["acc"], "t")
    assert len(FAILURES) == 2, FAILURES
    FAILURES.clear()
    print("self-test passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benign", default="target/release/benign")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/benign-tables"))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return 0
    run(args.benign, args.dir)
    if FAILURES:
        print(f"{len(FAILURES)} checks failed", file=sys.stderr)
        return 1
    print("tables load cleanly: float columns are float64, seeds exact, accuracies fractions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
