"""Interoperability of our agent with UMIP (mip6d 1.0), on a kernel with CONFIG_IPV6_MIP6.

Runs in the kernel VM (lab/interop/run.sh, ``make interop``), on the standard namespace
topology of agent/tests/topology.py with radvd on every link (the home agent's radvd with
the H flag, the Home Agent Information option and the R bit, which UMIP's home agent
needs). IPsec is off on both sides (``authentication: disabled`` here, ``UseMnHaIPsec
disabled`` there); our agents use the ip6tnl data plane. docs/interop.md explains the
matrix and what each case proves.

Every case captures every link (home, foreign1, foreign2, cn), decodes the captures with
tshark and with mip6dump and asks that they agree field for field, and pairs every Binding
Update with its Binding Acknowledgement by sequence number on the wire.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from agents import KEY_HEX, NAI, AgentProcess, wait_until, write_keys
from captures import LinkCaptures, decode_both, tshark_mobility
from topology import CN_ADDRESS, HA_ADDRESS, LINKS, MN_SLAAC_ID, Topology
from umip import Mip6d, cn_conf, ha_conf, mip6d_binary, mn_conf

MIP6D = mip6d_binary()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        MIP6D is None, reason="no mip6d: MIP6_INTEROP_MIP6D (make interop builds and sets it)"
    ),
]

HOME_PREFIX = "2001:db8:1::/64"
# The MN's veth has MAC 02:00:00:00:01:00, so its link-local address is fe80::ff:fe00:100.
# A home address with that interface identifier makes UMIP's MN set the L bit (its config
# parser checks for fe80::<HoA IID> on the home interface); ::100 does not.
HOA_L_SET = LINKS["home"].host(MN_SLAAC_ID)
HOA_L_CLEAR = LINKS["home"].host(0x100)
MN_LINK_LOCAL = IPv6Address("fe80::ff:fe00:100")
ALL_LINKS = ["home", "foreign1", "foreign2", "cn"]
# The handover walk of every case: where the MN goes, and whether it is registered there.
WALK = [("foreign1", True), ("foreign2", True), ("home", False), ("foreign1", True)]
SETTLE = 90.0  # seconds to wait for a registration under TCG


@pytest.fixture(scope="session", autouse=True)
def _vm_setup() -> Iterator[None]:
    """mip6d's console resolves "localhost": the VM's minimal root has no /etc/hosts."""
    created = False
    if not os.path.exists("/etc/hosts"):
        Path("/etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        created = True
    for module in ("mip6", "ip6_tunnel", "xfrm_user", "xfrm6_tunnel", "xfrm_ipcomp"):
        subprocess.run(["modprobe", "-q", module], capture_output=True)
    yield
    if created:
        os.unlink("/etc/hosts")


# --- our agents -----------------------------------------------------------------------


def our_ha(topo: Topology, directory: Path, authenticated: bool = False) -> AgentProcess:
    config: dict = {
        "role": "ha",
        "dataplane": "ip6tnl",
        "home_agent": {
            "interfaces": ["eth0"],
            "home_prefixes": [HOME_PREFIX],
            "address": str(HA_ADDRESS),
        },
    }
    if authenticated:
        config["keys_file"] = str(write_keys(directory / "keys"))
    else:
        config["authentication"] = "disabled"
    return AgentProcess(topo.ns["ha"], directory, config)


def our_mn(
    topo: Topology,
    directory: Path,
    hoa: IPv6Address,
    home_agent: IPv6Address | None = HA_ADDRESS,
    authenticated: bool = False,
    correspondents: list[IPv6Address] | None = None,
) -> AgentProcess:
    home = {"address": f"{hoa}/64", "interface": "eth0"}
    if home_agent is not None:
        home["home_agent"] = str(home_agent)
    mobile_node: dict = {"home_addresses": [home], "interfaces": ["eth0"]}
    if correspondents:
        mobile_node["route_optimization"] = True
        mobile_node["correspondents"] = [str(c) for c in correspondents]
    config: dict = {"role": "mn", "dataplane": "ip6tnl", "mobile_node": mobile_node}
    if authenticated:
        config["keys_file"] = str(write_keys(directory / "keys", KEY_HEX))
        mobile_node["nai"] = NAI
    else:
        config["authentication"] = "disabled"
    return AgentProcess(topo.ns["mn"], directory, config)


def our_binding(ha: AgentProcess, hoa: IPv6Address) -> dict | None:
    return next((b for b in ha.call("bindings") if b["home_address"] == str(hoa)), None)


def our_bul(mn: AgentProcess, hoa: IPv6Address) -> dict | None:
    return next((e for e in mn.call("bul") if e["home_address"] == str(hoa)), None)


# --- the topology and its captures ------------------------------------------------------


class InteropTopology(Topology):
    """The standard topology with slower Router Advertisements (0.5 to 1.5 s).

    Under TCG a VM process can stall for longer than the standard 30-70 ms interval's
    90 ms Advertisement Interval option: UMIP's MN then expires its router and
    re-registers over and over (seen in the first runs). 1.5 s keeps movement detection
    within seconds.
    """

    def _ra_common(self) -> str:
        return (
            super()
            ._ra_common()
            .replace("MinRtrAdvInterval 0.03;", "MinRtrAdvInterval 0.5;")
            .replace("MaxRtrAdvInterval 0.07;", "MaxRtrAdvInterval 1.5;")
        )


@contextmanager
def interop_topology(case_dir: Path, mn_link: str = "foreign1") -> Iterator[tuple]:
    """The topology with radvd everywhere and SLAAC on the MN, every link captured.

    On exit (also on failure) the captures are written to ``case_dir`` before anything is
    torn down, so a failed case still leaves its evidence.
    """
    with InteropTopology(
        mn_link=mn_link, addressing="slaac", radvd=True, ra_default_lifetime=10
    ) as topo:
        captures = LinkCaptures(topo, ALL_LINKS)
        try:
            yield topo, captures
        finally:
            captures.write(case_dir / "pcap")


def check_wire(case_dir: Path, record: dict) -> list[dict[str, str]]:
    """Both decoders on every link's capture; returns mip6dump's packets of all links."""
    packets = []
    disagreements = []
    for link in ALL_LINKS:
        path = case_dir / "pcap" / f"{link}.pcap"
        ours, differ = decode_both(path)
        disagreements += differ
        theirs = tshark_mobility(path)
        mine = {p["frame.number"] for p in ours if "mip6.mhtype" in p}
        missed = [r for r in theirs if r["frame.number"] not in mine]
        disagreements += [f"{link} frame {r['frame.number']}: mip6dump missed MH" for r in missed]
        for packet in ours:
            packet["link"] = link
        packets += ours
    record["mobile_ipv6_packets_decoded"] = len(packets)
    record["decoder_disagreements"] = disagreements[:20]
    (case_dir / "mip6dump.json").write_text("".join(f"{p}\n" for p in packets))
    assert not disagreements, "tshark and mip6dump disagree:\n" + "\n".join(disagreements[:20])
    return packets


def mh(packets: list[dict[str, str]], mh_type: int) -> list[dict[str, str]]:
    return [p for p in packets if p.get("mip6.mhtype") == str(mh_type)]


def icmp(packets: list[dict[str, str]], *types: int) -> list[dict[str, str]]:
    wanted = {str(t) for t in types}
    return [p for p in packets if set(p.get("icmpv6.type", "").split(",")) & wanted]


def echoes(packets: list[dict[str, str]]) -> list[dict[str, str]]:
    """Data packets (ICMPv6 echo request/reply), not signalling such as an MPA with RH2."""
    return [p for p in icmp(packets, 128, 129) if "mip6.mhtype" not in p]


def check_home_registrations(
    packets: list[dict[str, str]], home_agent: IPv6Address, record: dict, minimum: int
) -> list[dict[str, str]]:
    """Every home-registration BU to ``home_agent`` has a BA with its sequence number and
    status 0 (accepted) from it; returns the BUs."""
    bus = [p for p in mh(packets, 5) if p.get("mip6.bu.h_flag") == "1"]
    bus = [p for p in bus if p["ipv6.dst"] == str(home_agent)]
    bas = [p for p in mh(packets, 6) if p["ipv6.src"] == str(home_agent)]
    statuses = {p["mip6.ba.seqnr"]: p["mip6.ba.status"] for p in bas}
    sequences = sorted({int(p["mip6.bu.seqnr"]) for p in bus})
    record["bu_sequences"] = sequences
    record["ba_statuses"] = sorted({int(s) for s in statuses.values()})
    record["bu_flags_l"] = sorted({p.get("mip6.bu.l_flag", "") for p in bus})
    assert len(sequences) >= minimum, f"{len(sequences)} home-registration BUs on the wire"
    unanswered = [s for s in sequences if str(s) not in statuses]
    # A retransmitted BU (new sequence number) may stand in for one that was lost.
    assert len(sequences) - len(unanswered) >= minimum, f"BUs without a BA: {unanswered}"
    refused = {s: v for s, v in statuses.items() if v != "0"}
    # A deregistration retransmitted after the HA accepted an earlier one finds no binding:
    # 133 is the HA's RFC 6275 10.3.2 answer. Recorded, not refused.
    lifetimes = {p["mip6.bu.seqnr"]: p["mip6.bu.lifetime"] for p in bus}
    accepted_deregs = [int(s) for s, v in statuses.items() if v == "0" and lifetimes.get(s) == "0"]
    late = {
        s: v
        for s, v in refused.items()
        if v == "133" and lifetimes.get(s) == "0" and any(a < int(s) for a in accepted_deregs)
    }
    if late:
        record["retransmitted_deregistrations_133"] = sorted(int(s) for s in late)
    refused = {s: v for s, v in refused.items() if s not in late}
    assert not refused, f"BA statuses other than 0: {refused}"
    return bus


def our_mn_home(mn: AgentProcess, hoa: IPv6Address, record: dict) -> bool:
    """Our MN has deregistered. Also accepted, and recorded as the deviation it is
    (docs/interop.md): the MN gave up with status 133 because it retransmitted its
    deregistration before the first one's BA came back; the HA had accepted that one and
    then rightly answered 133 (no binding) to the retransmissions."""
    entry = our_bul(mn, hoa) or {}
    if entry.get("state") == "idle":
        return True
    if entry.get("state") == "failed" and "133" in str(entry.get("reason")):
        record.setdefault("deviations", []).append(
            "our MN: deregistration retransmitted before the BA came; it ended failed "
            f"with 133: {entry.get('reason')}"
        )
        return True
    return False


def traffic_both_ways(topo: Topology, hoa: IPv6Address, what: str) -> None:
    assert topo.ping("cn", hoa, deadline=20), f"CN -> HoA {what}"
    assert topo.ping("mn", CN_ADDRESS, source=hoa, deadline=20), f"HoA -> CN {what}"


def log_step(record: dict, name: str, started: float) -> None:
    record.setdefault("steps", {})[name] = round(time.monotonic() - started, 2)


# --- UMIP mobile node -> our home agent -------------------------------------------------


@pytest.mark.parametrize("l_bit", ["L-set", "L-clear"])
def test_umip_mn_our_ha(case_dir: Path, record: dict, l_bit: str) -> None:
    """UMIP's MN registers with our HA, hands over, returns home, leaves again."""
    hoa = HOA_L_SET if l_bit == "L-set" else HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        ha = stack.enter_context(our_ha(topo, case_dir / "ha"))
        umip = Mip6d(MIP6D, topo.ns["mn"], case_dir / "umip-mn", mn_conf(f"{hoa}/64", HA_ADDRESS))
        stack.callback(umip.stop)
        started = time.monotonic()
        umip.start()
        log_step(record, "mip6d_started", started)
        for index, (link, away) in enumerate(WALK):
            step = time.monotonic()
            if index:
                topo.move("mn", link)
            coa = str(topo.mn_address(link))
            if away:
                wait_until(
                    lambda coa=coa: (our_binding(ha, hoa) or {}).get("care_of_address") == coa,
                    deadline=SETTLE,
                    what=f"our HA's binding {hoa} -> {coa}",
                )
                wait_until(
                    lambda coa=coa: any(
                        str(e.care_of_address) == coa and e.status == "ready"
                        for e in umip.binding_update_list()
                        if e.home_address == hoa
                    ),
                    deadline=SETTLE,
                    what=f"UMIP's BUL entry at {coa}, acknowledged",
                )
                log_step(record, f"{index}:{link}:registered", step)
                binding = our_binding(ha, hoa)
                assert binding is not None
                flags = int(binding["flags"])
                if l_bit == "L-set":
                    assert flags & 0x2000, f"our HA's binding lacks L: {binding}"
                else:
                    assert not flags & 0x2000, f"our HA's binding has L: {binding}"
            else:
                wait_until(
                    lambda: our_binding(ha, hoa) is None,
                    deadline=SETTLE,
                    what="our HA's binding gone after return home",
                )
                wait_until(
                    lambda: not [e for e in umip.binding_update_list() if e.home_address == hoa],
                    deadline=SETTLE,
                    what="UMIP's BUL empty at home",
                )
                log_step(record, f"{index}:{link}:deregistered", step)
            traffic_both_ways(topo, hoa, f"at {link}")
            log_step(record, f"{index}:{link}:traffic", step)
        (case_dir / "umip-mn" / "bul.txt").write_text(umip.vt("bul"))
    check_umip_log(umip, record)
    packets = check_wire(case_dir, record)
    check_home_registrations(packets, HA_ADDRESS, record, minimum=4)
    # UMIP's MN solicits mobile prefixes (SendMobPfxSols); our HA answers with an MPA.
    record["mps_from_umip"] = len({p.get("icmpv6.mip6.identifier") for p in icmp(packets, 146)})
    record["mpa_from_our_ha"] = len({p.get("icmpv6.mip6.identifier") for p in icmp(packets, 147)})
    bus = [p for p in mh(packets, 5) if p["ipv6.dst"] == str(HA_ADDRESS)]
    expected = "1" if l_bit == "L-set" else "0"
    assert {p.get("mip6.bu.l_flag") for p in bus} == {expected}, "UMIP's BU L flag"


