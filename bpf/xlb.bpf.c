// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xlb.bpf.c - the balancer: parse -> VIP -> select real -> encap -> TX.
 *
 * A packet of an established flow that this CPU's flow cache holds
 * takes the express path first (express.h): the same answer, with less
 * bookkeeping. Everything else takes the general path, whose stages
 * return an XDP action or XLB_CONTINUE (common.h) and whose only exit is
 * record() (stats.h), which counts the action and the reason.
 * What is passed, dropped or answered, and why:
 *   not IP (ARP, LLDP, runt, double VLAN tag)     PASS  PASS_NOT_IP
 *   IPv4 with options                             PASS  PASS_IP_OPTIONS
 *   IPv4/IPv6 fragment: see frag.h (TCP/UDP to a VIP: as its 5-tuple)
 *   IPv6 extension chain too long, or AH          PASS  PASS_EXT_HDRS
 *   truncated/inconsistent IP or L4 header        DROP  DROP_MALFORMED
 *   no VIP for (daddr or a prefix holding it,
 *     dport|0, proto) (vip_lookup.h)              PASS  PASS_NOT_VIP
 *   (a QUIC VIP picks its real by connection ID: quic.h)
 *   other protocol to a VIP address               PASS  PASS_PROTO
 *   ICMP: see handle_icmp()
 *   no ring / empty slot / inactive real          DROP  DROP_NO_REAL
 *   no next-hop MAC                               DROP  DROP_NO_ROUTE
 *   too big for config.mtu after encap            TX    TX_ICMP_TOO_BIG
 *   encapsulated to the real                      TX    FORWARD
 *     (with the previous ring's real when a ring change moved the flow:
 *     prev_ring.h, carrier_encap.h)
 *     (XDP_REDIRECT when the FIB says the real is behind another device)
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "parse.h"
#include "flow_parse.h"
#include "maps.h"
#include "stats.h"
#include "hash.h"
#include "vip.h"
#include "select.h"
#include "quic.h"
#include "csum.h"
#include "encap.h"
#include "express.h"
#include "carrier_encap.h"
#include "icmp.h"
#include "frag.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int verdict_of_parse_err(struct xlb_pkt *p, int err)
{
	switch (err) {
	case PARSE_E_OPTIONS:
		return set_verdict(p, XDP_PASS, XLB_R_PASS_IP_OPTIONS);
	case PARSE_E_FRAGMENT:
		return set_verdict(p, XDP_PASS, XLB_R_PASS_FRAGMENT);
	case PARSE_E_EXT_HDRS:
		return set_verdict(p, XDP_PASS, XLB_R_PASS_EXT_HDRS);
	default:
		return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
	}
}

/* Fill p from the headers, or decide PASS/DROP. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct xlb_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth;
	struct cursor c;
	int proto, err;

	init_cursor(&c, data, data_end);
	proto = parse_eth(&c, &eth);
	if (proto < 0)
		return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_IP);
	copy_mac(p->eth_dst, eth->h_dest);
	copy_mac(p->eth_src, eth->h_source);
	p->l3_off = c.pos - data;
	if (proto == ETH_P_IP)
		proto = v4_parse_l3(&c, &p->flow, &p->ip);
	else if (proto == ETH_P_IPV6)
		proto = v6_parse_l3(&c, &p->flow, &p->ip);
	else
		return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_IP);
	if (proto == PARSE_E_FRAGMENT)
		return parse_fragment(ctx, &c, p);
	if (proto < 0)
		return verdict_of_parse_err(p, proto);
	p->flow.proto = proto;
	p->l4_off = c.pos - data;
	err = parse_l4(&c, &p->flow, &p->tcp_syn);
	if (err)
		return verdict_of_parse_err(p, err);
	return XLB_CONTINUE;
}

/*
 * Encapsulate to `real` and transmit; first, for client traffic (reason
 * FORWARD), enforce config.mtu: IPv6, and IPv4 with DF, get an ICMP
 * error back; IPv4 without DF is encapsulated anyway when the real is IPv4
 * (the outer header copies DF, so routers may fragment it), but answered
 * like DF when the outer header is IPv6, which routers never fragment.
 * Routed ICMP errors are never answered with ICMP (RFC 1122), they are
 * forwarded whatever their size. A later IPv4 fragment is dropped where
 * a whole packet would get the error (frag.h).
 */
