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
#include "flow_parse.h"
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
	struct ip_fields ip;
};

/* An untagged IPv4 or IPv6 packet of TCP (not a bare SYN) or UDP to an
 * address `vip_filter` marks, read as parse_packet() reads it: 1, else 0
 * (the general path decides). */
static __always_inline int express_parse(struct xdp_md *ctx, struct express_pkt *e)
{
	void *data = (void *)(long)ctx->data;
	struct cursor c;
	__u8 tcp_syn = 0;
	int proto;

	__builtin_memset(&e->flow, 0, sizeof(e->flow));
	e->ip.df = 0;
	init_cursor(&c, data, (void *)(long)ctx->data_end);
	proto = parse_eth(&c, &e->eth);
	if (c.pos != data + ETH_HLEN)
		return 0; /* tagged, or a runt */
	if (proto == ETH_P_IP)
		proto = v4_parse_l3(&c, &e->flow, &e->ip);
	else if (proto == ETH_P_IPV6)
		proto = v6_parse_l3(&c, &e->flow, &e->ip);
	else
		return 0;
	/* fragments and errors go the general way; so, before its L4 header,
	 * does traffic to no VIP address */
	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || !may_be_conn_vip_addr(e->flow.daddr))
		return 0;
	e->flow.proto = proto;
	return !parse_l4(&c, &e->flow, &tcp_syn) && !tcp_syn;
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
	if (!real || !real_carries(real->family, e.flow.family))
		return XLB_CONTINUE;
	gue = uses_gue(real->vip_flags, cfg);
	if (cfg->mtu && e.ip.len + outer_hdr_len(real->family, gue) > cfg->mtu)
		return XLB_CONTINUE; /* the general path answers: ICMP, or fragments */
	if (!known_next_hop(cfg, real, e.eth->h_dest, &nh))
		return XLB_CONTINUE;
	f.hash = look->copy.hash;
	f.len = e.ip.len;
	f.family = e.flow.family;
	f.tos = e.ip.tos;
	f.df = e.ip.df;
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
