"""mip6stat: show and clear the agent's lists and counters, as the KAME tool did."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..control.client import call
from ..control.protocol import ControlError
from .common import EXIT_FAILURE, EXIT_OK, default_socket

LISTS = {
    "bindings": ("-b", "binding cache", "clear-bindings"),  # a correspondent's bindings too
    "bul": ("-u", "binding update list", "clear-bul"),
    "home-agents": ("-H", "home agents list", "clear-home-agents"),
    "home-addresses": ("-m", "home addresses", "clear-home-addresses"),
    "counters": ("-s", "counters", "clear-counters"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mip6stat",
        description="Show the Mobile IPv6 agent's lists and counters. With no selection, "
        "everything this host's role has is shown.",
        epilog="Exit status: 0 ok, 1 the agent could not be asked.",
    )
    p.add_argument("-S", dest="socket", default=default_socket(), help="control socket path")
    for command, (flag, title, _) in LISTS.items():
        p.add_argument(
            flag, dest=command.replace("-", "_"), action="store_true", help=f"the {title}"
        )
    p.add_argument(
        "-c", dest="clear", action="store_true", help="clear the selected lists (counters if none)"
    )
    p.add_argument("-M", dest="clear_home", action="store_true", help="clear the home addresses")
    p.add_argument(
        "-i",
        dest="info",
        action="store_true",
        help="the agent: role, version, configuration generation and what the last reload "
        "changed (keys added, removed, changed; bindings removed); shown when nothing is "
        "selected",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON document")
    output.add_argument(
        "-k",
        dest="keyvalue",
        action="store_true",
        help="key:value lines, each list ending ENDOFDATA",
    )
    return p


# Shown with -u when the agent has them: the correspondent entries of the binding update
# list (route optimisation).
EXTRA = {"correspondents": ("bul", "binding update list, correspondents")}


def _title(name: str) -> str:
    if name in EXTRA:
        return EXTRA[name][1]
    return "agent" if name == "status" else LISTS[name][1]


def _status_rows(status: dict) -> dict:
    """The status reply with the last reload, the start-up restore and a correspondent's
    route optimisation flattened into ``last_reload.<field>``, ``restored.<field>`` and
    ``route_optimization.<field>`` keys."""
    nested = ("lists", "last_reload", "restored", "route_optimization")
    rows = {k: v for k, v in status.items() if k not in nested}
    if isinstance(rows.get("last_errors"), list):
        rows["last_errors"] = "; ".join(
            str(e.get("message")) if isinstance(e, dict) else str(e) for e in rows["last_errors"]
        )
    for group in nested[1:]:
        for key, value in (status.get(group) or {}).items():
            shown = "; ".join(map(str, value)) if isinstance(value, list) else value
            rows[f"{group}.{key}"] = shown
    return rows


def _selected(args: argparse.Namespace) -> list[str]:
    return [c for c in LISTS if getattr(args, c.replace("-", "_"))]


# Wall-clock times in the agent's lists, shown in the table relative to now.
_EXPIRY_KEYS = frozenset({"expires"})
_SINCE_KEYS = frozenset({"registered", "last_use"})


def _relative(row: dict, now: float) -> dict:
    shown = dict(row)
    for key, value in row.items():
        if not isinstance(value, float) or value < 1e9:  # not a wall-clock time
            continue
        if key in _EXPIRY_KEYS:
            shown[key] = f"in {value - now:.0f}s" if value >= now else f"{now - value:.0f}s ago"
        elif key in _SINCE_KEYS:
            shown[key] = f"{now - value:.0f}s ago"
    return shown


def _table(title: str, rows: object, now: float | None = None) -> str:
    if isinstance(rows, list):
        now = time.time() if now is None else now
        rows = [_relative(r, now) if isinstance(r, dict) else r for r in rows]
    if isinstance(rows, dict):
        lines = [f"{title}:"] + [f"  {k:<40} {v}" for k, v in rows.items()]
        return "\n".join(lines if rows else [f"{title}: none"])
    if not rows:
        return f"{title}: none"
    assert isinstance(rows, list)
    keys = list(rows[0].keys())
    widths = {k: max(len(k), *(len(_cell(r.get(k))) for r in rows)) for k in keys}
    head = "  ".join(k.ljust(widths[k]) for k in keys)
    body = ["  ".join(_cell(r.get(k)).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join([f"{title}:", head, *body])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "-" if value is None else str(value)


def _keyvalue(name: str, rows: object) -> str:
    lines = []
    entries = [rows] if isinstance(rows, dict) else list(rows or [])
    for entry in entries:
        lines += [f"{k}:{_cell(v)}" for k, v in entry.items()]
    return "\n".join([f"list:{name}", *lines, "ENDOFDATA"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selected = _selected(args)
    try:
        if args.clear or args.clear_home:
            clear = [LISTS[c][2] for c in selected] or (
                [] if args.clear_home else ["clear-counters"]
            )
            if args.clear_home:
                clear.append("clear-home-addresses")
            for command in clear:
                call(args.socket, command)
            if not selected:
                return EXIT_OK
        status = call(args.socket, "status")
        assert isinstance(status, dict)
        shown = selected or list(status.get("lists", LISTS))
        for name, (with_list, _title_text) in EXTRA.items():
            if with_list in shown and name not in shown and name in status.get("lists", ()):
                shown.insert(shown.index(with_list) + 1, name)
        data: dict[str, object] = {}
        if args.info or not selected:
            data["status"] = _status_rows(status)
        data.update({name: call(args.socket, name) for name in shown})
    except ControlError as exc:
        print(f"mip6stat: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif args.keyvalue:
        print("\n".join(_keyvalue(name, rows) for name, rows in data.items()))
    else:
        print("\n\n".join(_table(_title(name), rows) for name, rows in data.items()))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
