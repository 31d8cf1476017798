"""tcpdump-style lines for ``mip6dump``: one per packet, details with ``verbose``."""

from __future__ import annotations

from ..wire import (
    AdvertisementInterval,
    AlternateCareofAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareofTest,
    CareofTestInit,
    HAADReply,
    HAADRequest,
    HomeAgentInformation,
    HomeTest,
    HomeTestInit,
    LinkLayerAddress,
    MessageAuthentication,
    MessageIdentification,
    MobileNodeIdentifier,
    MobilePrefixAdvertisement,
    MobilePrefixSolicitation,
    MTUOption,
    NDOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    NonceIndices,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
    RouterSolicitation,
    UnknownICMPv6,
    UnknownMessage,
    UnknownMobilityOption,
    UnknownNDOption,
)
from ..wire.constants import BAStatus, BEStatus
from .classify import layers

_BU_FLAGS = "AHLKMRP"
_BA_FLAGS = "KRP"


def _flags(value: int, names: str, width: int) -> str:
    on = [n for i, n in enumerate(names) if value & (1 << (width - 1 - i))]
    return "[" + "".join(on) + "]" if on else "[-]"


def _status(enum: type, value: int) -> str:
    try:
        return f"{value} ({enum(value).name.lower()})"
    except ValueError:
        return str(value)


def _mobility_option(option: object) -> str:
    if isinstance(option, BindingRefreshAdvice):
        return f"refresh-advice {option.interval} ({option.interval_seconds}s)"
    if isinstance(option, AlternateCareofAddress):
        return f"alt-coa {option.address}"
    if isinstance(option, NonceIndices):
        return f"nonce-indices home {option.home_nonce_index} careof {option.careof_nonce_index}"
    if isinstance(option, BindingAuthorizationData):
        return f"auth-data {option.authenticator.hex()}"
    if isinstance(option, MobileNodeIdentifier):
        return f"mn-id subtype {option.subtype} {option.nai!r}"
    if isinstance(option, MessageAuthentication):
        return (
            f"mesg-auth subtype {option.subtype} spi {option.spi} data {option.authenticator.hex()}"
        )
    if isinstance(option, MessageIdentification):
        return f"mesg-id {option.timestamp:#018x}"
    if isinstance(option, UnknownMobilityOption):
        return f"option-{option.type} len {len(option.data)}"
    return repr(option)


def _nd_option(option: object) -> str:
    if isinstance(option, PrefixInformation):
        flags = "".join(
            n
            for n, on in zip(
                "LAR", (option.on_link, option.autonomous, option.router_address), strict=True
            )
            if on
        )
        return (
            f"prefix {option.prefix}/{option.prefix_length} [{flags or '-'}] "
            f"valid {option.valid_lifetime} preferred {option.preferred_lifetime}"
        )
    if isinstance(option, AdvertisementInterval):
        return f"adv-interval {option.interval}ms"
    if isinstance(option, HomeAgentInformation):
        return f"ha-info pref {option.preference} lifetime {option.lifetime}"
    if isinstance(option, LinkLayerAddress):
        kind = "source" if option.type == 1 else "target"
        return f"{kind}-lladdr {option.address.hex(':')}"
    if isinstance(option, MTUOption):
        return f"mtu {option.mtu}"
    if isinstance(option, UnknownNDOption):
        return f"nd-option-{option.type} len {len(option.data) + 2}"
    return repr(option)


