"""Ask the running kernel what it can do, by trying it, and pick a data-plane backend.

Every probe creates a throwaway object and deletes it at once, in the caller's network
namespace: a seg6 ``encap.red`` route, a seg6local route and an ``ipproto 41`` rule in an
unused table; an ip6tnl device; an ESP xfrm state; a Mobile IPv6 (``route2``, mode ro)
xfrm state. Kernel versions and config files are never consulted: a distro may patch,
build as modules or blacklist any of these.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from types import MappingProxyType
from typing import Literal

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, nlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkSocket

from .base import BackendUnavailableError, DataPlane, DataPlaneConfig, DataPlaneError
from .bpf_tunnel import BpfTunnelDataPlane
from .ip6tnl import Ip6tnlDataPlane
from .netlink import (
    SEG6_LOCAL_ACTION_END_DX6,
    BpfEncap,
    Ip6Tunnel,
    Netlink,
    Route,
    Rule,
    Seg6Encap,
    Seg6LocalEncap,
    host,
    kernel_error,
)
from .seg6 import Seg6DataPlane

Preference = Literal["auto", "seg6", "ip6tnl", "bpf"]

# Documentation addresses (RFC 3849) nobody routes, and a table id ("mip6") nobody uses.
_PROBE_SRC = IPv6Address("2001:db8:ffff::1")
_PROBE_DST = IPv6Address("2001:db8:ffff::2")
_PROBE_COA = IPv6Address("2001:db8:ffff::3")
_PROBE_TABLE = 0x6D697036
_PROBE_PREF = 32700

NETLINK_XFRM = 6
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MODE_TRANSPORT = 0
XFRM_MODE_ROUTEOPTIMIZATION = 2
IPPROTO_ESP = 50
IPPROTO_ROUTING = 43
_XFRM_INF = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the kernel accepted. ``reasons`` has the kernel's answer for each probe."""

    seg6: bool
    ip6tnl: bool
    esp: bool
    mip6: bool
    subtrees: bool = False
    reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    bpf: bool = False

    def describe(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in self.reasons.items())


def probe(config: DataPlaneConfig | None = None) -> Capabilities:
    """Probe the kernel of the calling thread's network namespace (needs CAP_NET_ADMIN)."""
    cfg = config or DataPlaneConfig()
    reasons: dict[str, str] = {}
    seg6 = subtrees = ip6tnl = bpf = False
    try:
        nl = Netlink()
    except DataPlaneError as exc:
        reasons.update(seg6=str(exc), subtrees=str(exc), ip6tnl=str(exc), bpf=str(exc))
    else:
        try:
            seg6 = _record(reasons, "seg6", lambda: _probe_seg6(nl, cfg))
            subtrees = _record(reasons, "subtrees", lambda: _probe_subtrees(nl, cfg))
            ip6tnl = _record(reasons, "ip6tnl", lambda: _probe_ip6tnl(nl, cfg))
            if not (seg6 or ip6tnl):  # it compiles and loads programs: only when needed
                bpf = _record(reasons, "bpf", lambda: _probe_bpf(nl, cfg))
        finally:
            nl.close()
    esp = _record(reasons, "esp", lambda: _probe_xfrm(IPPROTO_ESP))
    mip6 = _record(reasons, "mip6", lambda: _probe_xfrm(IPPROTO_ROUTING))
    return Capabilities(seg6, ip6tnl, esp, mip6, subtrees, MappingProxyType(reasons), bpf)


def select_backend(
    preference: Preference = "auto",
    config: DataPlaneConfig | None = None,
    capabilities: Capabilities | None = None,
) -> DataPlane:
    """The backend to use here, or :class:`BackendUnavailableError` with a one-line reason.

    ``auto`` prefers seg6 (the backend integration-tested on real kernels), then ip6tnl,
    then bpf (eBPF programs on the seg6 backend's routes, for kernels with neither).
    """
    caps = capabilities if capabilities is not None else probe(config)
    backends: dict[str, tuple[bool, Callable[[], DataPlane]]] = {
        "seg6": (caps.seg6, lambda: Seg6DataPlane(config)),
        "ip6tnl": (caps.ip6tnl, lambda: Ip6tnlDataPlane(config)),
        "bpf": (caps.bpf, lambda: BpfTunnelDataPlane(config)),
    }
    if preference not in ("auto", *backends):
        raise ValueError(
            f"data plane preference must be auto, seg6, ip6tnl or bpf, not {preference!r}"
        )
    if preference != "auto":
        available, make = backends[preference]
        if not available:
            why = caps.reasons.get(preference, "not available")
            raise BackendUnavailableError(
                f"the {preference} data plane does not work on this kernel: {why}"
            )
        return make()
    for available, make in backends.values():
        if available:
            return make()
    raise BackendUnavailableError(
        "this kernel has neither seg6 lightweight tunnels nor ip6tnl, and the eBPF tunnel "
        f"does not work: seg6: {caps.reasons.get('seg6', '?')}; "
        f"ip6tnl: {caps.reasons.get('ip6tnl', '?')}; bpf: {caps.reasons.get('bpf', '?')}"
    )


