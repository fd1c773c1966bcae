//! The kernel report: how fast the kernels run on this machine, next to what the machine can do.
//!
//! [`run`] first measures the machine ([`MachineFigures`]: FMA peak per core and on every
//! thread with 256-bit and, where the CPU has them, 512-bit vectors; STREAM triad bandwidth),
//! then times each kernel on a fixed list of shapes and reports one [`BenchRecord`] per
//! (kernel, shape, dtype). `benign bench --json` prints each record as a [`BenchRow`]: one
//! JSON object per line that stands alone (integer dimensions, the ceiling of its
//! `frac_of_peak`, the machine figures), every line with the same keys.
//!
//! # What the figures mean
//! - `gflops`: useful floating-point operations per second, 10^9/s (a multiply-add counts 2;
//!   GEMM does `2 m n k`, GEMV and GER `2 m n`). Only for kernels where flops are the point.
//! - `gbps`: bytes moved per second, 10^9/s, STREAM convention: every array read once plus
//!   every array written once, write-allocate traffic not counted (same as the triad probe).
//! - `ratio_vs_matrixmultiply` (GEMM only): our GFLOP/s divided by `matrixmultiply`'s on the same
//!   shape in the same run; above 1 means faster. `matrixmultiply` runs on its own threads, not
//!   rayon's: [`run`] sets `MATMUL_NUM_THREADS` to the requested thread count before its first
//!   call unless the variable is already set; it caps itself at 4 threads. The count it
//!   actually uses is [`MachineFigures::matrixmultiply_threads`].
//! - `frac_of_peak`: for compute-bound kernels ([`PeakKind::Fma`], GEMM) the GFLOP/s over
//!   `FMA peak per core (same dtype) x threads` (the threads that kernel ran on: the pool's for
//!   ours, [`MachineFigures::matrixmultiply_threads`] for `matrixmultiply`'s), the peak
//!   measured with the vector width of
//!   the GEMM kernel this process dispatches to ([`MachineFigures::gemm_kernel`]: 512-bit
//!   AVX-512 on CPUs with avx512f, else 256-bit). Measuring a 512-bit kernel against the
//!   256-bit peak would report it above 1 of a ceiling it is far from; for memory-bound ones ([`PeakKind::Triad`]:
//!   GEMV, GER, softmax, layer norm, GELU) the GB/s over the triad bandwidth. Small inputs that
//!   stay in cache can exceed 1 of triad.
//!
//! # Timing
//! Each measurement calls the kernel once untimed (page faults, caches), then repeats it until
//! its time budget is spent and reports the median. A call slower than the whole budget is
//! timed once (its warm-up call is the measurement).

use std::hint::black_box;
use std::time::{Duration, Instant};

use benign_kernels::gemm::KernelVariant;
use benign_kernels::probe;
use benign_kernels::{Float, Transpose};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest thread count accepted: the library-wide limit.
pub use crate::cpu::MAX_THREADS;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Size of the rayon pool everything runs in, `1..=MAX_THREADS` (`None`: every core,
    /// [`crate::cpu::all_cores`]).
    pub threads: Option<usize>,
    /// Fewer shapes and shorter budgets: a few seconds instead of about thirty.
    pub quick: bool,
}

/// Which ceiling `frac_of_peak` is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeakKind {
    /// FMA peak per core (same dtype, vector width of the GEMM kernel) times threads:
    /// compute-bound kernels.
    Fma,
    /// STREAM triad bandwidth: memory-bound kernels.
    Triad,
}

/// The machine's ceilings, measured at the start of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineFigures {
    /// CPU model from /proc/cpuinfo (or "unknown").
    pub cpu_model: String,
    /// Threads of the rayon pool the kernels run on.
    pub threads: usize,
    /// Threads `matrixmultiply` runs on (see the module documentation).
    pub matrixmultiply_threads: usize,
    /// The GEMM kernel variant this process dispatches to (`avx2` or `avx512`, see
    /// `benign_kernels::gemm::KernelVariant`): its vector width picks the peak GEMM records
    /// are measured against.
    pub gemm_kernel: String,
    /// FMA peak per core of the GEMM kernel's vector width, f32, GFLOP/s: one of
    /// `fma_peak_f32_avx512_gflops_per_core` and `fma_peak_f32_gflops_per_core`.
    pub gemm_peak_f32_gflops_per_core: f64,
    /// As `gemm_peak_f32_gflops_per_core`, f64.
    pub gemm_peak_f64_gflops_per_core: f64,
    /// f32x8 (256-bit) FMA throughput of one core, GFLOP/s.
    pub fma_peak_f32_gflops_per_core: f64,
    /// f64x4 (256-bit) FMA throughput of one core, GFLOP/s.
    pub fma_peak_f64_gflops_per_core: f64,
    /// 512-bit (AVX-512, 16 x f32) FMA throughput of one core, GFLOP/s; `None` without avx512f.
    pub fma_peak_f32_avx512_gflops_per_core: Option<f64>,
    /// 512-bit (AVX-512, 8 x f64) FMA throughput of one core, GFLOP/s; `None` without avx512f.
    pub fma_peak_f64_avx512_gflops_per_core: Option<f64>,
    /// f32x8 FMA throughput with every pool thread running the probe at once, GFLOP/s (summed).
    pub fma_peak_f32_gflops_all_threads: f64,
    /// f64x4 FMA throughput with every pool thread running the probe at once, GFLOP/s (summed).
    pub fma_peak_f64_gflops_all_threads: f64,
    /// 512-bit f32 FMA throughput with every pool thread running the probe at once, GFLOP/s
    /// (summed); `None` without avx512f.
    pub fma_peak_f32_avx512_gflops_all_threads: Option<f64>,
    /// 512-bit f64 FMA throughput with every pool thread running the probe at once, GFLOP/s
    /// (summed); `None` without avx512f.
    pub fma_peak_f64_avx512_gflops_all_threads: Option<f64>,
    /// STREAM triad bandwidth on the pool, GB/s (24 bytes per element, no write-allocate).
    pub triad_gbps: f64,
    /// Size of each of the three triad arrays, bytes.
    pub triad_bytes_per_array: usize,
    /// SIMD features this binary was compiled for.
    pub compiled_features: Vec<String>,
}

