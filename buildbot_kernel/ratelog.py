"""A log line per cause and interval, however often the cause repeats.

Refused requests come from outside: a misconfigured machine or a hostile client can repeat one every
millisecond, and one log line (or one state-file write) each would let them fill the disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimitedLog:
    """``warning(cause, msg, *args)`` logs at most once per ``interval`` seconds per ``cause`` and says how
    many were left out in between.  At most ``max_causes`` causes are remembered (a flood of distinct
    ones cannot grow memory).  ``emit`` takes the finished line: a stdlib logger's ``warning`` or
    Twisted's ``log.msg``, whichever log the caller's admins read."""

    def __init__(self, emit: Callable[[str], object], interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_causes: int = 1024):
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self.max_causes = max_causes
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (last logged at, suppressed since)

    def admit(self, cause: str) -> int | None:
        """None if ``cause`` was logged less than ``interval`` ago (counted), else how many were left out
        since its last line (the caller logs now)."""
        now = self.clock()
        at, suppressed = self._last.get(cause, (None, 0))
        if at is not None and now - at < self.interval:
            self._last[cause] = (at, suppressed + 1)
            return None
        if cause not in self._last and len(self._last) >= self.max_causes:
            self._last.pop(next(iter(self._last)))
        self._last[cause] = (now, 0)
        return suppressed

    def warning(self, cause: str, msg: str, *args) -> bool:
        """True if the line was logged."""
        suppressed = self.admit(cause)
        if suppressed is None:
            return False
        line = msg % args if args else msg
        if suppressed:
            line += f" ({suppressed} more like it in the last {self.interval:.0f}s not logged)"
        self.emit(line)
        return True
