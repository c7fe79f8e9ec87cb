/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * express.h - the express path: most packets a balancer sees belong to
 * established flows whose copy sits in the CPU's flow cache. For
 * those, the general path (xlb.bpf.c) costs more in its own bookkeeping
 * than in their work: it zeroes and fills the packet's state on the stack
 * for every stage that might need it, and each stage reads it back. Here
 * such a packet is parsed, looked up, encapsulated and counted with what
 * it needs alone, by the same parsers, flow cache, checks, header writers
 * and counters as the general path, and leaves exactly as it would have
 * left that way (tests/datapath/test_express.py compares the two).
 *
 * Taken when all of these hold, else the packet goes the general way:
 *   - an untagged IPv4 (no options) or IPv6 frame, not a fragment,
 *     carrying TCP (not a SYN without ACK) or UDP, whose headers parse as
 *     parse.h wants;
 *   - its destination is marked in `vip_filter`, and the CPU's flow cache
 *     holds a good copy of its entry (flow_cache.h), whose real passes
 *     check_real();
 *   - the real can carry it (IPv4 in IPv4 or IPv6, IPv6 in IPv6), its next
 *     hop is known (its MAC or gw_mac: no FIB lookup), and the
 *     encapsulated packet fits config.mtu.
 * A packet turned back after the flow cache was asked carries the answer
 * with it (struct flow_look), so the general path does not ask twice.
 */
#ifndef XLB_EXPRESS_H
#define XLB_EXPRESS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
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
#include "maps.h"
#include "stats.h"
#include "vip.h"
#include "select.h"
#include "flow_cache.h"
#include "encap.h"

/* What the express path reads of a TCP/UDP packet. */
struct express_pkt {
	struct flow_tuple flow;
	struct ethhdr *eth;
	__u32 l3_len; /* IP packet bytes */
	__u8 tos;     /* IPv4 TOS or IPv6 traffic class */
	__u8 df;      /* IPv4 DF bit set */
};

/* IPv4 without options, not a fragment; its protocol, or < 0. */
static __always_inline int express_parse_v4(struct cursor *c, struct express_pkt *e)
{
	struct iphdr *iph;
	int proto = v4_parse_ip(c, &iph);

	if (proto < 0)
		return proto;
	e->flow.family = XLB_FAMILY_V4;
	e->flow.saddr[0] = iph->saddr;
	e->flow.daddr[0] = iph->daddr;
	e->l3_len = bpf_ntohs(iph->tot_len);
	e->tos = iph->tos;
	e->df = !!(iph->frag_off & bpf_htons(XLB_IP_DF));
	return proto;
}

/* IPv6, through its extension headers, not a fragment; the upper protocol, or < 0. */
static __always_inline int express_parse_v6(struct cursor *c, struct express_pkt *e)
{
	struct ipv6hdr *ip6h;
	int proto = v6_parse_ip(c, &ip6h);

	if (proto < 0)
		return proto;
	e->flow.family = XLB_FAMILY_V6;
	__builtin_memcpy(e->flow.saddr, ip6h->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(e->flow.daddr, ip6h->daddr.in6_u.u6_addr32, 16);
	e->l3_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	e->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	e->df = 0;
	return proto;
}

/* An untagged IPv4 or IPv6 packet of TCP (not a bare SYN) or UDP to an
 * address `vip_filter` marks, parsed whole as parse_packet() would: 1,
 * else 0 (the general path decides). */
static __always_inline int express_parse(struct xdp_md *ctx, struct express_pkt *e)
{
	void *data = (void *)(long)ctx->data;
	struct tcphdr *th;
	struct udphdr *uh;
	struct cursor c;
	int proto;

	__builtin_memset(&e->flow, 0, sizeof(e->flow));
	init_cursor(&c, data, (void *)(long)ctx->data_end);
	proto = parse_eth(&c, &e->eth);
	if (c.pos != data + ETH_HLEN)
		return 0; /* tagged, or a runt */
	if (proto == ETH_P_IP)
		proto = express_parse_v4(&c, e);
	else if (proto == ETH_P_IPV6)
		proto = express_parse_v6(&c, e);
	else
		return 0;
	/* traffic to no VIP address turns back before its L4 header */
	if (proto < 0 || !may_be_conn_vip_addr(e->flow.daddr))
		return 0;
	if (proto == IPPROTO_TCP) {
		if (parse_tcp(&c, &th) || (th->syn && !th->ack))
			return 0;
		e->flow.sport = th->source;
		e->flow.dport = th->dest;
	} else if (proto == IPPROTO_UDP) {
		if (parse_udp(&c, &uh))
			return 0;
		e->flow.sport = uh->source;
		e->flow.dport = uh->dest;
	} else {
		return 0;
	}
	e->flow.proto = proto;
	return 1;
}

/*
 * Forward the packet if it is one for the express path (above), counting
 * it as the general path would: the action (XDP_TX), else XLB_CONTINUE,
 * the packet untouched and `look` holding the flow cache's answer if it
 * was asked. `row`: this CPU's row of `stats` (NULL: the general path).
 */
static __always_inline int express_forward(struct xdp_md *ctx, struct xlb_cpu_row *row,
					   struct flow_look *look)
{
	struct xlb_config *cfg;
	struct express_pkt e;
	struct outer_flow f;
	struct xlb_real *real;
	struct next_hop nh;
	__u32 zero = 0, pkt_len, vip_id, real_id;
	int gue, err;

	if (!row || !express_parse(ctx, &e))
		return XLB_CONTINUE;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !flow_cache_find_once(&e.flow, &row->flow_cache, look))
		return XLB_CONTINUE;
	real = check_real(look->copy.real_id, look->copy.real_gen, XLB_ANY_VIP);
	/* IPv4 in IPv4 or in IPv6, IPv6 in IPv6 */
	if (!real || (real->family != XLB_FAMILY_V6 &&
		      (real->family != XLB_FAMILY_V4 || e.flow.family != XLB_FAMILY_V4)))
		return XLB_CONTINUE;
	gue = (real->vip_flags & XLB_VIP_F_GUE) || (cfg->flags & XLB_CFG_F_GUE_ALL);
	if (cfg->mtu && e.l3_len + outer_hdr_len(real->family, gue) > cfg->mtu)
		return XLB_CONTINUE; /* the general path answers: ICMP, or fragments */
	if (!known_next_hop(cfg, real, e.eth->h_dest, &nh))
		return XLB_CONTINUE;
	f.hash = look->copy.hash;
	f.len = e.l3_len;
	f.family = e.flow.family;
	f.tos = e.tos;
	f.df = e.df;
	f.gue = gue;
	pkt_len = ctx->data_end - ctx->data;
	vip_id = real->vip_id;
	real_id = look->copy.real_id;
	count_in(row, XLB_CNT_CONN_HIT);
	if (real->family == XLB_FAMILY_V4)
		err = v4_push_outer(ctx, ETH_HLEN, &f, cfg, real->addr[0], &nh);
	else
		err = v6_push_outer(ctx, ETH_HLEN, &f, cfg, real->addr, &nh);
	if (err)
		return record_drop(row, XLB_R_DROP_ENCAP);
	return record_tx_forward(row, vip_id, real_id, pkt_len);
}

#endif /* XLB_EXPRESS_H */
