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
//!   the GEMM kernel this process dispatches to ([`Ceilings::gemm_kernel`]: 512-bit
//!   AVX-512 on CPUs with avx512f, else 256-bit). Measuring a 512-bit kernel against the
//!   256-bit peak would report it above 1 of a ceiling it is far from; for memory-bound ones ([`PeakKind::Triad`]:
//!   GEMV, GER, softmax, layer norm, GELU) the GB/s over the triad bandwidth. Small inputs that
//!   stay in cache can exceed 1 of triad.
//!
//! # Timing
//! A measurement runs one or more sides: a GEMM row runs ours and `matrixmultiply` on the same
//! data, every other row ours alone. Each side is called once untimed (page faults, caches),
//! then the sides run in interleaved rounds (each round calls every side once, the order
//! rotating from round to round) until the budget of `sides x per-side budget` is spent. A
//! slow spell of a shared machine then lands on every side alike instead of on whichever ran
//! second. Each row reports the median time of a call (its rates are computed from it), the
//! fastest call, the interquartile range (IQR: third minus first quartile, the spread) and the
//! number of timed calls. When the untimed calls alone overrun the budget, repeating them would
//! blow the report's time, so the warm-up calls are the measurement: such a row has one run,
//! no spread, `single_call` set, and includes what the warm-up was meant to absorb.
//!
//! # Comparisons and warnings
//! Ours against `matrixmultiply` is called faster or slower only when the two IQRs do not
//! overlap; otherwise it is within the spread, and a single-call row cannot be called either
//! way. The same rule holds in both directions, so neither a win nor a loss is read off noise.
//! The report warns, without failing, when:
//! - a GEMM row's GFLOP/s exceed its FMA ceiling, or the FMA peak measured with that many
//!   threads at once (the timing or a probe is wrong: no kernel beats the hardware);
//!   memory-bound rows are not checked, since inputs that stay in cache legitimately beat triad;
//! - an f64 FMA peak exceeds the f32 one of the same vector width (half as many lanes cannot
//!   be faster: a probe was disturbed);
//! - the 1-minute load average (/proc/loadavg), read at the start and before each row,
//!   exceeds the number of logical CPUs (other work was competing for the cores). The report's
//!   own threads count towards it, and it lags by about a minute.

use std::hint::black_box;
use std::time::{Duration, Instant};

use benign_kernels::gemm::KernelVariant;
use benign_kernels::{baseline, probe};
use benign_kernels::{Float, MatMut, MatRef, Transpose};
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
    /// The measured ceilings.
    #[serde(flatten)]
    pub ceilings: Ceilings,
    /// SIMD features this binary was compiled for.
    pub compiled_features: Vec<String>,
    /// Logical CPUs online: what the load average is compared with.
    pub logical_cpus: usize,
    /// 1-minute load average when the report started (/proc/loadavg); `None` where unreadable.
    pub load_average_1min: Option<f64>,
    /// Warnings about the machine figures and the load at the start (see the module
    /// documentation); empty when there are none.
    pub warnings: Vec<String>,
}

/// The ceilings [`MachineFigures`] measured: the FMA peaks and the triad bandwidth. A
/// [`BenchRow`] repeats them under the same keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    /// The GEMM kernel variant this process dispatches to (`avx2` or `avx512`, see
    /// `benign_kernels::gemm::KernelVariant`): its vector width picks the peak GEMM records
    /// are measured against.
    pub gemm_kernel: String,
    /// FMA peak per core of the GEMM kernel's vector width, f32, GFLOP/s: one of
    /// `fma_peak_f32_avx512_gflops_per_core` and `fma_peak_f32_gflops_per_core`.
    pub gemm_peak_f32_gflops_per_core: f64,
    /// As `gemm_peak_f32_gflops_per_core`, f64.
    pub gemm_peak_f64_gflops_per_core: f64,
    /// FMA throughput of one core, GFLOP/s: the keys [`FMA_PER_CORE_KEYS`].
    #[serde(flatten, with = "fma_per_core_keys")]
    pub fma_peak_per_core: FmaPeaks,
    /// FMA throughput with every pool thread running the probe at once, GFLOP/s (summed): the
    /// keys [`FMA_ALL_THREADS_KEYS`].
    #[serde(flatten, with = "fma_all_threads_keys")]
    pub fma_peak_all_threads: FmaPeaks,
    /// STREAM triad bandwidth on the pool, GB/s (24 bytes per element, no write-allocate).
    pub triad_gbps: f64,
    /// Size of each of the three triad arrays, bytes.
    pub triad_bytes_per_array: usize,
}

/// FMA throughput, GFLOP/s, of both vector widths in both precisions, measured one way: on one
/// core or on every pool thread at once. [`Ceilings`] holds it twice, each figure under a flat
/// JSON key of its own (`fma_peak_<dtype>[_avx512]_gflops_<per_core|all_threads>`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FmaPeaks {
    /// 256-bit vectors (f32x8), f32.
    pub f32: f64,
    /// 256-bit vectors (f64x4), f64.
    pub f64: f64,
    /// 512-bit vectors (AVX-512, 16 x f32), f32; `None` without avx512f.
    pub f32_avx512: Option<f64>,
    /// 512-bit vectors (AVX-512, 8 x f64), f64; `None` without avx512f.
    pub f64_avx512: Option<f64>,
}

/// The JSON keys of [`Ceilings::fma_peak_per_core`], in the order of [`FmaPeaks`]' fields.
pub const FMA_PER_CORE_KEYS: [&str; 4] = [
    "fma_peak_f32_gflops_per_core",
    "fma_peak_f64_gflops_per_core",
    "fma_peak_f32_avx512_gflops_per_core",
    "fma_peak_f64_avx512_gflops_per_core",
];

/// The JSON keys of [`Ceilings::fma_peak_all_threads`], in the order of [`FmaPeaks`]' fields.
pub const FMA_ALL_THREADS_KEYS: [&str; 4] = [
    "fma_peak_f32_gflops_all_threads",
    "fma_peak_f64_gflops_all_threads",
    "fma_peak_f32_avx512_gflops_all_threads",
    "fma_peak_f64_avx512_gflops_all_threads",
];

