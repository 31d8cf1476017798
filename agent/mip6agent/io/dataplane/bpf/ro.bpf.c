// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Mobile IPv6 route optimization (RFC 6275) as TC (clsact) programs, for kernels built
 * without CONFIG_IPV6_MIP6. Four programs, one ELF section each:
 *
 *   tc/cn_egress   correspondent, to a home address with a binding: dst := care-of
 *                  address, insert a Type 2 Routing Header carrying the home address.
 *   tc/mn_egress   mobile node, from a home address to a correspondent with a binding:
 *                  src := care-of address, insert a Destination Options header whose
 *                  Home Address option carries the home address.
 *   tc/cn_ingress  correspondent, a Home Address option from the care-of address of a
 *                  binding: src := home address, the header goes.
 *   tc/mn_ingress  mobile node, a Type 2 Routing Header to the care-of address of a
 *                  binding, carrying our home address: dst := home address, it goes.
 *
 * Bindings live in two hash maps keyed by (correspondent address, home address), whose
 * value is the care-of address; the agent writes them. Upper-layer checksums are left as
 * they are: the sender computed them over the home address, which is what the receiving
 * stack sees once the addresses are swapped back (RFC 8200 section 8.1).
 *
 * Packets these programs do not rewrite get TC_ACT_UNSPEC (the next filter, or the
 * stack); rewritten ones TC_ACT_OK. Ingress rewrites only for a binding that exists:
 * anything else goes up unchanged, to the agent, which answers a Home Address option
 * without a binding with Binding Error status 1 (RFC 6275 section 9.3.1). Mobility Header
 * packets (next header 135) are never touched: the agent reads their options itself.
 *
 * Ethernet-framed devices only (the IPv6 header at offset 14).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef RO_CN_MAX_BINDINGS
#define RO_CN_MAX_BINDINGS 4096
#endif
#ifndef RO_MN_MAX_BINDINGS
#define RO_MN_MAX_BINDINGS 1024
#endif

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135

#define OPT_PAD1 0
#define OPT_PADN 1
#define OPT_HOME_ADDRESS 201
#define OPT_SKIPPED 0x1e      /* RFC 4727 experimental; action 00: skip if unknown */
#define RT_TYPE_2 2

#define L3 ETH_HLEN                       /* IPv6 header offset */
#define L3_END (ETH_HLEN + sizeof(struct ipv6hdr))
#define RO_HDR_LEN 24                     /* RH2, or Destination Options with PadN + HAO */
#define MAX_EXT_HEADERS 8                 /* extension headers walked on ingress */
#define MAX_OPTIONS 16                    /* options scanned in one Destination Options */
#define MAX_MOVE_WORDS 8                  /* 8-byte words moved to strip a later header */

/* Counter indices: keep in step with COUNTERS in ro_bpf.py. */
enum {
	C_CN_EGRESS,            /* RH2 inserted */
	C_CN_INGRESS,           /* HAO removed, source put back */
	C_MN_EGRESS,            /* HAO inserted */
	C_MN_INGRESS,           /* RH2 removed, destination put back */
	C_CN_INGRESS_UNKNOWN,   /* HAO without a matching binding: passed up unchanged */
	C_MN_INGRESS_UNKNOWN,   /* RH2 without a matching binding: passed up unchanged */
	C_CN_EGRESS_TOO_BIG,    /* no room: sent unchanged (towards the home agent) */
	C_MN_EGRESS_TOO_BIG,    /* no room: dropped (a home address must not leave bare) */
	C_DROPPED,              /* every drop, too big or a helper failing mid-rewrite */
	C_COUNT,
};

struct ro_key {
	struct in6_addr cn;     /* the correspondent's address */
	struct in6_addr home;   /* the mobile node's home address */
};

struct ro_value {
	struct in6_addr coa;    /* the mobile node's care-of address; the agent writes it */
	__u64 packets;          /* packets rewritten for this binding, both directions */
	__u64 last_used_ns;     /* CLOCK_MONOTONIC of the last one (bpf_ktime_get_ns) */
};