def check_umip_log(umip: Mip6d, record: dict) -> None:
    """mip6d's exit status says nothing: its log must show no error status and no crash."""
    log = umip.log()
    record.setdefault("umip_log_lines", {})[umip.directory.name] = log.count("\n")
    errors = [
        line
        for line in log.splitlines()
        if "error status" in line or "Segmentation" in line or "assert" in line.lower()
    ]
    assert "started" in log, f"mip6d never said it started:\n{log[-3000:]}"
    assert not errors, "mip6d logged errors:\n" + "\n".join(errors[:20])


# --- our HA's defence of the MN's link-local address (L flag) ---------------------------


def solicit(topo: Topology, target: IPv6Address, wait: float = 3.0) -> list[tuple[str, bytes]]:
    """A Neighbor Solicitation for ``target`` from the router on the home link; returns
    (source address, target link-layer address) of every answering Advertisement."""
    link = "home"
    group = IPv6Address("ff02::1:ff00:0") + (int(target) & 0xFFFFFF)
    with topo.inside("router"):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        index = _ifindex(topo, "router", link)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        mac = bytes.fromhex(_mac(topo, "router", link).replace(":", ""))
        ns = struct.pack("!BBHI", 135, 0, 0, 0) + target.packed + bytes([1, 1]) + mac
        sock.sendto(ns, (str(group), 0, 0, index))
        answers = []
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, address = sock.recvfrom(65535)
            if len(data) < 24 or data[0] != 136 or IPv6Address(data[8:24]) != target:
                continue
            tlla = b""
            options = data[24:]
            while len(options) >= 8 and options[1]:
                if options[0] == 2:
                    tlla = options[2:8]
                options = options[options[1] * 8 :]
            answers.append((address[0].split("%")[0], tlla))
        return answers
    finally:
        sock.close()


