"""Loading the agent configuration file (default ``/etc/mip6/agent.yml``)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, Problem
from .model import AgentConfig
from .schema import DEFAULT_CONFIG_PATH, validate_mapping
from .yamlfile import parse_yaml

_MAX_FILE_BYTES = 1 << 20


def read_config_text(path: str | Path) -> str:
    """The file's text; :class:`ConfigError` naming the file if it cannot be read."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem("", "does not exist", None, source)]) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", "is a directory, not a file", None, source)]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot be read: {exc.strerror}", None, source)]) from None
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError([Problem("", "is larger than 1 MiB", None, source)])
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem("", f"is not UTF-8 text (byte {exc.start})", None, source)]
        ) from None


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> AgentConfig:
    """Read, parse and validate the agent configuration file, and its keys file if needed.

    Raises :class:`ConfigError` listing every problem, one line each, as
    ``file:line: dotted.key: message``. The result's ``warnings`` are for the daemon to log.
    """
    source = str(path)
    data, problems = parse_yaml(read_config_text(path), source)
    if problems:
        raise ConfigError(problems)
    return validate_mapping(data, source)