/// The dimensions of one measurement. BLAS kernels use BLAS's names: GEMM computes
/// `C[m x n] = A[m x k] B[k x n]`; GEMV and GER work on an `m x n` matrix (no `k`). Row-wise
/// kernels (`softmax_rows`, `layer_norm`, `gelu`) work on `rows` rows of `cols` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dims {
    Gemm { m: usize, n: usize, k: usize },
    Matrix { m: usize, n: usize },
    Rows { rows: usize, cols: usize },
}

impl Dims {
    /// `m x n x k`, `m x n` or `rows x cols`, for display.
    pub fn label(&self) -> String {
        match *self {
            Dims::Gemm { m, n, k } => format!("{m}x{n}x{k}"),
            Dims::Matrix { m, n } => format!("{m}x{n}"),
            Dims::Rows { rows, cols } => format!("{rows}x{cols}"),
        }
    }
}

/// One kernel on one shape and element type.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Kernel name (`gemm`, `matrixmultiply::gemm`, `gemv_n`, `gemv_t`, `ger`, `softmax_rows`,
    /// `layer_norm`, `gelu`).
    pub kernel: String,
    pub dims: Dims,
    /// `f32` or `f64`.
    pub dtype: String,
    /// Threads the kernel ran on.
    pub threads: usize,
    /// GFLOP/s, for kernels whose flops are counted.
    pub gflops: Option<f64>,
    /// GB/s (STREAM convention), for memory-bound kernels.
    pub gbps: Option<f64>,
    /// Our GFLOP/s over `matrixmultiply`'s on the same shape (GEMM only).
    pub ratio_vs_matrixmultiply: Option<f64>,
    /// Fraction of the ceiling named by `peak`.
    pub frac_of_peak: Option<f64>,
    /// Which ceiling `frac_of_peak` refers to.
    pub peak: PeakKind,
    /// The ceiling itself, in the unit of `peak`: GFLOP/s for [`PeakKind::Fma`] (the GEMM
    /// kernel's FMA peak per core of this dtype x `threads`), GB/s for [`PeakKind::Triad`].
    pub ceiling: f64,
    /// Median time of one call, seconds.
    pub median_seconds: f64,
    /// Timed calls the median is taken over.
    pub runs: usize,
}