def _ifindex(topo: Topology, node: str, ifname: str) -> int:
    with topo.inside(node):
        return socket.if_nametoindex(ifname)


def _mac(topo: Topology, node: str, ifname: str) -> str:
    out = topo.ip(node, "-o", "link", "show", "dev", ifname)
    return out.split("link/ether ")[1].split()[0]


def proxied(topo: Topology) -> str:
    return topo.ip("ha", "-6", "neigh", "show", "proxy")


@pytest.mark.lbit
def test_our_ha_defends_umip_mn_link_local(case_dir: Path, record: dict) -> None:
    """RFC 6275 10.3.1/10.4.1: with L set, our HA proxies and defends fe80::<HoA IID> on
    the home link while the binding lives, and stops when it goes."""
    hoa = HOA_L_SET
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        ha = stack.enter_context(our_ha(topo, case_dir / "ha"))
        umip = Mip6d(MIP6D, topo.ns["mn"], case_dir / "umip-mn", mn_conf(f"{hoa}/64", HA_ADDRESS))
        stack.callback(umip.stop)
        umip.start()
        wait_until(lambda: our_binding(ha, hoa) is not None, deadline=SETTLE, what="binding")
        ha_mac = bytes.fromhex(_mac(topo, "ha", "eth0").replace(":", ""))
        # The HA runs DAD for the link-local address (1 s) before it proxies it.
        wait_until(
            lambda: str(MN_LINK_LOCAL) in proxied(topo).split(),
            deadline=15,
            what="a proxy entry for the MN's link-local on the home link",
        )
        record["proxy_while_bound"] = proxied(topo)
        answers = solicit(topo, MN_LINK_LOCAL)
        record["na_while_bound"] = [(src, tlla.hex()) for src, tlla in answers]
        assert any(tlla == ha_mac for _src, tlla in answers), "the HA did not answer the NS"
        topo.move("mn", "home")
        wait_until(lambda: our_binding(ha, hoa) is None, deadline=SETTLE, what="deregistered")
        wait_until(
            lambda: str(MN_LINK_LOCAL) not in proxied(topo),
            deadline=10,
            what="the link-local proxy entry gone after deregistration",
        )
        record["proxy_after_deregistration"] = proxied(topo)
        answers = solicit(topo, MN_LINK_LOCAL)
        record["na_after_deregistration"] = [(src, tlla.hex()) for src, tlla in answers]
        # At home the MN answers for itself; the HA must not any more.
        assert not any(tlla == ha_mac for _src, tlla in answers), "the HA still answers"
    packets = check_wire(case_dir, record)
    assert {p.get("mip6.bu.l_flag") for p in mh(packets, 5)} == {"1"}


