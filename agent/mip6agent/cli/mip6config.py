"""mip6config: configure the running Mobile IPv6 agent, with the KAME tool's flags."""

from __future__ import annotations

import argparse
import json
import sys
from ipaddress import IPv6Network

from ..config import ConfigError, parse_coaddr_spec, parse_homeaddr_spec, parse_seed_file
from ..control.client import call
from ..control.protocol import ControlError
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, default_socket

# Flags the KAME notes list as unimplemented, and why we still do not take them.
REJECTED = {
    "-u": "forwarding of site-local unicast: site-local addresses are deprecated (RFC 3879)",
    "-m": "forwarding of site-local multicast: site-local addresses are deprecated (RFC 3879)",
    "-p": "link-layer promiscuous mode: the home agent uses proxy Neighbor Discovery instead",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mip6config",
        description="Configure the running mip6agent (home agent or mobile node), as the "
        "KAME mip6config did. Flags apply in the order given.",
        epilog="Rejected KAME flags: "
        + "; ".join(f"{flag} ({why.split(':')[0]})" for flag, why in REJECTED.items())
        + ". Exit status: 0 ok, 1 the agent refused, 2 bad usage.",
    )
    p.add_argument("-S", dest="socket", default=default_socket(), help="control socket path")
    p.add_argument("-g", dest="enable_ha", action="store_true", help="enable the home agent")
    p.add_argument("-y", dest="preference", type=int, help="home agent preference (with -g)")
    p.add_argument(
        "-H",
        dest="homeaddr",
        metavar="ADDR/PLEN@IF%HA",
        help="set a home address: address/prefix length, interface, home agent (%%HA optional)",
    )
    p.add_argument(
        "-P", dest="homepref", metavar="PREFIX/PLEN", help="home prefix; DHAAD finds the HA"
    )
    p.add_argument(
        "-a", dest="autoconfig", action="store_true", help="autoconfigure the home address"
    )
    p.add_argument(
        "-f", dest="file", metavar="FILE", help="read enable_ha/autoconfig/homeaddr/homepref lines"
    )
    p.add_argument("-d", dest="debug", choices=("0", "1"), help="debug output off/on")
    p.add_argument(
        "-b", dest="bu_lifetime", type=int, metavar="SECONDS", help="binding update lifetime"
    )
    p.add_argument(
        "-l", dest="home_lifetime", type=int, metavar="SECONDS", help="home registration lifetime"
    )
    p.add_argument("-e", dest="eager", choices=("0", "1", "2"), help="eager movement detection")
    p.add_argument(
        "-F", dest="add_foreign", metavar="ADDR/PLEN@IF", help="add a default foreign address"
    )
    p.add_argument(
        "-E", dest="remove_foreign", metavar="ADDR/PLEN@IF", help="remove a default foreign address"
    )
    p.add_argument(
        "-t",
        dest="tunnel",
        choices=("0", "1"),
        help="tunnel MN->CN traffic through the HA: always on (1) for correspondents without "
        "route optimisation; 0 is refused (-r 1 sends route-optimised traffic direct)",
    )
    p.add_argument(
        "-r",
        dest="route_optimization",
        choices=("0", "1"),
        help="route optimisation off/on: a mobile node's mobile_node.route_optimization "
        "(return routability and Binding Updates to correspondents), any other role's "
        "correspondent_node.route_optimization (accept them)",
    )
    p.add_argument(
        "-q",
        dest="refresh_requests",
        choices=("0", "1"),
        help="Binding Refresh Requests to mobile nodes off/on "
        "(correspondent_node.binding_refresh_request_before: null, or a time: -w's, the "
        "current one, else KAME's default of 60 percent)",
    )
    p.add_argument(
        "-w",
        dest="refresh_percent",
        type=int,
        metavar="PERCENT",
        help="when to send a Binding Refresh Request, as KAME's br_time: with PERCENT "
        "(1-99) of the binding's lifetime left; converted to seconds of the 420 s "
        "correspondent binding lifetime (RFC 6275 MAX_RR_BINDING_LIFETIME): 60 -> 252 s",
    )
    p.add_argument("-x", dest="stop", action="store_true", help="stop the HA or MN function")
    p.add_argument("-n", dest="show", action="store_true", help="show the running configuration")
    return p


