"""The KAME mip6stat counter set, kept by the core and shown by mip6stat."""

from __future__ import annotations

from collections import Counter

from ..wire.constants import BAStatus, BEStatus, MHType

MH_NAMES = {int(t): t.name.lower() for t in MHType}


class Counters:
    """Named monotonic counters; histograms keyed ``ba_status.<n>`` and ``be_status.<n>``."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, name: str, count: int = 1) -> None:
        self._counts[name] += count

    def received(self, mh_type: int) -> None:
        self._counts[f"mh_in.{MH_NAMES.get(mh_type, mh_type)}"] += 1

    def sent(self, mh_type: int) -> None:
        self._counts[f"mh_out.{MH_NAMES.get(mh_type, mh_type)}"] += 1

    def ba_status(self, status: int, direction: str) -> None:
        self._counts[f"ba_{direction}.{_status_name(BAStatus, status)}"] += 1

    def be_status(self, status: int, direction: str) -> None:
        self._counts[f"be_{direction}.{_status_name(BEStatus, status)}"] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def clear(self) -> None:
        self._counts.clear()

    def __getitem__(self, name: str) -> int:
        return self._counts[name]


def _status_name(enum: type, value: int) -> str:
    try:
        return f"{value}_{enum(value).name.lower()}"
    except ValueError:
        return str(value)
