//! Pieces shared by the single-thread criterion benches (`blas2`, `rowwise`): a CPU-time
//! measurement, a one-thread pool and deterministic inputs. Included with `mod common;`
//! (Cargo does not treat `benches/common/mod.rs` as a bench target of its own).

use benign_kernels::Float;

/// Criterion measurement: CPU time of the measuring thread (`/proc/thread-self/schedstat`,
/// nanoseconds on CPU), so time the thread spends descheduled on a busy shared machine is not
/// counted. Memory bandwidth is still shared with whatever else runs; compare ratios from one
/// run. Falls back to wall time where the file does not exist.
pub struct ThreadCpuTime;

static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;

fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

impl criterion::measurement::Measurement for ThreadCpuTime {
    type Intermediate = (Option<u64>, std::time::Instant);
    type Value = std::time::Duration;
    fn start(&self) -> Self::Intermediate {
        (thread_cpu_ns(), std::time::Instant::now())
    }
    fn end(&self, (cpu, wall): Self::Intermediate) -> Self::Value {
        match (cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => std::time::Duration::from_nanos(b - a),
            _ => wall.elapsed(),
        }
    }
    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        *v1 + *v2
    }
    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }
    fn to_f64(&self, val: &Self::Value) -> f64 {
        val.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        criterion::measurement::Measurement::formatter(&WALL)
    }
}

pub fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

/// A benchmark group of 10 samples (the kernels run long enough that more add only time).
pub fn group<'a>(
    c: &'a mut criterion::Criterion<ThreadCpuTime>,
    name: impl Into<String>,
) -> criterion::BenchmarkGroup<'a, ThreadCpuTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g
}

/// Measures `routine` as `function/parameter` in `group`, inside `pool` (a [`one_thread`] pool,
/// so that the kernels' parallel paths run on the measuring thread whose CPU time is counted).
pub fn bench_in_pool<R>(
    group: &mut criterion::BenchmarkGroup<'_, ThreadCpuTime>,
    pool: &rayon::ThreadPool,
    function: &str,
    parameter: impl std::fmt::Display,
    mut routine: impl FnMut() -> R + Send,
) {
    let id = criterion::BenchmarkId::new(function, parameter);
    group.bench_function(id, |b| pool.install(|| b.iter(&mut routine)));
}

/// Cheap deterministic fill (an LCG, so benches need no RNG crate): values uniform in
/// [-spread, spread).
pub fn filled<T: Float>(len: usize, seed: u64, spread: f64) -> Vec<T> {
    // One step of Knuth's MMIX linear congruential generator.
    let next = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut s = next(seed);
    (0..len)
        .map(|_| {
            s = next(s);
            T::from_f64((((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * spread)
        })
        .collect()
}
