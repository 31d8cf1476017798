"""LogThrottle: bursts pass, floods are counted and summarised, memory stays bounded."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mip6agent.daemon.logthrottle import MAX_KINDS, LogThrottle, install


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ListHandler(logging.Handler):
    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


_counter = 0


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A fresh logger that does not propagate, so the test's handlers see exactly its output."""
    global _counter
    _counter += 1
    log = logging.getLogger(f"mip6test.throttle{_counter}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def throttled(
    logger: logging.Logger, burst: int = 3, interval: float = 10.0, **options: object
) -> tuple[LogThrottle, ListHandler, FakeClock]:
    clock = FakeClock()
    throttle = LogThrottle(burst, interval, clock=clock, **options)
    handler = ListHandler()
    handler.addFilter(throttle)
    logger.addHandler(handler)
    return throttle, handler, clock


def test_burst_passes_then_suppressed(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=3)
    for i in range(10):
        logger.warning("bad packet from %s", f"2001:db8::{i}")
    assert handler.messages == [f"bad packet from 2001:db8::{i}" for i in range(3)]
    assert throttle.suppressed_total == 7


def test_summary_before_next_record_after_interval(logger: logging.Logger) -> None:
    throttle, handler, clock = throttled(logger, burst=2, interval=10.0)
    for i in range(6):
        logger.warning("bad packet from %s", f"::{i}")
    clock.now += 9.9
    logger.warning("bad packet from %s", "::late")  # still in the interval
    assert len(handler.records) == 2
    clock.now += 0.1
    logger.warning("bad packet from %s", "::next")
    summary, after = handler.records[2:]
    assert summary.getMessage() == (
        "5 similar messages suppressed in the last 10 s: bad packet from ::late"
    )
    assert summary.levelno == logging.WARNING
    assert summary.name == logger.name
    assert after.getMessage() == "bad packet from ::next"
    assert throttle.suppressed_total == 5
    # The new interval has its own burst.
    logger.warning("bad packet from %s", "::again")
    logger.warning("bad packet from %s", "::dropped")
    assert handler.messages[-1] == "bad packet from ::again"
    assert throttle.suppressed_total == 6


def test_no_summary_without_suppression(logger: logging.Logger) -> None:
    _, handler, clock = throttled(logger, burst=3)
    logger.info("one")
    logger.info("one")
    clock.now += 60
    logger.info("one")
    assert handler.messages == ["one", "one", "one"]


def test_summary_keeps_level(logger: logging.Logger) -> None:
    _, handler, clock = throttled(logger, burst=1, interval=5.0)
    for _ in range(4):
        logger.error("checksum failure on %s", "eth0")
    clock.now += 5
    logger.error("checksum failure on %s", "eth1")
    assert [(r.levelno, r.getMessage()) for r in handler.records] == [
        (logging.ERROR, "checksum failure on eth0"),
        (logging.ERROR, "3 similar messages suppressed in the last 5 s: checksum failure on eth0"),
        (logging.ERROR, "checksum failure on eth1"),
    ]


def test_errors_are_throttled_too_but_first_burst_passes(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=10)
    for _ in range(100):
        logger.critical("flood")
    assert handler.messages == ["flood"] * 10
    assert throttle.suppressed_total == 90


def test_kinds_are_independent(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=2)
    other = logging.getLogger(logger.name + ".child")  # propagates to logger's handler
    for _ in range(5):
        logger.warning("template A %d", 1)
        logger.warning("template B %d", 1)
        logger.info("template A %d", 1)  # another level: another kind
        other.warning("template A %d", 1)  # another logger: another kind
    assert len(handler.records) == 8
    assert throttle.suppressed_total == 12


def test_mip6_kind_groups_different_templates(logger: logging.Logger) -> None:
    throttle, handler, clock = throttled(logger, burst=2)
    logger.warning("short BU from %s", "a", extra={"mip6_kind": "bad-bu"})
    logger.warning("BU with bad checksum from %s", "b", extra={"mip6_kind": "bad-bu"})
    logger.warning("BU too long from %s", "c", extra={"mip6_kind": "bad-bu"})
    logger.warning("short BU from %s", "d")  # no kind: grouped by its template
    assert handler.messages == ["short BU from a", "BU with bad checksum from b", "short BU from d"]
    clock.now += 10
    logger.warning("unknown option in %s", "e", extra={"mip6_kind": "bad-bu"})
    assert handler.messages[3:] == [
        "1 similar messages suppressed in the last 10 s: BU too long from c",
        "unknown option in e",
    ]
    assert handler.records[3].mip6_kind == "bad-bu"
    assert throttle.suppressed_total == 1