static __always_inline int forward(struct xdp_md *ctx, struct xlb_pkt *p, __u32 vip_flags,
				   const struct xlb_config *cfg, const struct xlb_real *real,
				   enum xlb_reason reason)
{
	int gue = uses_gue(vip_flags, cfg);
	struct next_hop nh;
	__u32 hdr_len, mtu;
	int action;

	if (!real_carries(real->family, p->flow.family))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	hdr_len = outer_hdr_len(real->family, gue);
	if (XLB_SECOND_CHANCE && p->has_alt)
		hdr_len += carrier_len(real->family, gue);
	if (reason == XLB_R_FORWARD && cfg->mtu && p->ip.len + hdr_len > cfg->mtu) {
		mtu = cfg->mtu > hdr_len ? cfg->mtu - hdr_len : 0;
		if (p->flow.family == XLB_FAMILY_V6)
			return v6_reply_too_big(ctx, p, mtu);
		if (p->ip.df || real->family == XLB_FAMILY_V6) {
			if (v4_is_later_fragment(ctx, p))
				return set_verdict(p, XDP_DROP, XLB_R_DROP_FRAG_TOO_BIG);
			return v4_reply_too_big(ctx, p, mtu);
		}
	}
	action = resolve_next_hop(ctx, p, cfg, real, hdr_len, &nh);
	if (action != XLB_CONTINUE)
		return action;
	p->reason = reason;
	p->has_vip = 1;
	if (XLB_SECOND_CHANCE && p->has_alt)
		return encap_with_carrier(ctx, p, cfg, real, &nh, gue);
	if (real->family == XLB_FAMILY_V4)
		return v4_encap(ctx, p, cfg, real, &nh, gue);
	return v6_encap(ctx, p, cfg, real, &nh, gue);
}

/* TCP/UDP: an established flow's real (fast path), or the VIP, its real; out.
 * `look`: the flow cache's answer if the express path asked already. */
static __always_inline int balance(struct xdp_md *ctx, struct xlb_pkt *p,
				   const struct xlb_config *cfg, struct flow_look *look)
{
	struct conn_probe probe;
	struct xlb_vip_meta vip;
	struct xlb_real *real;
	int action;

	probe.conn = NULL;
	probe.done = 0;
	real = established_real(p, cfg, &probe, look);
	if (real)
		return forward(ctx, p, real->vip_flags, cfg, real, XLB_R_FORWARD);
	if (!lookup_vip(&p->flow, cfg, &vip))
		return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_VIP);
	p->vip_id = vip.vip_id;
	if (vip.flags & XLB_VIP_F_QUIC) {
		action = quic_select_real(ctx, p, &vip, cfg, &real);
	} else {
		p->hash = hash_flow(&p->flow, vip.flags, cfg->hash_seed);
		action = select_real(p, &vip, cfg, 1, &probe, &real);
	}
	if (action != XLB_CONTINUE)
		return action;
	return forward(ctx, p, vip.flags, cfg, real, XLB_R_FORWARD);
}

/* Same address (all four words: an IPv4 address's last three are zero)? */
static __always_inline int same_addr(const __be32 *a, const __be32 *b)
{
	return !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]));
}

/*
 * An ICMP frag-needed / packet-too-big quoting a packet sent from a VIP
 * (by a real, to a client): send it to the real that owns the reversed
 * (client -> VIP) flow: conn table, else ring; no entry is created.
 * The error must be addressed to that VIP: a router sends it to the
 * quoted packet's source, and one sent to any other host is not ours to
 * take (the VIP lookup of the quoted flow then also proves the error's
 * destination is a VIP address, which vip_filter alone cannot).
 * XLB_CONTINUE when the quote is not from one of our VIPs.
 */
