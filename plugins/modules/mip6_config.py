#!/usr/bin/python
# Copyright: (c) 2025, Mobile IPv6 fleet suite maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mip6_config
short_description: Configure a running Mobile IPv6 agent (mip6config as an idempotent module)
version_added: 0.1.0
description:
  - Brings the configuration of a running C(mip6agent) to the state the task describes,
    through the agent's control socket, as the KAME C(mip6config) tool did with flags.
  - Reads the agent's C(status) and C(show-config), applies only the options the task sets
    to that configuration, and sends one C(set-config) request (a partial document,
    C(merge=true)) when the result differs. The agent validates every change against its
    configuration schema; when it refuses, its message is returned verbatim in C(msg).
  - Options left out are left as they are. Running the same task twice changes nothing the
    second time.
  - The role of a host (home agent, mobile node, correspondent node) is fixed when the agent
    starts (the V(role) key of C(/etc/mip6/agent.yml)); O(role) only checks it.
  - The module speaks the control protocol itself; it needs neither the C(mip6agent) Python
    package nor its command line tools on the host, only the socket.
author:
  - Mobile IPv6 fleet suite maintainers (@mobileip)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the agent's state and reports what would change, with a diff; it sends no
        request that changes anything.
      - A change the agent would refuse (for instance a value outside the schema's range) is
        only detected when it is applied, since the agent validates on C(set-config).
  diff_mode:
    support: full
    details:
      - The diff is the agent's configuration (C(show-config)) before and after, as YAML
        text; a change of the home agent's on/off state is shown as a comment line.
  platform:
    platforms: linux
options:
  socket:
    description:
      - Path of the agent's control socket (C(control_socket) in the agent configuration).
      - Same as C(mip6config -S).
    type: path
    default: /run/mip6/agent.sock
  timeout:
    description:
      - Seconds to wait for each answer of the agent.
    type: float
    default: 10
  role:
    description:
      - The role the agent must be running. C(ha) home agent, C(mn) mobile node, C(cn)
        correspondent node.
      - When the agent runs another role the task fails and changes nothing; the role is
        changed by restarting the agent with a new configuration file.
      - Home agent options (O(preference)) with O(role=mn) or O(role=cn), and mobile node
        options with O(role=ha) or O(role=cn), fail before the agent is asked.
    type: str
    required: true
    choices: [ha, mn, cn]
  enabled:
    description:
      - With O(role=ha), whether the home agent function runs. V(true) is C(mip6config -g),
        V(false) is C(mip6config -x) (every binding is dropped; new Binding Updates get
        status 131).
      - With O(role=mn), V(false) is C(mip6config -x) on the mobile node (tunnels removed,
        registrations forgotten, no new ones); V(true) starts a stopped mobile node again,
        and it registers from wherever it is.
      - With O(role=cn), only V(true) is accepted.
    type: bool
    default: true
  preference:
    description:
      - Home Agent Preference advertised in the Home Agent Information option (0..65535,
        higher is preferred in DHAAD). Key C(home_agent.preference).
      - Same as C(mip6config -g -y PREF). Only with O(role=ha).
    type: int
  home_addresses:
    description:
      - The mobile node's static home addresses, declaratively (the list replaces the
        configured one). Key C(mobile_node.home_addresses).
      - Same as C(mip6config -H addr/plen@if%ha), once per entry.
      - Setting it clears C(home_prefix) and C(autoconfigure). Only with O(role=mn).
    type: list
    elements: dict
    suboptions:
      address:
        description: Home address with its prefix length, for example C(2001:db8:1::100/64).
        type: str
        required: true
      interface:
        description: The interface that holds the home address at home.
        type: str
        required: true
      home_agent:
        description:
          - Address of the home agent. Left out, the mobile node finds it with DHAAD.
        type: str
  home_prefix:
    description:
      - Home prefix (length at most 64); DHAAD finds the home agent and the interface
        identifier completes the home address. Key C(mobile_node.home_prefix).
      - Same as C(mip6config -P prefix/plen). Clears C(home_addresses) and
        C(autoconfigure). Only with O(role=mn).
    type: str
  autoconfigure:
    description:
      - V(true) learns the home prefix and home agent automatically. Key
        C(mobile_node.autoconfigure). Same as C(mip6config -a). Clears C(home_addresses)
        and C(home_prefix).
      - V(false) turns autoconfiguration off; another way to get a home address must then be
        configured, or the agent refuses the change. Only with O(role=mn).
    type: bool
  home_registration_lifetime:
    description:
      - Lifetime in seconds requested in home registrations (4..262140, rounded down to
        4 s units). Key C(mobile_node.home_registration_lifetime).
      - Same as C(mip6config -l). Only with O(role=mn).
    type: float
  bu_lifetime:
    description:
      - Lifetime in seconds requested in correspondent registrations (4..420). Key
        C(mobile_node.bu_lifetime).
      - Same as C(mip6config -b). Only with O(role=mn).
    type: float
  eager_movement_detection:
    description:
      - Eager movement detection level. Key C(mobile_node.eager_movement_detection).
      - Same as C(mip6config -e). Only with O(role=mn).
    type: int
    choices: [0, 1, 2]
  foreign_addresses:
    description:
      - Pre-assigned care-of addresses, declaratively, in order. Entries not listed are
        removed; V([]) removes them all. Key C(mobile_node.foreign_addresses).
      - Same as C(mip6config -F addr/plen@if) for each new entry and C(mip6config -E addr)
        for each entry that goes. Only with O(role=mn).
    type: list
    elements: dict
    suboptions:
      address:
        description: The care-of address with its prefix length.
        type: str
        required: true
      interface:
        description: The interface on which to use it.
        type: str
        required: true
  debug:
    description:
      - Protocol trace in the agent's log. Key C(debug). Same as C(mip6config -d 1|0).
    type: bool
  settings:
    description:
      - "Advanced. Any other keys of the agent configuration schema
        (docs/agent-config.md), as a partial document merged into the running configuration
        (mappings merge, lists and values replace), for example
        V({home_agent: {max_binding_lifetime: 120}})."
      - The dedicated options above are applied after it; setting the same key both ways
        with different values is an error. C(role) cannot be set here.
      - Write values as the agent shows them (C(show-config)), or a second run reports a
        change again; the module warns when the agent's form differs.
    type: dict