/* A binding carried a packet: what tells the agent it is still in use (BRR, refresh). */
static __always_inline void used(struct ro_value *binding)
{
	__sync_fetch_and_add(&binding->packets, 1);
	binding->last_used_ns = bpf_ktime_get_ns();
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RO_CN_MAX_BINDINGS);
	__type(key, struct ro_key);
	__type(value, struct ro_value);
} cn_bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RO_MN_MAX_BINDINGS);
	__type(key, struct ro_key);
	__type(value, struct ro_value);
} mn_bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} ro_counters SEC(".maps");

struct ro_rh2 {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 type;
	__u8 segments_left;
	__u32 reserved;
	struct in6_addr home;
};

struct ro_hao {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 padn_type;
	__u8 padn_len;
	__u8 padn[2];
	__u8 hao_type;          /* at offset 6: 8n+6 alignment */
	__u8 hao_len;
	struct in6_addr home;
};

_Static_assert(sizeof(struct ro_rh2) == RO_HDR_LEN, "RH2 is 24 bytes");
_Static_assert(sizeof(struct ro_hao) == RO_HDR_LEN, "HAO header is 24 bytes");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&ro_counters, &index);

	if (value)
		*value += 1;
}

static __always_inline int same_addr(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->s6_addr32[0] == b->s6_addr32[0] && a->s6_addr32[1] == b->s6_addr32[1] &&
	       a->s6_addr32[2] == b->s6_addr32[2] && a->s6_addr32[3] == b->s6_addr32[3];
}

static __always_inline int load_ipv6(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return -1;
	if (bpf_skb_load_bytes(skb, L3, ip6, sizeof(*ip6)) < 0)
		return -1;
	if ((ip6->version) != 6 || ip6->payload_len == 0)   /* 0: jumbogram or BIG TCP */
		return -1;
	return 0;
}

/*
 * Egress inserts right after the fixed header. That is the place RFC 8200 section 4.1
 * gives a Routing header, and RFC 6275 section 6.3 the Home Address option, unless a
 * Hop-by-Hop, Destination Options or Routing header is already there: such packets (and
 * Mobility Header ones, the agent's) are left alone.
 */
static __always_inline int insertable(__u8 nexthdr)
{
	return nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING && nexthdr != NEXTHDR_DEST &&
	       nexthdr != NEXTHDR_MOBILITY;
}

/*
 * Grow by RO_HDR_LEN after the fixed header, then write the header and the extension.
 * bpf_skb_adjust_room does not check the MTU (not since Linux 5.12): bpf_check_mtu does,
 * for the packet as it is; a GSO packet passes, since growing lowers its segment size.
 */