/// One line of `benign bench --json`: a measurement that stands alone, with its dimensions as
/// integers and the machine figures needed to read it, so that `jq -s .` or pandas'
/// `read_json(lines=True)` load the report as one table with the same columns on every line.
///
/// Conventions: every key is on every line; a dimension a kernel does not have is `null`
/// (GEMM: `m`, `n`, `k`; GEMV and GER: `m`, `n`; row-wise kernels: `rows`, `cols`); a rate or
/// ratio that does not apply is `null`. The machine fields repeat on every line of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub kernel: String,
    /// `f32` or `f64`.
    pub dtype: String,
    /// GEMM: rows of `A` and `C`; GEMV, GER: rows of the matrix.
    pub m: Option<usize>,
    /// GEMM: columns of `B` and `C`; GEMV, GER: columns of the matrix.
    pub n: Option<usize>,
    /// GEMM: the inner dimension (columns of `A`, rows of `B`).
    pub k: Option<usize>,
    /// Row-wise kernels: rows of the input.
    pub rows: Option<usize>,
    /// Row-wise kernels: values per row.
    pub cols: Option<usize>,
    /// The dimensions as text, for display (`512x512x512`, `2000x2000`).
    pub shape: String,
    /// Threads this kernel ran on (`matrixmultiply::gemm`: `matrixmultiply_threads`).
    pub threads: usize,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    pub ratio_vs_matrixmultiply: Option<f64>,
    /// `gflops / ceiling_gflops` (peak `fma`) or `gbps / ceiling_gbps` (peak `triad`).
    pub frac_of_peak: Option<f64>,
    pub peak: PeakKind,
    /// The compute ceiling of this line (peak `fma`): `gemm_peak_<dtype>_gflops_per_core x
    /// threads`; `null` for peak `triad`.
    pub ceiling_gflops: Option<f64>,
    /// The memory ceiling of this line (peak `triad`): `triad_gbps`; `null` for peak `fma`.
    pub ceiling_gbps: Option<f64>,
    pub median_seconds: f64,
    pub runs: usize,
    /// The machine: [`MachineFigures`], flat.
    pub cpu_model: String,
    /// Threads of the rayon pool (`--threads`).
    pub pool_threads: usize,
    pub matrixmultiply_threads: usize,
    pub gemm_kernel: String,
    pub gemm_peak_f32_gflops_per_core: f64,
    pub gemm_peak_f64_gflops_per_core: f64,
    pub fma_peak_f32_gflops_per_core: f64,
    pub fma_peak_f64_gflops_per_core: f64,
    pub fma_peak_f32_avx512_gflops_per_core: Option<f64>,
    pub fma_peak_f64_avx512_gflops_per_core: Option<f64>,
    pub fma_peak_f32_gflops_all_threads: f64,
    pub fma_peak_f64_gflops_all_threads: f64,
    pub fma_peak_f32_avx512_gflops_all_threads: Option<f64>,
    pub fma_peak_f64_avx512_gflops_all_threads: Option<f64>,
    pub triad_gbps: f64,
    pub triad_bytes_per_array: usize,
    /// SIMD features this binary was compiled for, joined with `+` (`sse4.2+avx+avx2+fma`).
    pub compiled_features: String,
}

impl BenchRow {
    pub fn new(machine: &MachineFigures, record: &BenchRecord) -> BenchRow {
        let (mut m, mut n, mut k, mut rows, mut cols) = (None, None, None, None, None);
        match record.dims {
            Dims::Gemm {
                m: dm,
                n: dn,
                k: dk,
            } => (m, n, k) = (Some(dm), Some(dn), Some(dk)),
            Dims::Matrix { m: dm, n: dn } => (m, n) = (Some(dm), Some(dn)),
            Dims::Rows { rows: r, cols: c } => (rows, cols) = (Some(r), Some(c)),
        }
        let (ceiling_gflops, ceiling_gbps) = match record.peak {
            PeakKind::Fma => (Some(record.ceiling), None),
            PeakKind::Triad => (None, Some(record.ceiling)),
        };
        BenchRow {
            kernel: record.kernel.clone(),
            dtype: record.dtype.clone(),
            m,
            n,
            k,
            rows,
            cols,
            shape: record.dims.label(),
            threads: record.threads,
            gflops: record.gflops,
            gbps: record.gbps,
            ratio_vs_matrixmultiply: record.ratio_vs_matrixmultiply,
            frac_of_peak: record.frac_of_peak,
            peak: record.peak,
            ceiling_gflops,
            ceiling_gbps,
            median_seconds: record.median_seconds,
            runs: record.runs,
            cpu_model: machine.cpu_model.clone(),
            pool_threads: machine.threads,
            matrixmultiply_threads: machine.matrixmultiply_threads,
            gemm_kernel: machine.gemm_kernel.clone(),
            gemm_peak_f32_gflops_per_core: machine.gemm_peak_f32_gflops_per_core,
            gemm_peak_f64_gflops_per_core: machine.gemm_peak_f64_gflops_per_core,
            fma_peak_f32_gflops_per_core: machine.fma_peak_f32_gflops_per_core,
            fma_peak_f64_gflops_per_core: machine.fma_peak_f64_gflops_per_core,
            fma_peak_f32_avx512_gflops_per_core: machine.fma_peak_f32_avx512_gflops_per_core,
            fma_peak_f64_avx512_gflops_per_core: machine.fma_peak_f64_avx512_gflops_per_core,
            fma_peak_f32_gflops_all_threads: machine.fma_peak_f32_gflops_all_threads,
            fma_peak_f64_gflops_all_threads: machine.fma_peak_f64_gflops_all_threads,
            fma_peak_f32_avx512_gflops_all_threads: machine.fma_peak_f32_avx512_gflops_all_threads,
            fma_peak_f64_avx512_gflops_all_threads: machine.fma_peak_f64_avx512_gflops_all_threads,
            triad_gbps: machine.triad_gbps,
            triad_bytes_per_array: machine.triad_bytes_per_array,
            compiled_features: machine.compiled_features.join("+"),
        }
    }
}

/// Everything [`run`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub machine: MachineFigures,
    pub records: Vec<BenchRecord>,
}

