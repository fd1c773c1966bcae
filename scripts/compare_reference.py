#!/usr/bin/env python3
"""Compare `benign run` with a PyTorch re-computation of the paper's reference training.

The model is f(X) = nu^T X^T softmax(X W p) with a fixed head nu, trained by full-batch gradient
descent on (W, p) from W = W0 and p = 0 with the mean logistic loss softplus(-y f). This script
re-computes that training the way the paper's PyTorch reference does it, written for this
repository (not copied): float32 by default, the logits as (X W) p, i.e.
torch.matmul(torch.matmul(X, W), p) (costs n T d^2 per pass; `--fast` computes W p first),
autograd gradients and torch.optim.SGD(lr). It reads the data written by
`benign data export --out DIR` (train_x.npy, train_y.npy, test_x.npy, test_y.npy, w0.npy, nu.npy,
config.json with lr, steps, eval_every), runs `benign run --data DIR --init-w DIR/w0.npy --out OUT
--quiet` (unless --benign-out gives an existing run), and compares the trajectories on the common
evaluation steps: train/test loss and accuracy.

Step convention: the metrics at step s are those of the parameters after s updates, evaluated at
s = 0, eval_every, 2 eval_every, ... and at the last step.

Tolerances (override with --loss-tol / --acc-tol-samples):
  * float64 on both sides: losses within 1e-6; the two computations differ only by rounding
    order, which over 1000 steps stays far below that.
  * float32 on either side (the torch default, or a benign run configured for f32): losses
    within 1e-4. Single-precision logits carry relative rounding errors of about 1e-7 to 1e-6
    at d ~ 2000 and gradient descent carries them along the trajectory; measured here, torch
    float32 with (X W) p stays within 1e-7 of float64 over 1000 steps at the paper's sizes
    (n = 20, T = 8, d = 2000, 1000 test samples), so 1e-4 leaves a wide margin for larger d
    while still catching a wrong engine (the regimes differ by ~0.09 in training loss).
  * accuracies: within k samples of the evaluated set (k = 1 in float64, 3 in float32): a sample
    whose output sits at |f| ~ 1e-7 may flip sign under rounding.
Exit status: 0 agreement, 1 disagreement, 2 bad input or a failed benign run.

Backends: `--backend torch` (default) needs PyTorch; `--backend numpy` is the same computation
in float64 numpy with the closed-form gradient (dL/dW = g p^T, dL/dp = W^T g) and is what
`--self-test` checks without PyTorch. Dependencies: numpy, and torch for the torch backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EXPORT_FILES = ("train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy", "w0.npy", "nu.npy")
QUANTITIES = ("train_loss", "test_loss", "train_acc", "test_acc")


class InputError(Exception):
    """Bad or inconsistent input files: exit status 2."""


# ---------------------------------------------------------------------------------------------
# Loading


def load_export(directory: Path) -> dict:
    """Loads an export directory and checks that the shapes agree with each other."""
    directory = Path(directory)
    missing = [name for name in EXPORT_FILES + ("config.json",) if not (directory / name).exists()]
    if missing:
        raise InputError(f"{directory}: missing {', '.join(missing)} (from `benign data export`)")
    data = {}
    for name in EXPORT_FILES:
        try:
            data[name[:-4]] = np.load(directory / name, allow_pickle=False)
        except Exception as error:  # numpy raises several types for malformed files
            raise InputError(f"{directory / name}: cannot load: {error}") from error
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{directory / 'config.json'}: {error}") from error
    for key in ("lr", "steps", "eval_every"):
        if key not in config:
            raise InputError(f"{directory / 'config.json'}: missing field '{key}'")
    data["config"] = config

    train_x, test_x, w0, nu = data["train_x"], data["test_x"], data["w0"], data["nu"]
    if train_x.ndim != 3:
        raise InputError(f"train_x.npy: expected shape (n, T, d), got {train_x.shape}")
    n, tokens, d = train_x.shape
    expected = {
        "train_y": (n,),
        "test_x": (test_x.shape[0], tokens, d),
        "test_y": (test_x.shape[0],),
        "w0": (d, d),
        "nu": (d,),
    }
    for name, shape in expected.items():
        if data[name].shape != shape:
            raise InputError(f"{name}.npy: expected shape {shape}, got {data[name].shape}")
    for name in ("train_y", "test_y"):
        if not np.all(np.abs(data[name]) == 1):
            raise InputError(f"{name}.npy: labels must be +1 or -1")
    if int(config["eval_every"]) < 1 or int(config["steps"]) < 0 or not float(config["lr"]) > 0:
        raise InputError("config.json: need eval_every >= 1, steps >= 0, lr > 0")
    return data


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps at which metrics are recorded: multiples of eval_every, and the last step."""
    points = list(range(0, steps + 1, eval_every))
    if points[-1] != steps:
        points.append(steps)
    return points