# --- probes ----------------------------------------------------------------------------


def _record(reasons: dict[str, str], name: str, attempt: Callable[[], str]) -> bool:
    try:
        reasons[name] = attempt()
    except DataPlaneError as exc:
        reasons[name] = exc.detail
        return False
    return True


def _probe_seg6(nl: Netlink, cfg: DataPlaneConfig) -> str:
    lo = nl.ifindex("lo")
    encap = Route(host(_PROBE_DST), _PROBE_TABLE, lo, cfg.proto, encap=Seg6Encap((_PROBE_SRC,)))
    with _temporary_route(nl, encap, "seg6 encap.red route"):
        pass
    notes = ["encap.red route ok"]
    local = Route(
        host(_PROBE_SRC),
        _PROBE_TABLE,
        lo,
        cfg.proto,
        encap=Seg6LocalEncap(SEG6_LOCAL_ACTION_END_DX6, nh6=IPv6Address("::")),
    )
    try:
        with _temporary_route(nl, local, "seg6local End.DX6 route"):
            pass
        notes.append("seg6local ok")
    except DataPlaneError as exc:
        # seg6local needs an up device; lo is down only in a namespace nobody set up.
        if exc.errno != errno.ENETDOWN:
            raise
        notes.append("seg6local not tried (lo is down)")
    rule = Rule(_PROBE_PREF, _PROBE_TABLE, cfg.proto, dst=host(_PROBE_DST), ip_proto=41)
    nl.add_rule(rule, "probe ipproto rule")
    nl.delete_rule(rule, "probe ipproto rule")
    notes.append("ipproto rules ok")
    if nl.tunsrc() is None:
        notes.append(f"no tunnel-source control: {nl.tunsrc_unavailable}")
    return ", ".join(notes)


def _probe_subtrees(nl: Netlink, cfg: DataPlaneConfig) -> str:
    lo = nl.ifindex("lo")
    route = Route(
        host(_PROBE_DST),
        _PROBE_TABLE,
        lo,
        cfg.proto,
        src=host(_PROBE_SRC),
        encap=Seg6Encap((_PROBE_SRC,)),
    )
    with _temporary_route(nl, route, "source-specific route"):
        pass
    return "source-specific routes ok"


def _probe_ip6tnl(nl: Netlink, cfg: DataPlaneConfig) -> str:
    name = f"{cfg.tunnel_prefix}p{os.getpid() % 100000}"
    tunnel = Ip6Tunnel(name, _PROBE_SRC, _PROBE_DST, 0, up=False)
    nl.create_tunnel(tunnel, f"probe ip6tnl device {name}")
    for found in nl.tunnels():
        if found.name == name:
            nl.delete_link(found.index, f"probe ip6tnl device {name}")
    return "ip6tnl device ok"


def _probe_bpf(nl: Netlink, cfg: DataPlaneConfig) -> str:
    """Programs build and load, and the kernel takes an ``encap bpf xmit`` route."""
    from .bpf_tunnel import TunnelBpf, TunnelBpfError

    bpf = TunnelBpf()
    fresh = False
    try:
        fresh = bpf.load()
        lo = nl.ifindex("lo")
        encap = BpfEncap("mip6:probe", bpf.progs["encap"])
        with _temporary_route(nl, Route(host(_PROBE_DST), _PROBE_TABLE, lo, cfg.proto,
                                        encap=encap), "bpf xmit route"):  # fmt: skip
            pass
    except TunnelBpfError as exc:
        raise DataPlaneError("probe", "eBPF tunnel", exc.detail) from None
    finally:
        bpf.close()
        if fresh:  # a probe leaves nothing behind; pins a running data plane uses stay
            with suppress(OSError):
                bpf.unpin()
    return "encap bpf xmit route ok"


@contextmanager
def _temporary_route(nl: Netlink, route: Route, what: str) -> Iterator[None]:
    nl.create_route(route, f"probe {what}")
    try:
        yield
    finally:
        nl.delete_route(route, f"probe {what}")