impl FmaPeaks {
    /// The four probes, f32 then f64 at 256 bits, then at 512 bits, each run for `time` by
    /// `measure` (on this thread, or on every thread at once).
    fn measure(
        time: Duration,
        measure: impl Fn(&(dyn Fn() -> Option<f64> + Sync)) -> Option<f64>,
    ) -> FmaPeaks {
        FmaPeaks {
            f32: measure(&|| Some(probe::fma_peak_gflops_f32(time))).unwrap_or(0.0),
            f64: measure(&|| Some(probe::fma_peak_gflops_f64(time))).unwrap_or(0.0),
            f32_avx512: measure(&|| probe::fma_peak_gflops_f32_avx512(time)),
            f64_avx512: measure(&|| probe::fma_peak_gflops_f64_avx512(time)),
        }
    }

    /// The (f32, f64) peaks of one vector width: the 512-bit ones when `avx512` and measured,
    /// else the 256-bit ones. A GEMM is bounded by its kernels' width (`BENIGN_GEMM_KERNEL=avx2`
    /// on an AVX-512 CPU runs the 256-bit ones).
    pub fn of_width(&self, avx512: bool) -> (f64, f64) {
        let pick = |wide: Option<f64>, narrow: f64| wide.filter(|_| avx512).unwrap_or(narrow);
        (
            pick(self.f32_avx512, self.f32),
            pick(self.f64_avx512, self.f64),
        )
    }

    /// The (f32, f64) pairs of the two widths, named: what [`machine_warnings`] compares.
    fn by_width(&self) -> [(&'static str, Option<f64>, Option<f64>); 2] {
        [
            ("256-bit", Some(self.f32), Some(self.f64)),
            ("512-bit", self.f32_avx512, self.f64_avx512),
        ]
    }

    /// Writes the four figures as map entries under `keys` (flattened into the enclosing
    /// object).
    fn serialize_under<S: serde::Serializer>(
        &self,
        keys: &[&'static str; 4],
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(keys.len()))?;
        map.serialize_entry(keys[0], &self.f32)?;
        map.serialize_entry(keys[1], &self.f64)?;
        map.serialize_entry(keys[2], &self.f32_avx512)?;
        map.serialize_entry(keys[3], &self.f64_avx512)?;
        map.end()
    }

    /// Reads the four figures from the entries under `keys`; other entries are left to the
    /// enclosing object. A missing 512-bit figure is `None`, a missing 256-bit one an error.
    fn deserialize_under<'de, D: serde::Deserializer<'de>>(
        keys: &'static [&'static str; 4],
        deserializer: D,
    ) -> std::result::Result<FmaPeaks, D::Error> {
        struct Entries(&'static [&'static str; 4]);
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = FmaPeaks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "the FMA peaks {}", self.0.join(", "))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FmaPeaks, A::Error> {
                let mut values = [None; 4];
                while let Some(key) = map.next_key::<String>()? {
                    match self.0.iter().position(|k| *k == key) {
                        Some(i) => values[i] = map.next_value::<Option<f64>>()?,
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let required =
                    |i: usize| values[i].ok_or_else(|| serde::de::Error::missing_field(self.0[i]));
                Ok(FmaPeaks {
                    f32: required(0)?,
                    f64: required(1)?,
                    f32_avx512: values[2],
                    f64_avx512: values[3],
                })
            }
        }
        deserializer.deserialize_struct("FmaPeaks", keys, Entries(keys))
    }
}

/// `#[serde(with)]` of [`Ceilings::fma_peak_per_core`].
mod fma_per_core_keys {
    use super::{FmaPeaks, FMA_PER_CORE_KEYS};

    pub fn serialize<S: serde::Serializer>(peaks: &FmaPeaks, s: S) -> Result<S::Ok, S::Error> {
        peaks.serialize_under(&FMA_PER_CORE_KEYS, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FmaPeaks, D::Error> {
        FmaPeaks::deserialize_under(&FMA_PER_CORE_KEYS, d)
    }
}

/// `#[serde(with)]` of [`Ceilings::fma_peak_all_threads`].
mod fma_all_threads_keys {
    use super::{FmaPeaks, FMA_ALL_THREADS_KEYS};

    pub fn serialize<S: serde::Serializer>(peaks: &FmaPeaks, s: S) -> Result<S::Ok, S::Error> {
        peaks.serialize_under(&FMA_ALL_THREADS_KEYS, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FmaPeaks, D::Error> {
        FmaPeaks::deserialize_under(&FMA_ALL_THREADS_KEYS, d)
    }
}

/// Ours against the baseline on one row, by the rule of the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Our slowest typical call (third quartile) beats the baseline's fastest typical call
    /// (first quartile).
    Faster,
    /// The mirror image: the baseline's third quartile beats our first quartile.
    Slower,
    /// The IQRs overlap: the difference is within the spread.
    WithinSpread,
    /// One side was measured by a single call: no spread to compare with.
    SingleCall,
}

impl Comparison {
    /// `faster`, `slower`, `within spread`, `single call`.
    pub fn label(self) -> &'static str {
        match self {
            Comparison::Faster => "faster",
            Comparison::Slower => "slower",
            Comparison::WithinSpread => "within spread",
            Comparison::SingleCall => "single call",
        }
    }
}

/// The dimensions of one measurement. BLAS kernels use BLAS's names: GEMM computes
/// `C[m x n] = A[m x k] B[k x n]`; GEMV and GER work on an `m x n` matrix (no `k`). Row-wise
/// kernels (`softmax_rows`, `layer_norm`, `gelu`) work on `rows` rows of `cols` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dims {
    /// GEMM: `C[m x n] = A[m x k] B[k x n]`.
    Gemm {
        /// Rows of `A` and `C`.
        m: usize,
        /// Columns of `B` and `C`.
        n: usize,
        /// The inner dimension: columns of `A`, rows of `B`.
        k: usize,
    },
    /// GEMV or GER on an `m x n` matrix.
    Matrix {
        /// Rows of the matrix.
        m: usize,
        /// Columns of the matrix.
        n: usize,
    },
    /// A row-wise kernel on a `rows x cols` input.
    Rows {
        /// Rows of the input, each processed on its own.
        rows: usize,
        /// Values per row.
        cols: usize,
    },
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
    /// The shape measured.
    pub dims: Dims,
    /// `f32` or `f64`.
    pub dtype: String,
    /// Threads the kernel ran on.
    pub threads: usize,
    /// The rates and how they compare.
    #[serde(flatten)]
    pub rates: Rates,
    /// The ceiling itself, in the unit of `peak`: GFLOP/s for [`PeakKind::Fma`] (the GEMM
    /// kernel's FMA peak per core of this dtype x `threads`), GB/s for [`PeakKind::Triad`].
    pub ceiling: f64,
    /// The statistics of the timed calls.
    #[serde(flatten)]
    pub times: CallTimes,
    /// Warnings about this row (see the module documentation); empty when there are none.
    pub warnings: Vec<String>,
}

/// The rates of one measurement and how they compare, shared by [`BenchRecord`] and
/// [`BenchRow`] (see the module documentation for what each figure means).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// GFLOP/s, for kernels whose flops are counted.
    pub gflops: Option<f64>,
    /// GB/s (STREAM convention), for memory-bound kernels.
    pub gbps: Option<f64>,
    /// Our GFLOP/s over `matrixmultiply`'s on the same shape (GEMM only).
    pub ratio_vs_matrixmultiply: Option<f64>,
    /// Whether that ratio is outside the spread (GEMM only): `faster`, `slower`,
    /// `within_spread` or `single_call` in JSON, `null` on other rows.
    pub vs_matrixmultiply: Option<Comparison>,
    /// Fraction of the ceiling named by `peak`: `gflops` over the FMA ceiling (peak `fma`) or
    /// `gbps` over the triad bandwidth (peak `triad`).
    pub frac_of_peak: Option<f64>,
    /// Which ceiling `frac_of_peak` refers to: `fma` or `triad`.
    pub peak: PeakKind,
}