/// What [`run`] reports while it runs, in order: the machine figures once, then every record.
pub enum Progress<'a> {
    Machine(&'a MachineFigures),
    Record(&'a BenchRecord),
}

/// Time budgets and sizes of one report.
struct Plan {
    probe_time: Duration,
    triad_bytes_per_array: usize,
    kernel_budget: Duration,
    quick: bool,
}

/// Measures the machine, then every kernel, inside a rayon pool of `options.threads` threads.
/// `progress` sees each result as soon as it is measured (to print while the report runs).
///
/// Sets the environment variable `MATMUL_NUM_THREADS` if it is unset (see the module
/// documentation); call it before spawning threads that read the environment.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(Progress<'_>)) -> Result<BenchReport> {
    let threads = match options.threads {
        Some(t) => crate::cpu::check_threads(t)?,
        None => crate::cpu::all_cores(),
    };
    let plan = if options.quick {
        Plan {
            probe_time: Duration::from_millis(150),
            triad_bytes_per_array: 64 << 20,
            kernel_budget: Duration::from_millis(200),
            quick: true,
        }
    } else {
        Plan {
            probe_time: Duration::from_millis(300),
            triad_bytes_per_array: 128 << 20,
            kernel_budget: Duration::from_millis(450),
            quick: false,
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::invalid("threads", format!("cannot start {threads} threads: {e}")))?;
    let matrixmultiply_threads = matrixmultiply_threads(threads);

    // The probes and kernels run inside the pool; `progress` (which need not be Send) runs on
    // the calling thread between measurements.
    let machine = pool.install(|| {
        let fma_peak_f32_gflops_per_core = probe::fma_peak_gflops_f32(plan.probe_time);
        let fma_peak_f64_gflops_per_core = probe::fma_peak_gflops_f64(plan.probe_time);
        let fma_peak_f32_avx512_gflops_per_core =
            probe::fma_peak_gflops_f32_avx512(plan.probe_time);
        let fma_peak_f64_avx512_gflops_per_core =
            probe::fma_peak_gflops_f64_avx512(plan.probe_time);
        let gemm_kernel = benign_kernels::gemm::kernel_variant();
        let gemm_peak = |avx512: Option<f64>, avx2: f64| kernel_peak(gemm_kernel, avx512, avx2);
        MachineFigures {
            cpu_model: cpu_model(),
            threads,
            matrixmultiply_threads,
            gemm_kernel: gemm_kernel.name().to_string(),
            gemm_peak_f32_gflops_per_core: gemm_peak(
                fma_peak_f32_avx512_gflops_per_core,
                fma_peak_f32_gflops_per_core,
            ),
            gemm_peak_f64_gflops_per_core: gemm_peak(
                fma_peak_f64_avx512_gflops_per_core,
                fma_peak_f64_gflops_per_core,
            ),
            fma_peak_f32_gflops_per_core,
            fma_peak_f64_gflops_per_core,
            fma_peak_f32_avx512_gflops_per_core,
            fma_peak_f64_avx512_gflops_per_core,
            fma_peak_f32_gflops_all_threads: all_threads(|| {
                Some(probe::fma_peak_gflops_f32(plan.probe_time))
            })
            .unwrap_or(0.0),
            fma_peak_f64_gflops_all_threads: all_threads(|| {
                Some(probe::fma_peak_gflops_f64(plan.probe_time))
            })
            .unwrap_or(0.0),
            fma_peak_f32_avx512_gflops_all_threads: all_threads(|| {
                probe::fma_peak_gflops_f32_avx512(plan.probe_time)
            }),
            fma_peak_f64_avx512_gflops_all_threads: all_threads(|| {
                probe::fma_peak_gflops_f64_avx512(plan.probe_time)
            }),
            triad_gbps: probe::triad_bandwidth_gbps(
                plan.triad_bytes_per_array,
                plan.probe_time * 3,
            ),
            triad_bytes_per_array: plan.triad_bytes_per_array,
            compiled_features: crate::cpu::compiled_features()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    });
    progress(Progress::Machine(&machine));
    let mut records = Vec::new();
    let mut emit = |record: BenchRecord| {
        progress(Progress::Record(&record));
        records.push(record);
    };
    let ctx = Context {
        machine: &machine,
        budget: plan.kernel_budget,
        pool: &pool,
    };
    gemm_records::<f32>(&ctx, &plan, &mut emit);
    gemm_records::<f64>(&ctx, &plan, &mut emit);
    for dtype_f64 in [false, true] {
        if plan.quick && dtype_f64 {
            break;
        }
        if dtype_f64 {
            rowwise_records::<f64>(&ctx, &plan, &mut emit);
        } else {
            rowwise_records::<f32>(&ctx, &plan, &mut emit);
        }
    }
    Ok(BenchReport { machine, records })
}

/// The FMA peak a GEMM running `variant`'s kernels is bounded by, from the 512-bit and the
/// 256-bit peaks of the same dtype: the 512-bit one only when the kernels are 512-bit
/// (`BENIGN_GEMM_KERNEL=avx2` on an AVX-512 CPU runs the 256-bit ones).
fn kernel_peak(variant: KernelVariant, avx512: Option<f64>, avx2: f64) -> f64 {
    match variant {
        KernelVariant::Avx512 => avx512.unwrap_or(avx2),
        KernelVariant::Avx2 => avx2,
    }
}

/// `probe` run on every thread of the current pool at once, summed; `None` if it is `None`
/// anywhere (the probe does not apply to this CPU).
fn all_threads(probe: impl Fn() -> Option<f64> + Sync) -> Option<f64> {
    rayon::broadcast(|_| probe()).into_iter().sum()
}

/// The element types the report runs, with their `matrixmultiply` baseline and peak.
trait Element: Float {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[Self], b: &[Self], c: &mut [Self]);
    /// FMA peak per core of the GEMM kernel's vector width.
    fn peak_per_core(machine: &MachineFigures) -> f64;
}

impl Element for f32 {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        probe::matrixmultiply_sgemm(m, n, k, a, b, c);
    }
    fn peak_per_core(machine: &MachineFigures) -> f64 {
        machine.gemm_peak_f32_gflops_per_core
    }
}

