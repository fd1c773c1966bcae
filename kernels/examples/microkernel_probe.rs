//! Where the GEMM loses against the FMA peak: each microkernel (f32 and f64) of the running
//! variant (AVX-512, or the portable `wide` kernels on CPUs without it) alone, called the way
//! the packed path calls it (24 A micro-panels per B micro-panel, the kernel's own KC), with
//! the B micro-panel fixed or cycling over a 4 MB block, and the C tiles hot in cache or cold
//! (spread over a 2000 x 2000 matrix, as in a large product). Each line is the best of 9
//! timings, as a fraction of the FMA peak of the same vector width measured first.
//!
//! `cargo run --release -p benign-kernels --example microkernel_probe`
//!
//! With a fixed B micro-panel and hot C tiles everything the kernel reads is in L1 or L2, so
//! that line is the kernel's own ceiling; the cold and cycling lines show what the C write-back
//! and B's stream from L2 cost on top. The operands' offsets for every call are worked out
//! before the clock starts, so the timed loop is the calls alone; A and B start on a cache
//! line like the packing buffers, C wherever the allocator put it.
//!
//! For the AVX-512 kernels the same calls also run, alternating with the kernel's, an assembly
//! replica of each kernel's instruction stream (`replica_tile_f32`, `replica_tile_f64`: a
//! depth step's loads, broadcasts, FMAs and A prefetches, then the write-back, with none of
//! the kernel's C prefetches or bookkeeping). A replica writes the same bits as its kernel
//! (checked first), so where the two lines agree the kernel's loop is at the limit of its
//! instruction stream and what is left is the memory traffic of the setting.

#[cfg(target_arch = "x86_64")]
fn main() {
    use benign_kernels::gemm::{kernel_variant, Avx512, KernelVariant, Portable};
    use benign_kernels::probe;
    use std::time::Duration;

    let variant = kernel_variant();
    for is_f32 in [true, false] {
        let peak = probe::gemm_fma_peak_gflops(variant, is_f32, Duration::from_millis(300));
        let (bits, dtype) = match (variant, is_f32) {
            (KernelVariant::Avx512, true) => (512, "f32"),
            (KernelVariant::Avx512, false) => (512, "f64"),
            (_, true) => (256, "f32"),
            (_, false) => (256, "f64"),
        };
        println!("{bits}-bit FMA peak: {peak:.1} GFLOP/s {dtype}");
        match (variant, is_f32) {
            (KernelVariant::Avx512, true) => {
                check_replica::<f32, Avx512>(replica_tile_f32, (12, 32));
                probe_kernel::<f32, Avx512>(peak, Some(replica_tile_f32));
            }
            (KernelVariant::Avx512, false) => {
                check_replica::<f64, Avx512>(replica_tile_f64, (12, 16));
                probe_kernel::<f64, Avx512>(peak, Some(replica_tile_f64));
            }
            // the portable kernels have no replica
            (_, true) => probe_kernel::<f32, Portable>(peak, None),
            (_, false) => probe_kernel::<f64, Portable>(peak, None),
        }
    }
}

/// `len` values (a fixed pattern) starting on a 64-byte boundary, as the packing buffers do (a
/// B load split over two cache lines would halve the kernel's load throughput): the vector's
/// storage and the offset of the first value in it.
#[cfg(target_arch = "x86_64")]
fn aligned<S: benign_kernels::Float>(len: usize, seed: usize) -> (Vec<S>, usize) {
    let store: Vec<S> = (0..len + 64 / std::mem::size_of::<S>())
        .map(|i| S::from_f64(((i * seed) % 13) as f64 * 0.01))
        .collect();
    let offset = store.as_ptr().align_offset(64);
    (store, offset)
}

/// Timings of each setting (kernel and replica alternating); each line is the fastest.
#[cfg(target_arch = "x86_64")]
const ROUNDS: usize = 9;