/// Call-time statistics of one measurement and the load it ran under, shared by
/// [`BenchRecord`] and [`BenchRow`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallTimes {
    /// Median time of one call, seconds.
    pub median_seconds: f64,
    /// Fastest call, seconds.
    pub min_seconds: f64,
    /// Interquartile range of the call times, seconds (0 for a single call).
    pub iqr_seconds: f64,
    /// Timed calls the figures are taken over.
    pub runs: usize,
    /// The row is its one warm-up call: that call alone overran the time budget (`runs` 1,
    /// no spread).
    pub single_call: bool,
    /// 1-minute load average just before the row was measured; `None` where unreadable.
    pub load_average_1min: Option<f64>,
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
    /// Kernel name, as in [`BenchRecord::kernel`].
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
    /// The rates and how they compare, as in [`BenchRecord::rates`]; computed from
    /// `median_seconds`.
    #[serde(flatten)]
    pub rates: Rates,
    /// The compute ceiling of this line (peak `fma`): `gemm_peak_<dtype>_gflops_per_core x
    /// threads`; `null` for peak `triad`.
    pub ceiling_gflops: Option<f64>,
    /// The memory ceiling of this line (peak `triad`): `triad_gbps`; `null` for peak `fma`.
    pub ceiling_gbps: Option<f64>,
    /// The statistics of the timed calls, as in [`BenchRecord::times`].
    #[serde(flatten)]
    pub times: CallTimes,
    /// This row's warnings (an empty list when none).
    pub warnings: Vec<String>,
    /// The machine: [`MachineFigures`], flat.
    pub cpu_model: String,
    /// Threads of the rayon pool (`--threads`).
    pub pool_threads: usize,
    /// As [`MachineFigures::matrixmultiply_threads`].
    pub matrixmultiply_threads: usize,
    /// As [`MachineFigures::ceilings`].
    #[serde(flatten)]
    pub ceilings: Ceilings,
    /// SIMD features this binary was compiled for, joined with `+` (`sse4.2+avx+avx2+fma`).
    pub compiled_features: String,
    /// As [`MachineFigures::logical_cpus`].
    pub logical_cpus: usize,
    /// The machine's warnings (an empty list when none).
    pub machine_warnings: Vec<String>,
}

impl BenchRow {
    /// The JSON line of `record`, measured on `machine`.
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
        let (ceiling_gflops, ceiling_gbps) = match record.rates.peak {
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
            rates: record.rates.clone(),
            ceiling_gflops,
            ceiling_gbps,
            times: record.times.clone(),
            warnings: record.warnings.clone(),
            cpu_model: machine.cpu_model.clone(),
            pool_threads: machine.threads,
            matrixmultiply_threads: machine.matrixmultiply_threads,
            ceilings: machine.ceilings.clone(),
            compiled_features: machine.compiled_features.join("+"),
            logical_cpus: machine.logical_cpus,
            machine_warnings: machine.warnings.clone(),
        }
    }
}

/// Everything [`run`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine figures every record is read against.
    pub machine: MachineFigures,
    /// One record per kernel, shape and element type, in the order measured.
    pub records: Vec<BenchRecord>,
}

/// What [`run`] reports while it runs, in order: the machine figures once, then every record.
pub enum Progress<'a> {
    /// The machine figures, measured before any kernel.
    Machine(&'a MachineFigures),
    /// One kernel's record, as soon as it is measured.
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
    let mut machine = pool.install(|| {
        let fma_peak_per_core = FmaPeaks::measure(plan.probe_time, |probe| probe());
        let gemm_kernel = benign_kernels::gemm::kernel_variant();
        let (gemm_peak_f32, gemm_peak_f64) =
            fma_peak_per_core.of_width(matches!(gemm_kernel, KernelVariant::Avx512));
        MachineFigures {
            cpu_model: cpu_model(),
            threads,
            matrixmultiply_threads,
            ceilings: Ceilings {
                gemm_kernel: gemm_kernel.name().to_string(),
                gemm_peak_f32_gflops_per_core: gemm_peak_f32,
                gemm_peak_f64_gflops_per_core: gemm_peak_f64,
                fma_peak_per_core,
                fma_peak_all_threads: FmaPeaks::measure(plan.probe_time, |probe| {
                    all_threads(probe)
                }),
                triad_gbps: probe::triad_bandwidth_gbps(
                    plan.triad_bytes_per_array,
                    plan.probe_time * 3,
                ),
                triad_bytes_per_array: plan.triad_bytes_per_array,
            },
            compiled_features: crate::cpu::compiled_features()
                .into_iter()
                .map(String::from)
                .collect(),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_1min: load_average_1min(),
            warnings: Vec::new(),
        }
    });
    machine.warnings = machine_warnings(&machine);
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

/// `probe` run on every thread of the current pool at once, summed; `None` if it is `None`
/// anywhere (the probe does not apply to this CPU).
fn all_threads(probe: impl Fn() -> Option<f64> + Sync) -> Option<f64> {
    rayon::broadcast(|_| probe()).into_iter().sum()
}

/// The element types the report runs, with their `matrixmultiply` baseline and peak.
trait Element: Float {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[Self], b: &[Self], c: &mut [Self]);
    /// This element type's figure of an (f32, f64) pair of peaks.
    fn of_pair(peaks: (f64, f64)) -> f64;
}

