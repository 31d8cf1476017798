"""mip6agent: a userspace Mobile IPv6 (RFC 6275) agent."""

__version__ = "0.1.0"
