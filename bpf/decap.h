/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * decap.h - maps and the family-independent half of the decap program:
 * classify_encap() looks at a frame (XDP or tc, same bytes) and says
 * whether and how much to strip. decap.bpf.c does the stripping.
 *
 * Decapsulated: IPv4 outer proto 4 (IPIP), IPv6 outer next header 41
 * (IP6IP6) or 4 (IPv4 in IPv6), and GUE variant 1 (UDP to
 * decap_config.gue_port whose payload starts with an IPv4 or IPv6
 * header) over either family, when the outer destination is in
 * decap_addrs. Anything else passes untouched:
 *   not encapsulated, or an outer header we cannot parse  PASS_NOT_ENCAP
 *   encapsulated, outer destination not local             PASS_FOREIGN
 *   outer fragment (or outer IPv4 with options) to a
 *     local decap address: the stack gets it              PASS_FRAGMENT
 *   encapsulated to us but the inner header is truncated
 *     or not the family announced                         DROP_MALFORMED
 * IPv6-in-IPv4 (proto 41) is not produced by the balancer and is not
 * decapsulated.
 *
 * Second chance's carrier (carrier.h) is recognised in its three places:
 * an outer IPv4 header whose only option is the carrier (ihl 7; other
 * options are PASS_FRAGMENT as above), an outer IPv6 header followed by
 * the carrier's destination-options header, and a GUE variant 0 header
 * (flags 0, proto 4 or 41; its optional fields are skipped, and are the
 * carrier when they hold it). decap_info.carrier_off then says where it
 * is; what the program does with it is in handoff.h.
 */
#ifndef XLB_DECAP_H
#define XLB_DECAP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "parse.h"
#include "carrier.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_DECAP_ADDRS);
	__type(key, struct xlb_decap_addr);
	__type(value, __u32);
} decap_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_decap_config);
} decap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_DCNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} decap_counters SEC(".maps");

enum decap_verdict {
	DECAP_PASS = 0,
	DECAP_STRIP,
	DECAP_DROP,
};

struct decap_info {
	__u32 counter;	   /* enum xlb_decap_counter_index to count */
	__u16 l2_len;	   /* Ethernet header incl. VLAN tag: 14 or 18 */
	__u16 strip_len;   /* outer IP (+ UDP) bytes to remove */
	__u16 outer_proto; /* ethertype of the outer header, host order */
	__u16 inner_proto; /* ethertype of the inner header, host order */
	__u16 carrier_off; /* offset of the carrier's word from data; 0: none */
};

static __always_inline void count_decap(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&decap_counters, &index);

	if (value)
		*value += 1;
}

static __always_inline int is_decap_addr(const __be32 *addr, __u8 family)
{
	struct xlb_decap_addr key;

	__builtin_memset(&key, 0, sizeof(key));
	key.addr[0] = addr[0];
	if (family == XLB_FAMILY_V6) {
		key.addr[1] = addr[1];
		key.addr[2] = addr[2];
		key.addr[3] = addr[3];
	}
	key.family = family;
	return bpf_map_lookup_elem(&decap_addrs, &key) != NULL;
}

static __always_inline __be16 decap_gue_port(void)
{
	struct xlb_decap_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&decap_config, &zero);
	return cfg ? cfg->gue_port : 0;
}

/*
 * The inner header at c->pos must be a whole IPv4 (inner_proto ETH_P_IP)
 * or IPv6 header; for GUE (inner_proto 0) the version nibble picks it.
 */
static __always_inline int check_inner(struct cursor *c, struct decap_info *di)
{
	__u8 *first = c->pos;
	__u32 need;
	__u8 version;

	if ((void *)(first + 1) > c->end)
		return DECAP_DROP;
	version = *first >> 4;
	if (!di->inner_proto)
		di->inner_proto = version == 4 ? ETH_P_IP : version == 6 ? ETH_P_IPV6 : 0;
	if (di->inner_proto == ETH_P_IP && version == 4)
		need = sizeof(struct iphdr);
	else if (di->inner_proto == ETH_P_IPV6 && version == 6)
		need = sizeof(struct ipv6hdr);
	else
		return DECAP_DROP;
	if (c->pos + need > c->end || c->pos + need > c->limit)
		return DECAP_DROP;
	return DECAP_STRIP;
}

/* What to do with this frame; fills *di. Counts nothing. */
static __always_inline int classify_encap(void *data, void *data_end, struct decap_info *di)
{
	struct carrier_word *word = NULL;
	struct ipv6hdr *ip6h = NULL;
	struct iphdr *iph = NULL;
	struct udphdr *uh;
	struct ethhdr *eth;
	struct cursor c;
	__be32 *daddr;
	int bad_gue = 0;
	__u8 family;
	void *l3;
	int proto;

	di->counter = XLB_DCNT_PASS_NOT_ENCAP;
	di->inner_proto = 0;
	di->carrier_off = 0;
	init_cursor(&c, data, data_end);
	proto = parse_eth(&c, &eth);
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return DECAP_PASS;
	di->outer_proto = proto;
	di->l2_len = c.pos - data;
	l3 = c.pos;
	if (proto == ETH_P_IP) {
		family = XLB_FAMILY_V4;
		proto = v4_parse_ip(&c, &iph);
		if (!iph)
			return DECAP_PASS;
		daddr = &iph->daddr;
		if (proto == PARSE_E_OPTIONS)
			proto = v4_parse_carrier(&c, iph, &word);
	} else {
		family = XLB_FAMILY_V6;
		proto = v6_parse_ip(&c, &ip6h);
		if (!ip6h)
			return DECAP_PASS;
		daddr = ip6h->daddr.in6_u.u6_addr32;
		if (proto >= 0)
			word = v6_find_carrier(ip6h, data_end);
	}
	if (proto == PARSE_E_FRAGMENT || proto == PARSE_E_OPTIONS) {
		if (is_decap_addr(daddr, family))
			di->counter = XLB_DCNT_PASS_FRAGMENT;
		return DECAP_PASS;
	}
	if (proto < 0)
		return DECAP_PASS;

	if (proto == IPPROTO_IPIP) {
		di->inner_proto = ETH_P_IP;
		di->counter = family == XLB_FAMILY_V4 ? XLB_DCNT_IPIP : XLB_DCNT_4IN6;
	} else if (proto == IPPROTO_IPV6 && family == XLB_FAMILY_V6) {
		di->inner_proto = ETH_P_IPV6;
		di->counter = XLB_DCNT_IP6IP6;
	} else if (proto == IPPROTO_UDP) {
		if (parse_udp(&c, &uh))
			return DECAP_PASS;
		if (!uh->dest || uh->dest != decap_gue_port())
			return DECAP_PASS;
		di->counter = XLB_DCNT_GUE;
		if (is_gue_v0(&c)) {
			word = NULL; /* only the GUE header's carrier counts */
			if (parse_gue(&c, family, &di->inner_proto, &word))
				bad_gue = 1;
		}
	} else {
		return DECAP_PASS;
	}
	if (!is_decap_addr(daddr, family)) {
		di->counter = XLB_DCNT_PASS_FOREIGN;
		return DECAP_PASS;
	}
	di->strip_len = c.pos - l3;
	if (word)
		di->carrier_off = (void *)word - data;
	if (bad_gue || check_inner(&c, di) != DECAP_STRIP) {
		di->counter = XLB_DCNT_DROP_MALFORMED;
		return DECAP_DROP;
	}
	return DECAP_STRIP;
}

#endif /* XLB_DECAP_H */
