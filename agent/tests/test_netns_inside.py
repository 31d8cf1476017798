"""netns.inside(): the calling thread enters the namespace for the block and is back in its
own one afterwards, also when the block raises (a failing test must not leave the rest of
the run inside a namespace it is about to delete)."""

from __future__ import annotations

import os
import subprocess

import pytest
from netns import inside

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _net_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_inside_enters_and_returns_even_when_the_block_raises() -> None:
    name = f"mip6-inside-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        own = _net_inode()
        theirs = os.stat(f"/run/netns/{name}").st_ino
        assert own != theirs
        with inside(name):
            assert _net_inode() == theirs
            # A child started in the block lives in the namespace too: it sees only lo.
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
            assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
        assert _net_inode() == own
        with pytest.raises(RuntimeError), inside(name):
            raise RuntimeError("a failing test body")
        assert _net_inode() == own, "an exception left the thread in the namespace"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