# --- our mobile node -> UMIP home agent -------------------------------------------------


def umip_binding(umip: Mip6d, hoa: IPv6Address, status: str = "registered") -> str | None:
    """The care-of address of UMIP's binding for ``hoa`` (a home agent's entries are
    "registered", a correspondent's "cached")."""
    for entry in umip.binding_cache():
        if entry.home_address == hoa and entry.status == status:
            return str(entry.care_of_address)
    return None


def test_our_mn_umip_ha(case_dir: Path, record: dict) -> None:
    """Our MN registers with UMIP's HA, hands over, returns home, leaves again."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        umip = Mip6d(MIP6D, topo.ns["ha"], case_dir / "umip-ha", ha_conf())
        stack.callback(umip.stop)
        umip.start()
        mn = stack.enter_context(our_mn(topo, case_dir / "mn", hoa))
        walk_our_mn(topo, mn, umip, hoa, record)
        (case_dir / "umip-ha" / "bc.txt").write_text(umip.vt("bc"))
    check_umip_log(umip, record)
    packets = check_wire(case_dir, record)
    check_home_registrations(packets, HA_ADDRESS, record, minimum=4)


def walk_our_mn(
    topo: Topology, mn: AgentProcess, umip: Mip6d, hoa: IPv6Address, record: dict
) -> None:
    for index, (link, away) in enumerate(WALK):
        step = time.monotonic()
        if index:
            topo.move("mn", link)
        coa = str(topo.mn_address(link))
        if away:
            wait_until(
                lambda coa=coa: umip_binding(umip, hoa) == coa,
                deadline=SETTLE,
                what=f"UMIP HA's binding {hoa} -> {coa}",
            )
            wait_until(
                lambda coa=coa: (
                    (our_bul(mn, hoa) or {}).get("care_of_address") == coa
                    and our_bul(mn, hoa)["state"] == "registered"
                ),
                deadline=SETTLE,
                what=f"our MN registered at {coa}",
            )
            log_step(record, f"{index}:{link}:registered", step)
        else:
            wait_until(
                lambda: umip_binding(umip, hoa) is None,
                deadline=SETTLE,
                what="UMIP HA's binding gone at home",
            )
            wait_until(
                lambda: our_mn_home(mn, hoa, record),
                deadline=SETTLE,
                what="our MN idle at home",
            )
            log_step(record, f"{index}:{link}:deregistered", step)
        traffic_both_ways(topo, hoa, f"at {link}")
        log_step(record, f"{index}:{link}:traffic", step)


def test_our_mn_finds_umip_ha_by_dhaad(case_dir: Path, record: dict) -> None:
    """Our MN without a configured HA asks DHAAD; UMIP's HA replies; the MN registers."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        umip = Mip6d(MIP6D, topo.ns["ha"], case_dir / "umip-ha", ha_conf())
        stack.callback(umip.stop)
        umip.start()
        mn = stack.enter_context(our_mn(topo, case_dir / "mn", hoa, home_agent=None))
        coa = str(topo.mn_address("foreign1"))
        wait_until(lambda: umip_binding(umip, hoa) == coa, deadline=SETTLE, what="binding")
        wait_until(
            lambda: (our_bul(mn, hoa) or {}).get("state") == "registered",
            deadline=SETTLE,
            what="our MN registered with the discovered HA",
        )
        entry = our_bul(mn, hoa)
        assert entry is not None and entry["home_agent"] == str(HA_ADDRESS)
        counters = mn.call("counters")
        record["mn_counters"] = {k: v for k, v in counters.items() if "dhaad" in k or "mp" in k}
        assert counters.get("dhaad_reply_in", 0) >= 1
        traffic_both_ways(topo, hoa, "at foreign1")
    check_umip_log(umip, record)
    packets = check_wire(case_dir, record)
    replies = [p for p in packets if p.get("icmpv6.type") == "145"]
    record["dhaad_replies"] = [p.get("icmpv6.mip6.home_agent_address") for p in replies]
    assert replies and all(p["ipv6.src"] == str(HA_ADDRESS) for p in replies)
    record["mobile_prefix_advertisements"] = len(
        [p for p in packets if p.get("icmpv6.type") == "147"]
    )
    check_home_registrations(packets, HA_ADDRESS, record, minimum=1)