/// One kernel call of a setting: where its A micro-panel, B micro-panel and C tile start.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Call {
    a: usize,
    b: usize,
    c: usize,
}

/// A hand-written tile function `(kc, a, b, c, ldc)`: `C <- A B + C` on one `MR x NR` tile of
/// its kernel, A a packed micro-panel (`kc` steps of MR), B a packed micro-panel (`kc` rows of
/// NR, readable one value further), C's rows `ldc` apart (see the two replicas).
#[cfg(target_arch = "x86_64")]
type Replica<S> = unsafe fn(usize, *const S, *const S, *mut S, usize);

/// Times kernel `K` in the four settings of the module docs against `peak` (GFLOP/s), and
/// `replica` (whose tile must be `K`'s), if any, alongside it.
#[cfg(target_arch = "x86_64")]
fn probe_kernel<S: benign_kernels::Float, K: benign_kernels::gemm::GemmKernel<S>>(
    peak: f64,
    replica: Option<Replica<S>>,
) {
    use benign_kernels::MatMut;
    use std::hint::black_box;
    use std::time::Instant;

    let (mr, nr, kc) = (K::MR, K::NR, K::KC);
    let ldc = 2000;
    let a_panels = 24;
    // a 4 MB B block, whatever the element size
    let b_panels = (4 << 20) / (kc * nr * std::mem::size_of::<S>());
    let (a_store, a_start) = aligned::<S>(kc * mr * a_panels, 7);
    let a = &a_store[a_start..];
    // one more row: the replica's last odd-column load reads one value past its micro-panel
    let (b_store, b_start) = aligned::<S>(kc * nr * b_panels + nr, 5);
    let b = &b_store[b_start..];
    let mut c = vec![S::ZERO; 2000 * ldc];
    let calls = a_panels * b_panels * 4;
    for (b_cycles, c_cold) in [(false, false), (true, false), (false, true), (true, true)] {
        let plan: Vec<Call> = (0..calls)
            .map(|call| {
                let ir = call % a_panels;
                let jr = (call / a_panels) % b_panels;
                let sweep = call / (a_panels * b_panels);
                let (row, col) = if c_cold {
                    (
                        (ir + a_panels * sweep) * mr % (2000 - mr),
                        jr * 31 % (ldc - nr),
                    )
                } else {
                    (ir * mr, 0)
                };
                Call {
                    a: ir * kc * mr,
                    b: if b_cycles { jr } else { 0 } * kc * nr,
                    c: row * ldc + col,
                }
            })
            .collect();
        let setting = format!(
            "{mr} x {nr}, B micro-panel {:7}, C tiles {}",
            if b_cycles { "cycling" } else { "fixed" },
            if c_cold { "cold" } else { "hot " },
        );
        let report = |what: &str, best: f64| {
            let gflops = 2.0 * (mr * nr * kc * calls) as f64 / best / 1e9;
            println!(
                "{} {what} {setting}: {gflops:6.1} GFLOP/s, {:3.0}% of peak",
                S::NAME,
                100.0 * gflops / peak
            );
        };
        let mut kernel_best = f64::MAX;
        let mut replica_best = f64::MAX;
        // the two alternate, so that a slow spell of the shared machine hits both alike
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for call in &plan {
                let c_tile = MatMut::with_ld(&mut c[call.c..], mr, nr, ldc);
                K::tile(kc, &a[call.a..], &b[call.b..], S::ONE, S::ONE, c_tile);
            }
            kernel_best = kernel_best.min(start.elapsed().as_secs_f64());
            let Some(replica) = replica else { continue };
            let start = Instant::now();
            for call in &plan {
                // SAFETY: main passes a replica only with the Avx512 variant, which
                // `kernel_variant` chooses only on a CPU with avx512f; A holds kc steps of MR
                // values from call.a, B kc rows of NR (and one more value: the extra row) from
                // call.b, and C MR rows of NR from call.c (rows < 2000 - MR, columns < ldc -
                // NR): the replica's contract for `K`'s tile.
                unsafe {
                    replica(
                        kc,
                        a[call.a..].as_ptr(),
                        b[call.b..].as_ptr(),
                        c[call.c..].as_mut_ptr(),
                        ldc,
                    )
                };
            }
            replica_best = replica_best.min(start.elapsed().as_secs_f64());
        }
        black_box(&c);
        report("kernel ", kernel_best);
        if replica.is_some() {
            report("replica", replica_best);
        }
    }
}