def test_flush_emits_pending_summaries(logger: logging.Logger) -> None:
    throttle, handler, clock = throttled(logger, burst=1)
    for _ in range(3):
        logger.warning("a")
        logger.warning("b %s", "x")
    logger.warning("c")
    throttle.flush()
    assert handler.messages == [
        "a",
        "b x",
        "c",
        "2 similar messages suppressed in the last 10 s: a",
        "2 similar messages suppressed in the last 10 s: b x",
    ]
    throttle.flush()  # nothing more to say
    assert len(handler.records) == 5
    # Still within the interval: the burst stays spent, the next summary counts afresh.
    logger.warning("a")
    clock.now += 10
    throttle.flush()
    assert handler.messages[5:] == ["1 similar messages suppressed in the last 10 s: a"]
    assert throttle.kinds == 0, "expired kinds are forgotten on flush"
    logger.warning("a")
    assert handler.messages[-1] == "a"


def test_kinds_are_bounded(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=1)
    logger.warning("first")
    logger.warning("first")  # suppressed, pending summary
    for i in range(MAX_KINDS + 500):
        logger.warning("unique", extra={"mip6_kind": ("kind", i)})
        assert throttle.kinds <= MAX_KINDS
    assert throttle.kinds == MAX_KINDS
    # The oldest kind was evicted and its pending summary not lost.
    assert "1 similar messages suppressed in the last 10 s: first" in handler.messages
    # An evicted kind starts afresh.
    logger.warning("first")
    assert handler.messages[-1] == "first"


def test_eviction_takes_least_recently_seen(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=1, max_kinds=3)
    logger.warning("a")
    logger.warning("b")
    logger.warning("c")
    logger.warning("a")  # a is now the most recent (and suppressed)
    logger.warning("d")  # evicts b
    assert throttle.kinds == 3
    logger.warning("a")
    assert handler.messages == ["a", "b", "c", "d"]
    logger.warning("b")  # forgotten, so it passes again
    assert handler.messages[-1] == "b"


def test_one_filter_on_two_handlers_decides_once(logger: logging.Logger) -> None:
    clock = FakeClock()
    throttle = LogThrottle(2, 10.0, clock=clock)
    first, second = ListHandler(), ListHandler()
    for handler in (first, second):
        handler.addFilter(throttle)
        logger.addHandler(handler)
    for _ in range(5):
        logger.warning("x")
    assert first.messages == second.messages == ["x", "x"]
    assert throttle.suppressed_total == 3
    clock.now += 10
    logger.warning("x")
    summary = "3 similar messages suppressed in the last 10 s: x"
    assert first.messages == second.messages == ["x", "x", summary, "x"]


def test_summary_respects_handler_level(logger: logging.Logger) -> None:
    clock = FakeClock()
    throttle = LogThrottle(1, 10.0, clock=clock)
    loud, quiet = ListHandler(), ListHandler(logging.ERROR)
    for handler in (loud, quiet):
        handler.addFilter(throttle)
        logger.addHandler(handler)
    for _ in range(3):
        logger.warning("w")
    clock.now += 10
    logger.warning("w")
    assert loud.messages == ["w", "2 similar messages suppressed in the last 10 s: w", "w"]
    assert quiet.messages == []


def test_unhashable_message(logger: logging.Logger) -> None:
    throttle, handler, _ = throttled(logger, burst=1)
    logger.warning(["not", "hashable"])
    logger.warning(["not", "hashable"])
    assert len(handler.records) == 1
    assert throttle.suppressed_total == 1


def test_fractional_interval_text(logger: logging.Logger) -> None:
    _, handler, clock = throttled(logger, burst=1, interval=2.5)
    logger.info("m")
    logger.info("m")
    clock.now += 2.5
    logger.info("m")
    assert handler.messages[1] == "1 similar messages suppressed in the last 2.5 s: m"


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        LogThrottle(burst=0)
    with pytest.raises(ValueError):
        LogThrottle(interval=0)
    with pytest.raises(ValueError):
        LogThrottle(max_kinds=0)


def test_install_on_root_handlers() -> None:
    root = logging.getLogger()
    handlers = [ListHandler(), ListHandler()]
    saved = root.handlers[:], root.level
    root.handlers[:] = handlers
    root.setLevel(logging.DEBUG)
    try:
        throttle = install(root, burst=2, interval=10.0)
        assert all(throttle in h.filters for h in handlers)
        # A record from a child logger propagates to root's handlers and is throttled there.
        child = logging.getLogger("mip6agent.test_install_child")
        for _ in range(5):
            child.warning("propagated")
        assert handlers[0].messages == handlers[1].messages == ["propagated"] * 2
        assert throttle.suppressed_total == 3
        throttle.flush()
        assert handlers[0].messages[-1] == (
            "3 similar messages suppressed in the last 10 s: propagated"
        )
        # Installing through a child logger reaches the same root handlers.
        again = install(child, burst=2, interval=10.0)
        assert all(again in h.filters for h in handlers)
    finally:
        for handler in handlers:
            handler.filters.clear()
        root.handlers[:], level = saved
        root.setLevel(level)
