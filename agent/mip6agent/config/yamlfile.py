"""Reading the YAML files: YAML 1.2 core scalars, key line numbers, duplicate keys refused.

PyYAML implements YAML 1.1, where an unquoted ``1:2:3:4:5:6:7:8`` is a base-60 integer, ``0600``
is octal and ``no`` is false. Those rules turn IPv6 addresses and hex keys into numbers, so the
loader resolves plain scalars by the YAML 1.2 core schema instead: only ``true``/``false`` are
booleans, integers are decimal, ``0o`` octal or ``0x`` hex, and everything else is a string.
"""

from __future__ import annotations

import re
from typing import Any

# PyYAML ships no annotations and types-PyYAML is not in the dev requirements.
import yaml  # type: ignore[import-untyped]
from yaml.constructor import ConstructorError  # type: ignore[import-untyped]

from .errors import Problem
from .walker import may_be_secret


class LineMap(dict[object, object]):
    """A mapping that remembers the line of each key (1-based)."""

    __slots__ = ("lines",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}


class LineList(list[object]):
    """A list that remembers the line of each item (1-based)."""

    __slots__ = ("lines",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # SafeLoader is Any without stubs
    # Replaces, not extends, PyYAML's YAML 1.1 table.
    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, Any, int]] = []


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    result = LineMap()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if key in result:
            loader.duplicates.append((line, key, result.lines[key]))
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse_yaml(text: str, source: str, *, secret: bool = False) -> tuple[Any, list[Problem]]:
    """Parse one YAML document. With ``secret``, messages never quote the file's content."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        return None, [_syntax_problem(exc, source, secret)]
    finally:
        loader.dispose()
    problems = []
    for line, key, first in loader.duplicates:
        name = str(key)
        shown = "a key" if secret and may_be_secret(name) else f'"{name}"'
        problems.append(
            Problem("", f"duplicate key: {shown} is also on line {first}", line, source)
        )
    return data, problems


def _syntax_problem(exc: yaml.YAMLError, source: str, secret: bool) -> Problem:
    # The marks' snippets quote the offending line, which in a keys file may be a key.
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}"
    if context and not secret:
        message += f" ({context})"
    if mark is not None:
        message += f" at column {mark.column + 1}"
        return Problem("", message, mark.line + 1, source)
    return Problem("", message, None, source)