/// Panics unless `replica` and kernel `K` write the same bits on one tile (and `K`'s tile is
/// the replica's `tile`, rows by columns).
#[cfg(target_arch = "x86_64")]
fn check_replica<S: benign_kernels::Float, K: benign_kernels::gemm::GemmKernel<S>>(
    replica: Replica<S>,
    tile: (usize, usize),
) {
    use benign_kernels::MatMut;
    let (mr, nr, kc) = (K::MR, K::NR, K::KC);
    assert_eq!((mr, nr), tile, "the replica's tile is the kernel's");
    let values = |len: usize, seed: usize| -> Vec<S> {
        (0..len)
            .map(|i| S::from_f64(((i * seed) % 13) as f64 * 0.01))
            .collect()
    };
    let (a, b) = (values(kc * mr, 7), values(kc * nr + nr, 5));
    let start: Vec<S> = (0..mr * nr)
        .map(|i| S::from_f64((i % 7) as f64 * 0.5))
        .collect();
    let mut kernel = start.clone();
    K::tile(
        kc,
        &a,
        &b,
        S::ONE,
        S::ONE,
        MatMut::with_ld(&mut kernel, mr, nr, nr),
    );
    let mut replica_c = start;
    // SAFETY: avx512f (checked in main); A holds kc steps of MR, B kc rows of NR and one more
    // row, C MR rows of NR with ldc NR: the replica's contract for this tile.
    unsafe { replica(kc, a.as_ptr(), b.as_ptr(), replica_c.as_mut_ptr(), nr) };
    assert!(
        kernel
            .iter()
            .zip(&replica_c)
            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits()),
        "the replica computes what the {} kernel does",
        S::NAME
    );
}

/// Zeroes the 24 accumulators `zmm0` .. `zmm23` (whatever the element type).
#[cfg(target_arch = "x86_64")]
macro_rules! zero_accumulators {
    () => {
        "vxorps zmm0, zmm0, zmm0\n vxorps zmm1, zmm1, zmm1\n vxorps zmm2, zmm2, zmm2\n
         vxorps zmm3, zmm3, zmm3\n vxorps zmm4, zmm4, zmm4\n vxorps zmm5, zmm5, zmm5\n
         vxorps zmm6, zmm6, zmm6\n vxorps zmm7, zmm7, zmm7\n vxorps zmm8, zmm8, zmm8\n
         vxorps zmm9, zmm9, zmm9\n vxorps zmm10, zmm10, zmm10\n vxorps zmm11, zmm11, zmm11\n
         vxorps zmm12, zmm12, zmm12\n vxorps zmm13, zmm13, zmm13\n vxorps zmm14, zmm14, zmm14\n
         vxorps zmm15, zmm15, zmm15\n vxorps zmm16, zmm16, zmm16\n vxorps zmm17, zmm17, zmm17\n
         vxorps zmm18, zmm18, zmm18\n vxorps zmm19, zmm19, zmm19\n vxorps zmm20, zmm20, zmm20\n
         vxorps zmm21, zmm21, zmm21\n vxorps zmm22, zmm22, zmm22\n vxorps zmm23, zmm23, zmm23\n"
    };
}