def load_metrics(run_dir: Path) -> tuple[dict[int, dict], float | None]:
    """Reads OUT/metrics.jsonl (one object per evaluation) and OUT/summary.json's wall time."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise InputError(f"{path}: missing (is {run_dir} the --out of `benign run`?)")
    records = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["step"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}:{number}: not a metrics record: {error}") from error
    seconds = None
    summary = Path(run_dir) / "summary.json"
    if summary.exists():
        seconds = json.loads(summary.read_text()).get("wall_seconds_total")
    if seconds is None and records:
        seconds = records[max(records)].get("wall_seconds")
    return records, seconds


# ---------------------------------------------------------------------------------------------
# The reference computation


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x) without overflow."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def numpy_outputs(x: np.ndarray, query: np.ndarray, nu: np.ndarray):
    """f_i = sum_t softmax_t(x_it . query) (x_it . nu), with the attention and token scores."""
    logits = x @ query
    logits = logits - logits.max(axis=1, keepdims=True)
    attention = np.exp(logits)
    attention /= attention.sum(axis=1, keepdims=True)
    scores = x @ nu
    return (attention * scores).sum(axis=1), attention, scores


def numpy_loss_and_grads(x, y, w, p, nu):
    """Mean logistic loss and its closed-form gradient:
    delta_it = (1/n) l'_i s_it (u_it - f_i), g = sum_it delta_it x_it, dW = g p^T, dp = W^T g,
    with l'_i = -y_i / (1 + exp(y_i f_i))."""
    f, s, u = numpy_outputs(x, w @ p, nu)
    margin = y * f
    loss = softplus(-margin).mean()
    dloss_df = -y * np.exp(-softplus(margin))  # -y / (1 + e^{y f}), stably
    delta = (dloss_df[:, None] * s * (u - f[:, None])) / len(y)
    g = np.einsum("nt,ntd->d", delta, x)
    return loss, np.outer(g, p), w.T @ g


