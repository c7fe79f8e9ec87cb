/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * frag.h - IPv4 and IPv6 fragments: every fragment of a datagram goes to
 * the real its 5-tuple goes to, so that the real can reassemble it.
 *
 * Only the first fragment (offset 0) carries the TCP/UDP header. It is
 * balanced as any packet of its 5-tuple (connection table, ring), and its
 * ports are kept in `frags` (xlb_abi.h) under what every fragment of the
 * datagram carries: addresses, protocol and IP id (IPv4's 16 bits, the
 * IPv6 fragment header's 32). A later fragment looks them up and is then
 * balanced as the same 5-tuple: same VIP, same entry, same real, same
 * outer header. This is how Cilium tracks fragments; docs/config.md
 * ("Fragments") says why not Maglev's 3-tuple hash.
 *
 *   first fragment of a TCP/UDP datagram         as its 5-tuple (FRAG_FIRST)
 *   first fragment whose L4 header is cut        DROP  DROP_MALFORMED
 *   later fragment whose first was seen          as its 5-tuple (FRAG_LATER)
 *   later fragment whose first was not seen
 *     (lost, reordered, or aged out of `frags`):
 *       to a VIP address                         DROP  DROP_FRAG_NOT_FOUND
 *       to another address                       PASS  PASS_FRAGMENT
 *   fragment of another protocol                 PASS  PASS_FRAGMENT
 *   later IPv4 fragment too big for config.mtu
 *     once encapsulated, where a whole packet
 *     would get an ICMP error (the first
 *     fragment, the biggest, got it)             DROP  DROP_FRAG_TOO_BIG
 *   (IPv6: every fragment too big gets its "packet too big", as any packet:
 *   RFC 4443 allows it, and the client learns the path MTU from the first)
 * "As its 5-tuple" includes PASS_NOT_VIP for a datagram to no VIP: a first
 * fragment's ports are kept before the VIP lookup, whatever it finds.
 *
 * A first fragment's UDP length is the whole datagram's, so it is not
 * checked against the fragment; an IPv6 "atomic" fragment (offset 0, no
 * more fragments) is a first fragment. An extension header after the IPv6
 * fragment header makes it a fragment of another protocol.
 */
#ifndef XLB_FRAG_H
#define XLB_FRAG_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "parse.h"
#include "stats.h"
#include "vip.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_FRAG_TABLE_SIZE);
	__type(key, struct xlb_frag_key);
	__type(value, struct xlb_frag_ports);
} frags SEC(".maps");

static __always_inline void fill_frag_key(struct xlb_frag_key *key, const struct xlb_pkt *p,
					  __u32 id)
{
	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->saddr, p->flow.saddr, sizeof(key->saddr));
	__builtin_memcpy(key->daddr, p->flow.daddr, sizeof(key->daddr));
	key->id = id;
	key->proto = p->flow.proto;
	key->family = p->flow.family;
}

/* The first fragment's ports (and SYN): the header must be in the fragment. */
static __always_inline int read_first_ports(struct cursor *c, struct xlb_pkt *p)
{
	struct xlb_frag_ports *ports = c->pos;
	struct tcphdr *th;

	if (p->flow.proto == IPPROTO_TCP) {
		if (parse_tcp(c, &th))
			return PARSE_E_MALFORMED;
		p->tcp_syn = th->syn && !th->ack;
	} else if ((void *)ports + sizeof(struct udphdr) > c->end ||
		   (void *)ports + sizeof(struct udphdr) > c->limit) {
		return PARSE_E_MALFORMED;
	}
	p->flow.sport = ports->sport;
	p->flow.dport = ports->dport;
	return 0;
}

/* Keep the first fragment's ports for the later ones. */
static __always_inline void remember_first_ports(const struct xlb_pkt *p, __u32 id)
{
	struct xlb_frag_ports ports = { .sport = p->flow.sport, .dport = p->flow.dport };
	struct xlb_frag_key key;

	fill_frag_key(&key, p, id);
	bpf_map_update_elem(&frags, &key, &ports, BPF_ANY);
}

/* A later fragment without its first: dropped if it is to a VIP address. */
static __always_inline int first_not_found(struct xlb_pkt *p)
{
	struct xlb_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (cfg && is_vip_addr(p->flow.daddr, p->flow.family, cfg))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_FRAG_NOT_FOUND);
	return set_verdict(p, XDP_PASS, XLB_R_PASS_FRAGMENT);
}

/* A later fragment's ports, from its first fragment. */
static __always_inline int find_first_ports(struct xlb_pkt *p, __u32 id)
{
	struct xlb_frag_key key;
	struct xlb_frag_ports *ports;

	fill_frag_key(&key, p, id);
	ports = bpf_map_lookup_elem(&frags, &key);
	if (!ports)
		return first_not_found(p);
	p->flow.sport = ports->sport;
	p->flow.dport = ports->dport;
	count(XLB_CNT_FRAG_LATER);
	return XLB_CONTINUE;
}

/*
 * After parse.h said PARSE_E_FRAGMENT (cursor after the IPv4 header or at
 * the IPv6 fragment header): fill p as for a whole packet of the
 * datagram's 5-tuple, or decide. A first fragment's ports are kept before
 * it is balanced (one no VIP takes keeps an entry nobody asks for). The
 * fragment's kind stays in this function: a field of p telling fragments
 * apart, read later, would make the verifier walk the whole balancer for
 * fragments and other packets apart (+40% of its work).
 */
static __always_inline int parse_fragment(struct xdp_md *ctx, struct cursor *c, struct xlb_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	struct v6_frag_hdr *fh = c->pos;
	struct iphdr *iph = data + (p->l3_off & 0xff);
	__u16 offset_bits;
	__u32 id;
	int proto;

	if (p->flow.family == XLB_FAMILY_V4) {
		if ((void *)(iph + 1) > (void *)(long)ctx->data_end)
			return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
		offset_bits = bpf_ntohs(iph->frag_off) & XLB_IP_OFFSET;
		id = bpf_ntohs(iph->id);
		proto = iph->protocol;
	} else {
		if ((void *)(fh + 1) > c->end || (void *)(fh + 1) > c->limit)
			return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
		offset_bits = bpf_ntohs(fh->frag_off) & XLB_V6_FRAG_OFFSET;
		id = bpf_ntohl(fh->id);
		proto = fh->nexthdr;
		c->pos = fh + 1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return set_verdict(p, XDP_PASS, XLB_R_PASS_FRAGMENT);
	p->flow.proto = proto;
	p->l4_off = c->pos - data;
	if (offset_bits)
		return find_first_ports(p, id);
	if (read_first_ports(c, p))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
	remember_first_ports(p, id);
	count(XLB_CNT_FRAG_FIRST);
	return XLB_CONTINUE;
}

/*
 * Is this IPv4 packet a later fragment? Then it gets no ICMP error (RFC
 * 1122 3.2.2: none about a fragment other than the first, which is the
 * biggest and got one). Read from the packet, for the verifier's sake
 * (see parse_fragment).
 */
static __always_inline int v4_is_later_fragment(struct xdp_md *ctx, const struct xlb_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	struct iphdr *iph = data + (p->l3_off & 0xff);

	if ((void *)(iph + 1) > (void *)(long)ctx->data_end)
		return 0;
	return !!(iph->frag_off & bpf_htons(XLB_IP_OFFSET));
}

#endif /* XLB_FRAG_H */
