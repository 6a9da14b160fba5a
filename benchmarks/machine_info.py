"""What machine a benchmark ran on, for its table header and ``--json`` (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine(**versions: str) -> dict[str, Any]:
    """System, Python, the given package versions, CPUs (all and usable) and the load average at start."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        **versions,
        "cpus": os.cpu_count(),
        "nproc": usable,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
