#!/usr/bin/env python3
"""How much attention do noisy training samples put on their weak-other token, over many seeds?

The paper's Figure 3 (attention model) and Figure 6 (one-layer encoder) show the attention row of
single training samples: the reference repository's plot notebook picks the first clean and the
first noisy sample of one run (data seed 42, an unseeded W_0 / encoder initialisation). One draw
says little about what to expect, so this script trains many seeds and reports the distribution
of the weak-other probability of every noisy sample after the last step, for up to three sides:

- `reference`: the reference code's data generator (numpy `default_rng(seed).standard_normal`,
  float32; balanced ordered labels; block flips) and its model and training in PyTorch float32
  (SGD, full batch), with PyTorch's default initialisation drawn after `torch.manual_seed(seed)`
  (the reference never seeds it). Re-written for this repository from the paper's description.
- `benign`: `benign run --seed S` (our ChaCha data and initialisation), the attention rows of the
  noisy samples read from its `attention.csv`.
- `cross` (attention model only): the PyTorch training above on the data and W_0 that `benign data
  export --seed S` writes, i.e. our draws through the reference's model. It must agree with
  `benign` sample by sample; that isolates any difference to the draws.

The two distributions are compared with a permutation test on the difference of their means
(fixed seed, 20,000 permutations).

    python3 scripts/weak_other_seeds.py --model attention --seeds 1-16
    python3 scripts/weak_other_seeds.py --model encoder --seeds 1-8 --dim 500 --sides reference,benign
    python3 scripts/weak_other_seeds.py --self-test

Exit status 0 on success, 2 on bad input or a failed `benign` run.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROLES = ("relevant", "weak_same", "weak_other")


# ---------------------------------------------------------------------------------------------
# The reference's data


def block_noisy(n, eta):
    """The reference's flips: k = ceil(n eta), the first floor(k/2) of each class block."""
    k = int(math.ceil(n * eta - 1e-9))
    noisy = np.zeros(n, bool)
    noisy[: k // 2] = True
    noisy[n // 2 : n // 2 + k // 2] = True
    return noisy


def reference_data(seed, n, tokens, dim, signal_norm, rho, eta):
    """Training set as the reference generates it: returns (x [n, T, d] float32, y, noisy)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, tokens, dim)).astype(np.float32)
    clean = np.concatenate([np.ones(n // 2), -np.ones(n - n // 2)]).astype(np.float32)
    mu_plus = np.zeros(dim, np.float32)
    mu_minus = np.zeros(dim, np.float32)
    mu_plus[0] = signal_norm
    mu_minus[1] = signal_norm
    same = np.where(clean[:, None] == 1, mu_plus, mu_minus)
    other = np.where(clean[:, None] == 1, mu_minus, mu_plus)
    x[:, 0] += same
    x[:, 1] += np.float32(rho) * same
    x[:, 2] += np.float32(rho) * other
    noisy = block_noisy(n, eta)
    y = np.where(noisy, -clean, clean).astype(np.float32)
    return x, y, noisy, mu_plus, mu_minus


# ---------------------------------------------------------------------------------------------
# Models in PyTorch


def fit_logistic(opt, forward, y, steps):
    """`steps` full-batch steps of `opt` on the logistic loss of `forward()`'s outputs f against
    the +-1 labels y; returns the attention `forward()` gives afterwards (float64 numpy) and
    which samples it fits (y f > 0)."""
    import torch

    for _ in range(steps):
        opt.zero_grad()
        f, _ = forward()
        torch.nn.functional.softplus(-y * f).mean().backward()
        opt.step()
    with torch.no_grad():
        f, a = forward()
    return a.numpy().astype(np.float64), (y * f > 0).numpy()


def train_attention(x, y, w0, nu, lr, steps, threads):
    """f(X) = nu^T X^T softmax(X W p), W and p trained by full-batch SGD; returns [n, T] attention
    after the last step. The logits are computed as X (W p), the same function as the reference's
    (X W) p at a fraction of the cost."""
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(x)
    y = torch.from_numpy(y)
    nu = torch.from_numpy(nu.astype(np.float32))
    w = torch.from_numpy(w0.astype(np.float32)).clone().requires_grad_(True)
    p = torch.zeros(x.shape[2], requires_grad=True)
    opt = torch.optim.SGD([w, p], lr=lr)
    scores = x @ nu

    def forward():
        a = torch.softmax(x @ (w @ p), -1)
        return (a * scores).sum(-1), a

    return fit_logistic(opt, forward, y, steps)


def kaiming_w0(seed, dim):
    """W_0 as the reference draws it (kaiming-uniform, a = sqrt(5)), seeded."""
    import torch

    torch.manual_seed(seed)
    w = torch.empty(dim, dim)
    torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return w.numpy()


def train_encoder(x, y, seed, mlp_dim, skip, lr, steps, threads):
    """The paper's one-layer encoder (learned [CLS], pre-LN single-head attention with one
    bias-free d -> 3d projection, residual, pre-LN GELU MLP, residual, final LN, linear head on
    [CLS]), every parameter trained by full-batch SGD, PyTorch default initialisation after
    torch.manual_seed(seed) in the reference's module order. Returns the [CLS] row over the T
    input tokens after the last step ([n, T], not renormalised) and which samples are fitted."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    # Subnormal intermediates (GELU / softmax tails) slow float32 CPU kernels several-fold; flushing
    # them to zero changes nothing at the precision reported here.
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    d = x.shape[2]
    ln1 = nn.LayerNorm(d)
    to_qkv = nn.Linear(d, 3 * d, bias=False)
    mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, d))
    final_ln = nn.LayerNorm(d)
    head = nn.Linear(d, 1)
    cls = nn.Parameter(torch.randn(1, 1, d))
    params = [cls]
    for module in (ln1, to_qkv, mlp, final_ln, head):
        params += list(module.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    x = torch.from_numpy(x)
    y = torch.from_numpy(y)

    def forward():
        h = torch.cat([cls.expand(x.shape[0], 1, d), x], 1)
        q, k, v = to_qkv(ln1(h)).chunk(3, -1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
        c = a @ v
        h = c + h if skip else c
        h = mlp(h) + h if skip else mlp(h)
        f = head(final_ln(h[:, 0])).squeeze(-1)
        return f, a[:, 0, 1:]

    return fit_logistic(opt, forward, y, steps)


# ---------------------------------------------------------------------------------------------
# benign


class BenignError(Exception):
    pass


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenignError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def data_options(args, seed):
    return ["--seed", str(seed), "-n", str(args.samples), "-T", str(args.tokens),
            "-d", str(args.dim), "--signal-norm", str(args.signal_norm), "--rho", str(args.rho),
            "--eta", str(args.eta)]


def benign_side(args, seed, work, data_dir=None, init_w=None):
    """A `benign run` (our draws, or the data / W_0 files given): the noisy samples' attention rows
    at the last step, read from its attention.csv."""
    ids = [int(i) for i in np.flatnonzero(block_noisy(args.samples, args.eta))]
    out = os.path.join(work, f"benign-{seed}")
    cmd = [args.benign, "run", "--model", args.model, "--lr", str(args.lr),
           "--steps", str(args.steps), "--eval-every", str(args.steps),
           "--track-samples", ",".join(map(str, ids)),
           "--threads", str(args.threads), "--quiet", "--json", "--out", out]
    # With --data, the seed still draws the encoder's initialisation.
    cmd += ["--data", data_dir, "--seed", str(seed)] if data_dir else data_options(args, seed)
    if init_w:
        cmd += ["--init-w", init_w]
    if args.model == "encoder":
        cmd += ["--mlp-dim", str(args.mlp_dim or args.dim)]
        if args.no_skip:
            cmd.append("--no-skip")
    run(cmd)
    rows = {}
    with open(os.path.join(out, "attention.csv")) as f:
        next(f)
        for line in f:
            step, sample, token, _, prob = line.strip().split(",")
            if int(step) == args.steps:
                rows.setdefault(int(sample), np.zeros(args.tokens))[int(token)] = float(prob)
    return np.stack([rows[i] for i in ids])


def write_reference_export(args, seed, directory):
    """The reference's draws as a `benign data export` directory (the test set is a placeholder:
    only the training attention is studied here); W_0 only for the attention model."""
    x, y, noisy, mu_plus, mu_minus = reference_data(
        seed if args.reference_data_seed is None else args.reference_data_seed, args.samples, args.tokens, args.dim, args.signal_norm, args.rho, args.eta)
    os.makedirs(directory, exist_ok=True)
    diff = mu_plus.astype(np.float64) - mu_minus
    clean = np.where(noisy, -y, y)
    arrays = {"train_x": x, "train_y": y, "train_y_clean": clean, "test_x": x[:1],
              "test_y": clean[:1], "nu": diff / np.linalg.norm(diff) / args.signal_norm}
    if args.model == "attention":
        arrays["w0"] = kaiming_w0(seed, args.dim)
    for name, value in arrays.items():
        np.save(os.path.join(directory, f"{name}.npy"), np.asarray(value, np.float64))
    return directory


def load_npy(directory, name):
    return np.load(os.path.join(directory, name))


def cross_side(args, seed, work):
    """The reference's model and training (PyTorch) on our exported data and W_0."""
    out = os.path.join(work, f"export-{seed}")
    run([args.benign, "data", "export", *data_options(args, seed), "--test-size", "1",
         "--out", out])
    x = load_npy(out, "train_x.npy").astype(np.float32)
    y = load_npy(out, "train_y.npy").astype(np.float32)
    noisy = load_npy(out, "train_noisy.npy").astype(bool)
    x = x.reshape(len(y), args.tokens, args.dim)
    attention, fitted = train_attention(x, y, load_npy(out, "w0.npy"), load_npy(out, "nu.npy"),
                                        args.lr, args.steps, args.threads)
    return attention[noisy], fitted[noisy]


def reference_side(args, seed, work):
    if args.model == "attention" and args.reference_engine == "benign":
        # Same function, same float32 draws; `cross` shows the two engines agree to ~1e-6.
        out = write_reference_export(args, seed, os.path.join(work, f"reference-{seed}"))
        return benign_side(args, seed, work, out, os.path.join(out, "w0.npy")), None
    x, y, noisy, mu_plus, mu_minus = reference_data(
        seed if args.reference_data_seed is None else args.reference_data_seed, args.samples, args.tokens, args.dim, args.signal_norm, args.rho, args.eta)
    if args.model == "attention":
        diff = mu_plus - mu_minus
        nu = diff / np.linalg.norm(diff) / args.signal_norm
        attention, fitted = train_attention(x, y, kaiming_w0(seed, args.dim), nu, args.lr,
                                            args.steps, args.threads)
    else:
        attention, fitted = train_encoder(x, y, seed, args.mlp_dim or args.dim, not args.no_skip,
                                          args.lr, args.steps, args.threads)
    return attention[noisy], fitted[noisy]


# ---------------------------------------------------------------------------------------------
# Statistics


def permutation_p_value(a, b, permutations=20000, seed=0):
    """Two-sided p-value of |mean(a) - mean(b)| under random relabelling of the pooled values."""
    a, b = np.asarray(a), np.asarray(b)
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        perm = rng.permutation(pooled)
        hits += abs(perm[: len(a)].mean() - perm[len(a) :].mean()) >= observed - 1e-15
    return (hits + 1) / (permutations + 1)


def describe(values):
    v = np.asarray(values)
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std_error": float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan"),
        "quantiles_10_25_50_75_90": [float(t) for t in q],
        "fraction_above_0.5": float((v > 0.5).mean()),
        "fraction_above_0.7": float((v > 0.7).mean()),
    }


