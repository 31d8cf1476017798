"""The one error type that every decoder in :mod:`mip6agent.wire` raises."""

from __future__ import annotations


class DecodeError(ValueError):
    """Malformed input: ``offset`` is where in the buffer decoding gave up."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (at offset {offset})")
        self.offset = offset
        self.reason = reason