impl Ceilings {
    /// The (f32, f64) FMA peaks per core of the GEMM kernel's vector width.
    fn gemm_peaks_per_core(&self) -> (f64, f64) {
        (
            self.gemm_peak_f32_gflops_per_core,
            self.gemm_peak_f64_gflops_per_core,
        )
    }

    /// The (f32, f64) FMA peaks of the GEMM kernel's vector width with every pool thread
    /// probing at once.
    fn gemm_peaks_all_threads(&self) -> (f64, f64) {
        self.fma_peak_all_threads
            .of_width(self.gemm_kernel == KernelVariant::Avx512.name())
    }
}

impl Element for f32 {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        baseline::matrixmultiply_sgemm(m, n, k, a, b, c);
    }
    fn of_pair(peaks: (f64, f64)) -> f64 {
        peaks.0
    }
}

impl Element for f64 {
    fn baseline_gemm(m: usize, n: usize, k: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
        baseline::matrixmultiply_dgemm(m, n, k, a, b, c);
    }
    fn of_pair(peaks: (f64, f64)) -> f64 {
        peaks.1
    }
}

struct Context<'a> {
    machine: &'a MachineFigures,
    budget: Duration,
    pool: &'a rayon::ThreadPool,
}

impl Context<'_> {
    /// [`time_rounds`] of `sides` inside the report's pool, with the load average read just
    /// before.
    fn time_interleaved(&self, sides: &mut [&mut (dyn FnMut() + Send)]) -> Vec<Timing> {
        let load = load_average_1min();
        let mut timings = self.pool.install(|| time_rounds(self.budget, sides));
        for timing in &mut timings {
            timing.load_average_1min = load;
        }
        timings
    }

    /// [`Context::time_interleaved`] of one side.
    fn time(&self, mut f: impl FnMut() + Send) -> Timing {
        self.time_interleaved(&mut [&mut f]).remove(0)
    }

    /// The record of a memory-bound kernel run on the pool's threads: `bytes` moved per call
    /// (its rate is measured against the triad bandwidth) and, where they are counted, `flops`.
    fn memory_bound_record<T: Element>(
        &self,
        kernel: &str,
        dims: Dims,
        timing: Timing,
        flops: Option<f64>,
        bytes: f64,
    ) -> BenchRecord {
        let work = Work {
            flops,
            bytes: Some(bytes),
            peak: PeakKind::Triad,
        };
        self.record::<T>(kernel, dims, self.machine.threads, timing, work)
    }

    /// A record from a timing, with the rates and fractions derived from the work's counts.
    fn record<T: Element>(
        &self,
        kernel: &str,
        dims: Dims,
        threads: usize,
        timing: Timing,
        work: Work,
    ) -> BenchRecord {
        let Work { flops, bytes, peak } = work;
        let rate = |count: Option<f64>| count.map(|c| c / timing.median_seconds / 1e9);
        let gflops = rate(flops);
        let gbps = rate(bytes);
        let (ceiling, rate) = match peak {
            PeakKind::Fma => (
                T::of_pair(self.machine.ceilings.gemm_peaks_per_core()) * threads as f64,
                gflops,
            ),
            PeakKind::Triad => (self.machine.ceilings.triad_gbps, gbps),
        };
        let mut warnings: Vec<String> =
            load_warning(timing.load_average_1min, self.machine.logical_cpus)
                .into_iter()
                .collect();
        if let (PeakKind::Fma, Some(gflops)) = (peak, gflops) {
            // The all-threads probe ran on the pool's threads; a different count (matrixmultiply
            // capped at 4) has only the per-core ceiling to go by.
            let all_threads_peak = (threads > 1 && threads == self.machine.threads)
                .then(|| T::of_pair(self.machine.ceilings.gemm_peaks_all_threads()));
            warnings.extend(over_peak_warning(gflops, ceiling, all_threads_peak));
        }
        BenchRecord {
            kernel: kernel.to_string(),
            dims,
            dtype: T::NAME.to_string(),
            threads,
            rates: Rates {
                gflops,
                gbps,
                ratio_vs_matrixmultiply: None,
                vs_matrixmultiply: None,
                frac_of_peak: rate.map(|r| r / ceiling).filter(|f| f.is_finite()),
                peak,
            },
            ceiling,
            times: CallTimes {
                median_seconds: timing.median_seconds,
                min_seconds: timing.min_seconds,
                iqr_seconds: timing.q3_seconds - timing.q1_seconds,
                runs: timing.runs,
                single_call: timing.single_call,
                load_average_1min: timing.load_average_1min,
            },
            warnings,
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
        let work = Work {
            flops: Some(2.0 * (m * n * k) as f64),
            bytes: None,
            peak: PeakKind::Fma,
        };
        let dims = Dims::Gemm { m, n, k };
        let mut ours = || {
            benign_kernels::gemm(
                T::ONE,
                MatRef::new(black_box(&a), m, k),
                MatRef::new(black_box(&b), k, n),
                T::ZERO,
                MatMut::new(black_box(&mut c), m, n),
            )
        };
        // Each side writes its own C: both closures live through the rounds.
        let mut c_theirs = vec![T::ZERO; m * n];
        let mut theirs = || {
            T::baseline_gemm(
                m,
                n,
                k,
                black_box(&a),
                black_box(&b),
                black_box(&mut c_theirs),
            )
        };
        let [ours, theirs]: [Timing; 2] = ctx
            .time_interleaved(&mut [&mut ours, &mut theirs])
            .try_into()
            .expect("two sides, two timings");
        let mut record = ctx.record::<T>("gemm", dims, ctx.machine.threads, ours, work);
        let baseline = ctx.record::<T>(
            "matrixmultiply::gemm",
            dims,
            ctx.machine.matrixmultiply_threads,
            theirs,
            work,
        );
        record.rates.ratio_vs_matrixmultiply = match (record.rates.gflops, baseline.rates.gflops) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
            _ => None,
        };
        record.rates.vs_matrixmultiply = Some(compare(&ours, &theirs));
        emit(record);
        emit(baseline);
    }
}

