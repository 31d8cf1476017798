"""Does the running kernel offer the agent a data plane? Asked once per test session.

A home agent or mobile node agent needs an IPv6-in-IPv6 data-plane backend (seg6, ip6tnl
or the eBPF tunnel, io/dataplane/probe.py); without one it refuses to start ("cannot
start: this kernel has neither seg6 lightweight tunnels nor ip6tnl ..."). Kernels built
without CONFIG_IPV6_SEG6_LWTUNNEL and CONFIG_IPV6_TUNNEL exist (some CI machines), so
where no backend works the tests that need one skip with one reason, from
:func:`require_dataplane`:
:class:`agents.AgentProcess` calls it before it starts an ``ha`` or ``mn`` agent,
test_roles.py before it starts the lab's agents, and test_dataplane.py and
test_restart_signals.py (``require_dataplane("seg6")``) before they use one backend.
Everything else still runs.

The answer is the agent's own: :func:`probe` and then :func:`select_backend` (so a new
backend counts as soon as the agent would pick it), inside a throwaway network namespace
created for it and always deleted.

Run as a script (lab/dataplane-available.sh), it prints the reason and exits
:data:`EXIT_NO_DATAPLANE` when there is no data plane, or prints ``data plane: <backend>``
and exits 0; anything else (a traceback: not root, no ``ip``) means it could not tell.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

import pytest
from mip6agent.io.dataplane import BackendUnavailableError, Capabilities, probe, select_backend
from netns import inside, namespaces

VM_HINT = "lab/kernel-vm/run.sh runs these tests on a Debian kernel"
EXIT_NO_DATAPLANE = 10  # not 1: an uncaught exception exits 1


@dataclass(frozen=True, slots=True)
class Verdict:
    capabilities: Capabilities
    backend: str | None  # what an agent with ``dataplane: auto`` would use here
    missing: str | None  # why there is none, in one line


@functools.cache
def verdict() -> Verdict:
    """Probe once (per process, so per session), in a namespace made for it."""
    if os.geteuid() != 0:
        raise RuntimeError("probing the data plane needs root for a network namespace")
    with namespaces("dpprobe") as ns, inside(ns["dpprobe"]):
        caps = probe()
        try:
            backend = select_backend("auto", capabilities=caps)
        except BackendUnavailableError:
            # Each backend's probe result (seg6, ip6tnl, bpf: whatever the probe tried), on
            # one line: a tool's output in a reason can span several.
            tried = {
                name: " ".join(text.split())
                for name, text in caps.reasons.items()
                if name not in ("subtrees", "esp", "mip6")
            }
            others = ", and no other backend works" if set(tried) - {"seg6", "ip6tnl"} else ""
            details = "; ".join(f"{name}: {text}" for name, text in tried.items())
            missing = (
                "this kernel has no IPv6-in-IPv6 data plane: neither "
                f"CONFIG_IPV6_SEG6_LWTUNNEL nor CONFIG_IPV6_TUNNEL{others} ({details})"
            )
            return Verdict(caps, None, missing)
        try:
            return Verdict(caps, backend.name, None)
        finally:
            backend.cleanup()  # the bpf backend's pins too: they outlive the namespace
            backend.close()


def require_dataplane(backend: str | None = None) -> None:
    """Skip the calling test unless an ``ha`` or ``mn`` agent could start on this kernel
    and, with ``backend`` (``seg6``, ``ip6tnl``: a test that uses that one), it works."""
    found = verdict()
    if found.missing is not None:
        pytest.skip(f"{found.missing}; {VM_HINT}")
    if backend is not None and not getattr(found.capabilities, backend):
        why = " ".join(found.capabilities.reasons.get(backend, "?").split())
        pytest.skip(f"this kernel has no {backend}: {why} ({VM_HINT})")


def main() -> int:
    found = verdict()
    print(found.missing or f"data plane: {found.backend}")
    return EXIT_NO_DATAPLANE if found.missing else 0


if __name__ == "__main__":
    sys.exit(main())