/// The write-back of one vector of a C row, as the kernels do it with `alpha` in `zmm30` and
/// `beta` in `zmm31`: `v <- beta C[row + offset] + alpha v` (`p` `s` for f32, `p` `d` for f64),
/// stored back.
#[cfg(target_arch = "x86_64")]
macro_rules! write_back_vector {
    ($t:literal, $v:literal, $offset:literal) => {
        concat!(
            "vmulp",
            $t,
            " zmm",
            $v,
            ", zmm",
            $v,
            ", zmm30\n",
            "vfmadd231p",
            $t,
            " zmm",
            $v,
            ", zmm31, [{row} + ",
            $offset,
            "]\n",
            "vmovup",
            $t,
            " [{row} + ",
            $offset,
            "], zmm",
            $v,
            "\n",
        )
    };
}

/// One row pair of a pair step: A's rows `2k`, `2k + 1` at byte `$a` of the step, broadcast
/// as a pair (`$broadcast`: `vbroadcastf32x4` for f64, `vbroadcastsd` for f32), times B's even
/// and odd columns (`zmm24` .. `zmm27`) into the pair's four accumulators (`p` `$t`: `d` f64,
/// `s` f32).
#[cfg(target_arch = "x86_64")]
macro_rules! pair_fmas {
    ($broadcast:literal, $t:literal, $a:literal, $acc0:literal, $acc1:literal, $acc2:literal,
     $acc3:literal) => {
        concat!(
            $broadcast,
            " zmm28, [{a} + ",
            $a,
            "]\n",
            "vfmadd231p",
            $t,
            " zmm",
            $acc0,
            ", zmm28, zmm24\n",
            "vfmadd231p",
            $t,
            " zmm",
            $acc1,
            ", zmm28, zmm25\n",
            "vfmadd231p",
            $t,
            " zmm",
            $acc2,
            ", zmm28, zmm26\n",
            "vfmadd231p",
            $t,
            " zmm",
            $acc3,
            ", zmm28, zmm27\n",
        )
    };
}

/// A pair step's 24 FMAs: the six row pairs, A's pair `k` at byte `$ak` of the step, into
/// accumulators `4k` .. `4k + 3` (`pair_fmas!`).
#[cfg(target_arch = "x86_64")]
macro_rules! six_pair_fmas {
    ($broadcast:literal, $t:literal, $a0:literal, $a1:literal, $a2:literal, $a3:literal,
     $a4:literal, $a5:literal) => {
        concat!(
            pair_fmas!($broadcast, $t, $a0, "0", "1", "2", "3"),
            pair_fmas!($broadcast, $t, $a1, "4", "5", "6", "7"),
            pair_fmas!($broadcast, $t, $a2, "8", "9", "10", "11"),
            pair_fmas!($broadcast, $t, $a3, "12", "13", "14", "15"),
            pair_fmas!($broadcast, $t, $a4, "16", "17", "18", "19"),
            pair_fmas!($broadcast, $t, $a5, "20", "21", "22", "23"),
        )
    };
}

/// The write-back of all six row pairs, pair `k` from accumulators `4k` .. `4k + 3` by the
/// macro `$pair` (one of the two below).
#[cfg(target_arch = "x86_64")]
macro_rules! six_pair_write_backs {
    ($pair:ident) => {
        concat!(
            $pair!("0", "1", "2", "3"),
            $pair!("4", "5", "6", "7"),
            $pair!("8", "9", "10", "11"),
            $pair!("12", "13", "14", "15"),
            $pair!("16", "17", "18", "19"),
            $pair!("20", "21", "22", "23"),
        )
    };
}