impl Element for f64 {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
        probe::matrixmultiply_dgemm(m, n, k, a, b, c);
    }
    fn peak_per_core(machine: &MachineFigures) -> f64 {
        machine.gemm_peak_f64_gflops_per_core
    }
}

struct Context<'a> {
    machine: &'a MachineFigures,
    budget: Duration,
    pool: &'a rayon::ThreadPool,
}

impl Context<'_> {
    /// [`time_median`] of `f` run inside the report's pool.
    fn time(&self, f: impl FnMut() + Send) -> Timing {
        self.pool.install(|| time_median(self.budget, f))
    }

    /// A record from a timing, with the rates and fractions derived from the counts.
    #[allow(clippy::too_many_arguments)]
    fn record<T: Element>(
        &self,
        kernel: &str,
        dims: Dims,
        threads: usize,
        timing: Timing,
        flops: Option<f64>,
        bytes: Option<f64>,
        peak: PeakKind,
    ) -> BenchRecord {
        let rate = |count: Option<f64>| count.map(|c| c / timing.median_seconds / 1e9);
        let gflops = rate(flops);
        let gbps = rate(bytes);
        let (ceiling, rate) = match peak {
            PeakKind::Fma => (T::peak_per_core(self.machine) * threads as f64, gflops),
            PeakKind::Triad => (self.machine.triad_gbps, gbps),
        };
        BenchRecord {
            kernel: kernel.to_string(),
            dims,
            dtype: T::NAME.to_string(),
            threads,
            gflops,
            gbps,
            ratio_vs_matrixmultiply: None,
            frac_of_peak: rate.map(|r| r / ceiling).filter(|f| f.is_finite()),
            peak,
            ceiling,
            median_seconds: timing.median_seconds,
            runs: timing.runs,
        }
    }
}

/// GEMM `C <- A B` (row-major, no transposes) against `matrixmultiply` on the same data.
fn gemm_records<T: Element>(ctx: &Context, plan: &Plan, emit: &mut impl FnMut(BenchRecord)) {
    let mut shapes: Vec<(usize, usize, usize)> = vec![(256, 256, 256), (512, 512, 512)];
    if !plan.quick {
        // The square sizes, then the workload's: (batch x tokens) x d times d x d, and its
        // transpose-shaped twin.
        shapes.extend([
            (1024, 1024, 1024),
            (2000, 2000, 2000),
            (160, 2000, 2000),
            (2000, 2000, 160),
        ]);
    }
    for (m, n, k) in shapes {
        let a = filled::<T>(m * k, 1);
        let b = filled::<T>(k * n, 2);
        let mut c = vec![T::ZERO; m * n];
        let flops = Some(2.0 * (m * n * k) as f64);
        let dims = Dims::Gemm { m, n, k };
        let ours = ctx.time(|| {
            benign_kernels::gemm(
                Transpose::No,
                Transpose::No,
                m,
                n,
                k,
                T::ONE,
                black_box(&a),
                k,
                black_box(&b),
                n,
                T::ZERO,
                black_box(&mut c),
                n,
            )
        });
        let theirs =
            ctx.time(|| T::baseline_gemm(m, n, k, black_box(&a), black_box(&b), black_box(&mut c)));
        let mut record = ctx.record::<T>(
            "gemm",
            dims,
            ctx.machine.threads,
            ours,
            flops,
            None,
            PeakKind::Fma,
        );
        let baseline = ctx.record::<T>(
            "matrixmultiply::gemm",
            dims,
            ctx.machine.matrixmultiply_threads,
            theirs,
            flops,
            None,
            PeakKind::Fma,
        );
        record.ratio_vs_matrixmultiply = match (record.gflops, baseline.gflops) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
            _ => None,
        };
        emit(record);
        emit(baseline);
    }
}

