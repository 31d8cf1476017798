#!/usr/bin/python
# Copyright: (c) 2025, Mobile IPv6 fleet suite maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mip6_stat
short_description: Gather and clear a Mobile IPv6 agent's lists and counters (mip6stat)
version_added: 0.1.0
description:
  - Reads the binding cache, binding update list, home agents list, home addresses,
    counters and status of a running C(mip6agent) over its control socket and returns them
    as the C(mip6) fact, like the KAME C(mip6stat) tool, for a whole fleet at once.
  - Optionally clears lists first (C(mip6stat -c), C(mip6stat -M)); the facts then show
    the state after clearing.
  - The module speaks the control protocol itself; it needs neither the C(mip6agent) Python
    package nor its command line tools on the host, only the socket.
author:
  - Mobile IPv6 fleet suite maintainers (@mobileip)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details:
      - Gathers as usual and reports in RV(cleared) what O(clear) would clear, with
        C(changed), without clearing anything; the facts show the state before clearing.
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: linux
options:
  socket:
    description:
      - Path of the agent's control socket. Same as C(mip6stat -S).
    type: path
    default: /run/mip6/agent.sock
  timeout:
    description:
      - Seconds to wait for each answer of the agent.
    type: float
    default: 10
  gather:
    description:
      - What to gather into the C(mip6) fact.
      - V(bindings) is C(mip6stat -b) (the binding cache on a home agent, the
        correspondent bindings on a correspondent node), V(bul) C(mip6stat -u) (mobile node),
        V(home_agents) C(mip6stat -H), V(home_addresses) C(mip6stat -m) (mobile node),
        V(counters) C(mip6stat -s), V(status) the agent's status with the lists its role
        has.
      - Default, every list of the agent's role and V(status) (C(mip6stat) with no
        selection). V([]) gathers nothing, for a task that only clears.
      - A list the role does not have is gathered as empty.
    type: list
    elements: str
    choices: [bindings, bul, correspondents, home_agents, home_addresses, counters, status]
  clear:
    description:
      - Lists to clear before gathering.
      - V(bindings) drops every binding of the home agent or correspondent node
        (C(mip6stat -b -c)); V(bul)
        deregisters and forgets the mobile node's registrations; V(home_agents) forgets the
        home agents heard; V(counters) resets the protocol counters (C(mip6stat -c)); the
        signalling transport's C(transport.*) counters, the nftables counters
        (C(tunnelled_in), C(param_problem_dropped.*)) and a correspondent's eBPF counters
        (C(ro.*)) keep counting.
      - V(home_addresses) is C(mip6stat -M) on a mobile node; the configured home addresses
        and home prefix are removed and the mobile node autoconfigures its home address.
      - Only what is not empty already is cleared, so C(changed) is true only when something
        was actually cleared. Lists the agent's role does not have are skipped (see
        RV(skipped)).
    type: list
    elements: str
    choices: [bindings, bul, home_agents, home_addresses, counters]
    default: []
notes:
  - The control socket is root only (mode 0600); run the task with C(become=true).
  - Counter names keep the agent's dots (C(mh_in.bu)); read them with
    C(ansible_facts.mip6.counters['mh_in.bu']).
seealso:
  - module: mobileip.mipv6.mip6_config
"""

EXAMPLES = r"""
- name: Everything this host's role has (mip6stat)
  mobileip.mipv6.mip6_stat:
  become: true

- name: Show the bindings of every home agent
  ansible.builtin.debug:
    msg: "{{ ansible_facts.mip6.bindings | map(attribute='home_address') | list }}"
  when: ansible_facts.mip6.status.role == 'ha'

- name: Binding cache and counters only (mip6stat -b -s)
  mobileip.mipv6.mip6_stat:
    gather: [bindings, counters]
  become: true

- name: Reset the counters, then read them (mip6stat -c; mip6stat -s)
  mobileip.mipv6.mip6_stat:
    clear: [counters]
    gather: [counters]
  become: true