static __always_inline int insert(struct __sk_buff *skb, struct ipv6hdr *ip6, void *ext)
{
	__u32 mtu = 0;

	if (bpf_check_mtu(skb, 0, &mtu, RO_HDR_LEN, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return -1;   /* nothing changed: no room below the device MTU */
	if (bpf_skb_adjust_room(skb, RO_HDR_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;   /* nothing changed: a UDP GSO packet, or no memory */
	ip6->payload_len = bpf_htons(bpf_ntohs(ip6->payload_len) + RO_HDR_LEN);
	if (bpf_skb_store_bytes(skb, L3, ip6, sizeof(*ip6), BPF_F_RECOMPUTE_CSUM) < 0 ||
	    bpf_skb_store_bytes(skb, L3_END, ext, RO_HDR_LEN, BPF_F_RECOMPUTE_CSUM) < 0)
		return -2;   /* half written */
	return 0;
}

SEC("tc/cn_egress")
int cn_egress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct ro_key key;
	struct ro_value *binding;
	struct ro_rh2 rh = {};
	int err;

	if (load_ipv6(skb, &ip6) < 0 || !insertable(ip6.nexthdr))
		return TC_ACT_UNSPEC;
	key.cn = ip6.saddr;
	key.home = ip6.daddr;
	binding = bpf_map_lookup_elem(&cn_bindings, &key);
	if (!binding)
		return TC_ACT_UNSPEC;
	rh.nexthdr = ip6.nexthdr;
	rh.hdrlen = 2;
	rh.type = RT_TYPE_2;
	rh.segments_left = 1;
	rh.home = ip6.daddr;
	ip6.nexthdr = NEXTHDR_ROUTING;
	ip6.daddr = binding->coa;
	err = insert(skb, &ip6, &rh);
	if (err == -1) {
		count(C_CN_EGRESS_TOO_BIG);
		return TC_ACT_UNSPEC;
	}
	if (err < 0) {
		count(C_DROPPED);
		return TC_ACT_SHOT;
	}
	used(binding);
	count(C_CN_EGRESS);
	return TC_ACT_OK;
}

SEC("tc/mn_egress")
int mn_egress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct ro_key key;
	struct ro_value *binding;
	struct ro_hao dst = {};
	int err;

	if (load_ipv6(skb, &ip6) < 0 || !insertable(ip6.nexthdr))
		return TC_ACT_UNSPEC;
	key.cn = ip6.daddr;
	key.home = ip6.saddr;
	binding = bpf_map_lookup_elem(&mn_bindings, &key);
	if (!binding)
		return TC_ACT_UNSPEC;
	dst.nexthdr = ip6.nexthdr;
	dst.hdrlen = 2;
	dst.padn_type = OPT_PADN;
	dst.padn_len = 2;
	dst.hao_type = OPT_HOME_ADDRESS;
	dst.hao_len = sizeof(struct in6_addr);
	dst.home = ip6.saddr;
	ip6.nexthdr = NEXTHDR_DEST;
	ip6.saddr = binding->coa;
	err = insert(skb, &ip6, &dst);
	if (err == -1) {
		count(C_MN_EGRESS_TOO_BIG);
		count(C_DROPPED);
		return TC_ACT_SHOT;
	}
	if (err < 0) {
		count(C_DROPPED);
		return TC_ACT_SHOT;
	}
	used(binding);
	count(C_MN_EGRESS);
	return TC_ACT_OK;
}

/* What the ingress walk found: one extension header of interest, and the upper layer. */
struct found {
	__u32 off;              /* the header's offset in the packet */
	__u32 len;              /* its length */
	__u32 prev_nh;          /* offset of the next-header byte that names it */
	__u32 opt;              /* HAO: the option's offset */
	__u8 nexthdr;           /* its own next-header field */
	__u8 upper;             /* the upper-layer protocol (a Fragment header's next header) */
	__u8 only_padding;      /* HAO: every other option is Pad1 or PadN */
	__u8 present;
	struct in6_addr home;   /* the HAO's, or RH2's, address */
};

/* The options of the Destination Options header walk() found: is there a HAO? */
static __always_inline int scan_hao(struct __sk_buff *skb, struct found *f)
{
	__u32 off = f->off, len = f->len, pos = 2;
	__u8 opt[2];
	int i, seen = 0;

	f->only_padding = 1;
	for (i = 0; i < MAX_OPTIONS; i++) {
		if (pos >= len)
			break;
		if (bpf_skb_load_bytes(skb, off + pos, opt, 1) < 0)
			return -1;
		if (opt[0] == OPT_PAD1) {
			pos += 1;
			continue;
		}
		if (bpf_skb_load_bytes(skb, off + pos, opt, 2) < 0)
			return -1;
		if (opt[0] == OPT_HOME_ADDRESS && opt[1] == sizeof(struct in6_addr) && !seen) {
			if (bpf_skb_load_bytes(skb, off + pos + 2, &f->home, sizeof(f->home)) < 0)
				return -1;
			f->opt = off + pos;
			seen = 1;
		} else if (opt[0] != OPT_PADN) {
			f->only_padding = 0;
		}
		pos += 2 + opt[1];
	}
	if (pos < len)
		f->only_padding = 0;   /* more options than we scanned */
	return seen;
}

/*
 * Walk Hop-by-Hop, Destination Options and Routing headers (at most MAX_EXT_HEADERS) up
 * to the upper layer, keeping the last header of type want: a Destination Options header
 * (the one after any Routing header, where the HAO goes) or a Routing header of type 2
 * with one segment left. A Fragment header ends the walk: what follows it is
 * fragmentable, where neither RH2 nor the HAO may be (RFC 6275 sections 6.3, 6.4); its
 * next header is taken as the upper layer. The HAO itself is looked for afterwards.
 */
static __always_inline int walk(struct __sk_buff *skb, __u8 nexthdr, __u8 want, struct found *f)
{
	__u32 off = L3_END, prev_nh = L3 + 6, len;
	__u8 hdr[4];
	int i;

	f->present = 0;
	for (i = 0; i < MAX_EXT_HEADERS; i++) {
		if (nexthdr == NEXTHDR_FRAGMENT) {
			if (bpf_skb_load_bytes(skb, off, hdr, 1) < 0)
				return -1;
			f->upper = hdr[0];
			return 0;
		}
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_ROUTING) {
			f->upper = nexthdr;
			return 0;
		}
		if (bpf_skb_load_bytes(skb, off, hdr, 4) < 0)
			return -1;
		len = ((__u32)hdr[1] + 1) * 8;
		if (nexthdr == want &&
		    (want == NEXTHDR_DEST || (hdr[2] == RT_TYPE_2 && hdr[1] == 2 && hdr[3] == 1))) {
			f->present = 1;
			f->off = off;
			f->len = len;
			f->prev_nh = prev_nh;
			f->nexthdr = hdr[0];
		}
		prev_nh = off;
		nexthdr = hdr[0];
		off += len;
	}
	return -1;   /* too many extension headers: leave the packet alone */
}

/*
 * Remove the header f found and write the new fixed header. Headers before it (at most
 * MAX_MOVE_WORDS * 8 bytes) move forward over it first, with the next-header byte that
 * named it now naming what followed it; then the room right after the fixed header goes.
 * Returns -1 if nothing was changed, -2 if the packet is half written.
 */
static __always_inline int strip(struct __sk_buff *skb, const struct ipv6hdr *ip6,
				 struct found *f)
{
	__u64 words[MAX_MOVE_WORDS] = {};
	struct ipv6hdr h = *ip6;
	__u32 before = f->off - L3_END;
	__u32 n = before / 8, i;

	if (before > sizeof(words) || before % 8)
		return -1;
	h.payload_len = bpf_htons(bpf_ntohs(h.payload_len) - f->len);
	if (before == 0) {
		h.nexthdr = f->nexthdr;
		if (bpf_skb_adjust_room(skb, -(__s32)f->len, BPF_ADJ_ROOM_NET,
					BPF_F_ADJ_ROOM_FIXED_GSO) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, L3, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM) < 0)
			return -2;
		return 0;
	}
	for (i = 0; i < MAX_MOVE_WORDS; i++) {
		if (i >= n)
			break;
		if (bpf_skb_load_bytes(skb, L3_END + i * 8, &words[i], 8) < 0)
			return -1;
	}
	/* the next-header byte naming the stripped header is inside the moved words */
	i = f->prev_nh - L3_END;
	if (i >= sizeof(words))
		return -1;
	((__u8 *)words)[i] = f->nexthdr;
	for (i = 0; i < MAX_MOVE_WORDS; i++) {
		if (i >= n)
			break;
		if (bpf_skb_store_bytes(skb, L3_END + f->len + i * 8, &words[i], 8,
					BPF_F_RECOMPUTE_CSUM) < 0)
			return -2;
	}
	if (bpf_skb_adjust_room(skb, -(__s32)f->len, BPF_ADJ_ROOM_NET, BPF_F_ADJ_ROOM_FIXED_GSO) < 0)
		return -2;
	if (bpf_skb_store_bytes(skb, L3, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM) < 0)
		return -2;
	return 0;
}

