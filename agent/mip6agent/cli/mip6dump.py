"""mip6dump: show Mobile IPv6 packets from a capture file or a live interface.

The seed's tcpdump support, rebuilt: one line per packet, ``-v`` for every flag and
option, ``-T json`` for Wireshark-named fields that compare one to one with tshark.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from ..dump.classify import is_mobile_ipv6
from ..dump.fields import packet_fields
from ..dump.sources import Frame, SourceError, capture, read_file
from ..dump.text import format_line
from ..wire import DecodeError, parse_packet
from ..wire.link import ipv6_payload

EXIT_OK = 0
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mip6dump",
        description=(
            "Decode Mobile IPv6 traffic: Mobility Header messages, the Home Address option, "
            "Type 2 Routing Headers, DHAAD, Mobile Prefix Solicitation/Advertisement and "
            "Router Advertisements with Mobile IPv6 flags or options."
        ),
        epilog=(
            "Malformed packets print as [malformed: reason] and dumping goes on. "
            "Exit status: 0 on success, 2 when the file or interface cannot be read."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-r", metavar="FILE", dest="file", help="read a pcap or pcapng file")
    source.add_argument(
        "-i", metavar="IFACE", dest="interface", help="capture live on IFACE (needs root)"
    )
    parser.add_argument(
        "-c", metavar="N", dest="count", type=_positive, help="stop after N shown packets"
    )
    parser.add_argument(
        "-a", dest="all", action="store_true", help="show every IPv6 packet, not only MIPv6"
    )
    parser.add_argument(
        "-v", dest="verbose", action="store_true", help="show every flag and option"
    )
    parser.add_argument(
        "-T",
        dest="format",
        choices=("text", "json"),
        default="text",
        help="output format: text lines (default) or one JSON object per packet, keyed "
        "by Wireshark display-filter field names with values as `tshark -T fields` prints",
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _stamp(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S.%f")


def render(frame: Frame, show_all: bool, verbose: bool, as_json: bool) -> str | None:
    """The output for one frame, or None when the frame is filtered out."""
    data = ipv6_payload(frame.linktype, frame.data)
    if data is None:
        return None
    try:
        packet = parse_packet(data)
    except DecodeError as exc:
        if as_json:
            return json.dumps({"frame.number": str(frame.number), "_ws.malformed": exc.reason})
        return f"{_stamp(frame.timestamp)} [malformed: {exc}]"
    if not show_all and not is_mobile_ipv6(packet):
        return None
    if as_json:
        fields = {"frame.number": str(frame.number)}
        fields.update(packet_fields(packet))
        return json.dumps(fields)
    return f"{_stamp(frame.timestamp)} {format_line(packet, verbose)}"


def run(frames: Iterator[Frame], args: argparse.Namespace) -> None:
    shown = 0
    for frame in frames:
        line = render(frame, args.all, args.verbose, args.format == "json")
        if line is None:
            continue
        print(line, flush=args.interface is not None)
        shown += 1
        if args.count is not None and shown >= args.count:
            return


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    frames = read_file(args.file) if args.file else capture(args.interface)
    try:
        run(frames, args)
    except SourceError as exc:
        sys.stdout.flush()
        print(f"mip6dump: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
