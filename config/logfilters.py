"""Logging filters installed by ``LOGGING`` in :mod:`config.settings`.

:class:`RateLimitFilter` sits on the ``celery.beat`` logger. While Redis is
down, Celery's scheduler logs ``Message Error: ...`` with a stack and a
traceback for every firing of every schedule (hundreds of lines a minute).
The filter lets one line per problem through per window, without the
traceback, and says how many like it were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitFilter(logging.Filter):
    """At most one record per problem per ``seconds``, as one line; the rest are counted and dropped.

    A problem is the record's logger, message template and exception type
    (``"Message Error: %s\\n%s"`` with a ``ConnectionError``), so a second,
    different failure is still reported at once. Records below
    ``min_level`` (the scheduler's "Sending due task" INFO lines) pass
    untouched.

    A record let through is reduced to the first line of its message, with the
    exception's type and text but not its traceback or stack, followed by
    ``(N similar lines suppressed in the last 60s)`` when some were dropped
    since the previous one.
    """

    def __init__(self, seconds: float = 60.0, min_level: int | str = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self.min_level = logging.getLevelNamesMapping()[min_level] if isinstance(min_level, str) else int(min_level)
        self._clock = clock
        self._lock = threading.Lock()
        #: problem -> (when its last line was let through, lines dropped since)
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or getattr(record, "rate_limited", False):
            # (Django and then Celery both apply LOGGING, so a logger can hold two of these.)
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, str(record.msg), exc_type)
        now = self._clock()
        with self._lock:
            last, dropped = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.seconds:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
        self._to_one_line(record, dropped)
        record.rate_limited = True
        return True

    def _to_one_line(self, record: logging.LogRecord, dropped: int) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it for the handler to report
            return
        line = message.split("\n", 1)[0].rstrip()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            described = f"{type(exc).__name__}: {exc}".split("\n", 1)[0]
            if str(exc).split("\n", 1)[0] not in line:
                line = f"{line} ({described})"
        if dropped:
            line += f" ({dropped} similar line{'s' if dropped != 1 else ''} suppressed in the last {self.seconds:g}s)"
        record.msg, record.args = line, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