/// The write-back of one f64 row pair: its accumulators interleaved back into rows `2k`
/// (even lanes) and `2k + 1` (odd lanes), each written to C, `{row}` moved two rows on.
#[cfg(target_arch = "x86_64")]
macro_rules! f64_pair_write_back {
    ($acc0:literal, $acc1:literal, $acc2:literal, $acc3:literal) => {
        concat!(
            "vunpcklpd zmm24, zmm",
            $acc0,
            ", zmm",
            $acc1,
            "\n",
            "vunpcklpd zmm25, zmm",
            $acc2,
            ", zmm",
            $acc3,
            "\n",
            "vunpckhpd zmm26, zmm",
            $acc0,
            ", zmm",
            $acc1,
            "\n",
            "vunpckhpd zmm27, zmm",
            $acc2,
            ", zmm",
            $acc3,
            "\n",
            write_back_vector!("d", "24", "0"),
            write_back_vector!("d", "25", "64"),
            "add {row}, {ldc}\n",
            write_back_vector!("d", "26", "0"),
            write_back_vector!("d", "27", "64"),
            "add {row}, {ldc}\n",
        )
    };
}

/// The write-back of one f32 row pair: row `2k` takes the even lanes of the even-column
/// product and the odd-column product's even lanes moved up (`vmovsldup`), row `2k + 1` the
/// even-column product's odd lanes moved down (`vmovshdup`) and the odd-column product's odd
/// lanes (`k1` holds the odd lanes), each written to C, `{row}` moved two rows on.
#[cfg(target_arch = "x86_64")]
macro_rules! f32_pair_write_back {
    ($acc0:literal, $acc1:literal, $acc2:literal, $acc3:literal) => {
        concat!(
            "vmovsldup zmm24, zmm",
            $acc1,
            "\n",
            "vblendmps zmm24 {{k1}}, zmm",
            $acc0,
            ", zmm24\n",
            "vmovsldup zmm25, zmm",
            $acc3,
            "\n",
            "vblendmps zmm25 {{k1}}, zmm",
            $acc2,
            ", zmm25\n",
            "vmovshdup zmm26, zmm",
            $acc0,
            "\n",
            "vblendmps zmm26 {{k1}}, zmm26, zmm",
            $acc1,
            "\n",
            "vmovshdup zmm27, zmm",
            $acc2,
            "\n",
            "vblendmps zmm27 {{k1}}, zmm27, zmm",
            $acc3,
            "\n",
            write_back_vector!("s", "24", "0"),
            write_back_vector!("s", "25", "64"),
            "add {row}, {ldc}\n",
            write_back_vector!("s", "26", "0"),
            write_back_vector!("s", "27", "64"),
            "add {row}, {ldc}\n",
        )
    };
}

/// The assembly of a replica tile: zero the 24 accumulators; per depth step the `step`
/// instructions, then A's pointer `a_step` bytes and B's a row (128 bytes) on; then alpha and
/// beta (both 1: `broadcast` of the scalar at `{one}`) into `zmm30`, `zmm31` and the
/// `write_back` instructions from `{row} = c`. The operands and the registers it writes are
/// declared once here for both replicas, with a replica's own `operands` after them.
#[cfg(target_arch = "x86_64")]
macro_rules! replica_asm {
    (
        a = $a:expr, b = $b:expr, kc = $kc:expr, c = $c:expr, ldc_bytes = $ldc:expr,
        one = $one:expr, broadcast = $broadcast:literal, a_step = $a_step:literal,
        step = { $($step:tt)* },
        write_back = { $($write_back:tt)* },
        operands = { $($operands:tt)* } $(,)?
    ) => {
        std::arch::asm!(
            zero_accumulators!(),
            "2:",
            $($step)*
            concat!("add {a}, ", $a_step),
            "add {b}, 128",
            "dec {k}",
            "jnz 2b",
            concat!($broadcast, " zmm30, [{one}]"),
            concat!($broadcast, " zmm31, [{one}]"),
            "mov {row}, {c}",
            $($write_back)*
            a = inout(reg) $a => _,
            b = inout(reg) $b => _,
            k = inout(reg) $kc => _,
            c = in(reg) $c,
            row = out(reg) _,
            ldc = in(reg) $ldc,
            one = in(reg) $one,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
            out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
            out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _,
            out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
            out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _,
            out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _, out("zmm30") _,
            out("zmm31") _,
            $($operands)*
            options(nostack),
        )
    };
}

