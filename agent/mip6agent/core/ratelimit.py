"""Token buckets for replies that any sender can trigger (RFC 6275 9.3.3, 10.3.1).

Error Binding Acknowledgements, Binding Errors and DHAAD replies go to an address the
request names, so without a limit a spoofed flood turns the home agent into a reflector.
Sans-I/O: the caller passes ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..wire.addresses import unicast_problem

MAX_DESTINATIONS = 4096  # buckets kept; the least recently used one goes first


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second; 0 means unlimited
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, now: float, burst: float | None = None) -> TokenBucket:
        size = max(1.0, rate if burst is None else burst)
        return cls(rate, size, size, now)

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ReplyLimiter:
    """One bucket per destination and one for all destinations together."""

    def __init__(self, per_destination: float, total: float) -> None:
        self.per_destination = per_destination
        self.total = total
        self._total: TokenBucket | None = None
        self._buckets: OrderedDict[IPv6Address, TokenBucket] = OrderedDict()

    def allow(self, destination: IPv6Address, now: float) -> bool:
        if self._total is None or self._total.rate != self.total:
            self._total = TokenBucket.full(self.total, now)
        bucket = self._buckets.get(destination)
        if bucket is None or bucket.rate != self.per_destination:
            bucket = TokenBucket.full(self.per_destination, now)
            self._buckets[destination] = bucket
            if len(self._buckets) > MAX_DESTINATIONS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(destination)
        # Per destination first: a flood at one victim must not use up everyone's budget.
        return bucket.take(now) and self._total.take(now)

    def refusal(self, destination: IPv6Address, now: float) -> str | None:
        """None if a reply may go to ``destination`` now, else the counter that says why:
        ``reply_suppressed`` (not a unicast address) or ``reply_rate_limited``."""
        if unicast_problem(destination) is not None:
            return "reply_suppressed"
        return None if self.allow(destination, now) else "reply_rate_limited"

    def reconfigure(self, per_destination: float, total: float) -> None:
        self.per_destination, self.total = per_destination, total

    def __len__(self) -> int:
        return len(self._buckets)
