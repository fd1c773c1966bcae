"""Machine facts the measurement scripts record beside their figures (imported, not run)."""

import contextlib
import os
import platform


def _cpuinfo_fields():
    """The first processor's `key: value` lines of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU" where there is none."""
    return _cpuinfo_fields().get("model name", "unknown CPU")


def cpu_family_model():
    """"family F model M" from /proc/cpuinfo (which microarchitecture), or None."""
    fields = _cpuinfo_fields()
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']} model {fields['model']}"
    return None


def kernel_isa():
    """The instruction set `benign`'s kernels run here: AVX-512F where the CPU has it and
    `BENIGN_GEMM_KERNEL` (read by the kernels at their first call) does not ask for the portable
    kernels, else the AVX2 + FMA of the default x86-64-v3 build."""
    flags = set(_cpuinfo_fields().get("flags", "").split())
    requested = os.environ.get("BENIGN_GEMM_KERNEL", "auto")
    if "avx512f" in flags and requested in ("", "auto", "avx512"):
        return "AVX-512F"
    return "AVX2 + FMA"


def machine_description():
    """One phrase naming the machine: model, family / model, logical CPUs, architecture."""
    family_model = cpu_family_model()
    details = ", ".join(
        part for part in (family_model, f"{os.cpu_count()} logical CPUs", platform.machine()) if part
    )
    return f"{cpu_model()} ({details})"


def load_average():
    """1-minute load average, or None where the system has none: a busy machine lowers every
    figure."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def format_loads(loads):
    """Load averages as `1.1, 1.3` (`-` where unknown)."""
    return ", ".join("-" if v is None else f"{v:.1f}" for v in loads)


def pinning_cpu():
    """The CPU that one-thread measurements run on (the first this process may use), or None
    where the platform cannot pin threads."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return min(os.sched_getaffinity(0))


@contextlib.contextmanager
def pinned(threads):
    """Runs the block, and every process it starts, on one CPU ([`pinning_cpu`]) when `threads`
    is 1, so that both sides of a one-thread comparison share it: the vCPUs of a shared VM can
    differ in speed for minutes at a time, and an unpinned process lands on either. Yields that
    CPU, or None (more threads, or no pinning here), and restores the calling thread's CPU set
    afterwards."""
    cpu = pinning_cpu() if threads == 1 else None
    if cpu is None:
        yield None
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)