def _message(payload: object, verbose: bool) -> str:
    """Summary words for the upper-layer message."""
    if isinstance(payload, BindingUpdate):
        text = f"MH BU seq {payload.sequence} lifetime {payload.lifetime_seconds}s"
        text += " " + _flags(payload.flags, _BU_FLAGS, 16)
        opts = payload.options
    elif isinstance(payload, BindingAck):
        text = f"MH BA status {_status(BAStatus, payload.status)} seq {payload.sequence}"
        text += f" lifetime {payload.lifetime_seconds}s"
        if verbose or payload.flags:
            text += " " + _flags(payload.flags, _BA_FLAGS, 8)
        opts = payload.options
    elif isinstance(payload, BindingError):
        text = f"MH BE status {_status(BEStatus, payload.status)} home {payload.home_address}"
        opts = payload.options
    elif isinstance(payload, BindingRefreshRequest):
        text, opts = "MH BRR", payload.options
    elif isinstance(payload, (HomeTestInit, CareofTestInit)):
        name = "HoTI" if isinstance(payload, HomeTestInit) else "CoTI"
        text, opts = f"MH {name} cookie {payload.cookie.hex()}", payload.options
    elif isinstance(payload, (HomeTest, CareofTest)):
        name = "HoT" if isinstance(payload, HomeTest) else "CoT"
        text = f"MH {name} nonce-index {payload.nonce_index} cookie {payload.cookie.hex()}"
        if verbose:
            text += f" token {payload.token.hex()}"
        opts = payload.options
    elif isinstance(payload, UnknownMessage):
        return f"MH type {payload.mh_type} len {len(payload.data) + 6}"
    else:
        return _icmp(payload, verbose)
    if verbose and opts:
        text += " {" + "; ".join(_mobility_option(o) for o in opts) + "}"
    return text


def _icmp(payload: object, verbose: bool) -> str:
    opts: list[NDOption] = []
    if isinstance(payload, HAADRequest):
        text = f"ICMP6 DHAAD request id {payload.identifier}"
    elif isinstance(payload, HAADReply):
        text = f"ICMP6 DHAAD reply id {payload.identifier} agents " + (
            ",".join(str(a) for a in payload.home_agents) or "none"
        )
    elif isinstance(payload, MobilePrefixSolicitation):
        text = f"ICMP6 mobile prefix solicitation id {payload.identifier}"
    elif isinstance(payload, MobilePrefixAdvertisement):
        text = f"ICMP6 mobile prefix advertisement id {payload.identifier}"
        text += " " + _flags(payload.flags, "MO", 8)
        opts = payload.options
    elif isinstance(payload, RouterAdvertisement):
        text = f"ICMP6 router advertisement lifetime {payload.router_lifetime}"
        text += " " + _flags(payload.flags, "MOH", 8)
        opts = payload.options
    elif isinstance(payload, RouterSolicitation):
        text, opts = "ICMP6 router solicitation", payload.options
    elif isinstance(payload, NeighborSolicitation):
        text, opts = f"ICMP6 neighbor solicitation who has {payload.target}", payload.options
    elif isinstance(payload, NeighborAdvertisement):
        text = f"ICMP6 neighbor advertisement tgt is {payload.target} " + _flags(
            payload.flags, "RSO", 8
        )
        opts = payload.options
    elif isinstance(payload, UnknownICMPv6):
        text = f"ICMP6 type {payload.type} code {payload.code}"
    else:
        return f"len {len(payload)}" if isinstance(payload, bytes) else repr(payload)
    if verbose and opts:
        text += " {" + "; ".join(_nd_option(o) for o in opts) + "}"
    return text


def format_line(packet: Packet, verbose: bool = False) -> str:
    """``src > dst: [RH2 ...] [HAO ...] message`` for one packet; a tunnelled packet as
    ``src > dst: IP6 <the inner packet's line>``."""
    inner = layers(packet)
    if len(inner) > 1:
        outer = f"{packet.src} > {packet.dst}:"
        if verbose:
            outer += f" (hlim {packet.hop_limit}, payload {len(packet.payload_bytes)})"
        return f"{outer} IP6 {format_line(inner[1], verbose)}"
    parts = [f"{packet.src} > {packet.dst}:"]
    rh2 = packet.routing_header_type2
    if rh2 is not None:
        parts.append(
            f"RH2 home {rh2.home_address}" + (f" segleft {rh2.segments_left}" if verbose else "")
        )
    hao = packet.home_address_option
    if hao is not None:
        parts.append(f"HAO home {hao}")
    if isinstance(packet.payload, bytes):
        parts.append(f"proto {packet.protocol} len {len(packet.payload)}")
    else:
        parts.append(_message(packet.payload, verbose))
    if verbose:
        detail = f"hlim {packet.hop_limit}, payload {len(packet.payload_bytes)}"
        if not isinstance(packet.payload, bytes):
            verdict = "ok" if packet.checksum_ok() else "bad"
            detail += f", csum {packet.payload.checksum:#06x} {verdict}"
        parts.append(f"({detail})")
    return " ".join(parts)
