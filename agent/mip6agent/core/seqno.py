"""16-bit sequence number arithmetic (RFC 6275 9.5.1, RFC 1982 style)."""

from __future__ import annotations

MODULO = 1 << 16
HALF = 1 << 15


def seq_add(sequence: int, count: int = 1) -> int:
    return (sequence + count) % MODULO


def seq_distance(older: int, newer: int) -> int:
    """How far ``newer`` is ahead of ``older``, modulo 2^16."""
    return (newer - older) % MODULO


def seq_newer(candidate: int, last: int, window: int = HALF) -> bool:
    """True when ``candidate`` is ahead of ``last`` by 1..window-1 (modulo 2^16).

    With the default window of 2^15 this is the RFC's "greater than modulo 2^16".
    """
    return 0 < seq_distance(last, candidate) < window
