"""Check rendered agent configurations with the agent's own validator, naming role variables.

Run on the controller by the agent role's preflight, once for a batch of hosts:

    python mip6_preflight.py AGENT_SOURCE_DIR [OUTPUT_DIR] < batch.json

stdin is ``{HOST: {"agent_yml": TEXT, "keys_yml": TEXT or null}, ...}``, the files the role
renders for each host; ``@MIP6_PREFLIGHT_KEYS_FILE@`` in agent.yml stands for the keys file's
path. Each host's files are written to a private directory (the keys file with mode 0600),
or to OUTPUT_DIR/HOST to keep them, and checked with ``mip6agent.config.load_config``, the
function ``mip6agent --config FILE --check`` runs: the rules are the agent's own
(docs/agent-config.md). Only the Python standard library and PyYAML are needed.

stdout is ``{HOST: {"problems": [...], "warnings": [...]}}``; each problem is one line,
``host: variable (configuration key): message``. Exit status 0 unless the input is unusable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

# Configuration section -> prefix of the role variables that map onto its keys.
SECTION_VARIABLES = {
    "home_agent": "mip6_ha_",
    "mobile_node": "mip6_mn_",
    "correspondent_node": "mip6_cn_",
    "metrics": "mip6_agent_metrics_",
}
_HEAD = re.compile(r"^([A-Za-z_]+)(.*)$")


def variable_for(path: str) -> str:
    """The role variable behind a configuration key: ``home_agent.preference`` ->
    ``mip6_ha_preference``, ``mobile_node.home_addresses[0].address`` ->
    ``mip6_mn_home_addresses[0].address``, ``dataplane`` -> ``mip6_agent_dataplane``."""
    if not path:
        return "the agent configuration"
    section, _dot, rest = path.partition(".")
    head = _HEAD.match(section)
    if head and head.group(1) in SECTION_VARIABLES:
        prefix = SECTION_VARIABLES[head.group(1)]
        if rest:
            return prefix + rest
        return f"the {prefix}* variables (section {section})"
    return "mip6_agent_" + path


def describe(problem, config_path: str) -> str:
    if problem.source and problem.source != config_path:
        # The keys file: its paths start with mobile_nodes (the mip6_agent_keys mapping).
        inner = problem.path.removeprefix("mobile_nodes").lstrip(".")
        where = "mip6_agent_keys" + ("" if not inner or inner[0] == "[" else ".") + inner
        return f"{where} (keys file): {problem.message}"
    if problem.path == "keys_file":
        return f"mip6_agent_keys (keys_file): {problem.message}"
    return f"{variable_for(problem.path)} ({problem.path or 'agent.yml'}): {problem.message}"


KEYS_PLACEHOLDER = "@MIP6_PREFLIGHT_KEYS_FILE@"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def check(host: str, directory: Path, files: dict, validator) -> dict:
    config_path = directory / "agent.yml"
    keys_path = directory / "keys.yml"
    if files.get("keys_yml") is not None:
        write_private(keys_path, files["keys_yml"])
    write_private(config_path, files["agent_yml"].replace(KEYS_PLACEHOLDER, str(keys_path)))
    config_error, load_config = validator
    try:
        config = load_config(config_path)
    except config_error as exc:
        problems = [f"{host}: {describe(p, str(config_path))}" for p in exc.problems]
        return {"problems": problems, "warnings": []}
    return {"problems": [], "warnings": [f"{host}: {w}" for w in config.warnings]}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(
            "usage: mip6_preflight.py AGENT_SOURCE_DIR [OUTPUT_DIR] < batch.json", file=sys.stderr
        )
        return 2
    source_dir = argv[1]
    output_dir = argv[2] if len(argv) == 3 else ""
    batch = json.load(sys.stdin)
    sys.path.insert(0, source_dir)
    try:
        from mip6agent.config import ConfigError, load_config
    except Exception as exc:  # an old controller Python, no PyYAML, a wrong source dir
        message = (
            f"the preflight check cannot load the agent's validator from {source_dir} with "
            f"{sys.executable} ({type(exc).__name__}: {exc}); it needs Python 3.11 or newer "
            "with PyYAML. Set mip6_agent_controller_python, or mip6_agent_preflight: false to "
            "leave the check to the host."
        )
        json.dump({h: {"problems": [f"{h}: {message}"], "warnings": []} for h in batch}, sys.stdout)
        return 0
    validator = (ConfigError, load_config)
    results = {}
    for host, files in batch.items():
        if output_dir:
            directory = Path(output_dir) / host
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            results[host] = check(host, directory, files, validator)
            continue
        directory = Path(tempfile.mkdtemp(prefix="mip6-preflight."))
        try:
            results[host] = check(host, directory, files, validator)
        finally:
            shutil.rmtree(directory)
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