static __always_inline int route_icmp_error(struct xdp_md *ctx, struct xlb_pkt *p,
					    const struct xlb_config *cfg)
{
	struct conn_probe probe;
	struct xlb_vip_meta vip;
	struct flow_tuple flow;
	struct xlb_real *real;
	int err, action;

	if (p->flow.family == XLB_FAMILY_V4)
		err = v4_read_quoted_flow(ctx, p, &flow);
	else
		err = v6_read_quoted_flow(ctx, p, &flow);
	if (err || !same_addr(p->flow.daddr, flow.daddr))
		return XLB_CONTINUE;
	if (!lookup_vip(&flow, cfg, &vip))
		return XLB_CONTINUE;
	p->flow = flow;
	p->vip_id = vip.vip_id;
	p->hash = hash_flow(&flow, vip.flags, cfg->hash_seed);
	probe.conn = NULL;
	probe.done = 0;
	action = select_real(p, &vip, cfg, 0, &probe, &real);
	if (action != XLB_CONTINUE)
		return action;
	return forward(ctx, p, vip.flags, cfg, real, XLB_R_FORWARD_ICMP_ERROR);
}

/*
 * ICMP / ICMPv6:
 *   echo request to a VIP address (vip.h is_vip_addr)   TX    TX_ICMP_ECHO
 *     but ICMPv6 with a routing header that has
 *     segments left (icmp.h v6_reply_echo)              PASS  PASS_ICMP
 *   frag needed (3/4) / packet too big (2) to a VIP,
 *     quoting a TCP/UDP packet from that VIP (or the
 *     first fragment of one: a real's big reply)       TX    FORWARD_ICMP_ERROR
 *   anything else to a VIP address                      PASS  PASS_ICMP
 *   anything else                                       PASS  PASS_NOT_VIP
 */
static __always_inline int handle_icmp(struct xdp_md *ctx, struct xlb_pkt *p,
				       const struct xlb_config *cfg)
{
	struct icmphdr *icmph;
	__u8 type, code;
	int action;

	if (PKT_HDR(ctx, p->l4_off, struct icmphdr, icmph))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
	type = icmph->type;
	code = icmph->code;
	if (p->flow.family == XLB_FAMILY_V4) {
		if (type == ICMP_ECHO) {
			if (!is_vip_addr(p->flow.daddr, p->flow.family, cfg))
				return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_VIP);
			return v4_reply_echo(ctx, p);
		}
		if (type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED) {
			action = route_icmp_error(ctx, p, cfg);
			if (action != XLB_CONTINUE)
				return action;
		}
	} else {
		if (type == ICMPV6_ECHO_REQUEST) {
			if (!is_vip_addr(p->flow.daddr, p->flow.family, cfg))
				return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_VIP);
			return v6_reply_echo(ctx, p);
		}
		if (type == ICMPV6_PKT_TOOBIG) {
			action = route_icmp_error(ctx, p, cfg);
			if (action != XLB_CONTINUE)
				return action;
		}
	}
	if (is_vip_addr(p->flow.daddr, p->flow.family, cfg))
		return set_verdict(p, XDP_PASS, XLB_R_PASS_ICMP);
	return set_verdict(p, XDP_PASS, XLB_R_PASS_NOT_VIP);
}

SEC("xdp")
int xlb_balancer(struct xdp_md *ctx)
{
	struct xlb_cpu_row *row = cpu_row();
	struct flow_look look;
	struct xlb_config *cfg;
	struct xlb_pkt pkt;
	__u32 zero = 0;
	int action;

	look.looked = 0;
	action = express_forward(ctx, row, &look);
	if (action != XLB_CONTINUE)
		return action;
	__builtin_memset(&pkt, 0, sizeof(pkt));
	pkt.row = row;
	pkt.pkt_len = ctx->data_end - ctx->data;
	action = parse_packet(ctx, &pkt);
	if (action != XLB_CONTINUE)
		goto out;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) {
		action = set_verdict(&pkt, XDP_PASS, XLB_R_PASS_NOT_VIP);
		goto out;
	}
	switch (pkt.flow.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		action = balance(ctx, &pkt, cfg, &look);
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (pkt.flow.proto ==
		    (pkt.flow.family == XLB_FAMILY_V4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) {
			action = handle_icmp(ctx, &pkt, cfg);
			break;
		}
		/* fallthrough */
	default:
		if (is_vip_addr(pkt.flow.daddr, pkt.flow.family, cfg))
			action = set_verdict(&pkt, XDP_PASS, XLB_R_PASS_PROTO);
		else
			action = set_verdict(&pkt, XDP_PASS, XLB_R_PASS_NOT_VIP);
	}
out:
	return record(&pkt, action);
}
