"""Bounded-time fuzz target for the mip6agent.wire decoders.

Every input goes to ``parse_packet``, ``parse_mh`` and ``decode_icmpv6``, and, embedded
between random bytes, to ``decode_mh(buf, offset)`` and ``decode_icmpv6(buf, offset, end)``.
The inputs are

* random bytes: bare, or shaped like an IPv6 packet (random extension header chain with
  Home Address options and Type 2 Routing Headers), a Mobility Header or an ICMPv6 message
  with random option TLVs, so that the random part gets past the first length checks;
* valid packets, Mobility Headers and ICMPv6 messages from ``strategies.py``, as they are
  and mutated 1 to 4 times: bit flips, byte overwrites, truncation, extension, insertion,
  deletion, and edits of the length fields (IPv6 payload length, extension header lengths,
  destination, mobility and ND option lengths, MH header length).

Hypothesis draws the valid messages and a seed; the test body then derives ``VARIANTS``
inputs from them with :class:`random.Random` (drawing everything through Hypothesis costs
about a millisecond an input, the decoders a few microseconds). The loop feeds random
buffers to the test's ``fuzz_one_input``, as an external fuzzer would (atheris is not
available here), so a run lasts a fixed time rather than a fixed example count; nothing is
shrunk or written to the example database.

A failure is any exception other than ``DecodeError`` (a decoder call running longer than
``HANG_SECONDS`` counts, as ``DecoderHangError``), a ``DecodeError`` whose offset is outside
the buffer, or an unmutated valid encoding that its own decoder rejects. Each failure is
printed on stderr with the decoder, the input in hex and the traceback, and the exit status
is 1. The last line on stdout is a one-line JSON summary.

    .venv/bin/python agent/tests/fuzz_decoder.py --seconds 60 [--seed N] [--keep-going]

A test can call ``main(seconds=2)`` and expect 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.wire import DecodeError

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # imported from elsewhere than pytest (conftest) or this directory
    sys.path.insert(0, _HERE)

from strategies import addresses, icmpv6_messages, mobility_messages  # noqa: E402

VARIANTS = 32  # inputs derived from one Hypothesis example
BUFFER_SIZE = 2048  # random octets behind each Hypothesis example; one uses a few hundred
HANG_SECONDS = 2.0  # decoding one input of at most ~2 KB takes microseconds
MAX_RANDOM = 600

DECODERS = ("parse_packet", "parse_mh", "decode_icmpv6", "decode_mh@offset", "decode_icmpv6@slice")
SOURCES = ("packet", "mh", "icmpv6", "random", "random_ipv6", "random_mh", "random_icmpv6")
# Decoders that must accept the unmutated encoding from each source.
OWN_DECODERS = {
    "packet": ("parse_packet",),
    "mh": ("parse_mh", "decode_mh@offset"),
    "icmpv6": ("decode_icmpv6", "decode_icmpv6@slice"),
}
MUTATIONS = ("flip", "set", "truncate", "extend", "insert", "delete", "length", "length")

_IPV6 = struct.Struct("!IHBB16s16s")
# Where options start, counted from the first octet of the MH / ICMPv6 message.
_MH_OPTIONS_AT = {0: 8, 1: 16, 2: 16, 3: 24, 4: 24, 5: 12, 6: 12, 7: 24}
_ND_OPTIONS_AT = {133: 8, 134: 16, 135: 24, 136: 24, 147: 8}
_TLV_HEADERS = (0, 60)  # Hop-by-Hop and Destination Options carry Pad1/TLV options
# Option type -> the length it must have (mobility options and destination options in
# octets, ND options in 8-octet units); random TLVs use it half of the time.
_MOBILITY_LENGTHS = {2: 2, 3: 16, 4: 4, 5: 12, 8: 16, 9: 17, 10: 8}
_DSTOPT_LENGTHS = {0xC9: 16}
_ND_UNITS = {1: 1, 2: 1, 3: 4, 5: 1, 7: 1, 8: 1}


class DecoderHangError(Exception):
    """Raised from the SIGALRM handler when decoding one input outlives HANG_SECONDS."""


@dataclass(frozen=True, slots=True)
class Seed:
    """One Hypothesis example: a valid encoding (or none, for random sources) and a seed."""

    source: str
    data: bytes
    rng_seed: int


@dataclass(frozen=True, slots=True)
class Case:
    """One fuzz input: ``data``, also decoded at ``len(prefix)`` inside prefix+data+suffix."""

    source: str
    data: bytes
    mutations: tuple[str, ...] = ()
    prefix: bytes = b""
    suffix: bytes = b""
    unmutated: bool = False  # a valid encoding as the strategies made it


# --- length fields of valid encodings --------------------------------------------------


def _tlv_fields(data: bytes, pos: int, end: int) -> list[tuple[int, int]]:
    """(offset, width) of the length octets of the Pad1/TLV options in data[pos:end]."""
    fields = []
    while pos + 1 < end:
        if data[pos] == 0:
            pos += 1
            continue
        fields.append((pos + 1, 1))
        pos += 2 + data[pos + 1]
    return fields


def _mh_fields(data: bytes, base: int) -> list[tuple[int, int]]:
    if base + 3 > len(data):
        return []
    fields = [(base + 1, 1)]
    start = _MH_OPTIONS_AT.get(data[base + 2])
    if start is not None:
        end = min(base + (data[base + 1] + 1) * 8, len(data))
        fields += _tlv_fields(data, base + start, end)
    return fields


def _icmpv6_fields(data: bytes, base: int) -> list[tuple[int, int]]:
    fields: list[tuple[int, int]] = []
    start = _ND_OPTIONS_AT.get(data[base]) if base < len(data) else None
    if start is None:
        return fields
    pos = base + start
    while pos + 1 < len(data):
        fields.append((pos + 1, 1))
        if data[pos + 1] == 0:
            break
        pos += data[pos + 1] * 8
    return fields


def _packet_fields(data: bytes) -> list[tuple[int, int]]:
    fields = [(4, 2)]
    if len(data) < 40:
        return fields
    proto, pos = data[6], 40
    while proto in (0, 43, 60) and pos + 2 <= len(data):
        fields.append((pos + 1, 1))
        size = (data[pos + 1] + 1) * 8
        if proto in _TLV_HEADERS:
            fields += _tlv_fields(data, pos + 2, min(pos + size, len(data)))
        proto, pos = data[pos], pos + size
    if proto == 135:
        fields += _mh_fields(data, pos)
    elif proto == 58:
        fields += _icmpv6_fields(data, pos)
    return fields


_FIELDS: dict[str, Callable[[bytes], list[tuple[int, int]]]] = {
    "packet": _packet_fields,
    "mh": lambda data: _mh_fields(data, 0),
    "icmpv6": lambda data: _icmpv6_fields(data, 0),
}


# --- mutations and random inputs (plain random.Random: fast) ---------------------------


def mutate(rng: random.Random, data: bytes, fields: list[tuple[int, int]]) -> Case:
    """``data`` with 1 to 4 mutations; ``fields`` are its length fields (offset, width)."""
    out = bytearray(data)
    ops: list[str] = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(MUTATIONS)
        if op == "flip" and out:
            i, bit = rng.randrange(len(out)), rng.randrange(8)
            out[i] ^= 1 << bit
            ops.append(f"flip@{i}:{bit}")
        elif op == "set" and out:
            i = rng.randrange(len(out))
            out[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            ops.append(f"set@{i}={out[i]}")
        elif op == "truncate":
            size = rng.randint(0, len(out))
            del out[size:]
            ops.append(f"truncate@{size}")
        elif op == "extend":
            out += rng.randbytes(rng.randint(1, 64))
            ops.append("extend")
        elif op == "insert":
            i = rng.randint(0, len(out))
            out[i:i] = rng.randbytes(rng.randint(1, 16))
            ops.append(f"insert@{i}")
        elif op == "delete" and out:
            i = rng.randrange(len(out))
            j = rng.randint(i + 1, min(len(out), i + 16))
            del out[i:j]
            ops.append(f"delete@{i}:{j}")
        elif op == "length":
            present = [(at, width) for at, width in fields if at + width <= len(out)]
            if not present:
                continue
            at, width = rng.choice(present)
            top = (1 << (8 * width)) - 1
            old = int.from_bytes(out[at : at + width], "big")
            new = rng.choice((0, 1, top, old + 1, old - 1, old + 8, old - 8, rng.randint(0, top)))
            out[at : at + width] = (new & top).to_bytes(width, "big")
            ops.append(f"length@{at}:{old}->{new & top}")
    return Case("", bytes(out), tuple(ops))


def random_tlvs(
    rng: random.Random, kinds: Sequence[int], lengths: dict[int, int], unit: int
) -> bytes:
    """Up to 6 random options: type mostly from ``kinds``, length right half of the time.

    ``unit`` is 1 for mobility and destination options (length in octets, after the
    2-octet type/length) and 8 for ND options (length in 8-octet units, including them).
    """
    out = bytearray()
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(kinds) if rng.random() < 0.8 else rng.randrange(256)
        length = lengths.get(kind) if rng.random() < 0.5 else None
        if length is None:
            length = rng.randint(0, 40 // unit)
        size = max(0, length * 8 - 2) if unit == 8 else length
        if rng.random() < 0.1:
            size = rng.randint(0, 48)
        out += bytes((kind, length)) + rng.randbytes(size)
    return bytes(out)


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, MAX_RANDOM))


def random_mh(rng: random.Random) -> bytes:
    mh_type = rng.randint(0, 9) if rng.random() < 0.9 else rng.randrange(256)
    fixed = _MH_OPTIONS_AT.get(mh_type, 6) - 6
    body = rng.randbytes(fixed) + random_tlvs(
        rng, (0, 1, 2, 3, 4, 5, 8, 9, 10), _MOBILITY_LENGTHS, 1
    )
    body += bytes(-(6 + len(body)) % 8)
    hlen = (6 + len(body)) // 8 - 1
    if rng.random() < 0.2:
        hlen = rng.randrange(256)
    proto = 59 if rng.random() < 0.95 else rng.randrange(256)
    return bytes((proto, hlen, mh_type, 0)) + rng.randbytes(2) + body


def random_icmpv6(rng: random.Random) -> bytes:
    kinds = (133, 134, 135, 136, 144, 145, 146, 147)
    kind = rng.choice(kinds) if rng.random() < 0.9 else rng.randrange(256)
    fixed = _ND_OPTIONS_AT.get(kind, 8) - 4
    if kind == 145:  # HAAD Reply: identifier, reserved, then addresses
        body = rng.randbytes(4 + 16 * rng.randint(0, 4) + rng.choice((0, 0, 0, 0, 1, 8)))
    else:
        body = rng.randbytes(fixed) + random_tlvs(rng, (1, 2, 3, 5, 7, 8), _ND_UNITS, 8)
    return bytes((kind, rng.randrange(256))) + rng.randbytes(2) + body


def random_ipv6(rng: random.Random) -> bytes:
    """An IPv6 header, 0 to 3 random extension headers, and a random MH/ICMPv6/other."""
    choice = rng.randrange(3)
    if choice == 0:
        proto, body = 135, random_mh(rng)
    elif choice == 1:
        proto, body = 58, random_icmpv6(rng)
    else:
        proto, body = rng.choice((59, 6, 17, rng.randrange(256))), random_bytes(rng)
    for _ in range(rng.randint(0, 3)):
        ext = rng.choice((60, 60, 43, 43, 0, 44))
        if ext == 44:  # Fragment: atomic (offset 0, M clear) or anything
            header = bytes((proto, 0)) + (bytes(6) if rng.random() < 0.5 else rng.randbytes(6))
        elif ext == 43 and rng.random() < 0.7:  # Type 2 Routing Header
            header = bytes((proto, 2, 2, rng.choice((1, 0, 2)))) + bytes(4) + rng.randbytes(16)
        elif ext == 43:
            units = rng.randint(0, 4)
            header = bytes((proto, units, rng.randrange(256))) + rng.randbytes(units * 8 + 5)
        else:
            options = random_tlvs(rng, (0, 1, 0xC9), _DSTOPT_LENGTHS, 1)
            options += bytes(-(2 + len(options)) % 8)
            header = bytes((proto, (2 + len(options)) // 8 - 1)) + options
        if rng.random() < 0.1:
            header = header[:1] + bytes((rng.randrange(256),)) + header[2:]
        body, proto = header + body, ext
    plen = len(body) if rng.random() < 0.8 else rng.randrange(0x10000)
    word = (6 << 28) | rng.randrange(1 << 28)
    if rng.random() < 0.05:
        word = rng.randrange(1 << 32)
    head = _IPV6.pack(word, plen, proto, rng.randrange(256), rng.randbytes(16), rng.randbytes(16))
    return head + body


_RANDOM: dict[str, Callable[[random.Random], bytes]] = {
    "random": random_bytes,
    "random_ipv6": random_ipv6,
    "random_mh": random_mh,
    "random_icmpv6": random_icmpv6,
}


def variants(seed: Seed, count: int = VARIANTS) -> list[Case]:
    """The inputs derived from one Hypothesis example; the first one is not mutated."""
    rng = random.Random(seed.rng_seed)
    cases = []
    make_random = _RANDOM.get(seed.source)
    fields = [] if make_random else _FIELDS[seed.source](seed.data)
    for index in range(count):
        if make_random is not None:
            case = Case(seed.source, make_random(rng))
        elif index == 0:
            case = Case(seed.source, seed.data, unmutated=True)
        else:
            case = mutate(rng, seed.data, fields)
        prefix = rng.randbytes(rng.randint(0, 24))
        suffix = rng.randbytes(rng.randint(0, 24))
        cases.append(Case(seed.source, case.data, case.mutations, prefix, suffix, case.unmutated))
    return cases


# --- Hypothesis: the valid encodings ---------------------------------------------------


@st.composite
def fuzz_seeds(draw: st.DrawFn) -> Seed:
    source = draw(st.sampled_from(SOURCES))
    if source == "packet":
        data = wire.build_packet(
            draw(addresses),
            draw(addresses),
            draw(mobility_messages | icmpv6_messages),
            home_address=draw(addresses) if draw(st.booleans()) else None,
            routing_home_address=draw(addresses) if draw(st.booleans()) else None,
            hop_limit=draw(st.integers(0, 255)),
        )
    elif source in ("mh", "icmpv6"):
        encode = wire.encode_mh if source == "mh" else wire.encode_icmpv6
        message = draw(mobility_messages if source == "mh" else icmpv6_messages)
        if draw(st.booleans()):
            data = encode(message, draw(addresses), draw(addresses))
        else:
            data = encode(message)
    else:
        data = b""
    return Seed(source, data, draw(st.integers(0, 2**64 - 1)))


# --- running ---------------------------------------------------------------------------


def _calls(case: Case) -> list[tuple[str, bytes, int, Callable[[], object]]]:
    """(decoder, buffer, offset of the input in the buffer, the call) for every decoder."""
    data = case.data
    buf = case.prefix + data + case.suffix
    start, end = len(case.prefix), len(case.prefix) + len(data)
    return [
        ("parse_packet", data, 0, lambda: wire.parse_packet(data)),
        ("parse_mh", data, 0, lambda: wire.parse_mh(data)),
        ("decode_icmpv6", data, 0, lambda: wire.decode_icmpv6(data)),
        ("decode_mh@offset", buf, start, lambda: wire.decode_mh(buf, start)),
        ("decode_icmpv6@slice", buf, start, lambda: wire.decode_icmpv6(buf, start, end)),
    ]


@dataclass
class Runner:
    """Feeds each input to every decoder and keeps the counts and the failures."""

    deadline: float
    keep_going: bool = False
    watchdog: bool = False
    inputs: int = 0
    calls: int = 0
    failures: int = 0
    stop: bool = False
    sources: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    distinct: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)

    def run_seed(self, seed: Seed) -> None:
        for case in variants(seed):
            if self.stop or time.monotonic() >= self.deadline:
                return
            self.check(case)

    def check(self, case: Case) -> None:
        self.inputs += 1
        self.sources[case.source] += 1
        must_accept = OWN_DECODERS.get(case.source, ()) if case.unmutated else ()
        if self.watchdog:
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            for name, buf, offset, call in _calls(case):
                self.calls += 1
                try:
                    call()
                except DecodeError as exc:
                    if not 0 <= exc.offset <= len(buf):
                        self.fail("bad-offset", name, case, buf, offset, exc)
                    elif name in must_accept:
                        self.fail("valid-rejected", name, case, buf, offset, exc)
                except Exception as exc:
                    kind = "hang" if isinstance(exc, DecoderHangError) else "exception"
                    self.fail(kind, name, case, buf, offset, exc)
                else:
                    self.accepted[name] += 1
        finally:
            if self.watchdog:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def fail(
        self, kind: str, decoder: str, case: Case, buf: bytes, offset: int, exc: BaseException
    ) -> None:
        self.failures += 1
        if not self.keep_going:
            self.stop = True
        # The innermost frame outside this file: for a hang, where the alarm found it.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        key = (kind, decoder, type(exc).__name__, where)
        if key in self.distinct:
            self.distinct[key]["count"] += 1
            return
        end = f" to {offset + len(case.data)}" if decoder == "decode_icmpv6@slice" else ""
        self.distinct[key] = {
            "kind": kind,
            "decoder": decoder,
            "error": f"{type(exc).__name__}: {exc}",
            "where": where,
            "source": case.source,
            "mutations": list(case.mutations),
            "offset": offset,
            "input_hex": buf.hex(),
            "count": 1,
        }
        print(
            f"FAIL {kind} in {decoder} ({where}) on a {case.source} input, "
            f"mutations: {', '.join(case.mutations) or 'none'}\n"
            f"input ({len(buf)} octets, decoded from offset {offset}{end}):\n{buf.hex()}\n"
            + "".join(traceback.format_exception(exc)),
            file=sys.stderr,
            flush=True,
        )


def _on_alarm(signum: int, frame: object) -> None:
    raise DecoderHangError(f"decoding one input took longer than {HANG_SECONDS} s")


def fuzz(seconds: float, *, seed: int | None = None, keep_going: bool = False) -> dict[str, Any]:
    """Fuzz for ``seconds``; return the summary (``failures`` > 0 means a bug was found)."""
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    can_alarm = (
        hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    start = time.monotonic()
    runner = Runner(deadline=start + seconds, keep_going=keep_going, watchdog=can_alarm)

    @settings(database=None, deadline=None)
    @given(fuzz_seeds())
    def fuzz_target(seed: Seed) -> None:
        runner.run_seed(seed)

    fuzz_one_input = fuzz_target.hypothesis.fuzz_one_input
    previous = signal.signal(signal.SIGALRM, _on_alarm) if can_alarm else None
    examples = discarded = 0
    interrupted = False
    try:
        while not runner.stop and time.monotonic() < runner.deadline:
            examples += 1
            if fuzz_one_input(rng.randbytes(BUFFER_SIZE)) is None:
                discarded += 1  # the buffer ran out before the example was complete
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if can_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - start
    return {
        "fuzz": "mip6agent.wire decoders",
        "inputs": runner.inputs,
        "seconds": round(elapsed, 1),
        "decoders": list(DECODERS),
        "failures": runner.failures,
        "distinct_failures": list(runner.distinct.values()),
        "inputs_per_s": round(runner.inputs / elapsed) if elapsed else 0,
        "decoder_calls": runner.calls,
        "accepted": {name: runner.accepted[name] for name in DECODERS},
        "sources": {name: runner.sources[name] for name in SOURCES},
        "hypothesis_examples": examples,
        "hypothesis_buffers_discarded": discarded,
        "seed": seed,
        "watchdog": can_alarm,
        "stopped_early": runner.stop or interrupted,
        "python": platform.python_version(),
        "hypothesis": hypothesis.__version__,
    }


def main(seconds: float = 60.0, *, seed: int | None = None, keep_going: bool = False) -> int:
    """Run the fuzzer, print the one-line JSON summary; 0 when no failure was found."""
    summary = fuzz(seconds, seed=seed, keep_going=keep_going)
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if summary["failures"] else 0


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random buffers")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="collect distinct failures until the time is up instead of stopping at the first",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return main(args.seconds, seed=args.seed, keep_going=args.keep_going)


if __name__ == "__main__":
    sys.exit(cli())
