# Copyright: Mobile IPv6 fleet suite maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mip6_fleet_report: the fleet health page's model, from playbooks/stats.yml's report."""

from __future__ import annotations

from datetime import UTC, datetime

DOCUMENTATION = r"""
name: mip6_fleet_report
short_description: The fleet health page's model from the mip6_stat report
description:
  - Turns the report C(playbooks/stats.yml) builds (C(generated) and per host the
    C(mip6_stat) facts, or an C(error)) into what C(mip6-fleet.html.j2) renders - one row per
    host, one per mobile node, and the hosts that did not answer.
  - Values the agent does not report are C(None); the page says "not reported" for them.
version_added: 0.1.0
options:
  _input:
    description: The report, C({generated, hosts})
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The page's model
  ansible.builtin.set_fact:
    mip6_fleet: "{{ mip6_stats_report | mobileip.mipv6.mip6_fleet_report }}"
"""

RETURN = r"""
_value:
  description:
    - C(generated); C(hosts), per answering host C(name), C(role), C(version),
      C(config_generation), C(uptime), C(dataplane), C(bindings), C(bul_registered),
      C(bul_total), C(registrations) (BA status name to count), C(last_errors);
      C(mobile_nodes), per binding or binding update list entry C(reported_by),
      C(home_address), C(home_agent), C(care_of_address), C(remaining);
      C(silent), per host that did not answer C(name) and C(error).
  type: dict
"""


def _epoch(generated):
    try:
        stamp = datetime.strptime(str(generated), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC).timestamp()


def _remaining(expires, now):
    if now is None or not isinstance(expires, (int, float)):
        return None
    return max(0, int(expires - now))


def _registrations(counters):
    """BA status -> count from the counters ba_out.<n>_<name> (home agent: registrations
    answered) or ba_in.<n>_<name> (mobile node: answers received)."""
    out = {}
    for key, value in sorted(counters.items()):
        for prefix in ("ba_out.", "ba_in."):
            if key.startswith(prefix):
                status = key[len(prefix) :]
                out[status] = out.get(status, 0) + value
    return out


def mip6_fleet_report(report):
    now = _epoch(report.get("generated"))
    hosts, mobile_nodes, silent = [], [], []
    for name, data in sorted((report.get("hosts") or {}).items()):
        if not isinstance(data, dict) or "error" in data or "status" not in data:
            error = data.get("error") if isinstance(data, dict) else None
            silent.append({"name": name, "error": error or "no status"})
            continue
        status = data.get("status") or {}
        counters = data.get("counters") or {}
        bul = data.get("bul") or []
        role = status.get("role")
        hosts.append(
            {
                "name": name,
                "role": role,
                "version": status.get("version"),
                "config_generation": status.get("config_generation"),
                "uptime": status.get("uptime"),
                "dataplane": status.get("dataplane"),
                "bindings": len(data.get("bindings") or []) if role == "ha" else None,
                "bul_registered": (
                    sum(1 for e in bul if e.get("state") == "registered") if role == "mn" else None
                ),
                "bul_total": len(bul) if role == "mn" else None,
                "registrations": _registrations(counters),
                "last_errors": status.get("last_errors"),
            }
        )
        if role == "ha":
            for binding in data.get("bindings") or []:
                mobile_nodes.append(
                    {
                        "reported_by": name,
                        "home_address": binding.get("home_address"),
                        "home_agent": binding.get("home_agent"),
                        "care_of_address": binding.get("care_of_address"),
                        "remaining": _remaining(binding.get("expires"), now),
                    }
                )
        elif role == "mn":
            for entry in bul:
                mobile_nodes.append(
                    {
                        "reported_by": name,
                        "home_address": entry.get("home_address"),
                        "home_agent": entry.get("home_agent"),
                        "care_of_address": entry.get("care_of_address"),
                        "remaining": _remaining(entry.get("expires"), now)
                        if entry.get("state") == "registered"
                        else None,
                    }
                )
    return {
        "generated": report.get("generated"),
        "hosts": hosts,
        "mobile_nodes": mobile_nodes,
        "silent": silent,
    }


class FilterModule:
    def filters(self):
        return {"mip6_fleet_report": mip6_fleet_report}