# --- control: our HA and our MN with RFC 4285 authentication ----------------------------


def test_our_mn_our_ha_authenticated(case_dir: Path, record: dict) -> None:
    """The same walk between our own agents with authentication on (UMIP not involved)."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        ha = stack.enter_context(our_ha(topo, case_dir / "ha", authenticated=True))
        mn = stack.enter_context(our_mn(topo, case_dir / "mn", hoa, authenticated=True))
        for index, (link, away) in enumerate(WALK):
            step = time.monotonic()
            if index:
                topo.move("mn", link)
            coa = str(topo.mn_address(link))
            if away:
                wait_until(
                    lambda coa=coa: (our_binding(ha, hoa) or {}).get("care_of_address") == coa,
                    deadline=SETTLE,
                    what=f"binding at {coa}",
                )
                wait_until(
                    lambda coa=coa: (
                        (our_bul(mn, hoa) or {}).get("care_of_address") == coa
                        and our_bul(mn, hoa)["state"] == "registered"
                    ),
                    deadline=SETTLE,
                    what=f"MN registered at {coa}",
                )
            else:
                wait_until(lambda: our_binding(ha, hoa) is None, deadline=SETTLE, what="gone")
                wait_until(
                    lambda: our_mn_home(mn, hoa, record),
                    deadline=SETTLE,
                    what="MN idle at home",
                )
            log_step(record, f"{index}:{link}:settled", step)
            traffic_both_ways(topo, hoa, f"at {link}")
    packets = check_wire(case_dir, record)
    bus = check_home_registrations(packets, HA_ADDRESS, record, minimum=4)
    assert all(p.get("mip6.auth.subtype") == "1" for p in bus), "BUs without MN-HA auth"
    assert all(p.get("mip6.mnid.identifier") == NAI for p in bus), "BUs without the NAI"


# --- our correspondent node <-> UMIP mobile node ----------------------------------------


def test_our_cn_umip_mn(case_dir: Path, record: dict) -> None:
    """UMIP's MN tries route optimization with our CN (``route_optimization: false``):
    Binding Error status 2 for its HoTI/CoTI, and its traffic keeps going through the
    tunnel. The route-optimized counterpart is test_our_cn_umip_mn_route_optimization."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        ha = stack.enter_context(our_ha(topo, case_dir / "ha"))
        cn = stack.enter_context(
            AgentProcess(
                topo.ns["cn"],
                case_dir / "cn",
                {"role": "cn", "correspondent_node": {"route_optimization": False}},
            )
        )
        conf = mn_conf(f"{hoa}/64", HA_ADDRESS, route_optimization=True)
        umip = Mip6d(MIP6D, topo.ns["mn"], case_dir / "umip-mn", conf)
        stack.callback(umip.stop)
        umip.start()
        wait_until(lambda: our_binding(ha, hoa) is not None, deadline=SETTLE, what="binding")
        # Traffic between the HoA and the CN is what makes UMIP start return routability.
        traffic_both_ways(topo, hoa, "before route optimization")
        wait_until(
            lambda: (
                traffic_both_ways(topo, hoa, "while UMIP tries")
                or cn.call("counters").get("be_out.2_unrecognized_mh_type", 0) >= 1
            ),
            deadline=SETTLE,
            interval=1,
            what="our CN's Binding Error status 2",
        )
        for _ in range(3):
            traffic_both_ways(topo, hoa, "after the Binding Error")
            time.sleep(1)
        record["cn_counters"] = cn.call("counters")
        record["umip_bul"] = umip.vt("bul")
    check_umip_log(umip, record)
    packets = check_wire(case_dir, record)
    tests = [p for p in packets if p.get("mip6.mhtype") in {"1", "2"}]
    errors = [p for p in mh(packets, 7) if p["ipv6.src"] == str(CN_ADDRESS)]
    record["hoti_coti"] = len(tests)
    record["be_statuses"] = sorted({p["mip6.be.status"] for p in errors})
    assert tests, "UMIP's MN sent no HoTI/CoTI to our CN"
    assert errors and {p["mip6.be.status"] for p in errors} == {"2"}
    # Fallback: no BU to the CN was accepted and no data packet carries RH2 or HAO.
    assert not [p for p in mh(packets, 5) if p["ipv6.dst"] == str(CN_ADDRESS)]
    assert not [p for p in echoes(packets) if "ipv6.routing.type" in p]
    assert not [p for p in echoes(packets) if "ipv6.opt.mipv6.home_address" in p]


