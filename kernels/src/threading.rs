//! Threading policy shared by the kernels.
//!
//! Kernels run on the current rayon pool (callers choose its size, e.g. with
//! `rayon::ThreadPoolBuilder::new().num_threads(n).build()?.install(..)`). Work is split into
//! chunks whose boundaries depend only on the problem shape, never on the pool size, so every
//! output element has the same reduction order whatever the thread count.

/// Problems with fewer multiply-adds than this stay on the calling thread: rayon's per-call
/// overhead (a few microseconds) dominates below it.
pub const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// Number of threads of the current rayon pool.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}
