//! Row-wise kernels, single thread: softmax over the paper's attention shapes (8000 x 8 = n
//! samples x T tokens; 20 heads x 197 tokens rows of 197, ViT-like; 4096 x 4096), layer norm
//! and GELU on (4096 x 768) and (160 x 2000). Throughput counts bytes read + written (input
//! and output; the per-row statistics and gamma/beta are negligible). Reference point: PyTorch
//! CPU softmax on (8000 x 8) f32, one thread, about 2 GB/s on the target machine.
//! The fused multi-head attention kernels run on the MNIST classifier's chunk (32 samples x 50
//! tokens, 4 heads of 16) and a ViT-like one (8 x 197, 4 heads of 16), forward and backward;
//! their throughput counts multiply-adds x 2 as "elements" (criterion prints Gelem/s = GFLOP/s):
//! `2 B H S^2 dh` multiply-adds forward, twice that backward.
//! Run e.g. `cargo bench --bench rowwise -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

use benign_kernels::Float;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
use common::{bench_in_pool, filled, group, one_thread, ThreadCpuTime};

fn softmax_for<T: Float>(c: &mut Criterion<ThreadCpuTime>) {
    let pool = one_thread();
    let mut g = group(c, format!("softmax_{}", T::NAME));
    for (rows, cols) in [(8000, 8), (20 * 197, 197), (4096, 4096)] {
        let x = filled::<T>(rows * cols, 1, 4.0);
        let mut y = vec![T::ZERO; rows * cols];
        let dy = filled::<T>(rows * cols, 2, 1.0);
        let mut dx = vec![T::ZERO; rows * cols];
        let id = format!("{rows}x{cols}");
        g.throughput(Throughput::Bytes(
            (2 * rows * cols * std::mem::size_of::<T>()) as u64,
        ));
        bench_in_pool(&mut g, &pool, "forward", &id, || {
            benign_kernels::softmax_rows(cols, &x, &mut y);
            black_box(&y);
        });
        g.throughput(Throughput::Bytes(
            (3 * rows * cols * std::mem::size_of::<T>()) as u64,
        ));
        bench_in_pool(&mut g, &pool, "backward", &id, || {
            benign_kernels::softmax_rows_backward(cols, &y, &dy, &mut dx);
            black_box(&dx);
        });
    }
    g.finish();
}

fn norm_gelu_for<T: Float>(c: &mut Criterion<ThreadCpuTime>) {
    let pool = one_thread();
    let mut g = group(c, format!("layer_norm_gelu_{}", T::NAME));
    for (rows, cols) in [(4096, 768), (160, 2000)] {
        let len = rows * cols;
        let x = filled::<T>(len, 3, 3.0);
        let gamma = filled::<T>(cols, 4, 1.0);
        let beta = filled::<T>(cols, 5, 1.0);
        let mut y = vec![T::ZERO; len];
        let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
        let id = format!("{rows}x{cols}");
        let bytes =
            |arrays: usize| Throughput::Bytes((arrays * len * std::mem::size_of::<T>()) as u64);
        g.throughput(bytes(2));
        bench_in_pool(&mut g, &pool, "layer_norm", &id, || {
            benign_kernels::layer_norm(
                cols,
                T::from_f64(1e-5),
                &x,
                &gamma,
                &beta,
                &mut y,
                &mut mean,
                &mut rstd,
            );
            black_box(&y);
        });
        let dy = filled::<T>(len, 6, 1.0);
        let mut dx = vec![T::ZERO; len];
        let (mut dg, mut db) = (vec![T::ZERO; cols], vec![T::ZERO; cols]);
        g.throughput(bytes(3));
        bench_in_pool(&mut g, &pool, "layer_norm_backward", &id, || {
            benign_kernels::layer_norm_backward(
                cols, &x, &gamma, &mean, &rstd, &dy, &mut dx, &mut dg, &mut db,
            );
            black_box(&dx);
        });
        g.throughput(bytes(2));
        bench_in_pool(&mut g, &pool, "gelu", &id, || {
            benign_kernels::gelu(&x, &mut y);
            black_box(&y);
        });
        g.throughput(bytes(3));
        bench_in_pool(&mut g, &pool, "gelu_backward", &id, || {
            benign_kernels::gelu_backward(&x, &dy, &mut dx);
            black_box(&dx);
        });
    }
    g.finish();
}

fn attention_for<T: Float>(c: &mut Criterion<ThreadCpuTime>) {
    use benign_kernels::AttentionShape;
    let pool = one_thread();
    let mut g = group(c, format!("attention_{}", T::NAME));
    for (batch, seq, heads, head_dim) in [(32, 50, 4, 16), (8, 197, 4, 16)] {
        let shape = AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
        };
        let scale = T::from_f64(1.0 / (head_dim as f64).sqrt());
        let qkv = filled::<T>(shape.qkv_len(), 1, 2.0);
        let dcontext = filled::<T>(shape.context_len(), 2, 1.0);
        let mut probs = vec![T::ZERO; shape.probs_len()];
        let mut context = vec![T::ZERO; shape.context_len()];
        let mut dqkv = vec![T::ZERO; shape.qkv_len()];
        let flops = 4 * batch * heads * seq * seq * head_dim;
        let id = format!("{batch}x{seq}x{heads}x{head_dim}");
        g.throughput(Throughput::Elements(flops as u64));
        bench_in_pool(&mut g, &pool, "forward", &id, || {
            benign_kernels::attention_forward(shape, scale, &qkv, None, &mut probs, &mut context);
            black_box(&context);
        });
        g.throughput(Throughput::Elements(2 * flops as u64));
        bench_in_pool(&mut g, &pool, "backward", &id, || {
            benign_kernels::attention_backward(
                shape,
                scale,
                &qkv,
                &probs,
                &dcontext,
                T::ZERO,
                &mut dqkv,
            );
            black_box(&dqkv);
        });
    }
    g.finish();
}

fn rowwise(c: &mut Criterion<ThreadCpuTime>) {
    attention_for::<f32>(c);
    softmax_for::<f32>(c);
    softmax_for::<f64>(c);
    norm_gelu_for::<f32>(c);
    norm_gelu_for::<f64>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = rowwise
}
criterion_main!(benches);
