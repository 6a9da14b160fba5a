"""Where the public benchmark data lives (``../shared/data``), for tests that read it.

Order: ``$FRUGAL_CHAINS_DATA``; ``../shared/data`` next to this checkout; for a clone (CI runs a clean clone
somewhere else), ``../shared/data`` next to the repository it was cloned from (``git remote get-url origin``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _origin_root() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "-C", str(ROOT), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://"))
    return path if url and path.is_dir() else None


def shared_data() -> Path | None:
    """The data directory, or ``None`` when none of the places has it."""
    env = os.environ.get("FRUGAL_CHAINS_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data")
    origin = _origin_root()
    if origin is not None:
        candidates.append(origin.resolve().parent / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), None)