/// GEMV (both orientations), GER, row softmax, layer norm and GELU.
fn rowwise_records<T: Element>(ctx: &Context, plan: &Plan, emit: &mut impl FnMut(BenchRecord)) {
    let size = std::mem::size_of::<T>() as f64;
    let dims: &[usize] = if plan.quick { &[2000] } else { &[2000, 8192] };
    for &d in dims {
        let a = filled::<T>(d * d, 3);
        let x = filled::<T>(d, 4);
        let mut y = vec![T::ZERO; d];
        let dims = Dims::Matrix { m: d, n: d };
        let flops = Some(2.0 * (d * d) as f64);
        // Matrix read once, x read once, y written once (beta = 0 never reads y).
        let gemv_bytes = ((d * d + 2 * d) as f64) * size;
        for (name, ta) in [("gemv_n", Transpose::No), ("gemv_t", Transpose::Yes)] {
            let timing = ctx.time(|| {
                benign_kernels::gemv(
                    T::ONE,
                    MatRef::new(black_box(&a), d, d).op(ta),
                    black_box(&x),
                    T::ZERO,
                    black_box(&mut y),
                )
            });
            emit(ctx.memory_bound_record::<T>(name, dims, timing, flops, gemv_bytes));
        }
        // A read and written once, x and y read once. A small alpha keeps A bounded over the
        // repetitions.
        let mut a = a;
        let alpha = T::from_f64(1e-6);
        let timing = ctx.time(|| {
            benign_kernels::ger(
                alpha,
                black_box(&x),
                black_box(&y),
                MatMut::new(black_box(&mut a), d, d),
            )
        });
        let ger_bytes = ((2 * d * d + 2 * d) as f64) * size;
        emit(ctx.memory_bound_record::<T>("ger", dims, timing, flops, ger_bytes));
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
        let bytes = 2.0 * (rows * cols) as f64 * size;
        let dims = Dims::Rows { rows, cols };
        emit(ctx.memory_bound_record::<T>("softmax_rows", dims, timing, None, bytes));
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
    let bytes = (2 * rows * cols + 2 * cols + 2 * rows) as f64 * size;
    let dims = Dims::Rows { rows, cols };
    emit(ctx.memory_bound_record::<T>("layer_norm", dims, timing, None, bytes));
    let timing = ctx.time(|| benign_kernels::gelu(black_box(&x), black_box(&mut y)));
    let bytes = 2.0 * (rows * cols) as f64 * size;
    emit(ctx.memory_bound_record::<T>("gelu", dims, timing, None, bytes));
}

/// What one call of a measured kernel does: floating-point operations and bytes moved (where
/// they are the measure), and the machine ceiling its rate is compared with.
#[derive(Clone, Copy)]
struct Work {
    flops: Option<f64>,
    bytes: Option<f64>,
    peak: PeakKind,
}

/// Call-time statistics of one side of a measurement, seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    median_seconds: f64,
    min_seconds: f64,
    q1_seconds: f64,
    q3_seconds: f64,
    runs: usize,
    /// The warm-up call is the measurement (see [`time_rounds`]).
    single_call: bool,
    /// 1-minute load average just before the measurement.
    load_average_1min: Option<f64>,
}

/// Shortest time a call is reported as: keeps rates finite for calls below the clock's
/// resolution.
const MIN_SECONDS: f64 = 1e-9;

impl Timing {
    /// The statistics of `times` (at least one).
    fn from_times(times: &mut [f64]) -> Timing {
        assert!(!times.is_empty(), "a timing needs at least one call");
        times.sort_by(f64::total_cmp);
        let at = |p: f64| quantile(times, p).max(MIN_SECONDS);
        Timing {
            median_seconds: at(0.5),
            min_seconds: at(0.0),
            q1_seconds: at(0.25),
            q3_seconds: at(0.75),
            runs: times.len(),
            single_call: false,
            load_average_1min: None,
        }
    }

    /// One call of `seconds`: no spread.
    fn single_call(seconds: f64) -> Timing {
        Timing {
            single_call: true,
            ..Timing::from_times(&mut [seconds])
        }
    }
}

/// The `p` quantile of ascending `sorted`, interpolated linearly between neighbouring values
/// (numpy's default), so the median of an even count is the mean of the middle two.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let position = p * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// Calls every side once untimed, then times them in rounds (each round calls every side
/// once, starting one side later than the round before) until `budget_per_side x sides` is
/// spent (at least one round, at most 10 000), and returns each side's statistics. If the
/// untimed calls alone overran that budget, they are the measurement (single calls):
/// repeating calls that slow would blow the report's time.
fn time_rounds(budget_per_side: Duration, sides: &mut [&mut (dyn FnMut() + Send)]) -> Vec<Timing> {
    const MAX_ROUNDS: usize = 10_000;
    let budget = budget_per_side * sides.len() as u32;
    let warm_ups: Vec<f64> = sides
        .iter_mut()
        .map(|side| {
            let start = Instant::now();
            side();
            start.elapsed().as_secs_f64()
        })
        .collect();
    if warm_ups.iter().sum::<f64>() >= budget.as_secs_f64() {
        return warm_ups.into_iter().map(Timing::single_call).collect();
    }
    let mut times = vec![Vec::new(); sides.len()];
    let start = Instant::now();
    let mut round = 0;
    while round == 0 || (start.elapsed() < budget && round < MAX_ROUNDS) {
        for offset in 0..sides.len() {
            let side = (round + offset) % sides.len();
            let call = Instant::now();
            (sides[side])();
            times[side].push(call.elapsed().as_secs_f64());
        }
        round += 1;
    }
    times
        .iter_mut()
        .map(|side_times| Timing::from_times(side_times))
        .collect()
}

