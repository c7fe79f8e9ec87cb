/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow_parse.h - a packet's flow and the IP fields the balancer needs,
 * read with parse.h's cursor parsers. The general path (xlb.bpf.c) and
 * the express path (express.h) read a packet through these alike, so the
 * express path takes a packet only as the general path would read it.
 */
#ifndef XLB_FLOW_PARSE_H
#define XLB_FLOW_PARSE_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "parse.h"
#include "hash.h"

/* IPv4: the flow's addresses and family, and *ip; the protocol, or
 * PARSE_E_* (fields filled for PARSE_E_FRAGMENT too). */
static __always_inline int v4_parse_l3(struct cursor *c, struct flow_tuple *flow,
				       struct ip_fields *ip)
{
	struct iphdr *iph;
	int proto;

	proto = v4_parse_ip(c, &iph);
	if (proto < 0 && proto != PARSE_E_FRAGMENT)
		return proto;
	flow->family = XLB_FAMILY_V4;
	flow->saddr[0] = iph->saddr;
	flow->daddr[0] = iph->daddr;
	ip->tos = iph->tos;
	ip->df = !!(iph->frag_off & bpf_htons(XLB_IP_DF));
	ip->len = bpf_ntohs(iph->tot_len);
	return proto;
}

/* IPv6, through its extension headers: as v4_parse_l3(). */
static __always_inline int v6_parse_l3(struct cursor *c, struct flow_tuple *flow,
				       struct ip_fields *ip)
{
	struct ipv6hdr *ip6h;
	int proto;

	proto = v6_parse_ip(c, &ip6h);
	if (proto < 0 && proto != PARSE_E_FRAGMENT)
		return proto;
	flow->family = XLB_FAMILY_V6;
	__builtin_memcpy(flow->saddr, ip6h->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(flow->daddr, ip6h->daddr.in6_u.u6_addr32, 16);
	ip->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	ip->len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	return proto;
}

/* flow->proto's header: TCP/UDP ports and (TCP) whether it is a SYN
 * without ACK into *tcp_syn, or just bounds for ICMP. 0 or PARSE_E_*. */
static __always_inline int parse_l4(struct cursor *c, struct flow_tuple *flow, __u8 *tcp_syn)
{
	struct icmphdr *icmph;
	struct tcphdr *th;
	struct udphdr *uh;
	int err = 0;

	switch (flow->proto) {
	case IPPROTO_TCP:
		err = parse_tcp(c, &th);
		if (err)
			return err;
		flow->sport = th->source;
		flow->dport = th->dest;
		*tcp_syn = th->syn && !th->ack;
		break;
	case IPPROTO_UDP:
		err = parse_udp(c, &uh);
		if (err)
			return err;
		flow->sport = uh->source;
		flow->dport = uh->dest;
		break;
	case IPPROTO_ICMP:
		if (flow->family == XLB_FAMILY_V4)
			err = parse_icmp(c, &icmph);
		break;
	case IPPROTO_ICMPV6:
		if (flow->family == XLB_FAMILY_V6)
			err = parse_icmp(c, &icmph);
		break;
	}
	return err;
}

#endif /* XLB_FLOW_PARSE_H */