/// GEMV (both orientations), GER, row softmax, layer norm and GELU.
fn rowwise_records<T: Element>(ctx: &Context, plan: &Plan, emit: &mut impl FnMut(BenchRecord)) {
    let threads = ctx.machine.threads;
    let size = std::mem::size_of::<T>() as f64;
    let dims: &[usize] = if plan.quick { &[2000] } else { &[2000, 8192] };
    for &d in dims {
        let a = filled::<T>(d * d, 3);
        let x = filled::<T>(d, 4);
        let mut y = vec![T::ZERO; d];
        let dims = Dims::Matrix { m: d, n: d };
        let flops = Some(2.0 * (d * d) as f64);
        // Matrix read once, x read once, y written once (beta = 0 never reads y).
        let gemv_bytes = Some(((d * d + 2 * d) as f64) * size);
        for (name, ta) in [("gemv_n", Transpose::No), ("gemv_t", Transpose::Yes)] {
            let timing = ctx.time(|| {
                benign_kernels::gemv(
                    ta,
                    d,
                    d,
                    T::ONE,
                    black_box(&a),
                    d,
                    black_box(&x),
                    T::ZERO,
                    black_box(&mut y),
                )
            });
            emit(ctx.record::<T>(
                name,
                dims,
                threads,
                timing,
                flops,
                gemv_bytes,
                PeakKind::Triad,
            ));
        }
        // A read and written once, x and y read once. A small alpha keeps A bounded over the
        // repetitions.
        let mut a = a;
        let alpha = T::from_f64(1e-6);
        let timing = ctx.time(|| {
            benign_kernels::ger(
                d,
                d,
                alpha,
                black_box(&x),
                black_box(&y),
                black_box(&mut a),
                d,
            )
        });
        let ger_bytes = Some(((2 * d * d + 2 * d) as f64) * size);
        emit(ctx.record::<T>(
            "ger",
            dims,
            threads,
            timing,
            flops,
            ger_bytes,
            PeakKind::Triad,
        ));
    }

    // Softmax: the model's attention rows (many short rows) and one large square.
    let softmax_shapes: &[(usize, usize)] = if plan.quick {
        &[(8000, 8)]
    } else {
        &[(8000, 8), (4096, 4096)]
    };
    for &(rows, cols) in softmax_shapes {
        let x = filled::<T>(rows * cols, 5);
        let mut y = vec![T::ZERO; rows * cols];
        let timing =
            ctx.time(|| benign_kernels::softmax_rows(cols, black_box(&x), black_box(&mut y)));
        let bytes = Some(2.0 * (rows * cols) as f64 * size);
        emit(ctx.record::<T>(
            "softmax_rows",
            Dims::Rows { rows, cols },
            threads,
            timing,
            None,
            bytes,
            PeakKind::Triad,
        ));
    }

    // Layer norm and GELU on a batch of activations larger than the last-level cache.
    let (rows, cols) = (4096, 2000);
    let x = filled::<T>(rows * cols, 6);
    let gamma = filled::<T>(cols, 7);
    let beta = filled::<T>(cols, 8);
    let mut y = vec![T::ZERO; rows * cols];
    let mut mean = vec![T::ZERO; rows];
    let mut rstd = vec![T::ZERO; rows];
    let eps = T::from_f64(1e-5);
    let timing = ctx.time(|| {
        benign_kernels::layer_norm(
            cols,
            eps,
            black_box(&x),
            &gamma,
            &beta,
            black_box(&mut y),
            &mut mean,
            &mut rstd,
        )
    });
    let bytes = Some((2 * rows * cols + 2 * cols + 2 * rows) as f64 * size);
    emit(ctx.record::<T>(
        "layer_norm",
        Dims::Rows { rows, cols },
        threads,
        timing,
        None,
        bytes,
        PeakKind::Triad,
    ));
    let timing = ctx.time(|| benign_kernels::gelu(black_box(&x), black_box(&mut y)));
    let bytes = Some(2.0 * (rows * cols) as f64 * size);
    emit(ctx.record::<T>(
        "gelu",
        Dims::Rows { rows, cols },
        threads,
        timing,
        None,
        bytes,
        PeakKind::Triad,
    ));
}

/// Median time of one call and how many calls it is taken over.
#[derive(Clone, Copy, Debug)]
struct Timing {
    median_seconds: f64,
    runs: usize,
}

