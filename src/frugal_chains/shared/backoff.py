"""Back-off for a failing backend: after a failure, skip it for a while instead of waiting on it at every call.

The cache uses it so that a hung or unreachable index (a Redis that accepts connections and never answers) costs
one timeout per window, not one per call. Windows grow while the backend keeps failing (the first window, then
twice the last one, up to a cap); a success ends the outage at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """When to try a failing backend again (thread-safe).

    Args:
        first_s: the first window after a failure, in seconds (0: never skip).
        cap_s: the longest window.
        clock: monotonic seconds (a seam for tests).

    Example:
        >>> now = [0.0]
        >>> b = Backoff(1.0, 4.0, clock=lambda: now[0])
        >>> b.failed(), b.skip()  # the first failure opens a 1 s window
        (True, True)
        >>> now[0] = 1.5
        >>> b.skip()  # the window closed: this caller probes the backend, the others still skip
        False
        >>> b.skip()
        True
        >>> b.failed()  # the probe failed: a 2 s window
        False
        >>> now[0] = 3.0
        >>> b.skip()
        True
        >>> now[0] = 3.6
        >>> b.skip(), b.ok(), b.skip()  # the probe succeeded: the outage is over
        (False, True, False)
    """

    def __init__(self, first_s: float, cap_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.first_s = float(first_s)
        self.cap_s = max(float(cap_s), self.first_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._down = False
        self._probing = False
        self._window = 0.0
        self._until = 0.0

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down

    def skip(self) -> bool:
        """True while a window is open: do not call the backend. When it has closed, the first caller gets False
        (it probes the backend) and the others keep skipping until the probe reports :meth:`failed` or
        :meth:`ok`."""
        if not self._down:
            return False
        with self._lock:
            if not self._down:
                return False
            now = self.clock()
            if now < self._until:
                return True
            self._probing = True
            self._until = now + self._window  # the others skip while the probe runs
            return False

    def failed(self) -> bool:
        """Record a failure; True when it starts an outage. A failed probe doubles the window (up to the cap);
        the failures of calls that were already waiting when the outage began do not."""
        with self._lock:
            first = not self._down
            if first:
                self._window = self.first_s
            elif self._probing:
                self._window = min(self.cap_s, max(self._window * 2, self.first_s))
            else:
                return False
            self._down = True
            self._probing = False
            self._until = self.clock() + self._window
            return first

    def ok(self) -> bool:
        """Record a success; True when it ends an outage."""
        if not self._down:
            return False
        with self._lock:
            was = self._down
            self._down = self._probing = False
            self._window = self._until = 0.0
            return was