notes:
  - The control socket is root only (mode 0600); run the task with C(become=true).
  - Every change reaches the agent through C(set-config), so the module cannot set what the
    configuration file could not. Bindings are kept across configuration changes; only
    O(enabled=false) drops them.
  - The running configuration is changed, not C(/etc/mip6/agent.yml); the roles of this
    collection render that file from the same variables.
seealso:
  - module: mobileip.mipv6.mip6_stat
  - module: mobileip.mipv6.mip6_capabilities
"""

EXAMPLES = r"""
- name: Home agent with preference 20 (mip6config -g -y 20)
  mobileip.mipv6.mip6_config:
    role: ha
    preference: 20
  become: true

- name: Stop the home agent function (mip6config -x)
  mobileip.mipv6.mip6_config:
    role: ha
    enabled: false
  become: true

- name: Mobile node with one static home address and shorter lifetimes (-H, -l, -b)
  mobileip.mipv6.mip6_config:
    role: mn
    home_addresses:
      - address: 2001:db8:1::100/64
        interface: eth0
        home_agent: 2001:db8:1::1
    home_registration_lifetime: 600
    bu_lifetime: 200
  become: true

- name: Mobile node that finds its home by itself, one pre-assigned care-of address
  mobileip.mipv6.mip6_config:
    role: mn
    autoconfigure: true
    eager_movement_detection: 1
    foreign_addresses:
      - address: 2001:db8:ff::7/64
        interface: wlan0
  become: true

- name: Any other schema key, here the longest lifetime a home agent grants
  mobileip.mipv6.mip6_config:
    role: ha
    settings:
      home_agent:
        max_binding_lifetime: 120
  become: true