# --- reference: UMIP to UMIP route optimization -----------------------------------------

RO_TYPES = {"1": "HoTI", "2": "CoTI", "3": "HoT", "4": "CoT", "5": "BU", "6": "BA"}


def test_umip_route_optimization_reference(case_dir: Path, record: dict) -> None:
    """UMIP's MN, HA and CN with route optimization: mip6dump must decode all of return
    routability, the correspondent BU/BA and the RH2/HAO data packets like tshark."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        umip_ha = Mip6d(MIP6D, topo.ns["ha"], case_dir / "umip-ha", ha_conf())
        stack.callback(umip_ha.stop)
        umip_ha.start()
        umip_cn = Mip6d(MIP6D, topo.ns["cn"], case_dir / "umip-cn", cn_conf())
        stack.callback(umip_cn.stop)
        umip_cn.start()
        conf = mn_conf(f"{hoa}/64", HA_ADDRESS, route_optimization=True)
        umip_mn = Mip6d(MIP6D, topo.ns["mn"], case_dir / "umip-mn", conf)
        stack.callback(umip_mn.stop)
        umip_mn.start()
        wait_until(lambda: umip_binding(umip_ha, hoa), deadline=SETTLE, what="home binding")
        traffic_both_ways(topo, hoa, "before route optimization")
        wait_until(
            lambda: (
                (traffic_both_ways(topo, hoa, "during return routability") or True)
                and umip_binding(umip_cn, hoa, "cached") is not None
            ),
            deadline=SETTLE,
            interval=1,
            what="UMIP CN's binding for the MN",
        )
        for _ in range(3):
            traffic_both_ways(topo, hoa, "route optimized")
        record["umip_cn_bc"] = umip_cn.vt("bc")
        record["umip_mn_bul"] = umip_mn.vt("bul")
    for daemon in (umip_ha, umip_cn, umip_mn):
        check_umip_log(daemon, record)
    packets = check_wire(case_dir, record)
    seen = {RO_TYPES[t] for p in packets if (t := p.get("mip6.mhtype")) in RO_TYPES}
    record["mh_types_seen"] = sorted(seen)
    assert seen >= set(RO_TYPES.values()), f"missing: {set(RO_TYPES.values()) - seen}"
    to_cn = [p for p in mh(packets, 5) if p["ipv6.dst"] == str(CN_ADDRESS)]
    assert to_cn and all("mip6.ni.hni" in p and "mip6.bad.auth" in p for p in to_cn)
    data_rh2 = [p for p in echoes(packets) if p.get("ipv6.routing.type") == "2"]
    data_hao = [p for p in echoes(packets) if "ipv6.opt.mipv6.home_address" in p]
    record["data_rh2"], record["data_hao"] = len(data_rh2), len(data_hao)
    assert data_rh2 and data_hao, "no route-optimized data packets (RH2 from CN, HAO from MN)"


# --- route optimization between our agents and UMIP's (issues 12 and 13) ----------------


def frame_times(path: Path) -> dict[int, float]:
    """Frame number -> capture time (epoch seconds) of every frame of a capture."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"]
    args += ["-e", "frame.time_epoch"]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300)
    times = {}
    for line in result.stdout.splitlines():
        number, _, stamp = line.partition("\t")
        if number and stamp:
            times[int(number)] = float(stamp)
    return times


def has(packet: dict[str, str], name: str, value: object) -> bool:
    """``value`` is among the field's values (tunnelled packets list every layer's)."""
    return str(value) in packet.get(name, "").split(",")


