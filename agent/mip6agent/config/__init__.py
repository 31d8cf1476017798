"""The agent configuration: one YAML file, one schema, every problem reported at once.

>>> cfg = load_config("/etc/mip6/agent.yml")      # doctest: +SKIP
>>> cfg.role, cfg.home_agent.home_prefixes        # doctest: +SKIP

See docs/agent-config.md for every key.
"""

from .errors import ConfigError, Problem
from .keys import load_keys
from .load import load_config
from .model import (
    AgentConfig,
    CorrespondentNodeConfig,
    ForeignAddressConfig,
    HomeAddressConfig,
    HomeAgentConfig,
    Keys,
    MNKey,
    MobileNodeConfig,
    Secret,
)
from .schema import (
    DEFAULT_CONFIG_PATH,
    MIP6CONFIG_FLAGS,
    check_mapping,
    markdown_table,
    to_dict,
    validate_mapping,
)
from .seedfile import parse_coaddr_spec, parse_homeaddr_spec, parse_seed_file

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MIP6CONFIG_FLAGS",
    "AgentConfig",
    "ConfigError",
    "CorrespondentNodeConfig",
    "ForeignAddressConfig",
    "HomeAddressConfig",
    "HomeAgentConfig",
    "Keys",
    "MNKey",
    "MobileNodeConfig",
    "Problem",
    "Secret",
    "check_mapping",
    "load_config",
    "load_keys",
    "markdown_table",
    "parse_coaddr_spec",
    "parse_homeaddr_spec",
    "parse_seed_file",
    "to_dict",
    "validate_mapping",
]
