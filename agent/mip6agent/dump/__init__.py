"""Decoding and formatting for ``mip6dump``: packet sources, text lines, tshark-named fields."""