- name: Forget the home agents heard, gather nothing
  mobileip.mipv6.mip6_stat:
    clear: [home_agents]
    gather: []
  become: true
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: success
  type: complex
  contains:
    mip6:
      description:
        - The gathered data, one key per name in O(gather).
      returned: success
      type: complex
      contains:
        status:
          description:
            - The agent's status (C(role), C(version), C(pid), C(uptime), C(dataplane),
              C(enabled), C(debug)) and C(lists), the lists of its role, named as in
              O(gather).
          returned: when gathered
          type: dict
          sample:
            role: ha
            dataplane: seg6
            enabled: true
            lists: [bindings, home_agents, counters]
        bindings:
          description:
            - The home agent's binding cache, one mapping per binding.
            - On a correspondent node, its correspondent bindings (route optimisation) with
              C(home_address), C(correspondent), C(care_of_address), C(sequence),
              C(registered), C(expires), C(last_use), C(refresh_requested), and the eBPF
              map's C(dataplane_care_of_address) and C(dataplane_packets).
          returned: when gathered
          type: list
          elements: dict
          sample:
            - home_address: 2001:db8:1::100
              care_of_address: 2001:db8:2::100
              lifetime: 3600
              sequence: 5
        bul:
          description: The mobile node's binding update list, one mapping per home address.
          returned: when gathered
          type: list
          elements: dict
          sample:
            - home_address: 2001:db8:1::100
              home_agent: 2001:db8:1::1
              state: registered
              care_of_address: 2001:db8:2::100
        correspondents:
          description:
            - The mobile node's correspondent entries (route optimisation), one mapping per
              home address and correspondent, with the return routability C(state), the
              care-of address registered with the correspondent, and the eBPF or XFRM
              data path's C(dataplane) (care-of address in use, or null) and C(packets).
            - Empty where route optimisation is off.
          returned: when gathered
          type: list
          elements: dict
          sample:
            - home_address: 2001:db8:1::100
              correspondent: 2001:db8:4::9
              state: bound
              dataplane: 2001:db8:2::100
              packets: 40
        home_agents:
          description: Home agents heard in Router Advertisements or DHAAD replies.
          returned: when gathered
          type: list
          elements: dict
        home_addresses:
          description: The mobile node's home addresses and whether it is at home.
          returned: when gathered
          type: list
          elements: dict
          sample:
            - home_address: 2001:db8:1::100
              prefix: 2001:db8:1::/64
              interface: eth0
              home_agent: 2001:db8:1::1
              at_home: false
        counters:
          description: Counter name to value (only counters that counted something).
          returned: when gathered
          type: dict
          sample: {"mh_in.bu": 3, "ba_out.0_accepted": 3, "transport.received": 12}
cleared:
  description: The lists cleared (in check mode, that would be cleared).
  returned: success
  type: list
  elements: str
  sample: [counters]
skipped:
  description: Lists in O(clear) that the agent's role does not have.
  returned: success
  type: list
  elements: str
  sample: [bul]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mobileip.mipv6.plugins.module_utils.mip6_control import (  # noqa: E402
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    LIST_COMMANDS,
    UNCLEARED_COUNTERS,
    Mip6Control,
    Mip6ControlError,
    list_name,
)

# Lists that can be gathered but not cleared: a mobile node's correspondents (route
# optimisation; its status lists them while route optimisation is on).
GATHER_COMMANDS = {**LIST_COMMANDS, "correspondents": "correspondents"}
GATHER = (*GATHER_COMMANDS, "status")
# mip6stat -M: the agent's clear-home-addresses, as a merge of the configuration.
CLEAR_HOME_ADDRESSES = {
    "mobile_node": {"home_addresses": None, "home_prefix": None, "autoconfigure": True}
}


def pending(client: Mip6Control, name: str) -> bool:
    """Whether clearing ``name`` would remove anything."""
    if name == "counters":
        counters = client.call("counters") or {}
        return any(
            value for key, value in counters.items() if not key.startswith(UNCLEARED_COUNTERS)
        )
    if name == "bul":
        return any(
            entry.get("state") not in (None, "idle") or entry.get("care_of_address")
            for entry in client.call("bul") or []
        )
    if name == "home_addresses":
        mn = (client.call("show-config") or {}).get("mobile_node") or {}
        configured = bool(mn.get("home_addresses")) or bool(mn.get("home_prefix"))
        return configured or not mn.get("autoconfigure")
    return bool(client.call(LIST_COMMANDS[name]))


def clear(client: Mip6Control, name: str) -> None:
    if name == "home_addresses":
        client.call("set-config", {"config": CLEAR_HOME_ADDRESSES, "merge": True})
    else:
        client.call("clear-" + LIST_COMMANDS[name])


def run(module: AnsibleModule, client: Mip6Control) -> dict:
    status = client.call("status")
    if not isinstance(status, dict):
        raise Mip6ControlError("the agent's status reply is not a mapping")
    role_lists = [list_name(name) for name in status.get("lists") or []]
    requested = module.params["clear"] or []
    cleared, skipped = [], []
    for name in dict.fromkeys(requested):
        if name not in role_lists:
            skipped.append(name)
        elif pending(client, name):
            cleared.append(name)
    if not module.check_mode:
        for name in cleared:
            clear(client, name)

    gather = module.params["gather"]
    if gather is None:
        gather = [*role_lists, "status"]
    facts: dict = {}
    for name in dict.fromkeys(gather):
        if name == "status":
            facts["status"] = client.call("status")
            facts["status"]["lists"] = role_lists
        else:
            facts[name] = client.call(GATHER_COMMANDS[name])
    return {
        "changed": bool(cleared),
        "cleared": cleared,
        "skipped": skipped,
        "ansible_facts": {"mip6": facts},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": DEFAULT_SOCKET},
            "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
            "gather": {"type": "list", "elements": "str", "choices": list(GATHER)},
            "clear": {
                "type": "list",
                "elements": "str",
                "choices": list(LIST_COMMANDS),
                "default": [],
            },
        },
        supports_check_mode=True,
    )
    client = Mip6Control(module.params["socket"], module.params["timeout"])
    try:
        result = run(module, client)
    except Mip6ControlError as exc:
        module.fail_json(msg=str(exc), agent_refused=exc.refused)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