- name: Preview a change without applying it
  mobileip.mipv6.mip6_config:
    role: ha
    preference: 30
  check_mode: true
  diff: true
  register: preview
"""

RETURN = r"""
config:
  description:
    - The agent's effective configuration after the task (C(show-config), keys redacted).
      In check mode, the configuration that would result.
  returned: success
  type: dict
  sample:
    role: ha
    debug: false
    home_agent:
      interfaces: [eth0]
      home_prefixes: ["2001:db8:1::/64"]
      preference: 20
status:
  description:
    - The agent's C(status) after the task.
  returned: success
  type: dict
  contains:
    role:
      description: The agent's role.
      type: str
      sample: ha
    version:
      description: The agent's version.
      type: str
      sample: 0.1.0
    pid:
      description: The agent's process id.
      type: int
      sample: 4242
    uptime:
      description: Seconds since the agent started.
      type: float
      sample: 73.2
    dataplane:
      description: The data plane backend in use (C(seg6), C(ip6tnl)), null for C(cn).
      type: str
      sample: seg6
    enabled:
      description: Whether the home agent function runs (always true for other roles).
      type: bool
      sample: true
    debug:
      description: Whether the protocol trace is on.
      type: bool
      sample: false
    lists:
      description: The lists this role has, as C(mip6_stat) names them.
      type: list
      elements: str
      sample: [bindings, home_agents, counters]
commands:
  description:
    - The control requests sent to the agent, in order (in check mode, the ones that would
      be sent). Empty when nothing changed.
  returned: success
  type: list
  elements: dict
  sample:
    - command: set-config
      args:
        config: {home_agent: {preference: 20}}
        merge: true
diff:
  description: Before and after, as YAML text, in diff mode (C(--diff)).
  returned: changed and diff mode
  type: dict
  sample:
    before_header: /run/mip6/agent.sock
    after_header: /run/mip6/agent.sock
    before: "home_agent:\n  preference: 10\n"
    after: "home_agent:\n  preference: 20\n"
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mobileip.mipv6.plugins.module_utils.mip6_control import (  # noqa: E402
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    ROLE_NAMES,
    Mip6Control,
    Mip6ControlError,
    deep_merge,
    differences,
    list_name,
    normal_address,
    normal_interface_address,
    normal_prefix,
    number,
    prune,
    same,
    to_yaml,
)

HA_OPTIONS = ("preference",)
MN_OPTIONS = (
    "home_addresses",
    "home_prefix",
    "autoconfigure",
    "home_registration_lifetime",
    "bu_lifetime",
    "eager_movement_detection",
    "foreign_addresses",
)
SECTIONS = {"ha": "home_agent", "mn": "mobile_node"}
ONE_ROLE = "the home agent and mobile node functions cannot be active on one host"
# The configuration key each dedicated option sets.
OPTION_KEYS = {
    "preference": ("home_agent", "preference"),
    "home_addresses": ("mobile_node", "home_addresses"),
    "home_prefix": ("mobile_node", "home_prefix"),
    "autoconfigure": ("mobile_node", "autoconfigure"),
    "home_registration_lifetime": ("mobile_node", "home_registration_lifetime"),
    "bu_lifetime": ("mobile_node", "bu_lifetime"),
    "eager_movement_detection": ("mobile_node", "eager_movement_detection"),
    "foreign_addresses": ("mobile_node", "foreign_addresses"),
    "debug": ("debug",),
}


class TaskError(Exception):
    """A problem with the task's options, found before the agent is asked."""