/// `C <- A B + C` on one 12 x 16 f64 tile, `kc >= 1` depth steps, with the instructions of the
/// pair kernel's packed path written out: each step loads B's row as its even and odd columns
/// duplicated (`vmovddup` from columns 0, 1, 8 and 9), broadcasts A's six row pairs
/// (`vbroadcastf32x4`) into 24 FMAs, and fetches A eight steps ahead (two lines); then the
/// accumulator pairs are interleaved back into rows and added to C (`alpha = beta = 1`, as a
/// multiply by alpha and an FMA with beta, like the kernel). The odd-column load of the last
/// step reads one value past B's last row.
///
/// # Safety
///
/// The CPU has avx512f; `a` holds `kc * 12` values, `b` `kc * 16 + 1`, and `c + i * ldc ..`
/// 16 values for each `i < 12`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn replica_tile_f64(kc: usize, a: *const f64, b: *const f64, c: *mut f64, ldc: usize) {
    let one = 1.0f64;
    // SAFETY: the loads stay within A (kc steps of 96 bytes) and B (kc rows of 128 bytes plus
    // one value), the stores within C's 12 rows of 16 (the caller's contract); prefetches never
    // fault; every register written is declared.
    unsafe {
        replica_asm!(
            a = a, b = b, kc = kc, c = c, ldc_bytes = ldc * 8, one = &one,
            broadcast = "vbroadcastsd", a_step = "96",
            step = {
                "prefetcht0 [{a} + 768]",
                "prefetcht0 [{a} + 832]",
                "vmovddup zmm24, [{b}]",
                "vmovddup zmm25, [{b} + 8]",
                "vmovddup zmm26, [{b} + 64]",
                "vmovddup zmm27, [{b} + 72]",
                six_pair_fmas!("vbroadcastf32x4", "d", "0", "16", "32", "48", "64", "80"),
            },
            write_back = {
                six_pair_write_backs!(f64_pair_write_back),
            },
            operands = {},
        );
    }
}

/// `C <- A B + C` on one 12 x 32 f32 tile, `kc >= 1` depth steps, with the instructions of the
/// f32 pair kernel's packed path written out: each step fetches A eight steps ahead (one
/// line), loads B's row as its even and odd columns duplicated (`vmovsldup` and `vmovshdup` of
/// each 16-column half) and broadcasts A's six row pairs (`vbroadcastsd`) into 24 FMAs; then
/// the accumulator pairs are blended back into rows and added to C (`alpha = beta = 1`, as a
/// multiply by alpha and an FMA with beta, like the kernel).
///
/// # Safety
///
/// The CPU has avx512f; `a` holds `kc * 12` values, `b` `kc * 32`, and `c + i * ldc ..` 32
/// values for each `i < 12`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn replica_tile_f32(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    let one = 1.0f32;
    // SAFETY: the loads stay within A (kc steps of 48 bytes) and B (kc rows of 128 bytes), the
    // stores within C's 12 rows of 32 (the caller's contract); prefetches never fault; every
    // register written is declared.
    unsafe {
        replica_asm!(
            a = a, b = b, kc = kc, c = c, ldc_bytes = ldc * 4, one = &one,
            broadcast = "vbroadcastss", a_step = "48",
            step = {
                "prefetcht0 [{a} + 384]",
                "vmovsldup zmm24, [{b}]",
                "vmovshdup zmm25, [{b}]",
                "vmovsldup zmm26, [{b} + 64]",
                "vmovshdup zmm27, [{b} + 64]",
                six_pair_fmas!("vbroadcastsd", "s", "0", "8", "16", "24", "32", "40"),
            },
            write_back = {
                "kmovw k1, {odd_lanes:e}",
                six_pair_write_backs!(f32_pair_write_back),
            },
            operands = { odd_lanes = in(reg) 0xAAAA_u32, out("k1") _, },
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("the probe runs on x86-64 only");
}
