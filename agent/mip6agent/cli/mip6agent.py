"""mip6agent: the Mobile IPv6 agent daemon (home agent, mobile node or correspondent node)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config
from ..daemon import journal, logthrottle
from ..daemon.agent import Agent, AgentError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mip6agent",
        description="Run the Mobile IPv6 agent for the role named in the configuration. "
        "SIGHUP reloads the configuration without dropping bindings; SIGTERM stops the "
        "agent and leaves kernel forwarding state in place for the next start.",
        epilog="Exit status: 0 stopped cleanly, 1 could not start on this host, "
        "2 invalid configuration (nothing was changed on the host).",
    )
    p.add_argument("--config", "-c", default=str(DEFAULT_CONFIG_PATH), help="configuration file")
    p.add_argument(
        "--check", action="store_true", help="validate the configuration and keys, then exit"
    )
    p.add_argument("--version", action="version", version=f"mip6agent {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mip6agent: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        for warning in config.warnings:
            print(f"mip6agent: warning: {warning}", file=sys.stderr)
        print(f"mip6agent: {args.config}: configuration is valid (role {config.role})")
        return EXIT_OK
    if journal.wanted():
        # Under systemd with stderr on the journal: entries with MIP6_* fields instead.
        handler: logging.Handler = journal.JournalHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.basicConfig(level=config.effective_log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(
            stream=sys.stderr,
            level=config.effective_log_level.upper(),
            format="%(levelname)s %(name)s: %(message)s",
        )
    # pyroute2 logs every netlink message at debug level, which slows handovers down.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    # A flood must not fill the journal: each kind of line gets a burst per 10 s, then one
    # summary line. A protocol trace (debug: true) is kept whole.
    throttle = None if config.debug else logthrottle.install(logging.getLogger())
    return asyncio.run(_serve(config, args.config, throttle))


async def _serve(
    config: AgentConfig, path: str, throttle: logthrottle.LogThrottle | None = None
) -> int:
    try:
        agent = Agent(config, path)
        agent.throttle = throttle
        await agent.start()
    except AgentError as exc:
        logging.getLogger("mip6agent").error("cannot start: %s", exc)
        return EXIT_RUNTIME
    try:
        await agent.run()
    finally:
        await agent.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