def check_options(params: dict) -> None:
    """Fail early on options that do not belong to the task's role."""
    role = params["role"]
    for name in HA_OPTIONS:
        if params.get(name) is not None and role != "ha":
            raise TaskError(
                f"{name} is a home agent option (role ha); this task has role {role} "
                f"({ROLE_NAMES[role]})"
            )
    for name in MN_OPTIONS:
        if params.get(name) is not None and role != "mn":
            raise TaskError(
                f"{name} is a mobile node option (role mn); this task has role {role} "
                f"({ROLE_NAMES[role]})"
            )
    if role == "cn" and not params["enabled"]:
        raise TaskError(
            "enabled=false needs role ha or mn: a correspondent node has no function to stop"
        )
    settings = params.get("settings") or {}
    if "role" in settings:
        raise TaskError(
            "settings.role: the role is not changed through settings (use the role option "
            "to check it; changing it needs the agent restarted with a new configuration)"
        )
    for other, section in SECTIONS.items():
        if other != role and settings.get(section) is not None:
            why = ONE_ROLE if role in SECTIONS else "a correspondent node has neither section"
            raise TaskError(
                f"settings.{section} belongs to role {other} ({ROLE_NAMES[other]}); "
                f"this task has role {role}: {why}"
            )


def build_patch(params: dict, current: dict) -> dict:
    """The partial configuration document for the options the task sets.

    ``current`` is the running configuration: switching between the three ways of
    getting a home address clears the other two only where they are set.
    """
    patch = deep_merge({}, params.get("settings") or {})
    options: dict = {}
    if params.get("debug") is not None:
        options["debug"] = params["debug"]
    if params.get("preference") is not None:
        options.setdefault("home_agent", {})["preference"] = params["preference"]
    mn = _mobile_node_options(params, (current.get("mobile_node") or {}))
    if mn:
        options["mobile_node"] = mn
    _check_conflicts(patch, options)
    return deep_merge(patch, options)


def _mobile_node_options(params: dict, current_mn: dict) -> dict:
    mn: dict = {}
    if params.get("home_addresses") is not None:
        mn["home_addresses"] = [
            {
                "address": normal_interface_address(entry["address"]),
                "interface": entry["interface"],
                "home_agent": normal_address(entry.get("home_agent")),
            }
            for entry in params["home_addresses"]
        ]
        _clear_others(mn, current_mn, "home_addresses")
    if params.get("home_prefix") is not None:
        mn["home_prefix"] = normal_prefix(params["home_prefix"])
        _clear_others(mn, current_mn, "home_prefix")
    if params.get("autoconfigure"):
        mn["autoconfigure"] = True
        _clear_others(mn, current_mn, "autoconfigure")
    elif params.get("autoconfigure") is False and current_mn.get("autoconfigure"):
        mn["autoconfigure"] = False
    for name in ("home_registration_lifetime", "bu_lifetime"):
        if params.get(name) is not None:
            mn[name] = number(params[name])
    if params.get("eager_movement_detection") is not None:
        mn["eager_movement_detection"] = params["eager_movement_detection"]
    if params.get("foreign_addresses") is not None:
        mn["foreign_addresses"] = [
            {"address": normal_interface_address(e["address"]), "interface": e["interface"]}
            for e in params["foreign_addresses"]
        ]
    return mn


def _clear_others(mn: dict, current_mn: dict, chosen: str) -> None:
    """A mobile node gets its home addresses one way: null the other two where set."""
    for other in ("home_addresses", "home_prefix"):
        if other != chosen and current_mn.get(other):
            mn[other] = None
    if chosen != "autoconfigure" and current_mn.get("autoconfigure"):
        mn["autoconfigure"] = False


def _check_conflicts(settings: dict, options: dict, path: tuple = ()) -> None:
    for key, value in options.items():
        if key not in settings:
            continue
        if isinstance(value, dict) and isinstance(settings[key], dict):
            _check_conflicts(settings[key], value, (*path, key))
        elif not same(prune(settings[key]), prune(value)):
            dotted = ".".join((*path, key))
            option = next(
                (n for n, keys in OPTION_KEYS.items() if ".".join(keys) == dotted), dotted
            )
            raise TaskError(
                f"settings.{dotted} conflicts with the {option} option: set it one way only"
            )


def wanted_state_command(role: str, enabled: bool, status: dict) -> str | None:
    """The enable/disable request needed, if any."""
    if role == "ha":
        running = bool(status.get("enabled", True))
        if enabled and not running:
            return "enable-ha"
        if not enabled and running:
            return "disable"
    elif role == "mn":
        running = bool(status.get("enabled", True))
        if enabled and not running:
            return "enable"
        if not enabled and running:
            return "disable"
    return None


