"""The fleet health page (playbooks/stats.yml -> mip6-fleet.html): the filter that builds
its model, on a report written by hand, and the rendered page in a real headless browser
(Debian's chromium, driven by Playwright), whose cells must show the report's numbers."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "playbooks/templates/mip6-fleet.html.j2"
GENERATED = "2026-12-03T12:00:00Z"
NOW = 1796299200.0  # GENERATED as a Unix time

REPORT = {
    "generated": GENERATED,
    "hosts": {
        "ha1": {
            "status": {"role": "ha", "version": "0.1.0", "dataplane": "seg6",
                       "config_generation": 3, "uptime": 7200.5,
                       "last_errors": [{"time": NOW - 60, "message": "InstallBinding failed: x"}]},
            "bindings": [
                {"home_address": "2001:db8:1::100", "care_of_address": "2001:db8:2::100",
                 "home_agent": "2001:db8:1::1", "expires": NOW + 300.0},
                {"home_address": "2001:db8:1::200", "care_of_address": "2001:db8:3::200",
                 "home_agent": "2001:db8:1::1", "expires": NOW + 40.9},
            ],
            "counters": {"ba_out.0_accepted": 12, "ba_out.146_mipv6_auth_fail": 2, "mh_in.bu": 14},
        },
        "mn1": {
            "status": {"role": "mn", "version": "0.1.0", "dataplane": "seg6",
                       "config_generation": 1, "uptime": 100.0, "last_errors": []},
            "bul": [{"home_address": "2001:db8:1::100", "home_agent": "2001:db8:1::1",
                     "state": "registered", "care_of_address": "2001:db8:2::100",
                     "expires": NOW + 310.0}],
            "counters": {"ba_in.0_accepted": 5},
        },
        "mn2": {"status": {"role": "mn", "version": "0.0.9"}, "bul": [
            {"home_address": "2001:db8:1::ff:fe00:200", "home_agent": "2001:db8:1::1",
             "state": "failed", "care_of_address": None, "expires": 0.0}]},
        "cn1": {"error": "could not reach the agent at /run/mip6/agent.sock"},
    },
}  # fmt: skip


def _filter():
    path = REPO / "plugins/filter/mip6_fleet_report.py"
    spec = importlib.util.spec_from_file_location("mip6_fleet_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()["mip6_fleet_report"]


def test_model_from_a_report_written_by_hand() -> None:
    model = _filter()(REPORT)
    assert model["generated"] == GENERATED
    assert [h["name"] for h in model["hosts"]] == ["ha1", "mn1", "mn2"]
    ha1, mn1, mn2 = model["hosts"]
    assert (ha1["role"], ha1["bindings"], ha1["config_generation"]) == ("ha", 2, 3)
    assert ha1["registrations"] == {"0_accepted": 12, "146_mipv6_auth_fail": 2}
    assert ha1["last_errors"] == [{"time": NOW - 60, "message": "InstallBinding failed: x"}]
    assert (mn1["bul_registered"], mn1["bul_total"], mn1["bindings"]) == (1, 1, None)
    assert mn1["registrations"] == {"0_accepted": 5}
    assert mn2["config_generation"] is None and mn2["last_errors"] is None  # not reported
    assert model["silent"] == [
        {"name": "cn1", "error": "could not reach the agent at /run/mip6/agent.sock"}
    ]
    rows = {(m["reported_by"], m["home_address"]): m for m in model["mobile_nodes"]}
    assert rows[("ha1", "2001:db8:1::100")]["remaining"] == 300
    assert rows[("ha1", "2001:db8:1::200")]["remaining"] == 40
    assert rows[("mn1", "2001:db8:1::100")]["remaining"] == 310
    assert rows[("mn2", "2001:db8:1::ff:fe00:200")]["remaining"] is None


def _render(tmp_path: Path) -> Path:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
                             autoescape=True, undefined=jinja2.StrictUndefined)  # fmt: skip
    page = env.get_template(TEMPLATE.name).render(mip6_fleet=_filter()(REPORT))
    path = tmp_path / "mip6-fleet.html"
    path.write_text(page)
    return path


def test_page_is_self_contained(tmp_path: Path) -> None:
    text = _render(tmp_path).read_text()
    for needle in ("<script", "http://", "https://", "<link", "@import", "src="):
        assert needle not in text, needle


def test_page_in_a_real_browser_shows_the_report(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing (Debian package chromium; make apt installs it)")
    from playwright.sync_api import sync_playwright

    page_path = _render(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())

            def cell(table: str, row: str, field: str) -> str:
                return page.inner_text(f"#{table} tr[{row}] td[data-field='{field}']").strip()

            assert page.inner_text("#answered") == "3"
            assert page.inner_text("#silent-count") == "1"
            ha = REPORT["hosts"]["ha1"]
            assert cell("hosts", "data-host='ha1'", "bindings") == str(len(ha["bindings"]))
            assert cell("hosts", "data-host='ha1'", "config_generation") == "3"
            assert cell("hosts", "data-host='ha1'", "version") == "0.1.0"
            accepted = page.inner_text(
                "#hosts tr[data-host='ha1'] li[data-status='0_accepted'] .count"
            )
            assert accepted == str(ha["counters"]["ba_out.0_accepted"])
            assert "InstallBinding failed" in cell("hosts", "data-host='ha1'", "last_errors")
            assert cell("hosts", "data-host='mn1'", "bul") == "1 of 1 registered"
            assert cell("hosts", "data-host='mn2'", "config_generation") == "not reported"
            mn = "data-home='2001:db8:1::100'][data-reported-by='ha1'"
            assert cell("mobile-nodes", mn, "care_of_address") == "2001:db8:2::100"
            assert cell("mobile-nodes", mn, "remaining") == "300"
            assert cell("mobile-nodes", mn, "home_agent") == "2001:db8:1::1"
            assert cell("silent", "data-host='cn1'", "error") == REPORT["hosts"]["cn1"]["error"]
            # nothing but the page itself was loaded
            assert requests == [page_path.as_uri()], requests
        finally:
            browser.close()
