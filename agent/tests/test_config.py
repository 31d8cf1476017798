"""The agent configuration: schema, loader, keys file, seed mip6.conf conversion."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mip6agent.config import (
    AgentConfig,
    ConfigError,
    Secret,
    load_config,
    load_keys,
    markdown_table,
    parse_homeaddr_spec,
    parse_seed_file,
    to_dict,
    validate_mapping,
)

ETC = Path(__file__).parents[1] / "etc"
DOCS = Path(__file__).parents[2] / "docs" / "agent-config.md"

# Distinctive key material: no message, repr or dump may ever contain it.
SECRET_HEX = "c0ffee15deadbeef5ec12e7000112233445566ff"
SECRET_B64 = "base64:wP/uFd6tvu9ewS5wABEiM0RVZv8="
SECRET_DIGITS = "1234567812345678123456781234567812345678"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def keys_text(nais: dict[str, tuple[int, str]]) -> str:
    lines = ["mobile_nodes:"]
    for nai, (spi, key) in nais.items():
        lines += [f"  {nai}:", f"    spi: {spi}", f'    key: "{key}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.yml"
    return write(path, keys_text({"mn1@example.net": (1000, SECRET_HEX)}))


def ha_mapping(keys_file: Path) -> dict[str, Any]:
    return {
        "role": "ha",
        "keys_file": str(keys_file),
        "home_agent": {
            "interfaces": ["eth1"],
            "address": "2001:db8:1::1",
            "home_prefixes": ["2001:db8:1::/64"],
        },
    }


def mn_mapping(keys_file: Path) -> dict[str, Any]:
    return {
        "role": "mn",
        "keys_file": str(keys_file),
        "mobile_node": {
            "home_addresses": [
                {
                    "address": "2001:db8:1::100/64",
                    "interface": "eth0",
                    "home_agent": "2001:db8:1::1",
                }
            ],
            "nai": "mn1@example.net",
            "interfaces": ["eth0", "wlan0"],
        },
    }


def problems_of(data: Any, source: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_mapping(data, source)
    assert str(info.value) == "\n".join(info.value.messages)
    return info.value.messages


# --- valid configurations --------------------------------------------------------------------


def test_example_files_load(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yml"
    shutil.copy(ETC / "keys.yml.example", keys)
    os.chmod(keys, 0o600)
    loaded = load_keys(keys)
    assert loaded.nais == ("mn1@example.net", "mn2@example.net")
    assert len(loaded.for_nai("mn2@example.net")[1]) == 20
    text = (ETC / "agent.yml.example").read_text().replace("/etc/mip6/keys.yml", str(keys))
    cfg = load_config(write(tmp_path / "agent.yml", text, 0o644))
    assert cfg.role == "ha" and cfg.home_agent is not None
    assert cfg.home_agent.preference == 10
    assert cfg.keys == loaded
    assert cfg.warnings == ()


def test_commented_mobile_node_example_is_valid(tmp_path: Path, keys_file: Path) -> None:
    text = (ETC / "agent.yml.example").read_text()
    block = text[text.index("# role: mn") :]
    uncommented = "\n".join(line.removeprefix("#")[1:] for line in block.splitlines())
    cfg = validate_mapping(
        {**_yaml(uncommented), "keys_file": str(keys_file)}, "agent.yml.example (mn)"
    )
    assert cfg.mobile_node is not None and not cfg.mobile_node.route_optimization


def _mn_ro(**mobile_node: object) -> dict:
    return {
        "role": "mn",
        "authentication": "disabled",
        "mobile_node": {
            "home_addresses": [{"address": "2001:db8:1::100/64", "interface": "eth0"}],
            "interfaces": ["eth0"],
            **mobile_node,
        },
    }


def test_mobile_node_route_optimization_needs_its_correspondents() -> None:
    # From traffic (the default) no list is needed; without it, a list is.
    from_traffic = validate_mapping(_mn_ro(route_optimization=True))
    assert from_traffic.mobile_node is not None
    assert from_traffic.mobile_node.route_optimization_from_traffic is True
    assert from_traffic.mobile_node.max_correspondents == 64
    with pytest.raises(ConfigError, match=r"mobile_node\.correspondents: route_optimization with"):
        validate_mapping(_mn_ro(route_optimization=True, route_optimization_from_traffic=False))
    with pytest.raises(ConfigError, match="max_correspondents"):
        validate_mapping(_mn_ro(route_optimization=True, max_correspondents=0))
    config = validate_mapping(
        _mn_ro(
            route_optimization=True,
            correspondents=["2001:db8:4::9"],
            no_route_optimization=["2001:db8:5::/64"],
            bu_lifetime=200,
        )
    )
    assert config.mobile_node is not None
    assert [str(c) for c in config.mobile_node.correspondents] == ["2001:db8:4::9"]
    assert [str(n) for n in config.mobile_node.no_route_optimization] == ["2001:db8:5::/64"]
    with pytest.raises(ConfigError, match="correspondents"):
        validate_mapping(_mn_ro(route_optimization=True, correspondents=["fe80::1"]))
    quiet = validate_mapping(_mn_ro(correspondents=["2001:db8:4::9"]))
    assert any("no effect while route_optimization is false" in w for w in quiet.warnings)


def _yaml(text: str) -> Any:
    from mip6agent.config.yamlfile import parse_yaml

    data, problems = parse_yaml(text, "<test>")
    assert not problems
    return data


def _doc_examples() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    return [b for b in blocks if re.search(r"^role: ", b, re.M)]


def test_docs_examples_are_valid(keys_file: Path) -> None:
    examples = _doc_examples()
    roles = set()
    for text in examples:
        data = _yaml(text)
        if data.get("authentication") != "disabled":
            data["keys_file"] = str(keys_file)
        cfg = validate_mapping(data, "docs example")
        roles.add(cfg.role)
    assert roles == {"ha", "mn", "cn"}


def test_docs_table_matches_schema() -> None:
    text = DOCS.read_text()
    table = text.split("markdown_table() -->\n", 1)[1].split("<!-- END schema table -->", 1)[0]
    assert table == markdown_table(), (
        "docs/agent-config.md is out of date: replace the lines between its BEGIN/END schema "
        "table markers with the output of: python -c 'from mip6agent.config import "
        'markdown_table; print(markdown_table(), end="")\''
    )


def test_valid_home_agent(keys_file: Path) -> None:
    cfg = validate_mapping(ha_mapping(keys_file))
    ha = cfg.home_agent
    assert ha is not None and cfg.mobile_node is None
    assert ha.home_prefixes == (IPv6Network("2001:db8:1::/64"),)
    assert ha.address == IPv6Address("2001:db8:1::1")
    assert (ha.preference, ha.lifetime, ha.max_binding_lifetime) == (0, 1800.0, 262140.0)
    assert isinstance(ha.lifetime, float) and isinstance(ha.replay_window, float)
    assert (ha.dad, ha.sequence_window, ha.refresh_advice) == (True, 32768, None)
    assert cfg.keys is not None and cfg.keys.for_nai("mn1@example.net")[0] == 1000


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("home_addresses", None, "static"),
        ("home_prefix", "2001:db8:1::/64", "prefix"),
        ("autoconfigure", True, "autoconfigure"),
    ],
)
def test_valid_mobile_node_each_home_address_mode(
    keys_file: Path, mode: str, value: Any, expected: str
) -> None:
    data = mn_mapping(keys_file)
    if value is not None:
        del data["mobile_node"]["home_addresses"]
        data["mobile_node"][mode] = value
    mn = validate_mapping(data).mobile_node
    assert mn is not None and mn.home_address_mode == expected
    if expected == "static":
        entry = mn.home_addresses[0]
        assert entry.address == IPv6Interface("2001:db8:1::100/64")
        assert entry.home_agent == IPv6Address("2001:db8:1::1")
    assert (mn.home_registration_lifetime, mn.bu_lifetime) == (3600.0, 420.0)
    assert (mn.initial_bindack_timeout, mn.max_bindack_timeout) == (1.5, 32.0)


def test_several_home_addresses_and_dhaad(keys_file: Path) -> None:
    data = mn_mapping(keys_file)
    data["mobile_node"]["home_addresses"].append(
        {"address": "2001:db8:2::100/64", "interface": "eth0"}
    )
    mn = validate_mapping(data).mobile_node
    assert mn is not None and len(mn.home_addresses) == 2
    assert mn.home_addresses[1].home_agent is None


def test_correspondent_node_defaults_need_no_keys() -> None:
    cfg = validate_mapping({"role": "cn", "keys_file": "/nonexistent/keys.yml"})
    assert cfg.correspondent_node.route_optimization is False
    assert cfg.control_socket == Path("/run/mip6/agent.sock")
    assert cfg.state_dir == Path("/var/lib/mip6")
    assert (cfg.log_level, cfg.debug, cfg.dataplane) == ("info", False, "auto")
    assert cfg.keys is None and cfg.warnings == ()


def test_null_means_default(keys_file: Path) -> None:
    data = ha_mapping(keys_file)
    data.update(log_level=None, correspondent_node=None, mobile_node=None)
    data["home_agent"].update(dad=None, lifetime=None, refresh_advice=None)
    cfg = validate_mapping(data)
    assert cfg == validate_mapping(ha_mapping(keys_file))
    assert problems_of({"role": None}) == ["role: expected one of ha, mn, cn, got null"]


def test_debug_implies_debug_log_level() -> None:
    assert validate_mapping({"role": "cn", "debug": True}).effective_log_level == "debug"


# --- one precise message per problem ---------------------------------------------------------


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        data = data[name]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()

HA_ERRORS = [
    ("role", _DELETE, "role: required key is missing"),
    ("role", "HA", 'role: "HA" is not one of ha, mn, cn (did you mean "ha"?)'),
    ("role", 1, "role: expected one of ha, mn, cn, got the integer 1"),
    ("log_level", "warn", 'log_level: "warn" is not one of debug, info, warning, error'),
    ("debug", "yes", 'debug: expected true or false, got the string "yes"'),
    ("debug", 1, "debug: expected true or false, got the integer 1"),
    ("authentication", "off", 'authentication: "off" is not one of required, disabled'),
    ("dataplane", "gre", 'dataplane: "gre" is not one of auto, seg6, ip6tnl'),
    ("control_socket", "agent.sock", 'control_socket: "agent.sock" is not an absolute path'),
    ("control_socket", "/" + "s" * 120, "control_socket: "),
    ("state_dir", 5, "state_dir: expected an absolute path, got the integer 5"),
    (
        "home_agent.preference",
        "5",
        'home_agent.preference: expected an integer, got the string "5"',
    ),
    ("home_agent.preference", True, "home_agent.preference: expected an integer, got the boolean"),
    ("home_agent.preference", 70000, "home_agent.preference: must be between 0 and 65535"),
    ("home_agent.preference", -1, "home_agent.preference: must be between 0 and 65535, got -1"),
    ("home_agent.lifetime", 0, "home_agent.lifetime: must be between 1 and 65520 seconds, got 0"),
    ("home_agent.lifetime", "30s", "home_agent.lifetime: expected a number of seconds, got the st"),
    ("home_agent.lifetime", False, "home_agent.lifetime: expected a number of seconds, got the bo"),
    ("home_agent.lifetime", float("nan"), "home_agent.lifetime: must be between 1 and 65520"),
    ("home_agent.max_binding_lifetime", 262144, "home_agent.max_binding_lifetime: must be betw"),
    ("home_agent.interfaces", [], "home_agent.interfaces: needs at least 1 entry"),
    ("home_agent.interfaces", "eth1", 'home_agent.interfaces: expected a list, got the string "e'),
    ("home_agent.interfaces", ["e" * 16], 'home_agent.interfaces[0]: "eeeeeeeeeeeeeeee" is not a '),
    ("home_agent.interfaces", ["eth 1"], 'home_agent.interfaces[0]: "eth 1" is not a valid interf'),
    ("home_agent.interfaces", ["a", "a"], 'home_agent.interfaces[1]: "a" is listed twice'),
    ("home_agent.home_prefixes", _DELETE, "home_agent.home_prefixes: required key is missing"),
    (
        "home_agent.home_prefixes",
        ["2001:db8:1::1/64"],
        'home_agent.home_prefixes[0]: "2001:db8:1::1/64" has host bits set '
        '(did you mean "2001:db8:1::/64"?)',
    ),
    ("home_agent.home_prefixes", ["2001:db8:1::"], 'home_agent.home_prefixes[0]: "2001:db8:1::":'),
    ("home_agent.home_prefixes", ["2001:db8:1::/129"], "is not an IPv6 prefix"),
    ("home_agent.home_prefixes", ["::/0"], "the prefix length must be between 1 and 128"),
    ("home_agent.home_prefixes", ["ff02::/16"], 'home_agent.home_prefixes[0]: "ff02::/16" is a mu'),
    ("home_agent.home_prefixes", ["fe80::/64"], "is a link-local prefix"),
    ("home_agent.home_prefixes", ["10.0.0.0/8"], "(it is IPv4; Mobile IPv6 needs an IPv6 address)"),
    (
        "home_agent.home_prefixes",
        ["2001:db8:1::/64", "2001:db8::/32"],
        'home_agent.home_prefixes[1]: "2001:db8::/32" overlaps home_prefixes[0]',
    ),
    ("home_agent.address", "2001:db8:9::1", 'home_agent.address: "2001:db8:9::1" is not inside'),
    ("home_agent.address", "2001:db8:1::", 'home_agent.address: "2001:db8:1::" is the subnet-r'),
    ("home_agent.address", "ff02::1", 'home_agent.address: "ff02::1" is a multicast address'),
    ("home_agent.address", "fe80::1%eth0", "a zone index"),
    ("home_agent.address", "2001:db8:1::1/64", "expected an address without a prefix length"),
    ("home_agent.address", "192.0.2.1", '"192.0.2.1" is not an IPv6 address (it is IPv4;'),
    ("home_agent.refresh_advice", 262140, "home_agent.refresh_advice: must be less than max_bi"),
    ("home_agent.sequence_window", 40000, "home_agent.sequence_window: must be between 2 and 32"),
    ("home_agent.dad", "true", 'home_agent.dad: expected true or false, got the string "true"'),
    ("home_agent", [], "home_agent: expected a mapping, got a list"),
    ("home_agent.home_prefix", ["2001:db8::/64"], "home_agent.home_prefix: unknown key (did you "),
    ("nai", "mn1@example.net", "nai: unknown key (it belongs in mobile_node.nai)"),
    ("interfaces", ["eth0"], "interfaces: unknown key (it belongs in home_agent.interfaces or mo"),
    ("loglevel", "info", 'loglevel: unknown key (did you mean "log_level"?)'),
]


@pytest.mark.parametrize(("key", "value", "expected"), HA_ERRORS, ids=lambda x: str(x)[:40])
def test_home_agent_errors_name_the_key(
    keys_file: Path, key: str, value: Any, expected: str
) -> None:
    data = ha_mapping(keys_file)
    _set(data, key, value)
    messages = problems_of(data)
    assert any(m.startswith(expected) or expected in m for m in messages), messages
    path = expected.split(":")[0]
    if " " not in path and path:
        assert any(m.startswith(path) for m in messages), messages


MN_ERRORS = [
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8::zz/64", "interface": "eth0"}],
        'mobile_node.home_addresses[0].address: "2001:db8::zz/64" is not an IPv6 address/prefix',
    ),
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8:1::100", "interface": "eth0"}],
        'mobile_node.home_addresses[0].address: "2001:db8:1::100": the prefix length is missing',
    ),
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8:1::/64", "interface": "eth0"}],
        'mobile_node.home_addresses[0].address: "2001:db8:1::/64" is the subnet-router anycast',
    ),
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8:1::fdff:ffff:ffff:fffe/64", "interface": "eth0"}],
        'mobile_node.home_addresses[0].address: "2001:db8:1::fdff:ffff:ffff:fffe/64" is a '
        "reserved subnet anycast address (RFC 2526)",
    ),
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8:1::100/64"}],
        "mobile_node.home_addresses[0].interface: required key is missing",
    ),
    (
        "mobile_node.home_addresses",
        [{"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::100"}],
        "mobile_node.home_addresses[0]: home_agent is the home address itself",
    ),
    (
        "mobile_node.home_addresses",
        [
            {"address": "2001:db8:1::100/64", "interface": "eth0"},
            {"address": "2001:db8:1::100/64", "interface": "wlan0"},
        ],
        'mobile_node.home_addresses[1]: "2001:db8:1::100" is listed twice',
    ),
    ("mobile_node.home_addresses", [], "mobile_node.home_addresses: needs at least 1 entry"),
    ("mobile_node.home_addresses", _DELETE, "mobile_node: a home address is needed"),
    ("mobile_node.home_prefix", "2001:db8:1::/64", "mobile_node.home_prefix: conflicts with home_"),
    ("mobile_node.autoconfigure", True, "mobile_node.autoconfigure: conflicts with home_addresses"),
    ("mobile_node.nai", _DELETE, 'mobile_node.nai: required when authentication is "required"'),
    ("mobile_node.nai", "mn9@example.net", 'mobile_node.nai: "mn9@example.net" has no entry in'),
    ("mobile_node.nai", "mn 1", 'mobile_node.nai: "mn 1": a NAI has no spaces'),
    ("mobile_node.nai", "mn1", "mobile_node.nai: expected a NAI in the form user@realm"),
    ("mobile_node.spi", 255, "mobile_node.spi: must be between 256 and 4294967295, got 255"),
    ("mobile_node.spi", 1001, "mobile_node.spi: 1001 does not match the SPI 1000"),
    ("mobile_node.interfaces", _DELETE, "mobile_node.interfaces: required key is missing"),
    ("mobile_node.bu_lifetime", 421, "mobile_node.bu_lifetime: must be between 4 and 420 seconds"),
    ("mobile_node.home_registration_lifetime", 2, "mobile_node.home_registration_lifetime: must"),
    ("mobile_node.eager_movement_detection", 3, "mobile_node.eager_movement_detection: must be o"),
    ("mobile_node.initial_bindack_timeout", 40, "mobile_node.initial_bindack_timeout: 40 s is mo"),
    (
        "mobile_node.foreign_addresses",
        [{"address": "2001:db8:1::7/64", "interface": "wlan0"}],
        'mobile_node.foreign_addresses[0]: "2001:db8:1::7/64" is inside the home prefix',
    ),
    (
        "mobile_node.foreign_addresses",
        ["2001:db8:2::7/64"],
        "mobile_node.foreign_addresses[0]: expected a mapping, got the string",
    ),
    ("mobile_node.home_prefix", None, None),
]


@pytest.mark.parametrize(("key", "value", "expected"), MN_ERRORS, ids=lambda x: str(x)[:40])
def test_mobile_node_errors_name_the_key(
    keys_file: Path, key: str, value: Any, expected: str | None
) -> None:
    data = mn_mapping(keys_file)
    _set(data, key, value)
    if expected is None:  # null is the same as absent
        validate_mapping(data)
        return
    messages = problems_of(data)
    assert any(m.startswith(expected) for m in messages), messages


def test_mobile_node_home_prefix_longer_than_64_refused(keys_file: Path) -> None:
    data = mn_mapping(keys_file)
    del data["mobile_node"]["home_addresses"]
    data["mobile_node"]["home_prefix"] = "2001:db8:1::/80"
    assert problems_of(data) == [
        'mobile_node.home_prefix: "2001:db8:1::/80": the prefix length must be between 1 and 64'
    ]


@pytest.mark.parametrize(
    ("role", "present", "expected"),
    [
        ("ha", "mobile_node", "mobile_node: not allowed with role \"ha\" (Home Agent): the Home "
         "Agent and Mobile Node functions cannot be active on one host"),
        ("mn", "home_agent", "home_agent: not allowed with role \"mn\" (Mobile Node): the Home "
         "Agent and Mobile Node functions cannot be active on one host"),
        ("cn", "home_agent", 'home_agent: not allowed with role "cn"'),
        ("cn", "mobile_node", 'mobile_node: not allowed with role "cn"'),
    ],
)  # fmt: skip
def test_one_role_per_host(keys_file: Path, role: str, present: str, expected: str) -> None:
    data = {**ha_mapping(keys_file), **mn_mapping(keys_file), "role": role}
    if role == "cn":
        data.pop("mobile_node" if present == "home_agent" else "home_agent")
    messages = problems_of(data)
    assert any(m.startswith(expected) for m in messages), messages
    # the refused section's contents are not walked
    assert not any(m.startswith(f"{present}.") for m in messages), messages


def test_both_sections_without_valid_role_refused(keys_file: Path) -> None:
    data = {**ha_mapping(keys_file), **mn_mapping(keys_file), "role": "both"}
    messages = problems_of(data)
    assert any("cannot be active on one host" in m for m in messages)


@pytest.mark.parametrize(("role", "section"), [("ha", "home_agent"), ("mn", "mobile_node")])
def test_role_section_required(role: str, section: str) -> None:
    assert problems_of({"role": role, "authentication": "disabled"}) == [
        f'{section}: required for role "{role}" '
        + (
            "(its interfaces and home prefixes)"
            if role == "ha"
            else "(its interfaces and a home address setting)"
        )
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "the configuration is empty; it needs at least role"),
        ([], "expected a mapping at the top level, got a list"),
        ({1: "x", "role": "cn"}, "keys must be strings, got the integer 1"),
    ],
)
def test_not_a_mapping(data: Any, expected: str) -> None:
    assert problems_of(data) == [expected]


def test_all_problems_are_collected(keys_file: Path) -> None:
    data = ha_mapping(keys_file)
    data.update(debug="no", log_level="loud", colour=True)
    data["home_agent"].update(preference="high", interfaces=[], lifetime=-5)
    messages = problems_of(data, "site.yml")
    paths = [m.split(": ")[1] for m in messages]
    assert sorted(paths) == sorted(
        [
            "debug",
            "log_level",
            "colour",
            "home_agent.preference",
            "home_agent.interfaces",
            "home_agent.lifetime",
        ]
    )
    assert all(m.startswith("site.yml: ") for m in messages)


def test_file_problems_carry_line_numbers_in_order(tmp_path: Path, keys_file: Path) -> None:
    text = f"""\
role: ha
keys_file: {keys_file}
home_agent:
  interfaces: [eth1]
  home_prefixes:
    - "2001:db8:1::/64"
    - "2001:db8:2::1/64"
  preference: "10"
debug: maybe
"""
    path = write(tmp_path / "agent.yml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == [
        f'{path}:7: home_agent.home_prefixes[1]: "2001:db8:2::1/64" has host bits set '
        '(did you mean "2001:db8:2::/64"?)',
        f'{path}:8: home_agent.preference: expected an integer, got the string "10"',
        f'{path}:9: debug: expected true or false, got the string "maybe"',
    ]


def test_yaml_duplicate_keys_and_syntax_errors(tmp_path: Path) -> None:
    dup = write(tmp_path / "dup.yml", "role: cn\ndebug: true\nrole: ha\n")
    with pytest.raises(ConfigError, match=r'dup.yml:3: duplicate key: "role" is also on line 1'):
        load_config(dup)
    bad = write(tmp_path / "bad.yml", "role: cn\nhome_agent: [\n")
    with pytest.raises(ConfigError, match=r"bad.yml:\d+: YAML syntax error: "):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing.yml: does not exist"):
        load_config(tmp_path / "missing.yml")
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_config(tmp_path)


def test_yaml_1_2_scalars(tmp_path: Path, keys_file: Path) -> None:
    text = f"""\
role: ha
keys_file: {keys_file}
home_agent:
  interfaces: [eth1]
  address: 2001:0:1:2:3:4:5:6
  home_prefixes: [2001:0:1:2::/64]
  dad: no
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path / "a.yml", text))
    # the unquoted address stays a string (YAML 1.1 would make it a base-60 integer)
    assert [m.split(": ", 1)[1] for m in info.value.messages] == [
        'home_agent.dad: expected true or false, got the string "no"'
    ]


def test_warnings(keys_file: Path) -> None:
    data = mn_mapping(keys_file)
    mn = data["mobile_node"]
    mn["home_addresses"][0].update(home_agent="2001:db8:7::1", interface="eth9")
    mn.update(bu_lifetime=400, home_registration_lifetime=300)
    data["correspondent_node"] = {"binding_refresh_request_before": 10}
    cfg = validate_mapping(data)
    assert len(cfg.warnings) == 4, cfg.warnings
    joined = "\n".join(cfg.warnings)
    assert 'mobile_node.home_addresses[0]: home_agent "2001:db8:7::1" is outside' in joined
    assert 'mobile_node.home_addresses[0]: interface "eth9" is not in mobile_node.interf' in joined
    assert "mobile_node.bu_lifetime: 400 s exceeds home_registration_lifetime" in joined
    assert "correspondent_node.binding_refresh_request_before: has no effect" in joined


# --- the keys file ---------------------------------------------------------------------------


def test_keys_file_mode_0644_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yml", keys_text({"mn1@example.net": (1000, SECRET_HEX)}), 0o644)
    with pytest.raises(ConfigError) as info:
        load_keys(path)
    assert info.value.messages == [
        f"{path}: has mode 0644, which gives access beyond 0600 (no group or other bits); "
        f"run chmod 600 {path}"
    ]
    data = ha_mapping(path)
    assert problems_of(data) == [f"keys_file: {path} {info.value.problems[0].message}"]


def test_keys_file_mode_0400_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yml", keys_text({"mn1@example.net": (1000, SECRET_HEX)}), 0o400)
    assert load_keys(path).for_nai("mn1@example.net") == (1000, bytes.fromhex(SECRET_HEX))


def test_keys_file_owner_must_be_agent_uid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "keys.yml", keys_text({"mn1@example.net": (1000, SECRET_HEX)}))
    owner = os.stat(path).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(ConfigError, match=rf"is owned by uid {owner}, but the agent runs as uid"):
        load_keys(path)


def test_keys_file_must_be_regular(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": is not a regular file"):
        load_keys(tmp_path)


def test_missing_keys_file_refused_when_required_accepted_when_disabled(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    data = ha_mapping(missing)
    assert problems_of(data) == [
        f'keys_file: {missing} does not exist; it is needed while authentication is "required" '
        "(authentication: disabled is the explicit opt-out)"
    ]
    data["authentication"] = "disabled"
    cfg = validate_mapping(data)
    assert cfg.keys is None
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith("authentication: disabled: Binding Updates")
    mn = mn_mapping(missing)
    mn["authentication"] = "disabled"
    del mn["mobile_node"]["nai"]
    assert validate_mapping(mn).mobile_node is not None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('{spi: 1000, key: "00112233"}', 'mobile_nodes["mn1@example.net"].key: is 4 bytes; at '),
        ('{spi: 1000, key: "0011223"}', 'mobile_nodes["mn1@example.net"].key: is neither an e'),
        ('{spi: 1000, key: "base64:!!"}', 'mobile_nodes["mn1@example.net"].key: is neither an '),
        ("{spi: 1000, key: 1234567890123456789012345678901234}", "got a number (quote the key"),
        ('{spi: 1000, key: "00112233445566778899aabbccddeeff"}', None),
        ('{spi: 12, key: "00112233445566778899aabbccddeeff0011"}', 'mobile_nodes["mn1@example.ne'),
        (
            '{key: "00112233445566778899aabbccddeeff0011"}',
            'mobile_nodes["mn1@example.net"].spi: re',
        ),
        ('{spi: 1000, key: "00112233445566778899aabbccddeeff00", sip: 1}', "sip: unknown key (d"),
    ],
)
def test_keys_file_entries(tmp_path: Path, entry: str, expected: str | None) -> None:
    path = write(tmp_path / "keys.yml", f"mobile_nodes:\n  mn1@example.net: {entry}\n")
    if expected is None:  # 16 bytes: accepted with a warning
        keys = load_keys(path)
        assert len(keys.warnings) == 1 and "20 or more are recommended" in keys.warnings[0]
        return
    with pytest.raises(ConfigError) as info:
        load_keys(path)
    assert any(expected in m for m in info.value.messages), info.value.messages
    assert all(m.startswith(f"{path}:2: ") for m in info.value.messages), info.value.messages


def test_keys_for_nai() -> None:
    from mip6agent.config.keys import parse_keys

    keys, ctx = parse_keys(keys_text({"a@x": (300, SECRET_HEX), "b@x": (301, SECRET_B64)}), "k")
    assert keys is not None and not ctx.problems
    assert keys.for_nai("b@x") == (301, bytes.fromhex("c0ffee15deadbeef5ec12e7000112233445566ff"))
    assert "a@x" in keys and "c@x" not in keys and len(keys) == 2
    with pytest.raises(KeyError, match="c@x"):
        keys.for_nai("c@x")
    assert keys.to_public_dict()["a@x"] == {"spi": 300, "key": "<redacted, 20 bytes>"}


def test_mobile_node_holding_other_keys_warned(tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.yml",
        keys_text({"mn1@example.net": (1000, SECRET_HEX), "mn2@example.net": (1001, SECRET_HEX)}),
    )
    cfg = validate_mapping(mn_mapping(path))
    assert any("also holds the keys of 1 other mobile node" in w for w in cfg.warnings)


def _assert_no_secret(text: str) -> None:
    lowered = text.lower()
    for needle in (SECRET_HEX, SECRET_HEX[8:24], SECRET_B64, SECRET_B64[7:20], SECRET_DIGITS[:16]):
        assert needle.lower() not in lowered, text


@pytest.mark.parametrize(
    "content",
    [
        # a valid key, but the file has other problems
        f'mobile_nodes:\n  a@x: {{spi: 5, key: "{SECRET_HEX}"}}\n'
        f'  b@x: {{spi: 300, key: "{SECRET_B64}"}}\n',
        # a key one digit short, and a base64 key with a stray character
        f'mobile_nodes:\n  a@x: {{spi: 300, key: "{SECRET_HEX[:-1]}"}}\n'
        f'  b@x: {{spi: 300, key: "{SECRET_B64}!"}}\n',
        # the key pasted as a mapping key, twice
        f"mobile_nodes:\n  a@x:\n    {SECRET_HEX}: 1\n    {SECRET_HEX}: 2\n",
        # a YAML syntax error on the key's line
        f'mobile_nodes:\n  a@x: {{spi: 300, key: "{SECRET_HEX}"\n',
        f"mobile_nodes:\n  a@x: {{spi: 300, key: {SECRET_HEX} ]\n",
        # all digits, unquoted: a number
        f"mobile_nodes:\n  a@x: {{spi: 300, key: {SECRET_DIGITS}}}\n",
        # the key in the wrong place: as the entry, as the SPI, as the NAI, as the list
        f'mobile_nodes:\n  a@x: "{SECRET_HEX}"\n',
        f'mobile_nodes:\n  a@x: {{spi: "{SECRET_HEX}", key: "{SECRET_B64}"}}\n',
        f'mobile_nodes:\n  "{SECRET_HEX}": {{spi: 300, key: "{SECRET_HEX}"}}\n',
        f"mobile_nodes:\n  {SECRET_DIGITS}: {{spi: 300}}\n",
        f'mobile_nodes: "{SECRET_B64}"\n',
        f'"{SECRET_B64}": 1\n',
    ],
)
def test_key_never_appears_in_errors(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "keys.yml", content, 0o644)
    with pytest.raises(ConfigError) as info:
        load_keys(path)
    _assert_no_secret(str(info.value))
    _assert_no_secret(repr(info.value))
    cfg_problems = problems_of(ha_mapping(path))
    _assert_no_secret("\n".join(cfg_problems))


def test_key_never_appears_in_repr_or_dumps(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yml", keys_text({"mn1@example.net": (1000, SECRET_HEX)}))
    cfg = validate_mapping(mn_mapping(path))
    assert cfg.keys is not None
    for text in (
        repr(cfg),
        str(cfg),
        repr(cfg.keys),
        str(cfg.keys.entries),
        f"{cfg.keys.entries[0][1].key}",
        json.dumps(to_dict(cfg)),
        json.dumps(cfg.keys.to_public_dict()),
        repr(dataclasses.asdict(cfg)),
        repr(copy.deepcopy(cfg)),
    ):
        _assert_no_secret(text)
    assert cfg.keys.for_nai("mn1@example.net")[1] == bytes.fromhex(SECRET_HEX)
    secret = cfg.keys.entries[0][1].key
    assert secret == Secret(bytes.fromhex(SECRET_HEX)) and secret != Secret(b"x" * 20)
    with pytest.raises(TypeError):
        __import__("pickle").dumps(secret)


# --- to_dict and the round trip --------------------------------------------------------------


def test_to_dict_is_plain_data_and_round_trips(keys_file: Path) -> None:
    for data in (ha_mapping(keys_file), mn_mapping(keys_file), {"role": "cn"}):
        cfg = validate_mapping(data)
        dumped = to_dict(cfg)
        assert json.loads(json.dumps(dumped)) == dumped
        assert validate_mapping(dumped) == cfg
        assert cfg.to_dict() == dumped
    mn = to_dict(validate_mapping(mn_mapping(keys_file)))["mobile_node"]
    assert "home_prefix" not in mn and "autoconfigure" not in mn


def _seconds(low: float, high: float) -> st.SearchStrategy[float | int]:
    return st.integers(int(low) + 1, int(high)) | st.floats(low, high)


_ifnames = st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True)
_interfaces = st.lists(_ifnames, min_size=1, max_size=3, unique=True)


@st.composite
def _optional(draw: st.DrawFn, target: dict[str, Any], name: str, strategy: Any) -> None:
    if draw(st.booleans()):
        target[name] = draw(strategy)


@st.composite
def home_agents(draw: st.DrawFn) -> dict[str, Any]:
    nets = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=3, unique=True))
    prefixes = [f"2001:db8:{n:x}::/64" for n in nets]
    ha: dict[str, Any] = {"interfaces": draw(_interfaces), "home_prefixes": prefixes}
    if draw(st.booleans()):
        ha["address"] = str(IPv6Address(f"2001:db8:{nets[0]:x}::") + draw(st.integers(1, 2**32)))
    draw(_optional(ha, "preference", st.integers(0, 0xFFFF)))
    draw(_optional(ha, "lifetime", _seconds(1, 65520)))
    limit = draw(_seconds(8, 262140))
    ha["max_binding_lifetime"] = limit
    draw(_optional(ha, "refresh_advice", st.none() | _seconds(4, limit - 1)))
    draw(_optional(ha, "dad", st.booleans()))
    draw(_optional(ha, "sequence_window", st.integers(2, 32768)))
    draw(_optional(ha, "replay_window", _seconds(1, 300)))
    return ha


@st.composite
def mobile_nodes(draw: st.DrawFn, nai: bool) -> dict[str, Any]:
    interfaces = draw(_interfaces)
    mn: dict[str, Any] = {"interfaces": interfaces}
    mode = draw(st.sampled_from(["home_addresses", "home_prefix", "autoconfigure"]))
    if mode == "home_addresses":
        hosts = draw(st.lists(st.integers(2, 2**40), min_size=1, max_size=3, unique=True))
        mn[mode] = [
            {
                "address": f"{IPv6Address('2001:db8:1::') + h}/64",
                "interface": draw(st.sampled_from(interfaces)),
                **({"home_agent": "2001:db8:1::1"} if draw(st.booleans()) else {}),
            }
            for h in hosts
        ]
    elif mode == "home_prefix":
        mn[mode] = f"2001:db8:{draw(st.integers(1, 0xFFFF)):x}::/{draw(st.integers(16, 64))}"
        mn[mode] = str(IPv6Network(mn[mode], strict=False))
    else:
        mn[mode] = True
    if nai:
        mn["nai"] = "mn1@example.net"
        draw(_optional(mn, "spi", st.just(1000)))
    draw(_optional(mn, "home_registration_lifetime", _seconds(4, 262140)))
    draw(_optional(mn, "bu_lifetime", _seconds(4, 420)))
    draw(_optional(mn, "route_optimization", st.just(False)))  # true: refused (not built)
    draw(_optional(mn, "eager_movement_detection", st.integers(0, 2)))
    first = draw(_seconds(0.1, 60))
    mn["initial_bindack_timeout"] = first
    if first > 32 or draw(st.booleans()):  # 32 s is the default ceiling
        mn["max_bindack_timeout"] = draw(_seconds(max(first, 1), 3600))
    foreign = draw(st.lists(st.integers(1, 0xFFFF), max_size=2, unique=True))
    if foreign:
        mn["foreign_addresses"] = [
            {"address": f"3fff:{f:x}::7/64", "interface": interfaces[0]} for f in foreign
        ]
    return mn


@st.composite
def configs(draw: st.DrawFn, keys_file: Path) -> dict[str, Any]:
    role = draw(st.sampled_from(["ha", "mn", "cn"]))
    auth = draw(st.sampled_from(["required", "disabled"]))
    data: dict[str, Any] = {"role": role, "authentication": auth, "keys_file": str(keys_file)}
    if role == "ha":
        data["home_agent"] = draw(home_agents())
    elif role == "mn":
        data["mobile_node"] = draw(mobile_nodes(nai=auth == "required" or draw(st.booleans())))
    draw(_optional(data, "log_level", st.sampled_from(["debug", "info", "warning", "error"])))
    draw(_optional(data, "debug", st.booleans()))
    draw(_optional(data, "dataplane", st.sampled_from(["auto", "seg6", "ip6tnl"])))
    draw(
        _optional(data, "control_socket", st.from_regex(r"/run/[a-z]{1,20}\.sock", fullmatch=True))
    )
    cn: dict[str, Any] = {}
    draw(_optional(cn, "route_optimization", st.booleans()))
    draw(_optional(cn, "binding_refresh_request_before", st.none() | _seconds(1, 419)))
    if cn or draw(st.booleans()):
        data["correspondent_node"] = cn
    return data


@given(data=st.data())
def test_round_trip_property(keys_file: Path, data: st.DataObject) -> None:
    mapping = data.draw(configs(keys_file))
    cfg = validate_mapping(mapping)
    dumped = to_dict(cfg)
    assert isinstance(cfg, AgentConfig)
    wire = json.loads(json.dumps(dumped))
    again = validate_mapping(wire)
    assert again == cfg
    assert to_dict(again) == dumped


# --- the seed's mip6config -f file -----------------------------------------------------------


def test_seed_file_all_four_lines() -> None:
    assert parse_seed_file("# home agent\n\nenable_ha\n") == {"role": "ha", "home_agent": {}}
    assert parse_seed_file("autoconfig\n") == {"role": "mn", "mobile_node": {"autoconfigure": True}}
    assert parse_seed_file("homepref 2001:db8:1::/64  # DHAAD\n") == {
        "role": "mn",
        "mobile_node": {"home_prefix": "2001:db8:1::/64"},
    }
    text = """\
# two home addresses, the second found by DHAAD
homeaddr 2001:db8:1::100/64@eth0%2001:db8:1::1

homeaddr 2001:db8:1::101/64@eth0
"""
    assert parse_seed_file(text) == {
        "role": "mn",
        "mobile_node": {
            "home_addresses": [
                {
                    "address": "2001:db8:1::100/64",
                    "interface": "eth0",
                    "home_agent": "2001:db8:1::1",
                },
                {"address": "2001:db8:1::101/64", "interface": "eth0"},
            ]
        },
    }


def test_seed_file_kame_value_lines() -> None:
    text = "homeaddr 2001:db8:1::100/64@eth0%2001:db8:1::1\nhr_lifetime 300\nbu_lifetime 60\n"
    text += "coaddr 2001:db8:2::7/64@wlan0\nbu_to_cn 1\neager_md 2\ndebug\n"
    assert parse_seed_file(text) == {
        "role": "mn",
        "debug": True,
        "mobile_node": {
            "home_addresses": [
                {
                    "address": "2001:db8:1::100/64",
                    "interface": "eth0",
                    "home_agent": "2001:db8:1::1",
                }
            ],
            "home_registration_lifetime": 300,
            "bu_lifetime": 60,
            "foreign_addresses": [{"address": "2001:db8:2::7/64", "interface": "wlan0"}],
            "route_optimization": True,
            "eager_movement_detection": 2,
        },
    }
    assert parse_seed_file("enable_ha\nha_pref 10\n") == {
        "role": "ha",
        "home_agent": {"preference": 10},
    }


def test_seed_file_completes_into_a_valid_config(keys_file: Path) -> None:
    partial = parse_seed_file("homeaddr 2001:db8:1::100/64@eth0%2001:db8:1::1\n")
    partial["mobile_node"].update(interfaces=["eth0"], nai="mn1@example.net")
    cfg = validate_mapping({**partial, "keys_file": str(keys_file)}, "mip6.conf")
    assert cfg.mobile_node is not None
    assert cfg.mobile_node.home_addresses[0].home_agent == IPv6Address("2001:db8:1::1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# ok\n\nhomeaddr 2001:db8::zz/64@eth0\n",
         'mip6.conf:3: homeaddr: "2001:db8::zz/64" is not an IPv6 address/prefix'),
        ("homeaddr 2001:db8:1::100@eth0\n",
         'mip6.conf:1: homeaddr: expected <address>/<plen>@<interface>[%<home agent address>], '
         'got "2001:db8:1::100@eth0"'),
        ("homeaddr\n", "mip6.conf:1: homeaddr: needs an argument: homeaddr <address>/<plen>@"),
        ("homepref 2001:db8:1::1/64\n", 'mip6.conf:1: homepref: "2001:db8:1::1/64" has host bits'),
        ("\n\nenable_ha now\n", 'mip6.conf:3: enable_ha: takes no argument, got "now"'),
        ("homeadr 2001:db8:1::100/64@eth0\n",
         'mip6.conf:1: unknown line "homeadr" (did you mean "homeaddr"?)'),
        ("enable_ha\n#\nautoconfig\n",
         "mip6.conf:3: autoconfig: is a Mobile Node setting, but 'enable_ha' on line 1 is a Home "
         "Agent one: the Home Agent and Mobile Node functions cannot be active on one host"),
        ("homepref 2001:db8:1::/64\nautoconfig\n",
         "mip6.conf:2: autoconfig: conflicts with 'homepref' on line 1"),
        ("debug 1\ndebug 0\n", "mip6.conf:2: debug: repeats line 1"),
        ("debug yes\n", 'mip6.conf:1: debug: expected 0 or 1, got "yes"'),
        ("enable_ha\nha_pref -3\n", "mip6.conf:2: ha_pref: must be between 0 and 65535, got -3"),
        ("hr_lifetime 5m\n", 'mip6.conf:1: hr_lifetime: expected a whole number, got "5m"'),
        ("prom_mode 1\n", "mip6.conf:1: prom_mode: has no equivalent in mip6agent: movement"),
    ],
)  # fmt: skip
def test_seed_file_bad_lines(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_seed_file(text)
    assert any(m.startswith(expected) for m in info.value.messages), info.value.messages


def test_seed_file_collects_every_bad_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_seed_file("bogus\nhomeaddr x\nautoconfig 1\n", "/usr/local/v6/etc/mip6.conf")
    where = [m.split(": ")[0] for m in info.value.messages]
    assert where == sorted(where)
    assert sorted(set(where)) == [
        "/usr/local/v6/etc/mip6.conf:1",
        "/usr/local/v6/etc/mip6.conf:2",
        "/usr/local/v6/etc/mip6.conf:3",
    ]


def test_homeaddr_spec_for_mip6config_h() -> None:
    assert parse_homeaddr_spec("2001:db8:1::100/64@eth0") == {
        "address": "2001:db8:1::100/64",
        "interface": "eth0",
    }
    with pytest.raises(ConfigError, match=r'^-H: "fe80::1/64" is a link-local address'):
        parse_homeaddr_spec("fe80::1/64@eth0%2001:db8::1")
