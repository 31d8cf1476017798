// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * RFC 2473 IPv6-in-IPv6 between home agent and mobile node as eBPF, for kernels with
 * neither seg6 lightweight tunnels nor ip6tnl (CONFIG_LWTUNNEL_BPF and cls_bpf suffice).
 * Two programs:
 *
 *   lwt_xmit/encap  on the agent's tunnel routes (``encap bpf xmit``): push an outer
 *                   IPv6 header and let the kernel route the packet again by it. The
 *                   outer destination comes from ``by_dst`` (home agent: keyed by the
 *                   inner destination, a home address) or ``by_src`` (mobile node: keyed
 *                   by the inner source, a home address); the outer source is the one
 *                   entry of ``tunsrc`` (the home agent address, or the care-of address).
 *   tc/decap        clsact ingress: a packet with next header 41 whose (outer destination,
 *                   outer source) is in ``decap`` -- or (outer destination, ::) there when
 *                   any source is accepted -- loses its outer header and goes on as the
 *                   inner packet, received on the same interface.
 *
 * Packets without an entry: encap drops them (a tunnel route without a peer must not
 * leak the packet onto the home link); decap leaves them to the stack.
 * Ethernet-framed devices only (the IPv6 header at offset 14).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef TUNNEL_MAX
#define TUNNEL_MAX 131072
#endif

#define NEXTHDR_IPV6 41
#define TUNNEL_HOP_LIMIT 64 /* RFC 2473 section 6.3: the tunnel entry point's default */

struct decap_key {
	struct in6_addr own;
	struct in6_addr peer; /* :: = any source */
};

/* What the agent needs to read the entry back as the route it stands for. */
struct decap_value {
	__u64 packets;
	__u32 ifindex;
	__u32 action;
	__u32 metric;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TUNNEL_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* memory as bindings come, not up front */
	__type(key, struct in6_addr);
	__type(value, struct in6_addr);
} by_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_addr);
	__type(value, struct in6_addr);
} by_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct in6_addr);
} tunsrc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TUNNEL_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decap_key);
	__type(value, struct decap_value);
} decap SEC(".maps");

enum { ENCAPSULATED, NO_PEER, PUSH_FAILED, DECAPSULATED, DECAP_FAILED, N_COUNTERS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);

	if (value)
		*value += 1;
}

SEC("lwt_xmit")
int encap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *inner = data;
	struct in6_addr key, *peer, *source;
	struct ipv6hdr outer = {};
	__u32 zero = 0;

	if ((void *)(inner + 1) > end || inner->version != 6) {
		count(NO_PEER);
		return BPF_DROP;
	}
	key = inner->daddr;
	peer = bpf_map_lookup_elem(&by_dst, &key);
	if (!peer) {
		key = inner->saddr;
		peer = bpf_map_lookup_elem(&by_src, &key);
	}
	source = bpf_map_lookup_elem(&tunsrc, &zero);
	if (!peer || !source) {
		count(NO_PEER);
		return BPF_DROP;
	}
	outer.version = 6;
	outer.payload_len = bpf_htons(skb->len);
	outer.nexthdr = NEXTHDR_IPV6;
	outer.hop_limit = TUNNEL_HOP_LIMIT;
	outer.saddr = *source;
	outer.daddr = *peer;
	if (bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &outer, sizeof(outer))) {
		count(PUSH_FAILED);
		return BPF_DROP;
	}
	count(ENCAPSULATED);
	return BPF_LWT_REROUTE;
}

SEC("tc")
int decap_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct decap_key key;
	struct decap_value *entry;

	if ((void *)(ip6 + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return TC_ACT_UNSPEC;
	if (ip6->nexthdr != NEXTHDR_IPV6)
		return TC_ACT_UNSPEC;
	key.own = ip6->daddr;
	key.peer = ip6->saddr;
	entry = bpf_map_lookup_elem(&decap, &key);
	if (!entry) {
		__builtin_memset(&key.peer, 0, sizeof(key.peer));
		entry = bpf_map_lookup_elem(&decap, &key);
	}
	if (!entry)
		return TC_ACT_UNSPEC;
	__sync_fetch_and_add(&entry->packets, 1);
	if (bpf_skb_adjust_room(skb, -(int)sizeof(struct ipv6hdr), BPF_ADJ_ROOM_MAC, 0)) {
		count(DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	count(DECAPSULATED);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
