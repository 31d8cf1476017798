"""The per-mobile-node shared keys file (RFC 4285 MN-HA authentication, HMAC-SHA1-96).

``keys.yml``::

    mobile_nodes:
      mn1@example.net: {spi: 1000, key: "5f0e...(40+ hex digits)",
                        home_addresses: [2001:db8:1::100], max_bindings: 1}
      mn2@example.net: {spi: 1001, key: "base64:...", home_addresses: [2001:db8:1::/64]}

``home_addresses`` lists the home addresses (or prefixes) the key holder may register at
the home agent; without it the key may register any home address in the home prefixes
(the home agent warns at start). ``max_bindings`` caps its bindings at once.

The file must be a regular file owned by the agent's uid with no permission bits outside
``expect_mode`` (0600). No message, repr or dump ever contains a key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import ConfigError, Problem
from .kinds import AddressOrPrefix, Nai
from .model import Keys, MNKey, Secret
from .walker import INVALID, Ctx, Field, Int, Kind, ListOf, MapOf, Opt, Section
from .yamlfile import parse_yaml

SPI_MIN = 256  # RFC 4285 reserves SPIs 0-255.
SPI_MAX = 2**32 - 1
KEY_MIN_BYTES = 16
MAX_BINDINGS_PER_KEY = 1 << 20
KEY_RECOMMENDED_BYTES = 20  # the HMAC-SHA1 output size; RFC 2104 advises keys at least this long
_MAX_FILE_BYTES = 1 << 20
_HEX = re.compile(r"[0-9a-fA-F]+")


class KeyMaterial(Kind):
    """A key: hex digits (optionally ``hex:``-prefixed) or ``base64:...``; never echoed."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            ctx.error(
                path,
                f"expected the key as a string of hex digits or base64:..., got "
                f"{_type_only(value)}; the value is not shown",
                line,
            )
            return INVALID
        raw = self._decode(value.strip())
        if raw is None:
            ctx.error(
                path,
                "is neither an even number of hex digits nor base64:<base64 text> "
                "(the value is not shown)",
                line,
            )
            return INVALID
        if len(raw) < KEY_MIN_BYTES:
            ctx.error(
                path,
                f"is {len(raw)} bytes; at least {KEY_MIN_BYTES} are required "
                f"({KEY_RECOMMENDED_BYTES} or more recommended for HMAC-SHA1)",
                line,
            )
            return INVALID
        if len(raw) < KEY_RECOMMENDED_BYTES:
            ctx.warn(
                path,
                f"is {len(raw)} bytes; {KEY_RECOMMENDED_BYTES} or more are recommended for "
                "HMAC-SHA1 (RFC 2104)",
                line,
            )
        return Secret(raw)

    @staticmethod
    def _decode(text: str) -> bytes | None:
        if text.startswith("base64:"):
            try:
                return base64.b64decode(text[len("base64:") :], validate=True)
            except (binascii.Error, ValueError):
                return None
        text = text.removeprefix("hex:")
        if not _HEX.fullmatch(text) or len(text) % 2:
            return None
        return bytes.fromhex(text)

    def describe(self) -> str:
        return "hex digits or base64:..."


def _type_only(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number (quote the key: unquoted digits are read as a number)"
    return "a list" if isinstance(value, list) else "a mapping"


ENTRY = Section(
    [
        Field("spi", Int(SPI_MIN, SPI_MAX, secret=True), doc="RFC 4285 Security Parameter Index"),
        Field("key", KeyMaterial(), doc="MN-HA shared key, 16 bytes or more (20+ recommended)"),
        Field(
            "home_addresses",
            Opt(ListOf(AddressOrPrefix(), min_items=1, unique=lambda x: x)),
            None,
            doc="Home addresses or prefixes this key may register; null: any in the home "
            "prefixes (status 133 for the others)",
        ),
        Field(
            "max_bindings",
            Opt(Int(1, MAX_BINDINGS_PER_KEY)),
            None,
            doc="Bindings this key may hold at once; null: home_agent.max_bindings_per_nai "
            "(status 130 beyond it)",
        ),
    ],
    build=MNKey,
    secret_names=True,
)

KEYS_FILE = Section(
    [Field("mobile_nodes", MapOf(Nai(secret=True), ENTRY, secret=True))], secret_names=True
)


def parse_keys(text: str, source: str) -> tuple[Keys | None, Ctx]:
    """Validate keys file text; the problems and warnings are in the returned context."""
    ctx = Ctx(source)
    data, problems = parse_yaml(text, source, secret=True)
    ctx.problems.extend(problems)
    if problems:
        return None, ctx
    if data is None:
        ctx.error("", "is empty (expected a mobile_nodes mapping)")
        return None, ctx
    out = KEYS_FILE.check(data, "", None, ctx)
    if out is INVALID:
        return None, ctx
    warnings = tuple(str(w) for w in ctx.warnings)
    return Keys(source, out["mobile_nodes"], warnings), ctx


def read_secret_file(path: Path, expect_mode: int | None) -> tuple[str | None, list[Problem]]:
    """Read a file that holds secrets, refusing it unless it is private to this uid."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, [Problem("", "does not exist", None, source)]
    except OSError as exc:
        return None, [Problem("", f"cannot be opened: {exc.strerror}", None, source)]
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, [Problem("", "is not a regular file", None, source)]
    with os.fdopen(fd, "rb") as f:
        problems = []
        mode = stat.S_IMODE(st.st_mode)
        if expect_mode is not None and mode & ~expect_mode:
            problems.append(
                Problem(
                    "",
                    f"has mode {mode:04o}, which gives access beyond {expect_mode:04o} "
                    f"(no group or other bits); run chmod {expect_mode:o} {source}",
                    None,
                    source,
                )
            )
        euid = os.geteuid()
        if st.st_uid != euid:
            problems.append(
                Problem(
                    "",
                    f"is owned by uid {st.st_uid}, but the agent runs as uid {euid}; "
                    "it must be owned by the agent's user",
                    None,
                    source,
                )
            )
        if st.st_size > _MAX_FILE_BYTES:
            problems.append(Problem("", "is larger than 1 MiB", None, source))
            return None, problems
        try:
            text = f.read(_MAX_FILE_BYTES + 1).decode()
        except UnicodeDecodeError:
            return None, [*problems, Problem("", "is not UTF-8 text", None, source)]
        except OSError as exc:
            return None, [*problems, Problem("", f"cannot be read: {exc.strerror}", None, source)]
    return text, problems


def load_keys_checked(path: str | Path, expect_mode: int | None = 0o600) -> tuple[Keys | None, Ctx]:
    """Like :func:`load_keys` but returns the problems and warnings instead of raising."""
    source = str(path)
    text, problems = read_secret_file(Path(path), expect_mode)
    if text is None:
        ctx = Ctx(source)
        ctx.problems.extend(problems)
        return None, ctx
    keys, ctx = parse_keys(text, source)
    ctx.problems[:0] = problems
    return (keys if not ctx.problems else None), ctx


def load_keys(path: str | Path, expect_mode: int | None = 0o600) -> Keys:
    """Load and check the keys file; raises :class:`ConfigError` naming the file and problem."""
    keys, ctx = load_keys_checked(path, expect_mode)
    if keys is None:
        raise ConfigError(ctx.problems)
    return keys
