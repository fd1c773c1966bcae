#!/usr/bin/env python3
"""Training throughput of `benign pretrain` against the same classifier in PyTorch (CPU).

Both sides train the same model on the same MNIST subset for the same number of epochs, with the
same batch size, optimizer (AdamW), gradient clipping and thread count, and report examples per
second over the training steps only (data loading, evaluation and checkpoint writing excluded):

    embedding: Linear(patch^2 -> d) on 4x4 patches, learned [CLS] and positions
    L pre-LN blocks: LN, separate q/k/v Linear(d, d) with bias, H heads, softmax(q k^T / sqrt(d/H)),
                     output Linear(d, d), residual; LN, Linear(d, mlp), GELU (erf), Linear(mlp, d),
                     residual
    head: LN on [CLS], Linear(d, classes); cross-entropy; AdamW; clip_grad_norm_(1.0)

Usage:
    cargo build --release
    python3 scripts/compare_pretrain.py --data-dir ../shared/data --threads 1,2

For each thread count it runs `target/release/benign pretrain --dataset mnist ... --force --json`
(which reports `examples_per_second` over its training steps) and then the PyTorch model, and
prints the ratio benign / PyTorch; `--rounds N` repeats that N times (interleaved rounds: a
change of the machine's load hits both sides); one-thread rounds run both sides on one CPU
(`machine_info.pinned`). `--attention sdpa` uses PyTorch's fused
`scaled_dot_product_attention` instead of the explicit softmax (same maths).

benign's classifier computes only the [CLS] row of its last block (the head reads nothing else;
`cls_block_forward_vars` in src/transformer/block.rs). The default PyTorch model is the usual
one, every row of every block; `--torch-last-block cls` gives PyTorch the same shortcut, so the
ratio then compares the same work (the script checks first that both PyTorch forms agree).
"""

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from machine_info import pinned, pinning_cpu


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    sys.exit(f"{folder}: no {stem}(.gz)")


def patchify(images, patch):
    n, h, w = images.shape
    x = images.reshape(n, h // patch, patch, w // patch, patch).transpose(0, 1, 3, 2, 4)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch).astype(np.float32) / 255.0


class Block(nn.Module):
    def __init__(self, d, heads, mlp, sdpa):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)

    def forward(self, x):
        b, s, d = x.shape
        hd = d // self.heads
        h = self.ln1(x)
        split = lambda t: t.view(b, s, self.heads, hd).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        if self.sdpa:
            c = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
            c = a @ v
        x = x + self.out(c.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    def forward_cls(self, x):
        """Row 0 of `forward(x)`, computed as benign's last block does (`cls_block_forward_vars`):
        only the [CLS] query, with the key and value projections folded into it."""
        b, s, d = x.shape
        hd = d // self.heads
        h = self.ln1(x)
        head_mask = torch.zeros(self.heads, d)
        for i in range(self.heads):
            head_mask[i, i * hd : (i + 1) * hd] = 1.0
        q = self.query(h[:, 0])  # [b, d]
        folded = (q[:, None, :] * head_mask) @ self.key.weight  # [b, H, d]: Wk_h^T q_h
        a = torch.softmax(folded @ h.transpose(1, 2) / math.sqrt(hd), dim=-1)  # [b, H, s]
        mixed = a @ h  # [b, H, d]
        c = ((mixed @ self.value.weight.T) * head_mask).sum(1) + self.value.bias
        x = x[:, 0] + self.out(c)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Classifier(nn.Module):
    def __init__(self, patch_dim, seq, d, heads, layers, mlp, classes, sdpa, cls_last_block):
        super().__init__()
        self.cls_last_block = cls_last_block
        self.embed = nn.Linear(patch_dim, d)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, seq + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, mlp, sdpa) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        if self.cls_last_block:
            for block in self.blocks[:-1]:
                x = block(x)
            return self.head(self.norm(self.blocks[-1].forward_cls(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def torch_epochs(x, y, args, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    model = Classifier(x.shape[2], x.shape[1], args.dim, args.heads, args.layers, args.mlp_dim, 10,
                       args.attention == "sdpa", args.torch_last_block == "cls")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    if model.cls_last_block:
        with torch.no_grad():
            model.cls_last_block = False
            full = model(x[: args.batch_size])
            model.cls_last_block = True
            folded = model(x[: args.batch_size])
        assert torch.allclose(full, folded, atol=1e-4), (full - folded).abs().max()
    g = torch.Generator().manual_seed(args.seed)
    seconds, examples = 0.0, 0
    for _ in range(args.epochs):
        order = torch.randperm(x.shape[0], generator=g)
        start = time.perf_counter()
        for i in range(0, x.shape[0], args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        seconds += time.perf_counter() - start
        examples += x.shape[0]
    return examples / seconds


def benign_epochs(args, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.benign, "pretrain", "--dataset", "mnist", "--data-dir", args.data_dir,
               "--subset", str(args.subset), "--epochs", str(args.epochs),
               "--layers", str(args.layers), "--heads", str(args.heads), "--dim", str(args.dim),
               "--mlp-dim", str(args.mlp_dim), "--patch", str(args.patch),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--weight-decay", str(args.weight_decay), "--seed", str(args.seed),
               "--threads", str(threads), "--checkpoints", out, "--force", "--json", "--quiet"]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return result["examples_per_second"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--benign", default="target/release/benign")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--mlp-dim", type=int, default=128)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention", choices=["manual", "sdpa"], default="manual")
    p.add_argument("--torch-last-block", choices=["full", "cls"], default="full",
                   help="full: the usual PyTorch model (every row of every block); cls: the last "
                        "block computes only the [CLS] row, folded as benign does (same work)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds over the thread counts")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per round and thread count (the header line too)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds: at least 1")

    folder = os.path.join(args.data_dir, "mnist")
    images = read_idx(find(folder, "train-images-idx3-ubyte"))[: args.subset]
    labels = read_idx(find(folder, "train-labels-idx1-ubyte"))[: args.subset]
    x = patchify(images, args.patch)
    torch.set_num_interop_threads(1)
    header = (f"torch {torch.__version__}; model L={args.layers} H={args.heads} d={args.dim} "
              f"mlp={args.mlp_dim}, {x.shape[1]} tokens + [CLS], batch {args.batch_size}, "
              f"{args.subset} examples x {args.epochs} epochs; attention {args.attention}; "
              f"torch last block {args.torch_last_block}; one-thread rounds "
              + (f"pinned to CPU {pinning_cpu()}" if pinning_cpu() is not None else "not pinned"))
    print(json.dumps({"header": header, "torch": torch.__version__}) if args.json else header)
    for round_index in range(args.rounds):
        for threads in [int(t) for t in args.threads.split(",")]:
            with pinned(threads):
                ours = benign_epochs(args, threads)
                theirs = torch_epochs(x, labels, args, threads)
            row = {"round": round_index, "threads": threads, "benign_examples_per_s": round(ours, 1),
                   "torch_examples_per_s": round(theirs, 1), "ratio": round(ours / theirs, 3)}
            print(json.dumps(row) if args.json else
                  f"threads {threads}: benign {ours:.0f} ex/s, torch {theirs:.0f} ex/s, ratio {ours / theirs:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