static __always_inline int finish(struct ro_value *binding, int err, __u32 counter)
{
	if (err == -1) {
		/* nothing changed: passed up unchanged, like a packet without a binding */
		return TC_ACT_UNSPEC;
	}
	if (err < 0) {
		count(C_DROPPED);
		return TC_ACT_SHOT;
	}
	used(binding);
	count(counter);
	return TC_ACT_OK;
}

SEC("tc/cn_ingress")
int cn_ingress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct found f = {};
	struct ro_key key;
	struct ro_value *binding;
	int err;

	if (load_ipv6(skb, &ip6) < 0 || walk(skb, ip6.nexthdr, NEXTHDR_DEST, &f) < 0 ||
	    !f.present || f.upper == NEXTHDR_MOBILITY || scan_hao(skb, &f) <= 0)
		return TC_ACT_UNSPEC;
	key.cn = ip6.daddr;
	key.home = f.home;
	binding = bpf_map_lookup_elem(&cn_bindings, &key);
	if (!binding || !same_addr(&binding->coa, &ip6.saddr)) {
		count(C_CN_INGRESS_UNKNOWN);
		return TC_ACT_UNSPEC;
	}
	ip6.saddr = f.home;
	if (f.only_padding) {
		err = strip(skb, &ip6, &f);
		if (err != -1)
			return finish(binding, err, C_CN_INGRESS);
	}
	/*
	 * Other options share the header, or it sits too deep: the HAO becomes an option
	 * every stack skips (only this host's stack sees it, it is never sent). Not a PadN:
	 * Linux drops more than 7 bytes of padding in a row
	 * (RFC 4942 section 2.1.9.5).
	 */
	{
		struct {
			__u8 type;
			__u8 len;
			__u8 zero[16];
		} skip = {.type = OPT_SKIPPED, .len = 16};

		err = bpf_skb_store_bytes(skb, f.opt, &skip, sizeof(skip), BPF_F_RECOMPUTE_CSUM);
		if (err == 0)
			err = bpf_skb_store_bytes(skb, L3, &ip6, sizeof(ip6), BPF_F_RECOMPUTE_CSUM);
		return finish(binding, err < 0 ? -2 : 0, C_CN_INGRESS);
	}
}

