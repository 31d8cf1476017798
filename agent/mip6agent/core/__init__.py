"""The sans-I/O Mobile IPv6 protocol core.

Objects here take ``(packet or event, now)`` and return :mod:`actions` for the I/O layer to
carry out. They never read a clock, open a socket or touch the kernel.
"""
