"""A small declarative schema walker, in the manner of linux-system-roles' argument validator.

A schema is a tree of :class:`Kind` objects. ``check`` converts one value or reports a problem
naming its dotted key path and returns :data:`INVALID`; a :class:`Section` keeps walking after a
problem so that one run reports everything. ``dump`` turns a converted value back into plain
JSON/YAML data, which ``check`` accepts again.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Problem


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


REQUIRED: Any = _Sentinel("REQUIRED")
INVALID: Any = _Sentinel("INVALID")

# A key name this long could be key material pasted in the wrong place; never echo it.
# Key material (hex or base64) never contains "@", which every NAI has.
_SECRET_NAME_LIMIT = 16


def may_be_secret(name: str) -> bool:
    return len(name) > _SECRET_NAME_LIMIT and "@" not in name


class Ctx:
    """Collects problems and warnings while one document is walked."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        # Side results of checks, e.g. the keys a configuration's keys_file holds.
        self.results: dict[str, Any] = {}

    def error(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(path, message, line, self.source))

    def warn(self, path: str, message: str, line: int | None = None) -> None:
        self.warnings.append(Problem(path, message, line, self.source))


def join(path: str, name: str) -> str:
    if not name:
        return path
    return f"{path}.{name}" if path else name


def quote(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[:limit] + "..."
    return json.dumps(text, ensure_ascii=False)


def describe(value: Any) -> str:
    """The value as a message shows it: its YAML type, and for scalars the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def describe_type(value: Any) -> str:
    """Like :func:`describe` without the value, for files that hold secrets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string (not shown)"
    return describe(value)


def suggest(name: str, candidates: Iterable[str]) -> str:
    pool = list(candidates)
    match = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not match:
        match = [c for c in pool if c.lower() == name.lower()]
    return f' (did you mean "{match[0]}"?)' if match else ""


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Kind:
    """One kind of value. Subclasses override ``check``, ``describe`` and maybe ``dump``."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        raise NotImplementedError


class Bool(Kind):
    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if isinstance(value, bool):
            return value
        ctx.error(path, f"expected true or false, got {describe(value)}", line)
        return INVALID

    def describe(self) -> str:
        return "boolean"


class Int(Kind):
    def __init__(
        self, low: int, high: int, choices: tuple[int, ...] = (), *, secret: bool = False
    ) -> None:
        self.low, self.high, self.choices, self.secret = low, high, choices, secret

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if type(value) is not int:
            shown = describe_type(value) if self.secret else describe(value)
            ctx.error(path, f"expected an integer, got {shown}", line)
            return INVALID
        got = "" if self.secret else f", got {value}"
        if self.choices and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            ctx.error(path, f"must be one of {allowed}{got}", line)
            return INVALID
        if not self.low <= value <= self.high:
            ctx.error(path, f"must be between {self.low} and {self.high}{got}", line)
            return INVALID
        return value

    def describe(self) -> str:
        if self.choices:
            return " | ".join(map(str, self.choices))
        return f"integer {self.low}..{self.high}"


class Seconds(Kind):
    """A duration: an integer or decimal number of seconds, converted to ``float``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            ctx.error(path, f"expected a number of seconds, got {describe(value)}", line)
            return INVALID
        if not math.isfinite(value) or not self.low <= value <= self.high:
            low, high = number_text(self.low), number_text(self.high)
            shown = number_text(value) if math.isfinite(value) else repr(value)
            ctx.error(path, f"must be between {low} and {high} seconds, got {shown}", line)
            return INVALID
        return float(value)

    def dump(self, value: Any) -> Any:
        return int(value) if float(value).is_integer() else value

    def describe(self) -> str:
        return f"seconds {number_text(self.low)}..{number_text(self.high)}"


class Choice(Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        allowed = ", ".join(self.choices)
        if not isinstance(value, str):
            ctx.error(path, f"expected one of {allowed}, got {describe(value)}", line)
            return INVALID
        if value not in self.choices:
            hint = suggest(value, self.choices)
            ctx.error(path, f"{quote(value)} is not one of {allowed}{hint}", line)
            return INVALID
        return value

    def describe(self) -> str:
        return " | ".join(f"`{c}`" for c in self.choices)


class Opt(Kind):
    """``null`` or the inner kind, for keys whose default is ``null``."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        return None if value is None else self.inner.check(value, path, line, ctx)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"


class ListOf(Kind):
    def __init__(
        self,
        item: Kind,
        *,
        min_items: int = 0,
        unique: Callable[[Any], Any] | None = None,
        noun: str = "",
    ) -> None:
        self.item, self.min_items, self.unique, self.noun = item, min_items, unique, noun

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, list | tuple):
            hint = f" (write a YAML list, e.g. [{value}])" if isinstance(value, str) else ""
            ctx.error(path, f"expected a list, got {describe(value)}{hint}", line)
            return INVALID
        if len(value) < self.min_items:
            ctx.error(path, f"needs at least {self.min_items} entry, got an empty list", line)
            return INVALID
        lines = getattr(value, "lines", None)
        out = [
            self.item.check(item, f"{path}[{i}]", lines[i] if lines else line, ctx)
            for i, item in enumerate(value)
        ]
        if any(v is INVALID for v in out):
            return INVALID
        if self.unique is not None:
            seen: dict[Any, int] = {}
            for i, v in enumerate(out):
                key = self.unique(v)
                if key in seen:
                    ctx.error(
                        f"{path}[{i}]",
                        f"{quote(str(key))} is listed twice (also at {path}[{seen[key]}])",
                        lines[i] if lines else line,
                    )
                    return INVALID
                seen[key] = i
        return tuple(out)

    def dump(self, value: Any) -> Any:
        return [self.item.dump(v) for v in value]

    def describe(self) -> str:
        least = f", at least {self.min_items}" if self.min_items else ""
        return f"list of {self.noun or self.item.describe()}{least}"


class MapOf(Kind):
    """A mapping whose keys are data (e.g. NAIs), converted to a tuple of pairs."""

    def __init__(self, key: Kind, value: Kind, *, secret: bool = False) -> None:
        self.key, self.value, self.secret = key, value, secret

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, Mapping):
            shown = describe_type(value) if self.secret else describe(value)
            ctx.error(path, f"expected a mapping, got {shown}", line)
            return INVALID
        lines = getattr(value, "lines", {})
        out = []
        for index, (k, v) in enumerate(value.items()):
            hidden = self.secret and (not isinstance(k, str) or may_be_secret(k))
            here = f"{path}[entry {index + 1}]" if hidden else f"{path}[{quote(str(k))}]"
            key = self.key.check(k, here, lines.get(k, line), ctx)
            converted = self.value.check(v, here, lines.get(k, line), ctx)
            out.append((key, converted))
        if any(INVALID in pair for pair in out):
            return INVALID
        return tuple(out)

    def describe(self) -> str:
        return f"mapping of {self.key.describe()} to {self.value.describe()}"


@dataclass(frozen=True)
class Field:
    """One key of a section: its kind, its default (converted form) and its documentation."""

    name: str
    kind: Kind
    default: Any = REQUIRED
    doc: str = ""
    compat: str = ""
    omit: Callable[[Any], bool] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class SectionView:
    """What a cross-field check sees: the converted values (maybe INVALID) and their lines."""

    def __init__(
        self,
        values: dict[str, Any],
        raw: Mapping[Any, Any],
        path: str,
        line: int | None,
        ctx: Ctx,
    ) -> None:
        self.values, self.raw, self.path, self.line, self.ctx = values, raw, path, line, ctx
        self.lines: Mapping[Any, int] = getattr(raw, "lines", {})

    def ok(self, *names: str) -> bool:
        return all(self.values[n] is not INVALID for n in names)

    def given(self, name: str) -> bool:
        return name in self.raw

    def line_of(self, name: str) -> int | None:
        return self.lines.get(name, self.line)

    def item_line(self, name: str, index: int) -> int | None:
        lines = getattr(self.raw.get(name), "lines", None)
        return lines[index] if lines and index < len(lines) else self.line_of(name)

    def item_error(self, name: str, index: int, message: str) -> None:
        path = f"{self.path_of(name)}[{index}]"
        self.ctx.error(path, message, self.item_line(name, index))

    def item_warn(self, name: str, index: int, message: str) -> None:
        path = f"{self.path_of(name)}[{index}]"
        self.ctx.warn(path, message, self.item_line(name, index))

    def path_of(self, name: str) -> str:
        return join(self.path, name)

    def error(self, name: str, message: str) -> None:
        self.ctx.error(self.path_of(name), message, self.line_of(name))

    def warn(self, name: str, message: str) -> None:
        self.ctx.warn(self.path_of(name), message, self.line_of(name))


Check = Callable[[SectionView], None]


class Section(Kind):
    """A mapping with a fixed set of keys; unknown keys are errors with a suggestion."""

    def __init__(
        self,
        fields: Iterable[Field],
        *,
        build: Callable[..., Any] | None = None,
        checks: Iterable[Check] = (),
        elsewhere: Mapping[str, str] | None = None,
        secret_names: bool = False,
    ) -> None:
        self.fields = {f.name: f for f in fields}
        self.build = build
        self.checks = tuple(checks)
        self.elsewhere = dict(elsewhere or {})
        self.secret_names = secret_names

    def check(
        self, value: Any, path: str, line: int | None, ctx: Ctx, skip: frozenset[str] = frozenset()
    ) -> Any:
        show = describe_type if self.secret_names else describe
        if not isinstance(value, Mapping):
            ctx.error(path, f"expected a mapping, got {show(value)}", line)
            return INVALID
        lines: Mapping[Any, int] = getattr(value, "lines", {})
        before = len(ctx.problems)
        for key in value:
            if key in skip:
                continue
            if not isinstance(key, str):
                ctx.error(path, f"keys must be strings, got {show(key)}", lines.get(key, line))
            elif key not in self.fields:
                self._unknown(key, path, lines.get(key, line), ctx)
        out: dict[str, Any] = {}
        for name, field in self.fields.items():
            given = name in value and name not in skip
            if given and (value[name] is not None or field.required):
                out[name] = field.kind.check(value[name], join(path, name), lines.get(name), ctx)
            elif field.required:
                ctx.error(join(path, name), "required key is missing", line)
                out[name] = INVALID
            else:
                out[name] = field.default
        view = SectionView(out, value, path, line, ctx)
        for check in self.checks:
            check(view)
        if len(ctx.problems) > before or INVALID in out.values():
            return INVALID
        return self.build(**out) if self.build else out

    def _unknown(self, key: str, path: str, line: int | None, ctx: Ctx) -> None:
        if self.secret_names and may_be_secret(key):
            ctx.error(
                path,
                f"unknown key of {len(key)} characters (not shown, it may be key material)",
                line,
            )
            return
        if key in self.elsewhere:
            hint = f" (it belongs in {self.elsewhere[key]})"
        else:
            hint = suggest(key, self.fields)
        ctx.error(join(path, key), f"unknown key{hint}", line)

    def dump(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self.fields.items():
            v = value[name] if isinstance(value, Mapping) else getattr(value, name)
            if field.omit is not None and field.omit(v):
                continue
            out[name] = field.kind.dump(v)
        return out

    def describe(self) -> str:
        return "mapping"