def _status_out(status: dict) -> dict:
    out = dict(status)
    if isinstance(out.get("lists"), list):
        out["lists"] = [list_name(name) for name in out["lists"]]
    return out


def _diff_text(config: dict, role: str, enabled_line: str | None) -> str:
    text = to_yaml(prune(config))
    if enabled_line is not None:
        text = f"# {ROLE_NAMES[role]} function: {enabled_line}\n" + text
    return text


def run(module: AnsibleModule, client: Mip6Control) -> dict:
    params = module.params
    role = params["role"]
    check_options(params)
    status = client.call("status")
    if not isinstance(status, dict):
        raise Mip6ControlError("the agent's status reply is not a mapping")
    running = status.get("role")
    if running != role:
        raise TaskError(
            f"the agent on {client.path} runs as {running} "
            f"({ROLE_NAMES.get(str(running), 'unknown role')}), not {role} "
            f"({ROLE_NAMES[role]}): the role is set when the agent starts; restart it with "
            "a configuration for the wanted role"
        )
    current = client.call("show-config")
    if not isinstance(current, dict):
        raise Mip6ControlError("the agent's show-config reply is not a mapping")
    patch = build_patch(params, current)
    desired = deep_merge(current, patch)
    config_changed = not same(prune(current), prune(desired))
    state_command = wanted_state_command(role, params["enabled"], status)

    commands = []
    if config_changed:
        commands.append({"command": "set-config", "args": {"config": patch, "merge": True}})
    if state_command is not None:
        commands.append({"command": state_command, "args": {}})

    after_config, after_status = desired, status
    if commands and not module.check_mode:
        for request in commands:
            client.call(request["command"], request["args"])
        after_config = client.call("show-config")
        after_status = client.call("status")
        if config_changed:
            drift = differences(prune(desired), prune(after_config))
            if drift:
                module.warn(
                    "the agent stores these keys in another form than the task gave them, so "
                    "the next run will report a change again unless the task uses the "
                    "agent's form (see show-config): " + ", ".join(drift)
                )

    result = {
        "changed": bool(commands),
        "config": after_config,
        "status": _status_out(after_status),
        "commands": commands,
    }
    if module._diff and commands:
        before_line = after_line = None
        if state_command is not None:
            before_line = "enabled" if state_command == "disable" else "disabled"
            after_line = "disabled (mip6config -x)" if state_command == "disable" else "enabled"
        result["diff"] = {
            "before_header": client.path,
            "after_header": client.path,
            "before": _diff_text(current, role, before_line),
            "after": _diff_text(after_config, role, after_line),
        }
    return result


def argument_spec() -> dict:
    address_spec = {
        "address": {"type": "str", "required": True},
        "interface": {"type": "str", "required": True},
    }
    return {
        "socket": {"type": "path", "default": DEFAULT_SOCKET},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
        "role": {"type": "str", "required": True, "choices": ["ha", "mn", "cn"]},
        "enabled": {"type": "bool", "default": True},
        "preference": {"type": "int"},
        "home_addresses": {
            "type": "list",
            "elements": "dict",
            "options": {**address_spec, "home_agent": {"type": "str"}},
        },
        "home_prefix": {"type": "str"},
        "autoconfigure": {"type": "bool"},
        "home_registration_lifetime": {"type": "float"},
        "bu_lifetime": {"type": "float"},
        "eager_movement_detection": {"type": "int", "choices": [0, 1, 2]},
        "foreign_addresses": {"type": "list", "elements": "dict", "options": address_spec},
        "debug": {"type": "bool"},
        "settings": {"type": "dict"},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("home_addresses", "home_prefix", "autoconfigure")],
        supports_check_mode=True,
    )
    client = Mip6Control(module.params["socket"], module.params["timeout"])
    try:
        result = run(module, client)
    except TaskError as exc:
        module.fail_json(msg=str(exc))
    except Mip6ControlError as exc:
        module.fail_json(msg=str(exc), agent_refused=exc.refused)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
