"""I/O adapters: signaling sockets, netlink, data-plane backends, nftables rules."""
