"""Rate-limited logging: a flood of one kind of message becomes a burst and a summary line.

A kind is ``record.mip6_kind`` when the caller sets it (``log.warning(..., extra={"mip6_kind":
"bad-bu"})``), else the logger, level and unformatted message template. Within an interval
at most ``burst`` records of a kind pass; the rest are counted, and the next record of that
kind after the interval (or :meth:`LogThrottle.flush`) is preceded by one summary record at
the same level and logger: "N similar messages suppressed in the last 10 s: <last one>".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

MAX_KINDS = 1024
# Set on the summary records this filter emits, so that they pass it.
SUMMARY_ATTR = "mip6_throttle_summary"


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None  # the last suppressed record


class LogThrottle(logging.Filter):
    """A handler filter passing at most ``burst`` records of a kind per ``interval`` seconds.

    One filter may sit on several handlers: it decides once per record, and the other
    handlers follow that decision. At most ``max_kinds`` kinds are tracked; the least
    recently seen is dropped first (its pending summary emitted).
    """

    def __init__(
        self,
        burst: int = 10,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = MAX_KINDS,
    ) -> None:
        super().__init__()
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if max_kinds < 1:
            raise ValueError(f"max_kinds must be at least 1, got {max_kinds}")
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self.suppressed_total = 0
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self._lock = threading.Lock()
        self._mark = f"_mip6_throttle_{id(self):x}"

    @property
    def kinds(self) -> int:
        """How many kinds are tracked now."""
        return len(self._windows)

    @staticmethod
    def kind(record: logging.LogRecord) -> Hashable:
        kind = getattr(record, "mip6_kind", None)
        if kind is not None:
            return kind
        msg = record.msg
        try:
            hash(msg)
        except TypeError:
            msg = repr(msg)
        return (record.name, record.levelno, msg)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY_ATTR, False):
            return True
        decided = record.__dict__.get(self._mark)
        if decided is not None:  # seen by another handler this filter is on
            return decided
        summaries: list[logging.LogRecord] = []
        with self._lock:
            passed = self._decide(record, summaries)
        record.__dict__[self._mark] = passed
        self._emit(summaries)
        return passed

    def _decide(self, record: logging.LogRecord, summaries: list[logging.LogRecord]) -> bool:
        now = self.clock()
        kind = self.kind(record)
        window = self._windows.get(kind)
        if window is not None and now - window.start >= self.interval:
            self._take_summary(window, summaries)
            window = None
        if window is None:
            window = self._windows[kind] = _Window(start=now)
            while len(self._windows) > self.max_kinds:
                _, evicted = self._windows.popitem(last=False)
                self._take_summary(evicted, summaries)
        self._windows.move_to_end(kind)
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        window.last = record
        self.suppressed_total += 1
        return False

    def flush(self) -> None:
        """Emit the summary of every kind with suppressed records now.

        Safe to call periodically: a kind still in its interval stays throttled (its burst
        is spent), and kinds whose interval has ended are forgotten.
        """
        summaries: list[logging.LogRecord] = []
        with self._lock:
            now = self.clock()
            for kind, window in list(self._windows.items()):
                self._take_summary(window, summaries)
                if now - window.start >= self.interval:
                    del self._windows[kind]
        self._emit(summaries)

    def summary_text(self, count: int, last: logging.LogRecord) -> str:
        return (
            f"{count} similar messages suppressed in the last {self.interval:g} s: "
            f"{last.getMessage()}"
        )

    def _take_summary(self, window: _Window, summaries: list[logging.LogRecord]) -> None:
        last = window.last
        if not window.suppressed or last is None:
            return
        record = logging.LogRecord(
            last.name,
            last.levelno,
            last.pathname,
            last.lineno,
            self.summary_text(window.suppressed, last),
            None,
            None,
            last.funcName,
        )
        setattr(record, SUMMARY_ATTR, True)
        record.mip6_suppressed = window.suppressed
        kind = getattr(last, "mip6_kind", None)
        if kind is not None:
            record.mip6_kind = kind
        summaries.append(record)
        window.suppressed, window.last = 0, None

    @staticmethod
    def _emit(summaries: list[logging.LogRecord]) -> None:
        # Through the original record's logger: the summary reaches the same handlers.
        for record in summaries:
            logging.getLogger(record.name).handle(record)


def install(logger: logging.Logger, burst: int = 10, interval: float = 10.0) -> LogThrottle:
    """Throttle every handler that ``logger``'s records reach (for the root: its handlers)."""
    throttle = LogThrottle(burst, interval)
    # Filters on a logger skip records propagated from child loggers; handler filters see all.
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if throttle not in handler.filters:
                handler.addFilter(throttle)
        current = current.parent if current.propagate else None
    return throttle