SEC("tc/mn_ingress")
int mn_ingress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct found f = {};
	struct ro_key key;
	struct ro_value *binding;
	int err;

	if (load_ipv6(skb, &ip6) < 0 || walk(skb, ip6.nexthdr, NEXTHDR_ROUTING, &f) < 0 ||
	    !f.present || f.upper == NEXTHDR_MOBILITY ||
	    bpf_skb_load_bytes(skb, f.off + 8, &f.home, sizeof(f.home)) < 0)
		return TC_ACT_UNSPEC;
	key.cn = ip6.saddr;
	key.home = f.home;
	binding = bpf_map_lookup_elem(&mn_bindings, &key);
	if (!binding || !same_addr(&binding->coa, &ip6.daddr)) {
		count(C_MN_INGRESS_UNKNOWN);
		return TC_ACT_UNSPEC;
	}
	ip6.daddr = f.home;
	err = strip(skb, &ip6, &f);
	if (err != -1)
		return finish(binding, err, C_MN_INGRESS);
	/* too deep to strip: segments left 0, which a stack without MIP6 skips over */
	{
		__u8 zero = 0;

		err = bpf_skb_store_bytes(skb, f.off + 3, &zero, 1, BPF_F_RECOMPUTE_CSUM);
		if (err == 0)
			err = bpf_skb_store_bytes(skb, L3, &ip6, sizeof(ip6), BPF_F_RECOMPUTE_CSUM);
		return finish(binding, err < 0 ? -2 : 0, C_MN_INGRESS);
	}
}

char LICENSE[] SEC("license") = "GPL";
