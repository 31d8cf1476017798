"""The agent's control API: JSON requests and replies over a root-only Unix socket."""
