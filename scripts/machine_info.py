"""Machine facts the measurement scripts record beside their figures (imported, not run)."""

import os


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average():
    """1-minute load average, or None where the system has none: a busy machine lowers every
    figure."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
