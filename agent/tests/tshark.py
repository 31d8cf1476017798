"""Run tshark, the independent decoder the cross-check tests compare against."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import dpkt
import pytest

LINKTYPE_RAW = 101


def require_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed; `make test` installs it (apt package tshark)")
    return path


def write_pcap(path: Path, packets: list[bytes], linktype: int = LINKTYPE_RAW) -> Path:
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=linktype)
        for index, packet in enumerate(packets):
            writer.writepkt(packet, ts=1_700_000_000 + index / 1000)
    return path


def to_pcapng(source: Path, target: Path) -> Path:
    """Rewrite a capture as pcapng with tshark itself (its default output format)."""
    subprocess.run([require_tshark(), "-r", str(source), "-w", str(target)], check=True)
    return target


def _flatten(node: object, out: dict[str, list[str]], key: str | None = None) -> None:
    if isinstance(node, dict):
        for name, value in node.items():
            _flatten(value, out, name)
    elif isinstance(node, list):
        for item in node:
            _flatten(item, out, key)
    elif key is not None:
        out[key].append(str(node))


def tshark_json(path: Path) -> list[dict[str, list[str]]]:
    """Every packet's fields, flattened: field name -> values in packet order."""
    result = subprocess.run(
        [require_tshark(), "-r", str(path), "-T", "json", "--no-duplicate-keys"],
        check=True,
        capture_output=True,
        text=True,
    )
    packets = []
    for packet in json.loads(result.stdout):
        fields: dict[str, list[str]] = defaultdict(list)
        _flatten(packet["_source"]["layers"], fields)
        packets.append(dict(fields))
    return packets


def tshark_fields(path: Path, names: list[str]) -> list[dict[str, str]]:
    """``tshark -T fields`` for ``names``: one dict per packet, values as printed."""
    args = [require_tshark(), "-r", str(path), "-T", "fields", "-E", "separator=/t"]
    for name in names:
        args += ["-e", name]
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    rows = []
    for line in result.stdout.splitlines():
        rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows
