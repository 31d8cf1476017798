"""mip6config's flags become the right control requests, or a clear usage error."""

from __future__ import annotations

from pathlib import Path

import pytest
from mip6agent.cli import mip6config
from mip6agent.config import ConfigError
from mip6agent.control import protocol


def requests(*argv: str) -> list[tuple[str, dict]]:
    args, unknown = mip6config.build_parser().parse_known_args(list(argv))
    return mip6config.requests(args, unknown)


def test_flags_map_to_commands_in_order() -> None:
    got = requests("-g", "-y", "7", "-d", "1", "-n")
    assert got == [("enable-ha", {"preference": 7}), ("debug", {"on": True}), ("show-config", {})]
    got = requests("-H", "2001:db8:1::100/64@eth0%2001:db8:1::1", "-l", "600", "-b", "200")
    assert got[0] == (
        "set-home-address",
        {"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"},
    )
    assert got[1] == ("set-lifetimes", {"bu_lifetime": 200, "home_registration_lifetime": 600})
    assert requests("-P", "2001:db8:1::/64") == [("set-home-prefix", {"prefix": "2001:db8:1::/64"})]
    assert requests("-a", "-x") == [("autoconfigure", {}), ("disable", {})]
    assert requests("-F", "2001:db8:2::5/64@wlan0")[0][0] == "add-foreign-address"
    for command, _ in requests(
        "-g", "-F", "2001:db8:2::5/64@wlan0", "-E", "2001:db8:2::5/64@wlan0"
    ):
        assert command in protocol.COMMANDS


def test_route_optimization_flags() -> None:
    assert requests("-r", "1") == [("route-optimization", {"on": True})]
    assert requests("-q", "0") == [("binding-refresh", {"on": False})]
    assert requests("-q", "1", "-w", "75") == [("binding-refresh", {"on": True, "percent": 75})]
    assert requests("-w", "60") == [("binding-refresh", {"percent": 60})]
    for argv in (["-w", "0"], ["-w", "100"], ["-q", "0", "-w", "5"], ["-r", "2"]):
        with pytest.raises((ValueError, SystemExit)):
            requests(*argv)


@pytest.mark.parametrize("flag", sorted(mip6config.REJECTED))
def test_unimplemented_seed_flags_are_rejected_with_a_reason(flag: str) -> None:
    with pytest.raises(ValueError, match=f"{flag} is not supported: .+"):
        requests(flag, "1")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-y", "3"], "needs -g"),
        (["-P", "2001:db8:1::1/64"], "host bits"),
        (["-t", "0"], "route optimisation"),
        (["-Z"], "unknown option"),
    ],
)
def test_bad_usage_is_explained(argv: list[str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        requests(*argv)


def test_bad_home_address_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="-H"):
        requests("-H", "2001:db8:1::100")


def test_seed_file_becomes_a_merged_configuration(tmp_path: Path) -> None:
    seed = tmp_path / "mip6.conf"
    seed.write_text("# the seed's sample\nhomeaddr 2001:db8:1::100/64@eth0%2001:db8:1::1\n")
    [(command, args)] = requests("-f", str(seed))
    assert command == "set-config" and args["merge"] is True
    assert args["config"]["role"] == "mn"
    entry = args["config"]["mobile_node"]["home_addresses"][0]
    assert entry["address"] == "2001:db8:1::100/64" and entry["home_agent"] == "2001:db8:1::1"


def test_missing_seed_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        requests("-f", str(tmp_path / "missing.conf"))


def test_main_reports_usage_errors_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert mip6config.main(["-u", "1"]) == 2
    err = capsys.readouterr().err
    assert "site-local" in err and "Traceback" not in err
    assert mip6config.main([]) == 2


def test_mip6stat_table_shows_wall_clock_times_relative_to_now() -> None:
    from mip6agent.cli.mip6stat import _table

    now = 1_800_000_000.0
    rows = [
        {"home_address": "2001:db8:1::100", "expires": now + 3590.4, "registered": now - 10.2},
        {"home_address": "2001:db8:1::200", "expires": now - 5.0, "registered": now - 100.0},
        {"home_address": "2001:db8:1::300", "expires": 250.0, "registered": None},
    ]
    lines = _table("binding cache", rows, now=now).splitlines()
    assert lines[0] == "binding cache:"
    assert lines[1].split() == ["home_address", "expires", "registered"]
    assert lines[2].split() == ["2001:db8:1::100", "in", "3590s", "10s", "ago"]
    assert lines[3].split() == ["2001:db8:1::200", "5s", "ago", "100s", "ago"]
    # Not a wall-clock time (a monotonic clock's value): shown as it is.
    assert lines[4].split() == ["2001:db8:1::300", "250.0", "-"]
