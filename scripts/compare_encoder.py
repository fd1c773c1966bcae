#!/usr/bin/env python3
"""The synthetic task's one-layer transformer encoder in `benign` and in PyTorch, side by side.

1. Exports the data (`benign data export`) and our seeded initial parameters
   (`benign run --model encoder --save-init`), trains `benign` for --steps-compare steps
   (evaluating every step) and PyTorch from the same data and parameters, and reports the largest
   difference of the training-loss trajectories.
2. Times one training step (full batch, n = 20, T = 8 + [CLS], d = mlp = 2000 by default) and the
   evaluation on the 1000 test samples, for each thread count, both back to back, with each side's
   peak resident memory (its own process).

PyTorch runs the model as the paper's reference writes it (`--torch-variant full`: one bias-free
d -> 3d projection over every position). `--torch-variant cls` runs the same algebra as `benign`
(only the [CLS] query, `r = W_k^T q`, `g = sum_j a_j h_j`) for an engine-to-engine comparison.

    python3 scripts/compare_encoder.py --benign target/release/benign --threads 1,2
    python3 scripts/compare_encoder.py --torch-variant cls --rounds 3 --json

`--rounds N` repeats the timings N times, each round timing every thread count on both sides
back to back (interleaved rounds: a change of the machine's load hits both sides);
`--benign-baseline OLD` times a second `benign` binary in the same rounds, just before `--benign`
(an A/B of two builds against the same PyTorch figures, e.g. before and after a change); `--json`
prints the trajectory check and every round's timings as one JSON object instead of the table
(`scripts/performance.py` reads it).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from machine_info import pinned


def torch_worker(args):
    """Runs in its own process (its peak memory is its own): trajectory and timings."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads_one)
    data, init = args.data, args.init
    load = lambda name: torch.from_numpy(np.load(os.path.join(data, name)).astype(np.float32))
    train_x, train_y = load("train_x.npy"), load("train_y.npy")
    test_x, test_y = load("test_x.npy"), load("test_y.npy")
    p = {
        name[:-4]: torch.from_numpy(np.load(os.path.join(init, name))).clone().requires_grad_(True)
        for name in os.listdir(init)
        if name.endswith(".npy")
    }
    skip = not args.no_skip
    d = train_x.shape[2]

    def full(x):
        n = x.shape[0]
        x = torch.cat([p["cls"].expand(n, 1, d), x], 1)
        h = F.layer_norm(x, (d,), p["block.ln1.weight"], p["block.ln1.bias"], 1e-5)
        w_qkv = torch.cat(
            [p["block.attn.query.weight"], p["block.attn.key.weight"], p["block.attn.value.weight"]]
        )
        q, k, v = (h @ w_qkv.T).chunk(3, -1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
        c = a @ v
        x = x + c if skip else c
        m = F.layer_norm(x, (d,), p["block.ln2.weight"], p["block.ln2.bias"], 1e-5)
        m = F.linear(F.gelu(F.linear(m, p["block.mlp.fc1.weight"], p["block.mlp.fc1.bias"])),
                     p["block.mlp.fc2.weight"], p["block.mlp.fc2.bias"])
        x = x + m if skip else m
        z = F.layer_norm(x[:, 0], (d,), p["final_ln.weight"], p["final_ln.bias"], 1e-5)
        return F.linear(z, p["head.weight"], p["head.bias"]).squeeze(-1), a[:, 0, 1:]

    def cls_only(x):
        n = x.shape[0]
        cls = p["cls"].expand(n, 1, d)
        x = torch.cat([cls, x], 1)
        h = F.layer_norm(x, (d,), p["block.ln1.weight"], p["block.ln1.bias"], 1e-5)
        q = h[:, 0] @ p["block.attn.query.weight"].T
        r = q @ p["block.attn.key.weight"]
        a = torch.softmax((h @ r.unsqueeze(-1)).squeeze(-1) / math.sqrt(d), -1)
        g = (a.unsqueeze(-1) * h).sum(1)
        c = g @ p["block.attn.value.weight"].T
        x = cls[:, 0] + c if skip else c
        m = F.layer_norm(x, (d,), p["block.ln2.weight"], p["block.ln2.bias"], 1e-5)
        m = F.linear(F.gelu(F.linear(m, p["block.mlp.fc1.weight"], p["block.mlp.fc1.bias"])),
                     p["block.mlp.fc2.weight"], p["block.mlp.fc2.bias"])
        x = x + m if skip else m
        z = F.layer_norm(x, (d,), p["final_ln.weight"], p["final_ln.bias"], 1e-5)
        return F.linear(z, p["head.weight"], p["head.bias"]).squeeze(-1), a[:, 1:]

    model = full if args.torch_variant == "full" else cls_only
    opt = torch.optim.SGD(list(p.values()), lr=args.lr)

    def step():
        opt.zero_grad(set_to_none=True)
        f, _ = model(train_x)
        loss = F.softplus(-train_y * f).mean()
        loss.backward()
        opt.step()
        return loss.item()

    def evaluate():
        with torch.no_grad():
            f, _ = model(test_x)
            return F.softplus(-test_y * f).mean().item()

    out = {"losses": [], "variant": args.torch_variant, "torch": torch.__version__}
    if args.trajectory:
        out["losses"] = [step() for _ in range(args.trajectory)]
        with torch.no_grad():
            f, _ = model(train_x)
            out["losses"].append(F.softplus(-train_y * f).mean().item())
    else:
        for _ in range(2):
            step()
        # the mean over the timed steps, as `benign_timing` measures the other side
        t = time.perf_counter()
        for _ in range(args.time_steps):
            step()
        out["step_seconds"] = (time.perf_counter() - t) / args.time_steps
        t = time.perf_counter()
        evaluate()
        out["eval_seconds"] = time.perf_counter() - t
    out["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))


def run_child(cmd, env=None):
    """Runs a command; returns (stdout, its own peak RSS in bytes)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return out.decode(), usage.ru_maxrss * 1024


def benign_run(args, work, threads, steps, eval_every, out=None, binary=None):
    cmd = [binary or args.benign, "run", "--model", "encoder", "--data", os.path.join(work, "data"),
           "--steps", str(steps), "--eval-every", str(eval_every), "--threads", str(threads),
           "--lr", str(args.lr), "--mlp-dim", str(args.dim), "--quiet", "--json"]
    if args.no_skip:
        cmd.append("--no-skip")
    cmd += ["--out", out] if out else ["--no-write"]
    text, rss = run_child(cmd)
    return json.loads(text), rss


def benign_timing(args, work, threads, binary=None):
    """One step's and one evaluation's seconds of `binary` (`--benign` by default), and its
    peak RSS, from two runs of 2 and 2 + --time-steps steps, each evaluating at its first and
    last step: a step is the difference of their step times (`training_seconds` less
    `evaluation_seconds`, so that the noise of the evaluations cannot enter it) over
    --time-steps, i.e. the mean of the steps after the first two, as the PyTorch side times it;
    an evaluation is the mean of the four. A figure that is not positive (a run disturbed by
    the machine) is an error, not a row of the table."""
    short, rss_short = benign_run(args, work, threads, 2, 10_000, binary=binary)
    long_, rss_long = benign_run(args, work, threads, 2 + args.time_steps, 10_000, binary=binary)

    def steps_seconds(summary):
        return summary["training_seconds"] - summary["evaluation_seconds"]

    step = (steps_seconds(long_) - steps_seconds(short)) / args.time_steps
    evaluation = (short["evaluation_seconds"] + long_["evaluation_seconds"]) / 4
    if not (step > 0 and evaluation > 0):
        sys.exit(f"compare_encoder: impossible timing of {binary or args.benign} on {threads} "
                 f"threads (step {step:.3g} s, evaluation {evaluation:.3g} s): "
                 f"runs {short} and {long_}")
    return step, evaluation, max(rss_short, rss_long)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benign", default="target/release/benign")
    ap.add_argument("--benign-baseline", help="a second benign binary timed in the same rounds")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dim", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--no-skip", action="store_true")
    ap.add_argument("--steps-compare", type=int, default=50)
    ap.add_argument("--time-steps", type=int, default=10)
    ap.add_argument("--torch-variant", choices=["full", "cls"], default="full")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--workdir")
    # internal: the PyTorch side in its own process
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    ap.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--trajectory", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(args)
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    say = (lambda *a, **k: None) if args.json else print

    work = args.workdir or tempfile.mkdtemp(prefix="compare_encoder-")
    data, init = os.path.join(work, "data"), os.path.join(work, "init")
    run_child([args.benign, "data", "export", "--dim", str(args.dim), "--seed", str(args.seed),
               "--out", data])
    save = [args.benign, "run", "--model", "encoder", "--data", data, "--save-init", init,
            "--steps", "1", "--no-write", "--quiet", "--mlp-dim", str(args.dim)]
    run_child(save + (["--no-skip"] if args.no_skip else []))

    def torch(threads, extra):
        cmd = [sys.executable, __file__, "--torch-worker", "--data", data, "--init", init,
               "--threads-one", str(threads), "--lr", str(args.lr), "--time-steps",
               str(args.time_steps), "--torch-variant", args.torch_variant] + extra
        if args.no_skip:
            cmd.append("--no-skip")
        text, rss = run_child(cmd)
        return json.loads(text.strip().splitlines()[-1]), rss

    # 1. Trajectories from the same data and parameters.
    steps = args.steps_compare
    out_dir = os.path.join(work, "run")
    benign_run(args, work, 2, steps, 1, out=out_dir)
    ours = [json.loads(line)["train_loss"] for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    theirs, _ = torch(2, ["--trajectory", str(steps)])
    diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs["losses"])]
    result = {"dim": args.dim, "torch_variant": args.torch_variant, "torch": theirs["torch"],
              "time_steps": args.time_steps, "rounds": args.rounds,
              "trajectory": {"steps": steps, "benign_first": ours[0], "benign_last": ours[-1],
                             "torch_first": theirs["losses"][0], "torch_last": theirs["losses"][-1],
                             "max_relative_difference": max(diffs)},
              "rows": []}
    say(f"training loss over {steps} steps: benign {ours[0]:.6f} -> {ours[-1]:.6f}, "
        f"PyTorch {theirs['losses'][0]:.6f} -> {theirs['losses'][-1]:.6f}; "
        f"max relative difference {max(diffs):.2e}")

    # 2. Timings, back to back per thread count, round after round.
    baseline = args.benign_baseline
    say(f"{'threads':>7} {'benign step':>12} {'torch step':>11} {'ratio':>6} "
        f"{'benign eval':>12} {'torch eval':>11} {'benign RSS':>11} {'torch RSS':>10}"
        + (f" {'base step':>10} {'ratio':>6} {'base eval':>10}" if baseline else ""))
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows = {t: {"threads": t, "benign_step_seconds": [], "torch_step_seconds": [],
                "benign_eval_seconds": [], "torch_eval_seconds": [], "benign_rss_bytes": 0,
                "torch_rss_bytes": 0} for t in thread_counts}
    if baseline:
        for row in rows.values():
            row.update({"baseline_step_seconds": [], "baseline_eval_seconds": []})
    for _ in range(args.rounds):
        for threads in thread_counts:
            row = rows[threads]
            # every side of a one-thread row on one CPU (both run as child processes)
            with pinned(threads):
                if baseline:
                    base_step, base_eval, _ = benign_timing(args, work, threads, baseline)
                    row["baseline_step_seconds"].append(base_step)
                    row["baseline_eval_seconds"].append(base_eval)
                step, evaluation, rss = benign_timing(args, work, threads)
                t, rss_torch = torch(threads, [])
            row["benign_step_seconds"].append(step)
            row["torch_step_seconds"].append(t["step_seconds"])
            row["benign_eval_seconds"].append(evaluation)
            row["torch_eval_seconds"].append(t["eval_seconds"])
            row["benign_rss_bytes"] = max(row["benign_rss_bytes"], rss)
            row["torch_rss_bytes"] = max(row["torch_rss_bytes"], rss_torch)
            say(f"{threads:>7} {step * 1e3:>10.1f}ms {t['step_seconds'] * 1e3:>9.1f}ms "
                f"{t['step_seconds'] / step:>5.2f}x {evaluation:>11.2f}s {t['eval_seconds']:>10.2f}s "
                f"{rss / 2**20:>9.0f}MB {rss_torch / 2**20:>8.0f}MB"
                + (f" {base_step * 1e3:>8.1f}ms {t['step_seconds'] / base_step:>5.2f}x "
                   f"{base_eval:>9.2f}s" if baseline else ""))
    result["rows"] = list(rows.values())
    if baseline:
        result["benign_baseline"] = baseline
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