def check_route_optimization(
    case_dir: Path,
    packets: list[dict[str, str]],
    hoa: IPv6Address,
    coa: IPv6Address,
    bound_at: float,
    record: dict,
) -> None:
    """Return routability with the CN and the route-optimized echo flow, on the wire.

    - HoTI, HoT, CoTI and CoT between the CN and the HoA / CoA;
    - every correspondent BU carries Nonce Indices and Binding Authorization Data; every
      BU with the A bit has the CN's BA with its sequence number and status 0;
    - echo packets from the CN to the CoA with a Type 2 Routing Header naming the HoA, and
      from the CoA to the CN with a Home Address option naming the HoA;
    - after ``bound_at`` (both sides showed the binding) no echo packet of the flow on the
      home link: nothing went through the home agent's tunnel.
    """
    cn = str(CN_ADDRESS)
    seen = {RO_TYPES[t] for p in packets if (t := p.get("mip6.mhtype")) in RO_TYPES}
    record["mh_types_seen"] = sorted(seen)
    hoti = [p for p in mh(packets, 1) if has(p, "ipv6.dst", cn) and has(p, "ipv6.src", hoa)]
    coti = [p for p in mh(packets, 2) if has(p, "ipv6.dst", cn) and has(p, "ipv6.src", coa)]
    hot = [p for p in mh(packets, 3) if has(p, "ipv6.src", cn) and has(p, "ipv6.dst", hoa)]
    cot = [p for p in mh(packets, 4) if has(p, "ipv6.src", cn) and has(p, "ipv6.dst", coa)]
    record["rr_on_wire"] = {"HoTI": len(hoti), "CoTI": len(coti), "HoT": len(hot), "CoT": len(cot)}
    assert hoti and coti and hot and cot, f"return routability incomplete: {record['rr_on_wire']}"
    # The HoTI and HoT take the tunnel: on the home link they are inside IPv6-in-IPv6.
    assert any(p["link"] == "home" for p in hoti), "no HoTI through the home agent"
    assert all(p["link"] != "home" for p in coti + cot), "CoTI/CoT went through the home link"
    bus = [p for p in mh(packets, 5) if has(p, "ipv6.dst", cn)]
    record["cn_bu"] = [
        {k: p.get(k) for k in ("link", "mip6.bu.seqnr", "mip6.bu.a_flag", "mip6.bu.lifetime")}
        for p in bus
    ]
    assert bus, "no Binding Update to the CN"
    assert all("mip6.ni.hni" in p and "mip6.ni.cni" in p for p in bus), "BU without Nonce Indices"
    assert all("mip6.bad.auth" in p for p in bus), "BU without Binding Authorization Data"
    assert all(has(p, "ipv6.opt.mipv6.home_address", hoa) for p in bus), "BU without HAO"
    bas = [p for p in mh(packets, 6) if has(p, "ipv6.src", cn)]
    statuses = {p["mip6.ba.seqnr"]: p["mip6.ba.status"] for p in bas}
    record["cn_ba_statuses"] = statuses
    acked = [p["mip6.bu.seqnr"] for p in bus if p.get("mip6.bu.a_flag") == "1"]
    answered = [s for s in acked if s in statuses]
    assert not acked or answered, f"BUs with A and no BA from the CN: {acked}"
    assert all(statuses[s] == "0" for s in answered), f"CN BA statuses: {statuses}"
    assert all("ipv6.routing.type" in p for p in bas), "the CN's BA lacks a Type 2 Routing Header"
    data = echoes(packets)
    rh2 = [
        p
        for p in data
        if p.get("ipv6.routing.type") == "2"
        and has(p, "ipv6.src", cn)
        and has(p, "ipv6.dst", coa)
        and has(p, "ipv6.routing.mipv6.home_address", hoa)
    ]
    hao = [
        p
        for p in data
        if has(p, "ipv6.opt.mipv6.home_address", hoa)
        and has(p, "ipv6.src", coa)
        and has(p, "ipv6.dst", cn)
    ]
    record["data_rh2"], record["data_hao"] = len(rh2), len(hao)
    assert rh2, "no echo from the CN to the CoA with a Type 2 Routing Header"
    assert hao, "no echo from the CoA to the CN with a Home Address option"
    times = {link: frame_times(case_dir / "pcap" / f"{link}.pcap") for link in ALL_LINKS}
    after = [p for p in data if times[p["link"]].get(int(p["frame.number"]), 0) > bound_at]
    tunnelled = [p for p in after if p["link"] == "home" and has(p, "ipv6.dst", cn)]
    tunnelled += [p for p in after if p["link"] == "home" and has(p, "ipv6.src", cn)]
    direct = [p for p in after if p in rh2 or p in hao]
    record["echoes_after_binding"] = {"direct": len(direct), "via_home_link": len(tunnelled)}
    assert direct, "no route-optimized echo after the binding"
    assert not tunnelled, (
        "echoes of the flow still through the home agent after route optimization: "
        + ", ".join(f"frame {p['frame.number']}" for p in tunnelled[:10])
    )


def traffic_direct(topo: Topology, hoa: IPv6Address, record: dict) -> float:
    """Echo both ways once both sides hold the binding; returns when that began."""
    time.sleep(1)  # packets of the tunnelled flow still in flight
    bound_at = time.time()
    for _ in range(4):
        traffic_both_ways(topo, hoa, "route optimized")
    record["bound_at"] = bound_at
    return bound_at