/// Calls `f` once untimed, then times calls until `budget` is spent (at least one timed call,
/// at most 10 000), and returns the median. If the untimed call alone overran the budget, it is
/// the measurement: repeating a call that slow would blow the report's time.
fn time_median(budget: Duration, mut f: impl FnMut()) -> Timing {
    const MAX_RUNS: usize = 10_000;
    let warm_up = Instant::now();
    f();
    let warm_up = warm_up.elapsed();
    if warm_up >= budget {
        return Timing {
            median_seconds: warm_up.as_secs_f64(),
            runs: 1,
        };
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.is_empty() || (start.elapsed() < budget && times.len() < MAX_RUNS) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median_seconds = if times.len() % 2 == 1 {
        times[mid]
    } else {
        0.5 * (times[mid - 1] + times[mid])
    };
    Timing {
        median_seconds: median_seconds.max(1e-9),
        runs: times.len(),
    }
}

/// `len` values in [-1, 1) from a fixed, cheap sequence (a multiplicative hash of the index and
/// `salt`): the kernels' speed does not depend on the values, only on their being ordinary
/// normal numbers, and filling 67 M elements with a cryptographic RNG would take longer than
/// timing the kernel.
fn filled<T: Float>(len: usize, salt: u64) -> Vec<T> {
    (0..len as u64)
        .map(|i| {
            let h =
                (i ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            T::from_f64((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect()
}

/// The thread count `matrixmultiply` uses in this process. It reads `MATMUL_NUM_THREADS` once,
/// at its first call, and clamps it to 1..=4; unset, it uses the number of physical cores. So
/// that the comparison is at equal thread counts, the variable is set to `requested` if the
/// user did not set it — this only takes effect if `matrixmultiply` has not run yet in this
/// process, which the first call of this function records.
fn matrixmultiply_threads(requested: usize) -> usize {
    use std::sync::OnceLock;
    static EFFECTIVE: OnceLock<usize> = OnceLock::new();
    *EFFECTIVE.get_or_init(|| {
        const VAR: &str = "MATMUL_NUM_THREADS";
        let wanted = match std::env::var(VAR) {
            Ok(value) if !value.is_empty() => value.parse::<usize>().unwrap_or(1),
            _ => {
                // Edition 2021: set_var is safe to call; it is racy only against threads that
                // read the environment at the same moment, and none of ours do.
                std::env::set_var(VAR, requested.to_string());
                requested
            }
        };
        wanted.clamp(1, 4)
    })
}

/// The CPU model name from /proc/cpuinfo (Linux), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_invalid_and_names_the_field() {
        let options = BenchOptions {
            threads: Some(0),
            quick: true,
        };
        let err = run(&options, |_| {}).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("threads"), "{err}");
    }

    /// The library refuses what `--threads` refuses: beyond 1024 nothing starts.
    #[test]
    fn threads_beyond_the_limit_are_invalid() {
        let options = BenchOptions {
            threads: Some(1025),
            quick: true,
        };
        let err = run(&options, |_| panic!("measured on 1025 threads")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("1..=1024"), "{err}");
    }

    #[test]
    fn gemm_peak_has_the_kernel_width() {
        assert_eq!(
            kernel_peak(KernelVariant::Avx512, Some(170.0), 100.0),
            170.0
        );
        assert_eq!(kernel_peak(KernelVariant::Avx2, Some(170.0), 100.0), 100.0);
        assert_eq!(kernel_peak(KernelVariant::Avx512, None, 100.0), 100.0);
    }

    /// The report's machine figures on this CPU: the GEMM peak is the probe of the width the
    /// dispatched kernel uses, and GEMM records are measured against it.
    #[test]
    fn quick_report_measures_gemm_against_its_kernel_width() {
        let options = BenchOptions {
            threads: Some(1),
            quick: true,
        };
        let report = run(&options, |_| {}).unwrap();
        let machine = &report.machine;
        let variant = benign_kernels::gemm::kernel_variant();
        assert_eq!(machine.gemm_kernel, variant.name());
        let has_avx512 = KernelVariant::Avx512.is_available();
        assert_eq!(
            machine.fma_peak_f32_avx512_gflops_per_core.is_some(),
            has_avx512
        );
        assert_eq!(
            machine.fma_peak_f64_avx512_gflops_all_threads.is_some(),
            has_avx512
        );
        let expected = kernel_peak(
            variant,
            machine.fma_peak_f32_avx512_gflops_per_core,
            machine.fma_peak_f32_gflops_per_core,
        );
        assert_eq!(machine.gemm_peak_f32_gflops_per_core, expected);
        let gemm = report
            .records
            .iter()
            .find(|r| r.kernel == "gemm" && r.dtype == "f32")
            .unwrap();
        let frac = gemm.frac_of_peak.unwrap();
        let want = gemm.gflops.unwrap() / machine.gemm_peak_f32_gflops_per_core;
        assert!((frac - want).abs() <= 1e-12 * want, "{frac} vs {want}");
        assert_eq!(gemm.ceiling, machine.gemm_peak_f32_gflops_per_core);
        let triad = report.records.iter().find(|r| r.kernel == "gelu").unwrap();
        assert_eq!(triad.ceiling, machine.triad_gbps);
    }

    fn machine() -> MachineFigures {
        MachineFigures {
            cpu_model: "Test CPU".into(),
            threads: 2,
            matrixmultiply_threads: 2,
            gemm_kernel: "avx2".into(),
            gemm_peak_f32_gflops_per_core: 64.0,
            gemm_peak_f64_gflops_per_core: 32.0,
            fma_peak_f32_gflops_per_core: 64.0,
            fma_peak_f64_gflops_per_core: 32.0,
            fma_peak_f32_avx512_gflops_per_core: None,
            fma_peak_f64_avx512_gflops_per_core: None,
            fma_peak_f32_gflops_all_threads: 120.0,
            fma_peak_f64_gflops_all_threads: 60.0,
            fma_peak_f32_avx512_gflops_all_threads: None,
            fma_peak_f64_avx512_gflops_all_threads: None,
            triad_gbps: 10.0,
            triad_bytes_per_array: 64 << 20,
            compiled_features: vec!["avx2".into(), "fma".into()],
        }
    }

    fn record(kernel: &str, dims: Dims, peak: PeakKind, ceiling: f64) -> BenchRecord {
        BenchRecord {
            kernel: kernel.into(),
            dims,
            dtype: "f32".into(),
            threads: 2,
            gflops: Some(64.0),
            gbps: (peak == PeakKind::Triad).then_some(5.0),
            ratio_vs_matrixmultiply: None,
            frac_of_peak: Some(0.5),
            peak,
            ceiling,
            median_seconds: 1e-3,
            runs: 10,
        }
    }

    /// Every line of `--json` has the same keys, integer dimensions (null where the kernel has
    /// none), the ceiling of its own peak and the machine figures.
    #[test]
    fn json_rows_stand_alone_with_integer_dimensions() {
        let machine = machine();
        let rows: Vec<serde_json::Value> = [
            record(
                "gemm",
                Dims::Gemm {
                    m: 160,
                    n: 2000,
                    k: 200,
                },
                PeakKind::Fma,
                128.0,
            ),
            record(
                "gemv_n",
                Dims::Matrix { m: 30, n: 20 },
                PeakKind::Triad,
                10.0,
            ),
            record(
                "gelu",
                Dims::Rows {
                    rows: 4096,
                    cols: 2000,
                },
                PeakKind::Triad,
                10.0,
            ),
        ]
        .iter()
        .map(|r| serde_json::to_value(BenchRow::new(&machine, r)).unwrap())
        .collect();
        let keys = |v: &serde_json::Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<String>>()
        };
        assert_eq!(keys(&rows[0]), keys(&rows[1]));
        assert_eq!(keys(&rows[0]), keys(&rows[2]));
        let (gemm, gemv, gelu) = (&rows[0], &rows[1], &rows[2]);
        assert_eq!(
            (&gemm["m"], &gemm["n"], &gemm["k"]),
            (&160.into(), &2000.into(), &200.into())
        );
        assert!(gemm["m"].is_u64() && gemm["rows"].is_null() && gemm["cols"].is_null());
        assert_eq!(gemm["shape"], "160x2000x200");
        assert_eq!((&gemv["m"], &gemv["n"]), (&30.into(), &20.into()));
        assert!(gemv["k"].is_null() && gemv["rows"].is_null());
        assert_eq!((&gelu["rows"], &gelu["cols"]), (&4096.into(), &2000.into()));
        assert!(gelu["m"].is_null() && gelu["n"].is_null() && gelu["k"].is_null());
        assert_eq!(gemm["ceiling_gflops"], 128.0);
        assert!(gemm["ceiling_gbps"].is_null());
        assert_eq!(gelu["ceiling_gbps"], 10.0);
        assert!(gelu["ceiling_gflops"].is_null());
        for row in &rows {
            assert_eq!(row["cpu_model"], "Test CPU");
            assert_eq!(row["pool_threads"], 2);
            assert_eq!(row["gemm_kernel"], "avx2");
            assert_eq!(row["gemm_peak_f32_gflops_per_core"], 64.0);
            assert_eq!(row["compiled_features"], "avx2+fma");
            assert!(row.get("machine").is_none());
            // The row reads back.
            let back: BenchRow = serde_json::from_value(row.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), *row);
        }
    }

    #[test]
    fn warm_up_is_untimed_and_slow_calls_run_once() {
        let mut calls = 0;
        let timing = time_median(Duration::from_millis(5), || {
            calls += 1;
            std::thread::sleep(Duration::from_micros(200));
        });
        assert_eq!(calls, timing.runs + 1, "warm-up call is not timed");
        assert!(timing.median_seconds >= 200e-6, "{timing:?}");
        let slow = time_median(Duration::from_millis(1), || {
            std::thread::sleep(Duration::from_millis(3))
        });
        assert_eq!(slow.runs, 1);
        assert!(slow.median_seconds >= 3e-3);
    }

    #[test]
    fn filled_values_are_in_range_and_vary() {
        let v = filled::<f64>(1000, 3);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert_ne!(filled::<f64>(10, 1), filled::<f64>(10, 2));
    }
}
