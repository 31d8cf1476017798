"""Throwaway network namespaces for integration tests; always removed afterwards."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


@contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Create one namespace per role name; yield role -> namespace name."""
    names = {role: unique(f"m6{role[:3]}") for role in roles}
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair between two namespaces, both ends up."""
    ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    ip("-n", ns_a, "link", "set", if_a, "up")
    ip("-n", ns_b, "link", "set", if_b, "up")


def address(ns: str, ifname: str, cidr: str) -> None:
    ip("-n", ns, "addr", "add", cidr, "dev", ifname, "nodad")


def run_in(ns: str, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], text=True, **kwargs)  # type: ignore[call-overload]


def popen_in(ns: str, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **kwargs)  # type: ignore[call-overload]