def top_role(row):
    best = int(np.argmax(row))
    return ROLES[best] if best < len(ROLES) else "irrelevant"


# ---------------------------------------------------------------------------------------------


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds += range(int(lo), int(hi) + 1)
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. 1-16")
    return seeds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["attention", "encoder"], default="attention")
    ap.add_argument("--seeds", default="1-16", help="e.g. 1-16 or 1,5,9")
    ap.add_argument("--sides", default=None,
                    help="comma list of reference,benign,cross [default: all that apply]")
    ap.add_argument("--benign", default="target/release/benign")
    ap.add_argument("-n", "--samples", type=int, default=20)
    ap.add_argument("-T", "--tokens", type=int, default=8)
    ap.add_argument("-d", "--dim", type=int, default=2000)
    ap.add_argument("--mlp-dim", type=int, default=None, help="encoder MLP width [default: d]")
    ap.add_argument("--no-skip", action="store_true")
    ap.add_argument("--signal-norm", type=float, default=20.0)
    ap.add_argument("--rho", type=float, default=0.1)
    ap.add_argument("--eta", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-engine", choices=["benign", "torch"], default="benign",
                    help="attention model: train the reference's draws with benign (fast) or "
                         "PyTorch float32 (slow); the encoder's reference side is always PyTorch")
    ap.add_argument("--reference-data-seed", type=int, default=None,
                    help="draw every reference/refdata data set with this seed (e.g. 42, the "
                         "paper's) while the initialisation still follows --seeds")
    ap.add_argument("--json", default=None, help="write the per-sample results here")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    default_sides = "reference,benign,cross" if args.model == "attention" else "reference,benign"
    sides = (args.sides or default_sides).split(",")
    bad = [s for s in sides if s not in ("reference", "benign", "cross", "refdata")]
    if bad or (args.model == "encoder" and "cross" in sides):
        print(f"error: --sides {args.sides}: choose from reference,benign,refdata"
              f"{',cross' if args.model == 'attention' else ''}", file=sys.stderr)
        return 2
    if args.dim < 3 or args.tokens < 3 or args.samples < 2 or args.steps < 1:
        print("error: need d >= 3, T >= 3, n >= 2, steps >= 1", file=sys.stderr)
        return 2

    results = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            line = [f"seed {seed:3d}"]
            for side in sides:
                t0 = time.perf_counter()
                try:
                    if side == "reference":
                        attention, _ = reference_side(args, seed, work)
                    elif side == "benign":
                        attention = benign_side(args, seed, work)
                    elif side == "refdata":
                        out = write_reference_export(args, seed, os.path.join(work, f"rd-{seed}"))
                        attention = benign_side(args, seed, work, out)
                    else:
                        attention, _ = cross_side(args, seed, work)
                except BenignError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
                for row in attention:
                    results[side].append({"seed": seed, "row": row.tolist()})
                weak = attention[:, 2]
                line.append(f"{side} {weak.mean():.3f} [{' '.join(f'{w:.2f}' for w in weak)}]"
                            f" ({time.perf_counter() - t0:.0f} s)")
            print("  ".join(line), flush=True)

    print(f"\nnoisy samples' weak-other attention after step {args.steps} "
          f"({args.model}, d = {args.dim}, {len(seeds)} seeds):")
    summary = {}
    for side in sides:
        weak = [r["row"][2] for r in results[side]]
        stats = describe(weak)
        per_seed = [np.mean([r["row"][2] for r in results[side] if r["seed"] == s]) for s in seeds]
        stats["per_seed_mean"] = describe(per_seed)
        roles = [top_role(np.array(r["row"])) for r in results[side]]
        stats["most_attended"] = {role: roles.count(role) for role in sorted(set(roles))}
        summary[side] = stats
        q = stats["quantiles_10_25_50_75_90"]
        print(f"  {side:9s} mean {stats['mean']:.3f} +- {stats['std_error']:.3f}  "
              f"quantiles 10/25/50/75/90% {' '.join(f'{v:.2f}' for v in q)}  "
              f"> 0.5: {stats['fraction_above_0.5']:.2f}  > 0.7: {stats['fraction_above_0.7']:.2f}  "
              f"per-seed means in [{min(per_seed):.2f}, {max(per_seed):.2f}]  "
              f"most attended: {stats['most_attended']}")
    if "reference" in sides and "benign" in sides:
        p = permutation_p_value([r["row"][2] for r in results["reference"]],
                                [r["row"][2] for r in results["benign"]])
        summary["permutation_p_reference_vs_benign"] = p
        print(f"  reference vs benign: difference of means "
              f"{summary['reference']['mean'] - summary['benign']['mean']:+.3f}, "
              f"permutation p = {p:.3f}")
    if "cross" in sides and "benign" in sides:
        diff = max(abs(a["row"][t] - b["row"][t]) for a, b in zip(results["cross"], results["benign"])
                   for t in range(args.tokens))
        summary["max_abs_diff_cross_vs_benign"] = diff
        print(f"  cross vs benign (same draws, two implementations): largest |difference| of an "
              f"attention probability {diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "seeds": seeds, "summary": summary,
                       "samples": results}, f, indent=1)
    return 0


def self_test():
    x, y, noisy, mu_plus, _ = reference_data(0, 20, 8, 16, 20.0, 0.1, 0.2)
    assert list(np.flatnonzero(noisy)) == [0, 1, 10, 11]
    assert (y[:2] == -1).all() and (y[10:12] == 1).all() and (y[2:10] == 1).all()
    assert x.dtype == np.float32 and abs(x[5, 0, 0] - x[5, 3, 0] - 20) < 12
    assert describe([0.1, 0.9])["fraction_above_0.5"] == 0.5
    assert permutation_p_value([0.0] * 8, [1.0] * 8, 2000) < 0.01
    assert permutation_p_value([0.0, 1.0] * 4, [1.0, 0.0] * 4, 2000) > 0.5
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    print("self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
