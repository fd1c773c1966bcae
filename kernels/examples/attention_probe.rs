//! Interleaved timing of the fused attention kernels against the same maths as per-head GEMM
//! calls plus a softmax pass (what the autodiff op did before the fused kernels), on shapes
//! given as `BxSxHxDH` (e.g. `32x50x4x16`, the MNIST classifier's chunk). Each round runs every
//! variant once; the best time per variant over the rounds is reported.
//!
//! `cargo run --release -p benign-kernels --example attention_probe -- 32x50x4x16 8x197x4x16`

use std::hint::black_box;
use std::time::{Duration, Instant};

use benign_kernels::{
    attention_backward, attention_forward, gemm, softmax_rows, softmax_rows_backward,
    AttentionShape, MatMut, MatRef,
};

/// Where one (sample, head) pair's pieces start: its query, key and value columns in `qkv` (and
/// `dqkv`), its context columns, its `S x S` probabilities.
struct Head {
    q: usize,
    k: usize,
    v: usize,
    context: usize,
    probs: usize,
}

/// Every (sample, head) pair of the shape, sample-major.
fn heads(shape: AttentionShape) -> impl Iterator<Item = Head> {
    let AttentionShape {
        batch,
        seq,
        heads,
        head_dim: dh,
    } = shape;
    let d = shape.width();
    (0..batch).flat_map(move |b| {
        (0..heads).map(move |h| {
            let q = b * seq * 3 * d + h * dh;
            Head {
                q,
                k: q + d,
                v: q + 2 * d,
                context: b * seq * d + h * dh,
                probs: (b * heads + h) * seq * seq,
            }
        })
    })
}

/// Forward by GEMM calls: per (sample, head) `Z = s Q K^T`, softmax, `C = P V`.
fn forward_by_gemm(
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &mut [f32],
    ctx: &mut [f32],
) {
    let (seq, dh, d) = (shape.seq, shape.head_dim, shape.width());
    let mut scores = vec![0.0f32; seq * seq];
    for head in heads(shape) {
        let (q, k, v) = (head.q, head.k, head.v);
        gemm(
            scale,
            MatRef::with_ld(&qkv[q..], seq, dh, 3 * d),
            MatRef::with_ld(&qkv[k..], seq, dh, 3 * d).transpose(),
            0.0,
            MatMut::new(&mut scores, seq, seq),
        );
        let p = &mut probs[head.probs..][..seq * seq];
        softmax_rows(seq, &scores, p);
        gemm(
            1.0,
            MatRef::new(p, seq, seq),
            MatRef::with_ld(&qkv[v..], seq, dh, 3 * d),
            0.0,
            MatMut::with_ld(&mut ctx[head.context..], seq, dh, d),
        );
    }
}

/// Backward by GEMM calls: `dP = G V^T`, `dV = P^T G`, softmax backward, `dQ = s dZ K`,
/// `dK = s dZ^T Q`.
fn backward_by_gemm(
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &[f32],
    dctx: &[f32],
    dqkv: &mut [f32],
) {
    let (seq, dh, d) = (shape.seq, shape.head_dim, shape.width());
    let (mut dp, mut dz) = (vec![0.0f32; seq * seq], vec![0.0f32; seq * seq]);
    for head in heads(shape) {
        let (q, k, v, c) = (head.q, head.k, head.v, head.context);
        let p = &probs[head.probs..][..seq * seq];
        gemm(
            1.0,
            MatRef::with_ld(&dctx[c..], seq, dh, d),
            MatRef::with_ld(&qkv[v..], seq, dh, 3 * d).transpose(),
            0.0,
            MatMut::new(&mut dp, seq, seq),
        );
        gemm(
            1.0,
            MatRef::new(p, seq, seq).transpose(),
            MatRef::with_ld(&dctx[c..], seq, dh, d),
            0.0,
            MatMut::with_ld(&mut dqkv[v..], seq, dh, 3 * d),
        );
        softmax_rows_backward(seq, p, &dp, &mut dz);
        gemm(
            scale,
            MatRef::new(&dz, seq, seq),
            MatRef::with_ld(&qkv[k..], seq, dh, 3 * d),
            0.0,
            MatMut::with_ld(&mut dqkv[q..], seq, dh, 3 * d),
        );
        gemm(
            scale,
            MatRef::new(&dz, seq, seq).transpose(),
            MatRef::with_ld(&qkv[q..], seq, dh, 3 * d),
            0.0,
            MatMut::with_ld(&mut dqkv[k..], seq, dh, 3 * d),
        );
    }
}

fn main() {
    for spec in std::env::args().skip(1) {
        let dims: Vec<usize> = spec
            .split('x')
            .map(|x| x.parse().expect("BxSxHxDH"))
            .collect();
        let shape = AttentionShape {
            batch: dims[0],
            seq: dims[1],
            heads: dims[2],
            head_dim: dims[3],
        };
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let qkv: Vec<f32> = (0..shape.qkv_len())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let dctx: Vec<f32> = (0..shape.context_len())
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let mut probs = vec![0.0f32; shape.probs_len()];
        let mut ctx = vec![0.0f32; shape.context_len()];
        let mut dqkv = vec![0.0f32; shape.qkv_len()];
        // Multiply-adds: forward 2 B H S^2 dh, backward twice that.
        let flops =
            2.0 * 2.0 * (shape.batch * shape.heads * shape.seq * shape.seq * shape.head_dim) as f64;
        let mut best = [Duration::MAX; 4];
        for _round in 0..20 {
            let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
            let mut time = |slot: usize, f: &mut dyn FnMut()| {
                if only.is_some_and(|o| o != slot) {
                    return;
                }
                let start = Instant::now();
                f();
                best[slot] = best[slot].min(start.elapsed());
            };
            time(0, &mut || {
                attention_forward(shape, scale, &qkv, None, &mut probs, &mut ctx)
            });
            time(1, &mut || {
                forward_by_gemm(shape, scale, &qkv, &mut probs, &mut ctx)
            });
            time(2, &mut || {
                attention_backward(shape, scale, &qkv, &probs, &dctx, 0.0, &mut dqkv)
            });
            time(3, &mut || {
                backward_by_gemm(shape, scale, &qkv, &probs, &dctx, &mut dqkv)
            });
            black_box((&probs, &ctx, &dqkv));
        }
        let gf = |t: Duration, f: f64| f / t.as_secs_f64() / 1e9;
        println!(
            "{spec:>14}  forward fused {:>8.1?} ({:5.1} GF/s)  by GEMM {:>8.1?} ({:5.1} GF/s)  {:.2}x   backward fused {:>8.1?} ({:5.1} GF/s)  by GEMM {:>8.1?} ({:5.1} GF/s)  {:.2}x",
            best[0], gf(best[0], flops), best[1], gf(best[1], flops), best[1].as_secs_f64() / best[0].as_secs_f64(),
            best[2], gf(best[2], 2.0 * flops), best[3], gf(best[3], 2.0 * flops), best[3].as_secs_f64() / best[2].as_secs_f64(),
        );
    }
}