def requests(args: argparse.Namespace, unknown: list[str]) -> list[tuple[str, dict]]:
    """The control requests the flags stand for, in order; ValueError for bad input."""
    for flag in unknown:
        name = flag[:2]
        if name in REJECTED:
            raise ValueError(f"{name} is not supported: {REJECTED[name]}")
        raise ValueError(f"unknown option {flag}")
    out: list[tuple[str, dict]] = []
    if args.tunnel == "0":
        raise ValueError(
            "-t 0 is not supported: traffic with correspondents without route optimisation "
            "always takes the reverse tunnel (ingress filtering on foreign links, RFC 6275 "
            "11.3.1); -r 1 sends route-optimised traffic direct"
        )
    if args.refresh_percent is not None and not 1 <= args.refresh_percent <= 99:
        raise ValueError(f"-w takes a percentage from 1 to 99, not {args.refresh_percent}")
    if args.refresh_percent is not None and args.refresh_requests == "0":
        raise ValueError("-w sets when Binding Refresh Requests go out, and -q 0 turns them off")
    if args.preference is not None and not args.enable_ha:
        raise ValueError("-y sets the home agent preference and needs -g")
    if args.file:
        out.append(_file_request(args.file))
    if args.enable_ha:
        extra = {} if args.preference is None else {"preference": args.preference}
        out.append(("enable-ha", extra))
    if args.homeaddr:
        out.append(("set-home-address", parse_homeaddr_spec(args.homeaddr)))
    if args.homepref:
        try:
            prefix = IPv6Network(args.homepref)
        except ValueError:
            raise ValueError(
                f"{args.homepref!r} is not an IPv6 prefix with zero host bits"
            ) from None
        out.append(("set-home-prefix", {"prefix": str(prefix)}))
    if args.autoconfig:
        out.append(("autoconfigure", {}))
    lifetimes = {}
    if args.bu_lifetime is not None:
        lifetimes["bu_lifetime"] = args.bu_lifetime
    if args.home_lifetime is not None:
        lifetimes["home_registration_lifetime"] = args.home_lifetime
    if args.eager is not None:
        lifetimes["eager_movement_detection"] = int(args.eager)
    if lifetimes:
        out.append(("set-lifetimes", lifetimes))
    if args.add_foreign:
        out.append(("add-foreign-address", parse_coaddr_spec(args.add_foreign)))
    if args.remove_foreign:
        out.append(("remove-foreign-address", parse_coaddr_spec(args.remove_foreign)))
    if args.route_optimization is not None:
        out.append(("route-optimization", {"on": args.route_optimization == "1"}))
    if args.refresh_requests is not None or args.refresh_percent is not None:
        refresh: dict[str, object] = {}
        if args.refresh_requests is not None:
            refresh["on"] = args.refresh_requests == "1"
        if args.refresh_percent is not None:
            refresh["percent"] = args.refresh_percent
        out.append(("binding-refresh", refresh))
    if args.debug is not None:
        out.append(("debug", {"on": args.debug == "1"}))
    if args.stop:
        out.append(("disable", {}))
    if args.show:
        out.append(("show-config", {}))
    return out


def _file_request(path: str) -> tuple[str, dict]:
    """The seed's mip6.conf lines, merged into the running configuration."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    return ("set-config", {"config": parse_seed_file(text, path), "merge": True})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        todo = requests(args, unknown)
    except (ValueError, ConfigError) as exc:
        print(f"mip6config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not todo and args.tunnel == "1":
        return EXIT_OK  # reverse tunnelling is what the mobile node does anyway
    if not todo:
        parser.print_usage(sys.stderr)
        print("mip6config: nothing to do; see mip6config --help", file=sys.stderr)
        return EXIT_USAGE
    for command, command_args in todo:
        try:
            result = call(args.socket, command, command_args)
        except ControlError as exc:
            print(f"mip6config: {command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if command == "show-config":
            print(json.dumps(result, indent=2, sort_keys=True))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