/// Ours against the baseline by the rule of the module documentation: faster or slower only
/// when the IQRs do not overlap, the same test in both directions.
fn compare(ours: &Timing, theirs: &Timing) -> Comparison {
    if ours.single_call || theirs.single_call {
        Comparison::SingleCall
    } else if ours.q3_seconds < theirs.q1_seconds {
        Comparison::Faster
    } else if theirs.q3_seconds < ours.q1_seconds {
        Comparison::Slower
    } else {
        Comparison::WithinSpread
    }
}

/// A warning when a compute-bound rate exceeds its ceiling (FMA peak per core x threads) or
/// the FMA peak measured with all its threads at once: no kernel beats the hardware, so the
/// timing or a probe is wrong.
fn over_peak_warning(gflops: f64, ceiling: f64, all_threads_peak: Option<f64>) -> Option<String> {
    if gflops > ceiling {
        return Some(format!(
            "{gflops:.2} GFLOP/s is {:.2} of its FMA ceiling ({ceiling:.1} GFLOP/s): impossible, \
             the timing or the peak probe is wrong",
            gflops / ceiling
        ));
    }
    match all_threads_peak {
        Some(peak) if gflops > peak => Some(format!(
            "{gflops:.2} GFLOP/s exceeds the FMA peak measured on all its threads at once \
             ({peak:.1} GFLOP/s): the timing or that probe is wrong"
        )),
        _ => None,
    }
}

/// A warning when the 1-minute load average exceeds the logical CPUs: other work competed for
/// the cores, so every figure may be low.
pub fn load_warning(load_average_1min: Option<f64>, logical_cpus: usize) -> Option<String> {
    let load = load_average_1min?;
    (load > logical_cpus as f64).then(|| {
        format!(
            "1-minute load average {load:.2} exceeds the {logical_cpus} logical CPUs: other work \
             competed for the cores, figures may be low"
        )
    })
}

/// Warnings about the machine figures: any f64 FMA peak above the f32 peak of the same vector
/// width and thread count (half the lanes cannot be faster), and the load at the start.
fn machine_warnings(machine: &MachineFigures) -> Vec<String> {
    let ceilings = &machine.ceilings;
    let per_core = ceilings.fma_peak_per_core.by_width();
    let all_threads = ceilings.fma_peak_all_threads.by_width();
    // Each width on one core, then on all threads.
    let pairs = per_core
        .into_iter()
        .zip(all_threads)
        .flat_map(|(one, all)| {
            [(one, "one core"), (all, "all threads")].map(|((width, f32_peak, f64_peak), scope)| {
                (format!("{width}, {scope}"), f32_peak, f64_peak)
            })
        });
    let mut warnings = Vec::new();
    for (what, f32_peak, f64_peak) in pairs {
        if let (Some(f32_peak), Some(f64_peak)) = (f32_peak, f64_peak) {
            if f64_peak > f32_peak {
                warnings.push(format!(
                    "the f64 FMA peak ({what}: {f64_peak:.1} GFLOP/s) exceeds the f32 one \
                     ({f32_peak:.1}): half the lanes cannot be faster, a probe was disturbed"
                ));
            }
        }
    }
    warnings.extend(load_warning(
        machine.load_average_1min,
        machine.logical_cpus,
    ));
    warnings
}