def test_our_cn_umip_mn_route_optimization(case_dir: Path, record: dict) -> None:
    """UMIP's MN completes return routability with our CN (``route_optimization: true``,
    the kernel MIP6 XFRM backend in the VM) and their echo flow goes direct: RH2 from the
    CN to the CoA, the Home Address option from the CoA, nothing through our HA."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        ha = stack.enter_context(our_ha(topo, case_dir / "ha"))
        cn = stack.enter_context(
            AgentProcess(
                topo.ns["cn"],
                case_dir / "cn",
                {"role": "cn", "correspondent_node": {"route_optimization": True}},
            )
        )
        conf = mn_conf(f"{hoa}/64", HA_ADDRESS, route_optimization=True)
        umip = Mip6d(MIP6D, topo.ns["mn"], case_dir / "umip-mn", conf)
        stack.callback(umip.stop)
        started = time.monotonic()
        umip.start()
        coa = topo.mn_address("foreign1")
        wait_until(lambda: our_binding(ha, hoa) is not None, deadline=SETTLE, what="binding")
        log_step(record, "home_registered", started)
        record["cn_status"] = cn.call("status")

        def cn_binding() -> dict | None:
            rows = cn.call("bindings")
            return next((b for b in rows if b.get("home_address") == str(hoa)), None)

        # Traffic between the HoA and the CN is what makes UMIP start return routability.
        step = time.monotonic()
        wait_until(
            lambda: (
                (traffic_both_ways(topo, hoa, "during return routability") or True)
                and (cn_binding() or {}).get("dataplane_care_of_address") == str(coa)
            ),
            deadline=SETTLE,
            interval=1,
            what=f"our CN's binding {hoa} -> {coa} in its data path",
        )
        wait_until(
            lambda: any(
                e.peer == CN_ADDRESS and e.care_of_address == coa
                for e in umip.binding_update_list()
                if e.home_address == hoa
            ),
            deadline=SETTLE,
            what="UMIP's BUL entry for our CN",
        )
        log_step(record, "route_optimized", step)
        bound_at = traffic_direct(topo, hoa, record)
        binding = cn_binding()
        record["cn_binding"] = binding
        assert binding is not None and binding["care_of_address"] == str(coa), binding
        assert binding["dataplane_packets"] > 0, f"the XFRM states carried nothing: {binding}"
        counters = cn.call("counters")
        record["cn_counters"] = {
            k: v for k, v in counters.items() if k.startswith(("mh_", "ba_", "be_", "rr_", "cn_"))
        }
        for name in ("mh_in.hoti", "mh_in.coti", "mh_out.hot", "mh_out.cot", "mh_in.bu"):
            assert counters.get(name, 0) >= 1, f"our CN's {name} is {counters.get(name)}"
        assert counters.get("cn_binding_updates", 0) >= 1, counters
        record["cn_status_after"] = cn.call("status")
        record["umip_bul"] = umip.vt("bul")
        (case_dir / "umip-mn" / "bul.txt").write_text(record["umip_bul"])
    check_umip_log(umip, record)
    packets = check_wire(case_dir, record)
    check_home_registrations(packets, HA_ADDRESS, record, minimum=1)
    check_route_optimization(case_dir, packets, hoa, coa, bound_at, record)


def test_our_mn_umip_cn_route_optimization(case_dir: Path, record: dict) -> None:
    """Our MN (``route_optimization: true``, the CN in ``correspondents``) completes return
    routability with UMIP's CN, registered with UMIP's HA, and their echo flow goes direct:
    RH2 from the CN to the CoA, the Home Address option from the CoA, nothing via the HA."""
    hoa = HOA_L_CLEAR
    with ExitStack() as stack:
        topo, _captures = stack.enter_context(interop_topology(case_dir))
        umip_ha = Mip6d(MIP6D, topo.ns["ha"], case_dir / "umip-ha", ha_conf())
        stack.callback(umip_ha.stop)
        umip_ha.start()
        umip_cn = Mip6d(MIP6D, topo.ns["cn"], case_dir / "umip-cn", cn_conf())
        stack.callback(umip_cn.stop)
        umip_cn.start()
        started = time.monotonic()
        mn = stack.enter_context(our_mn(topo, case_dir / "mn", hoa, correspondents=[CN_ADDRESS]))
        coa = topo.mn_address("foreign1")
        wait_until(
            lambda: umip_binding(umip_ha, hoa) == str(coa), deadline=SETTLE, what="home binding"
        )
        log_step(record, "home_registered", started)
        record["mn_status"] = mn.call("status")

        def entry() -> dict:
            rows = mn.call("correspondents")
            return next((r for r in rows if r.get("correspondent") == str(CN_ADDRESS)), {})

        step = time.monotonic()
        wait_until(
            lambda: entry().get("state") == "bound" and entry().get("dataplane") == str(coa),
            deadline=SETTLE,
            interval=1,
            what=f"our MN's correspondent entry bound at {coa} in its data path",
        )
        wait_until(
            lambda: umip_binding(umip_cn, hoa, "cached") == str(coa),
            deadline=SETTLE,
            what="UMIP CN's binding for our MN",
        )
        log_step(record, "route_optimized", step)
        bound_at = traffic_direct(topo, hoa, record)
        row = entry()
        record["mn_correspondent"] = row
        # The XFRM backend flags the home address (the kernel accepts an RH2 only for a
        # home address) and deprecates it, so that unbound sockets keep the care-of address.
        lo = topo.ip("mn", "-6", "-o", "address", "show", "dev", "lo")
        record["mn_lo_addresses"] = lo
        line = next((x for x in lo.splitlines() if f"{hoa}/128" in x), "")
        assert " home" in line and "deprecated" in line, lo
        record["mn_route_to_cn"] = topo.ip("mn", "-6", "route", "get", str(CN_ADDRESS))
        assert f"src {coa}" in record["mn_route_to_cn"], record["mn_route_to_cn"]
        assert row["home_token"] and row["careof_token"], row
        assert row["packets"] > 0, f"the MN's data path carried nothing: {row}"
        counters = mn.call("counters")
        record["mn_counters"] = {
            k: v for k, v in counters.items() if k.startswith(("mh_", "ba_", "be_", "rr_", "retr"))
        }
        record["mn_status_after"] = mn.call("status")
        record["umip_cn_bc"] = umip_cn.vt("bc")
        (case_dir / "umip-cn" / "bc.txt").write_text(record["umip_cn_bc"])
    for daemon in (umip_ha, umip_cn):
        check_umip_log(daemon, record)
    packets = check_wire(case_dir, record)
    check_home_registrations(packets, HA_ADDRESS, record, minimum=1)
    check_route_optimization(case_dir, packets, hoa, coa, bound_at, record)