def metrics_of(f: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean logistic loss, accuracy) of outputs f against labels y; f = 0 counts as wrong."""
    return float(softplus(-y * f).mean()), float(np.mean(y * f > 0))


def train_numpy(data: dict, steps: int, eval_every: int, lr: float) -> list[dict]:
    """The reference training in float64 numpy with the closed-form gradient."""
    x, y = data["train_x"].astype(np.float64), data["train_y"].astype(np.float64)
    tx, ty = data["test_x"].astype(np.float64), data["test_y"].astype(np.float64)
    nu = data["nu"].astype(np.float64)
    w = data["w0"].astype(np.float64).copy()
    p = np.zeros(w.shape[0])
    wanted = set(eval_steps(steps, eval_every))
    trajectory = []
    for step in range(steps + 1):
        if step in wanted:
            query = w @ p
            train_loss, train_acc = metrics_of(numpy_outputs(x, query, nu)[0], y)
            test_loss, test_acc = metrics_of(numpy_outputs(tx, query, nu)[0], ty)
            trajectory.append(dict(step=step, train_loss=train_loss, train_acc=train_acc,
                                   test_loss=test_loss, test_acc=test_acc))
        if step == steps:
            break
        _, grad_w, grad_p = numpy_loss_and_grads(x, y, w, p, nu)
        w -= lr * grad_w
        p -= lr * grad_p
    return trajectory


def train_torch(data: dict, steps: int, eval_every: int, lr: float, dtype: str,
                fast: bool) -> list[dict]:
    """The reference training in PyTorch: autograd, torch.optim.SGD, (X W) p unless `fast`."""
    import torch
    import torch.nn.functional as F

    kind = {"float32": torch.float32, "float64": torch.float64}[dtype]
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=kind)  # noqa: E731
    x, y = as_tensor(data["train_x"]), as_tensor(data["train_y"])
    tx, ty = as_tensor(data["test_x"]), as_tensor(data["test_y"])
    nu = as_tensor(data["nu"])
    w = torch.nn.Parameter(as_tensor(data["w0"]).clone())
    p = torch.nn.Parameter(torch.zeros(w.shape[0], dtype=kind))
    optimizer = torch.optim.SGD([w, p], lr=lr)

    def outputs(tokens):
        if fast:
            logits = torch.matmul(tokens, torch.matmul(w, p))
        else:
            logits = torch.matmul(torch.matmul(tokens, w), p)
        attention = torch.softmax(logits, dim=-1)
        return (attention * torch.matmul(tokens, nu)).sum(dim=-1)

    def evaluate(tokens, labels):
        f = outputs(tokens)
        return float(F.softplus(-labels * f).mean()), float((labels * f > 0).double().mean())

    wanted = set(eval_steps(steps, eval_every))
    trajectory = []
    for step in range(steps + 1):
        if step in wanted:
            with torch.no_grad():
                train_loss, train_acc = evaluate(x, y)
                test_loss, test_acc = evaluate(tx, ty)
            trajectory.append(dict(step=step, train_loss=train_loss, train_acc=train_acc,
                                   test_loss=test_loss, test_acc=test_acc))
        if step == steps:
            break
        optimizer.zero_grad()
        loss = F.softplus(-y * outputs(x)).mean()
        loss.backward()
        optimizer.step()
    return trajectory


# ---------------------------------------------------------------------------------------------
# Comparison


def tolerances(single_precision: bool, n_train: int, n_test: int,
               loss_tol: float | None = None, acc_samples: int | None = None) -> dict:
    loss = loss_tol if loss_tol is not None else (1e-4 if single_precision else 1e-6)
    samples = acc_samples if acc_samples is not None else (3 if single_precision else 1)
    return dict(train_loss=loss, test_loss=loss,
                train_acc=(samples + 0.5) / n_train, test_acc=(samples + 0.5) / n_test)


def compare(reference: list[dict], benign: dict[int, dict], tol: dict) -> dict:
    """Max |difference| of each quantity over the common evaluation steps, and a verdict."""
    ours = {row["step"]: row for row in reference}
    common = sorted(set(ours) & set(benign))
    if not common:
        raise InputError(f"no common evaluation steps (reference: {sorted(ours)[:5]}..., "
                         f"benign: {sorted(benign)[:5]}...)")
    rows = {}
    for name in QUANTITIES:
        worst, at = 0.0, common[0]
        for step in common:
            if name not in benign[step]:
                raise InputError(f"benign metrics at step {step} lack '{name}'")
            difference = abs(float(ours[step][name]) - float(benign[step][name]))
            if not math.isfinite(difference):
                difference = math.inf
            if difference > worst:
                worst, at = difference, step
        rows[name] = dict(max_abs_diff=worst, at_step=at, tolerance=tol[name],
                          ok=worst <= tol[name])
    return dict(common_steps=len(common), first_step=common[0], last_step=common[-1],
                quantities=rows, agree=all(row["ok"] for row in rows.values()))


def format_table(result: dict) -> str:
    lines = [f"common evaluation steps: {result['common_steps']} "
             f"(steps {result['first_step']}..{result['last_step']})",
             f"{'quantity':<12} {'max |diff|':>12} {'at step':>8} {'tolerance':>11}  verdict"]
    for name, row in result["quantities"].items():
        verdict = "ok" if row["ok"] else "DISAGREE"
        lines.append(f"{name:<12} {row['max_abs_diff']:>12.3e} {row['at_step']:>8} "
                     f"{row['tolerance']:>11.3e}  {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running benign


def run_benign(binary: Path, data_dir: Path, out_dir: Path, threads: int, config: dict,
               extra: list[str]) -> float:
    # The schedule is passed explicitly so that both sides train the same steps.
    command = [str(binary), "run", "--data", str(data_dir), "--init-w",
               str(Path(data_dir) / "w0.npy"), "--out", str(out_dir), "--quiet",
               "--threads", str(threads), "--lr", repr(float(config["lr"])),
               "--steps", str(int(config["steps"])),
               "--eval-every", str(int(config["eval_every"])), *extra]
    environment = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    except OSError as error:
        raise InputError(f"cannot run {binary}: {error}") from error
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise InputError(f"`{' '.join(command)}` exited with {completed.returncode}:\n"
                         f"{completed.stderr.strip()}")
    return seconds


def config_is_single_precision(config: dict) -> bool:
    for key in ("precision", "dtype", "float"):
        value = str(config.get(key, "")).lower()
        if value in ("f32", "float32", "single"):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="directory from `benign data export`")
    parser.add_argument("--benign", type=Path, default=Path("target/release/benign"),
                        help="benign binary (default: target/release/benign)")
    parser.add_argument("--benign-out", type=Path,
                        help="compare with this existing `benign run --out` directory instead")
    parser.add_argument("--benign-arg", action="append", default=[],
                        help="extra argument for `benign run` (repeatable)")
    parser.add_argument("--backend", choices=("torch", "numpy"), default="torch")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="torch dtype (the numpy backend is always float64)")
    parser.add_argument("--fast", action="store_true",
                        help="compute W p first instead of the reference's (X W) p")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for torch and for benign (--threads, RAYON_NUM_THREADS)")
    parser.add_argument("--steps", type=int,
                        help="stop the reference after this many steps (compare a prefix)")
    parser.add_argument("--loss-tol", type=float, help="override the loss tolerance")
    parser.add_argument("--acc-tol-samples", type=int,
                        help="override the accuracy tolerance, in samples of the evaluated set")
    parser.add_argument("--json", type=Path, help="also write the result as JSON ('-': stdout)")
    parser.add_argument("--self-test", action="store_true",
                        help="check this script's numpy computation and comparison, then exit")
    parser.add_argument("--make-fake-export", type=Path, metavar="DIR",
                        help="write a small synthetic export (same files) to DIR and exit")
    args = parser.parse_args(argv)

    if args.self_test:
        return self_test()
    if args.make_fake_export:
        make_fake_export(args.make_fake_export)
        print(f"wrote a fake export to {args.make_fake_export}")
        return 0
    if args.data is None:
        parser.error("the export directory is required")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        return compare_main(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def compare_main(args) -> int:
    data = load_export(args.data)
    config = data["config"]
    steps = int(config["steps"]) if args.steps is None else min(args.steps, int(config["steps"]))
    eval_every, lr = int(config["eval_every"]), float(config["lr"])

    benign_process_seconds = None
    if args.benign_out is not None:
        benign_dir = args.benign_out
    else:
        benign_dir = Path(tempfile.mkdtemp(prefix="benign-compare-"))
        benign_process_seconds = run_benign(args.benign, args.data, benign_dir, args.threads,
                                            config, args.benign_arg)
    benign_metrics, benign_seconds = load_metrics(benign_dir)

    if args.backend == "torch":
        try:
            import torch
        except ImportError as error:
            raise InputError(f"the torch backend needs PyTorch ({error}); "
                             "use --backend numpy for the float64 numpy computation") from error
        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        reference = train_torch(data, steps, eval_every, lr, args.dtype, args.fast)
        reference_seconds = time.perf_counter() - start
        single = args.dtype == "float32"
    else:
        start = time.perf_counter()
        reference = train_numpy(data, steps, eval_every, lr)
        reference_seconds = time.perf_counter() - start
        single = False
    single = single or config_is_single_precision(config)

    n_train, n_test = len(data["train_y"]), len(data["test_y"])
    tol = tolerances(single, n_train, n_test, args.loss_tol, args.acc_tol_samples)
    result = compare(reference, benign_metrics, tol)
    result.update(
        backend=args.backend, dtype="float64" if args.backend == "numpy" else args.dtype,
        fast=args.fast, threads=args.threads, steps=steps,
        shape=dict(n=n_train, tokens=int(data["train_x"].shape[1]),
                   d=int(data["train_x"].shape[2]), n_test=n_test),
        reference_seconds=reference_seconds, benign_seconds=benign_seconds,
        benign_process_seconds=benign_process_seconds, benign_out=str(benign_dir),
    )
    if args.steps is not None and benign_seconds is not None:
        # benign trained all steps; scale its time to the compared prefix for a fair ratio.
        result["benign_seconds_prefix_estimate"] = benign_seconds * steps / max(int(config["steps"]), 1)
    timed = result.get("benign_seconds_prefix_estimate", benign_seconds)
    result["speedup"] = reference_seconds / timed if timed else None

    print(format_table(result))
    order = "W p first" if args.fast or args.backend == "numpy" else "(X W) p"
    print(f"reference ({result['backend']}, {result['dtype']}, {order}, "
          f"{args.threads} threads): "
          f"{reference_seconds:.3f} s")
    if benign_seconds is not None:
        extra = (f" (process {benign_process_seconds:.3f} s)"
                 if benign_process_seconds is not None else "")
        print(f"benign: {benign_seconds:.3f} s training{extra}")
    if result["speedup"] is not None:
        print(f"wall-time ratio reference / benign: {result['speedup']:.2f}")
    print("trajectories agree" if result["agree"] else "TRAJECTORIES DISAGREE")
    if args.json is not None:
        text = json.dumps(result, indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n")
    return 0 if result["agree"] else 1


# ---------------------------------------------------------------------------------------------
# Self-test and a fake export for testing without `benign data export`


def make_fake_export(directory: Path, n=8, tokens=4, d=12, n_test=16, norm=3.0, lr=0.05,
                     steps=40, eval_every=5, seed=7) -> None:
    """A small data set in the paper's layout: token 0 carries the clean class signal, token 1
    a weak same-class signal, token 2 a weak other-class signal, the rest noise; labels of
    the first samples of each class are flipped in training."""
    rng = np.random.default_rng(seed)
    mu_plus, mu_minus = np.zeros(d), np.zeros(d)
    mu_plus[0], mu_minus[1] = norm, norm

    def sample(count, flips):
        clean = np.where(np.arange(count) < count // 2, 1.0, -1.0)
        x = rng.standard_normal((count, tokens, d))
        signal = np.where(clean[:, None] > 0, mu_plus, mu_minus)
        other = np.where(clean[:, None] > 0, mu_minus, mu_plus)
        x[:, 0] += signal
        x[:, 1] += 0.1 * signal
        x[:, 2] += 0.1 * other
        observed = clean.copy()
        for i in flips:
            observed[i] = -observed[i]
        return x, observed, clean

    train_x, train_y, train_clean = sample(n, [0, n // 2])
    test_x, test_y, _ = sample(n_test, [])
    nu = (mu_plus - mu_minus) / np.linalg.norm(mu_plus - mu_minus) / norm
    w0 = rng.uniform(-1 / math.sqrt(d), 1 / math.sqrt(d), (d, d))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = dict(train_x=train_x, train_y=train_y, train_y_clean=train_clean,
                  train_noisy=train_y != train_clean, test_x=test_x, test_y=test_y, w0=w0, nu=nu)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
    config = dict(n=n, tokens=tokens, d=d, n_test=n_test, mu_norm=norm, lr=lr, steps=steps,
                  eval_every=eval_every, seed=seed, note="fake export for testing")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def self_test() -> int:
    failures = []

    def check(condition, message):
        print(("ok    " if condition else "FAIL  ") + message)
        if not condition:
            failures.append(message)

    with tempfile.TemporaryDirectory(prefix="compare-reference-self-test-") as scratch:
        scratch = Path(scratch)
        export = scratch / "export"
        make_fake_export(export)
        data = load_export(export)
        x, y, nu, w0 = data["train_x"], data["train_y"], data["nu"], data["w0"]
        check(x.shape == (8, 4, 12) and w0.shape == (12, 12) and data["test_x"].shape[0] == 16,
              "fake export loads with its shapes")

        # Closed-form gradient against central differences, at a point with p != 0.
        rng = np.random.default_rng(1)
        w = w0 + 0.3 * rng.standard_normal(w0.shape)
        p = rng.standard_normal(w0.shape[0])
        _, grad_w, grad_p = numpy_loss_and_grads(x, y, w, p, nu)
        h, worst = 1e-6, 0.0
        for index in [(0, 0), (3, 7), (11, 2), (5, 5)]:
            bump = np.zeros_like(w)
            bump[index] = h
            numeric = (numpy_loss_and_grads(x, y, w + bump, p, nu)[0]
                       - numpy_loss_and_grads(x, y, w - bump, p, nu)[0]) / (2 * h)
            worst = max(worst, abs(numeric - grad_w[index]))
        for index in [0, 4, 11]:
            bump = np.zeros_like(p)
            bump[index] = h
            numeric = (numpy_loss_and_grads(x, y, w, p + bump, nu)[0]
                       - numpy_loss_and_grads(x, y, w, p - bump, nu)[0]) / (2 * h)
            worst = max(worst, abs(numeric - grad_p[index]))
        check(worst < 1e-8, f"closed-form gradient matches central differences (max err {worst:.1e})")

        # At p = 0 the attention is uniform: f_i is the mean token score.
        trajectory = train_numpy(data, 40, 5, 0.05)
        f0 = (x @ nu).mean(axis=1)
        check(abs(trajectory[0]["train_loss"] - softplus(-y * f0).mean()) < 1e-15,
              "step-0 loss equals the uniform-attention loss")
        check([row["step"] for row in trajectory] == list(range(0, 41, 5)),
              "evaluations at 0, 5, ..., 40")
        check(trajectory[-1]["train_loss"] < trajectory[0]["train_loss"],
              f"gradient descent lowers the training loss "
              f"({trajectory[0]['train_loss']:.4f} -> {trajectory[-1]['train_loss']:.4f})")
        check(eval_steps(23, 10) == [0, 10, 20, 23], "the last step is always evaluated")

        # The comparison: identical trajectories agree, a perturbed one does not.
        tol = tolerances(False, 8, 16)
        as_metrics = {row["step"]: dict(row) for row in trajectory}
        check(compare(trajectory, as_metrics, tol)["agree"], "a trajectory agrees with itself")
        perturbed = {step: dict(row) for step, row in as_metrics.items()}
        perturbed[20]["test_loss"] += 1e-5
        result = compare(trajectory, perturbed, tol)
        check(not result["agree"] and result["quantities"]["test_loss"]["at_step"] == 20,
              "a 1e-5 test-loss deviation at step 20 is reported as a disagreement")
        flipped = {step: dict(row) for step, row in as_metrics.items()}
        flipped[40]["train_acc"] -= 1 / 8
        check(compare(trajectory, flipped, tol)["agree"], "one flipped train sample is tolerated")
        flipped[40]["train_acc"] -= 1 / 8
        check(not compare(trajectory, flipped, tol)["agree"], "two flipped train samples are not")
        try:
            compare(trajectory, {7: as_metrics[5]}, tol)
            check(False, "disjoint steps are an input error")
        except InputError:
            check(True, "disjoint steps are an input error")

        # End to end through the command line with a fake benign run directory.
        run = scratch / "run"
        run.mkdir()
        with open(run / "metrics.jsonl", "w") as out:
            for k, row in enumerate(trajectory):
                out.write(json.dumps(dict(row, wall_seconds=0.01 * k)) + "\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds_total": 0.1}))
        report = scratch / "result.json"
        status = main([str(export), "--benign-out", str(run), "--backend", "numpy",
                       "--json", str(report)])
        saved = json.loads(report.read_text())
        check(status == 0 and saved["agree"] and saved["common_steps"] == 9,
              "command line: numpy backend vs matching benign metrics exits 0")
        (export / "w0.npy").write_bytes(b"garbage")
        check(main([str(export), "--benign-out", str(run), "--backend", "numpy"]) == 2,
              "command line: a malformed w0.npy exits 2")
        np.save(export / "w0.npy", w0)

        try:
            import torch  # noqa: F401
        except ImportError as error:
            print(f"skip  torch backend checks: PyTorch is not importable ({error})")
        else:
            for fast in (False, True):
                ref = train_torch(data, 40, 5, 0.05, "float64", fast)
                worst = max(abs(a[q] - b[q]) for a, b in zip(ref, trajectory) for q in QUANTITIES)
                check(worst < 1e-12, f"torch float64 ({'fast' if fast else '(X W) p'}) "
                      f"matches numpy (max diff {worst:.1e})")
            ref = train_torch(data, 40, 5, 0.05, "float32", False)
            worst = max(abs(a[q] - b[q]) for a, b in zip(ref, trajectory)
                        for q in ("train_loss", "test_loss"))
            check(worst < 1e-4, f"torch float32 within the float32 loss tolerance ({worst:.1e})")

    print(f"{len(failures)} failed" if failures else "self-test passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