/// The 1-minute load average from /proc/loadavg (Linux), or `None`.
fn load_average_1min() -> Option<f64> {
    parse_load_average(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of /proc/loadavg's text (`0.52 0.58 0.59 1/389 12345`).
fn parse_load_average(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
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

    /// The library refuses what `--threads` refuses: zero threads, and beyond 1024 nothing
    /// starts.
    #[test]
    fn thread_counts_out_of_range_are_invalid() {
        for (threads, named) in [(0, "threads"), (1025, "1..=1024")] {
            let options = BenchOptions {
                threads: Some(threads),
                quick: true,
            };
            let err = run(&options, |_| panic!("measured on {threads} threads")).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(named), "{threads}: {err}");
        }
    }

    #[test]
    fn gemm_peak_has_the_kernel_width() {
        let measured = FmaPeaks {
            f32: 100.0,
            f64: 50.0,
            f32_avx512: Some(170.0),
            f64_avx512: Some(85.0),
        };
        assert_eq!(measured.of_width(true), (170.0, 85.0));
        assert_eq!(measured.of_width(false), (100.0, 50.0));
        let without_avx512 = FmaPeaks {
            f32_avx512: None,
            f64_avx512: None,
            ..measured
        };
        assert_eq!(without_avx512.of_width(true), (100.0, 50.0));
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
        let machine = &report.machine.ceilings;
        let variant = benign_kernels::gemm::kernel_variant();
        assert_eq!(machine.gemm_kernel, variant.name());
        let has_avx512 = KernelVariant::Avx512.is_available();
        assert_eq!(machine.fma_peak_per_core.f32_avx512.is_some(), has_avx512);
        assert_eq!(
            machine.fma_peak_all_threads.f64_avx512.is_some(),
            has_avx512
        );
        let expected = machine
            .fma_peak_per_core
            .of_width(matches!(variant, KernelVariant::Avx512));
        assert_eq!(machine.gemm_peaks_per_core(), expected);
        let gemm = report
            .records
            .iter()
            .find(|r| r.kernel == "gemm" && r.dtype == "f32")
            .unwrap();
        let frac = gemm.rates.frac_of_peak.unwrap();
        let want = gemm.rates.gflops.unwrap() / machine.gemm_peak_f32_gflops_per_core;
        assert!((frac - want).abs() <= 1e-12 * want, "{frac} vs {want}");
        assert_eq!(gemm.ceiling, machine.gemm_peak_f32_gflops_per_core);
        assert!(gemm.rates.vs_matrixmultiply.is_some());
        assert!(gemm.times.runs >= 1 && gemm.times.min_seconds <= gemm.times.median_seconds);
        assert_eq!(
            gemm.times.single_call,
            gemm.times.runs == 1 && gemm.times.iqr_seconds == 0.0
        );
        let triad = report.records.iter().find(|r| r.kernel == "gelu").unwrap();
        assert_eq!(triad.ceiling, machine.triad_gbps);
    }

    fn machine() -> MachineFigures {
        MachineFigures {
            cpu_model: "Test CPU".into(),
            threads: 2,
            matrixmultiply_threads: 2,
            ceilings: Ceilings {
                gemm_kernel: "avx2".into(),
                gemm_peak_f32_gflops_per_core: 64.0,
                gemm_peak_f64_gflops_per_core: 32.0,
                fma_peak_per_core: FmaPeaks {
                    f32: 64.0,
                    f64: 32.0,
                    f32_avx512: None,
                    f64_avx512: None,
                },
                fma_peak_all_threads: FmaPeaks {
                    f32: 120.0,
                    f64: 60.0,
                    f32_avx512: None,
                    f64_avx512: None,
                },
                triad_gbps: 10.0,
                triad_bytes_per_array: 64 << 20,
            },
            compiled_features: vec!["avx2".into(), "fma".into()],
            logical_cpus: 2,
            load_average_1min: Some(0.5),
            warnings: Vec::new(),
        }
    }

    fn record(kernel: &str, dims: Dims, peak: PeakKind, ceiling: f64) -> BenchRecord {
        BenchRecord {
            kernel: kernel.into(),
            dims,
            dtype: "f32".into(),
            threads: 2,
            rates: Rates {
                gflops: Some(64.0),
                gbps: (peak == PeakKind::Triad).then_some(5.0),
                ratio_vs_matrixmultiply: None,
                vs_matrixmultiply: None,
                frac_of_peak: Some(0.5),
                peak,
            },
            ceiling,
            times: CallTimes {
                median_seconds: 1e-3,
                min_seconds: 0.9e-3,
                iqr_seconds: 0.1e-3,
                runs: 10,
                single_call: false,
                load_average_1min: Some(0.5),
            },
            warnings: Vec::new(),
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
            assert_eq!(row["machine_warnings"], serde_json::json!([]));
            assert_eq!(row["warnings"], serde_json::json!([]));
            assert_eq!(row["single_call"], false);
            assert_eq!(row["runs"], 10);
            assert!(row["min_seconds"].is_f64() && row["iqr_seconds"].is_f64());
            // The row reads back.
            let back: BenchRow = serde_json::from_value(row.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), *row);
        }
    }

    /// The keys of a JSON object in the order written (`serde_json::Value` sorts them).
    struct KeysInOrder(Vec<String>);

    impl<'de> Deserialize<'de> for KeysInOrder {
        fn deserialize<D: serde::Deserializer<'de>>(
            deserializer: D,
        ) -> std::result::Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = KeysInOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<KeysInOrder, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(KeysInOrder(keys))
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }

    /// A `--json` line byte for byte, the machine figures and a record key for key (the
    /// flattened groups are written in place), and each reads back to itself.
    #[test]
    fn json_is_flat_with_keys_in_their_documented_order() {
        let machine = machine();
        let record = record(
            "gemm",
            Dims::Gemm { m: 1, n: 2, k: 3 },
            PeakKind::Fma,
            128.0,
        );
        let row = BenchRow::new(&machine, &record);
        let row_json = serde_json::to_string(&row).unwrap();
        assert_eq!(
            row_json,
            concat!(
                r#"{"kernel":"gemm","dtype":"f32","m":1,"n":2,"k":3,"rows":null,"#,
                r#""cols":null,"shape":"1x2x3","threads":2,"gflops":64.0,"gbps":null,"#,
                r#""ratio_vs_matrixmultiply":null,"vs_matrixmultiply":null,"#,
                r#""frac_of_peak":0.5,"peak":"fma","ceiling_gflops":128.0,"#,
                r#""ceiling_gbps":null,"median_seconds":0.001,"min_seconds":0.0009,"#,
                r#""iqr_seconds":0.0001,"runs":10,"single_call":false,"#,
                r#""load_average_1min":0.5,"warnings":[],"cpu_model":"Test CPU","#,
                r#""pool_threads":2,"matrixmultiply_threads":2,"gemm_kernel":"avx2","#,
                r#""gemm_peak_f32_gflops_per_core":64.0,"#,
                r#""gemm_peak_f64_gflops_per_core":32.0,"#,
                r#""fma_peak_f32_gflops_per_core":64.0,"#,
                r#""fma_peak_f64_gflops_per_core":32.0,"#,
                r#""fma_peak_f32_avx512_gflops_per_core":null,"#,
                r#""fma_peak_f64_avx512_gflops_per_core":null,"#,
                r#""fma_peak_f32_gflops_all_threads":120.0,"#,
                r#""fma_peak_f64_gflops_all_threads":60.0,"#,
                r#""fma_peak_f32_avx512_gflops_all_threads":null,"#,
                r#""fma_peak_f64_avx512_gflops_all_threads":null,"triad_gbps":10.0,"#,
                r#""triad_bytes_per_array":67108864,"compiled_features":"avx2+fma","#,
                r#""logical_cpus":2,"machine_warnings":[]}"#,
            )
        );
        // The machine figures and a record are not printed, but keep the flattened groups in
        // place too: their keys in the order of the line's, with their own around them.
        let keys = |json: &str| serde_json::from_str::<KeysInOrder>(json).unwrap().0;
        let row_keys = keys(&row_json);
        let row_span = |first: &str, last: &str| {
            let at = |key: &str| row_keys.iter().position(|k| k == key).unwrap();
            row_keys[at(first)..=at(last)].to_vec()
        };
        let machine_json = serde_json::to_string(&machine).unwrap();
        let ceiling_keys = row_span("gemm_kernel", "triad_bytes_per_array");
        assert_eq!(ceiling_keys.len(), 13);
        let machine_keys = [
            &["cpu_model", "threads", "matrixmultiply_threads"].map(String::from)[..],
            &ceiling_keys,
            &[
                "compiled_features",
                "logical_cpus",
                "load_average_1min",
                "warnings",
            ]
            .map(String::from),
        ]
        .concat();
        assert_eq!(keys(&machine_json), machine_keys);
        let record_json = serde_json::to_string(&record).unwrap();
        let record_keys = [
            &["kernel", "dims", "dtype", "threads"].map(String::from)[..],
            &row_span("gflops", "peak"),
            &["ceiling".to_string()],
            &row_span("median_seconds", "warnings"),
        ]
        .concat();
        assert_eq!(keys(&record_json), record_keys);
        let row_back: BenchRow = serde_json::from_str(&row_json).unwrap();
        assert_eq!(row_back, row);
        let machine_back: MachineFigures = serde_json::from_str(&machine_json).unwrap();
        assert_eq!(serde_json::to_string(&machine_back).unwrap(), machine_json);
        let record_back: BenchRecord = serde_json::from_str(&record_json).unwrap();
        assert_eq!(serde_json::to_string(&record_back).unwrap(), record_json);
    }

    #[test]
    fn warm_up_is_untimed_and_slow_calls_run_once() {
        let mut calls = 0;
        let timing = time_rounds(
            Duration::from_millis(5),
            &mut [&mut || {
                calls += 1;
                std::thread::sleep(Duration::from_micros(200));
            }],
        );
        assert_eq!(timing.len(), 1);
        assert_eq!(calls, timing[0].runs + 1, "warm-up call is not timed");
        assert!(!timing[0].single_call);
        assert!(timing[0].median_seconds >= 200e-6, "{timing:?}");
        assert!(timing[0].min_seconds <= timing[0].median_seconds);
        let slow = time_rounds(
            Duration::from_millis(1),
            &mut [&mut || std::thread::sleep(Duration::from_millis(3))],
        );
        assert_eq!(slow[0].runs, 1);
        assert!(slow[0].single_call);
        assert_eq!(slow[0].q1_seconds, slow[0].q3_seconds, "no spread");
        assert!(slow[0].median_seconds >= 3e-3);
    }

    /// Every round calls every side once, and the side that starts a round rotates.
    #[test]
    fn sides_run_in_interleaved_rounds_with_rotating_order() {
        let log = std::sync::Mutex::new(Vec::new());
        let mut first = || log.lock().unwrap().push('a');
        let mut second = || log.lock().unwrap().push('b');
        let timings = time_rounds(Duration::from_millis(2), &mut [&mut first, &mut second]);
        let log = log.into_inner().unwrap();
        assert_eq!(timings.len(), 2);
        assert_eq!(
            timings[0].runs, timings[1].runs,
            "one call per side per round"
        );
        assert_eq!(
            log.len(),
            2 * (timings[0].runs + 1),
            "plus one warm-up each"
        );
        assert_eq!(&log[..2], &['a', 'b'], "warm-ups");
        assert_eq!(
            &log[2..4],
            &['a', 'b'],
            "round 0 starts with the first side"
        );
        if timings[0].runs > 1 {
            assert_eq!(&log[4..6], &['b', 'a'], "round 1 starts with the second");
        }
    }

    #[test]
    fn quartiles_interpolate_and_the_median_of_an_even_count_is_the_middle_mean() {
        let timing = Timing::from_times(&mut [4.0, 1.0, 3.0, 2.0]);
        assert_eq!(timing.median_seconds, 2.5);
        assert_eq!(timing.min_seconds, 1.0);
        assert_eq!(timing.q1_seconds, 1.75);
        assert_eq!(timing.q3_seconds, 3.25);
        assert_eq!(timing.runs, 4);
        let odd = Timing::from_times(&mut [5.0, 1.0, 3.0]);
        assert_eq!(
            (odd.median_seconds, odd.q1_seconds, odd.q3_seconds),
            (3.0, 2.0, 4.0)
        );
    }

    fn spread(q1: f64, q3: f64, single_call: bool) -> Timing {
        Timing {
            median_seconds: 0.5 * (q1 + q3),
            min_seconds: q1,
            q1_seconds: q1,
            q3_seconds: q3,
            runs: if single_call { 1 } else { 9 },
            single_call,
            load_average_1min: None,
        }
    }

    /// Faster and slower by one rule: the IQRs must not overlap, whichever side is ahead.
    #[test]
    fn wins_and_losses_need_separate_spreads() {
        let fast = spread(1.0, 1.1, false);
        let slow = spread(1.2, 1.3, false);
        let overlapping = spread(1.05, 1.25, false);
        assert_eq!(compare(&fast, &slow), Comparison::Faster);
        assert_eq!(compare(&slow, &fast), Comparison::Slower);
        assert_eq!(compare(&fast, &overlapping), Comparison::WithinSpread);
        assert_eq!(compare(&overlapping, &fast), Comparison::WithinSpread);
        assert_eq!(
            compare(&spread(1.0, 1.0, true), &slow),
            Comparison::SingleCall
        );
        assert_eq!(
            compare(&slow, &spread(1.0, 1.0, true)),
            Comparison::SingleCall
        );
    }

    #[test]
    fn rates_above_a_measured_peak_are_flagged() {
        assert_eq!(over_peak_warning(90.0, 100.0, None), None);
        assert_eq!(over_peak_warning(90.0, 200.0, Some(180.0)), None);
        let over_ceiling = over_peak_warning(339.0, 100.0, None).unwrap();
        assert!(
            over_ceiling.contains("3.39 of its FMA ceiling"),
            "{over_ceiling}"
        );
        // Two threads that share one core's FMA units: within 2 x per core, above the
        // all-threads probe.
        let shared = over_peak_warning(150.0, 200.0, Some(100.0)).unwrap();
        assert!(shared.contains("all its threads"), "{shared}");
    }

    #[test]
    fn load_above_the_cpus_is_flagged() {
        assert_eq!(load_warning(Some(2.0), 2), None);
        assert_eq!(load_warning(None, 2), None);
        let busy = load_warning(Some(3.5), 2).unwrap();
        assert!(
            busy.contains("3.50") && busy.contains("2 logical CPUs"),
            "{busy}"
        );
        assert_eq!(
            parse_load_average("0.52 0.58 0.59 1/389 12345\n"),
            Some(0.52)
        );
        assert_eq!(parse_load_average(""), None);
    }

    #[test]
    fn machine_warnings_flag_an_f64_peak_above_f32_and_the_load() {
        assert!(machine_warnings(&machine()).is_empty());
        let mut disturbed = machine();
        disturbed.ceilings.fma_peak_all_threads.f64 = 130.0;
        disturbed.ceilings.fma_peak_per_core.f32_avx512 = Some(100.0);
        disturbed.ceilings.fma_peak_per_core.f64_avx512 = Some(101.0);
        disturbed.load_average_1min = Some(4.0);
        let warnings = machine_warnings(&disturbed);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("256-bit, all threads"), "{warnings:?}");
        assert!(warnings[1].contains("512-bit, one core"), "{warnings:?}");
        assert!(warnings[2].contains("load average"), "{warnings:?}");
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