class _XfrmUsersa(nlmsg):
    """struct xfrm_usersa_info (224 bytes on 64-bit) followed by XFRMA_* attributes."""

    fields = (("info", "224s"),)
    nla_map = (
        (0, "XFRMA_UNSPEC", "none"),
        (1, "XFRMA_ALG_AUTH", "cdata"),
        (2, "XFRMA_ALG_CRYPT", "cdata"),
        (13, "XFRMA_SRCADDR", "cdata"),
        (14, "XFRMA_COADDR", "cdata"),
    )


class _XfrmUsersaId(nlmsg):
    """struct xfrm_usersa_id: daddr, spi, family, proto."""

    fields = (("id", "24s"),)
    nla_map = _XfrmUsersa.nla_map


def _usersa_info(spi: int, proto: int, mode: int) -> bytes:
    # xfrm_selector: daddr, saddr, ports/masks, family, prefix lengths, proto, ifindex, uid.
    selector = bytes(32) + struct.pack("=4HHBBB3xiI", 0, 0, 0, 0, socket.AF_INET6, 0, 0, 0, 0, 0)
    xfrm_id = _PROBE_DST.packed + struct.pack(">I", spi) + struct.pack("=B3x", proto)
    lifetime = struct.pack("=8Q", _XFRM_INF, _XFRM_INF, _XFRM_INF, _XFRM_INF, 0, 0, 0, 0)
    current, stats = bytes(32), bytes(12)
    tail = struct.pack("=IIHBBB7x", 0, 0, socket.AF_INET6, mode, 0, 0)
    return selector + xfrm_id + _PROBE_SRC.packed + lifetime + current + stats + tail


def _algorithm(name: str, key_bytes: int) -> bytes:
    """struct xfrm_algo: name[64], key length in bits, key."""
    return name.encode().ljust(64, b"\0") + struct.pack("=I", key_bytes * 8) + bytes(key_bytes)


def _probe_xfrm(proto: int) -> str:
    """Add and delete one xfrm state: ESP (CONFIG_INET6_ESP) or route2 (CONFIG_IPV6_MIP6)."""
    what = "ESP xfrm state" if proto == IPPROTO_ESP else "Mobile IPv6 route2 xfrm state"
    spi = 0x6D690000 | (os.getpid() & 0xFFFF) if proto == IPPROTO_ESP else 0
    add = _XfrmUsersa()
    if proto == IPPROTO_ESP:
        add["info"] = _usersa_info(spi, proto, XFRM_MODE_TRANSPORT)
        add["attrs"] = [
            ("XFRMA_ALG_CRYPT", _algorithm("cbc(aes)", 16)),
            ("XFRMA_ALG_AUTH", _algorithm("hmac(sha256)", 32)),
        ]
    else:
        add["info"] = _usersa_info(spi, proto, XFRM_MODE_ROUTEOPTIMIZATION)
        add["attrs"] = [("XFRMA_COADDR", _PROBE_COA.packed)]
    delete = _XfrmUsersaId()
    # struct xfrm_usersa_id: the SPI in network order, the family in host order. (A
    # big-endian family made the delete miss on kernels with ESP/MIP6: ESRCH, state left.)
    delete["id"] = (
        _PROBE_DST.packed + struct.pack(">I", spi) + struct.pack("=HBx", socket.AF_INET6, proto)
    )
    if proto != IPPROTO_ESP:
        # States without an SPI are found by addresses: the source must be given.
        delete["attrs"] = [("XFRMA_SRCADDR", _PROBE_SRC.packed)]
    try:
        sock = NetlinkSocket(family=NETLINK_XFRM, ext_ack=True)
    except OSError as exc:
        raise kernel_error("open", "xfrm netlink socket", exc) from None
    try:
        sock.bind()
        sock.asyncore.status["nlm_generator"] = False
        flags = NLM_F_REQUEST | NLM_F_ACK
        try:
            sock.nlm_request(add, XFRM_MSG_NEWSA, flags | NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # left by an interrupted probe: the type exists
                raise kernel_error("add", what, exc) from None
        except OSError as exc:
            raise kernel_error("add", what, exc) from None
        try:
            sock.nlm_request(delete, XFRM_MSG_DELSA, flags)
        except (NetlinkError, OSError) as exc:
            raise kernel_error("remove", f"probe {what} (remove it by hand)", exc) from None
    finally:
        sock.close()
    return f"{what} ok"
