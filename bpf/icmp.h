/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * icmp.h - ICMP the balancer answers itself, and reading the flow quoted
 * in an ICMP error.
 *
 * Every reply is built in place and sent back with XDP_TX: MACs swapped,
 * output untagged (a VLAN tag on input is removed), TTL/hop limit 64,
 * source = the VIP address the packet was sent to.
 *   - echo reply: the request with type 0 / 129, addresses swapped and
 *     checksums updated incrementally; an ICMPv6 reply leaves out the
 *     request's extension headers, and a request whose routing header has
 *     segments left is not answered (PASS_ICMP);
 *   - IPv4 "fragmentation needed" (3/4): new IPv4 + ICMP header (TOS 0xc0,
 *     id 0, no DF) quoting the original IP packet up to 548 bytes (the
 *     reply is at most 576 bytes, RFC 1812);
 *   - ICMPv6 "packet too big" (2/0): new IPv6 + ICMPv6 header quoting the
 *     original packet up to 1232 bytes (the reply is at most 1280 bytes).
 */
#ifndef XLB_ICMP_H
#define XLB_ICMP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "csum.h"
#include "encap.h"

#define XLB_V4_ICMP_QUOTE_MAX (576 - sizeof(struct iphdr) - sizeof(struct icmphdr))
#define XLB_V6_ICMP_QUOTE_MAX (1280 - sizeof(struct ipv6hdr) - sizeof(struct icmp6hdr))
#define XLB_ICMP_ERR_TOS 0xc0 /* IPTOS_PREC_INTERNETCONTROL, as Linux */
#define XLB_V4_MIN_MTU 68
#define XLB_V6_MIN_MTU 1280

/* Pointers to the IP and ICMP headers recorded by the parser. */
#define PKT_HDR(ctx, off, type, ptr)                       \
	({                                                 \
		void *__d = (void *)(long)(ctx)->data;     \
		void *__e = (void *)(long)(ctx)->data_end; \
		(ptr) = __d + ((off)&0x3fff);              \
		(void *)((type *)(ptr) + 1) > __e;         \
	})

/*
 * Turn the frame into an untagged reply to its sender: drop any VLAN tag
 * (the IP header moves to offset 14) and swap the MACs.
 */
static __always_inline int reply_l2(struct xdp_md *ctx, struct xlb_pkt *p, __u16 proto)
{
	int delta = (int)p->l3_off - ETH_HLEN;
	struct ethhdr *eth;

	if (delta && bpf_xdp_adjust_head(ctx, delta))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	write_eth(eth, p->eth_src, p->eth_dst, proto);
	return XDP_TX;
}

static __always_inline int v4_reply_echo(struct xdp_md *ctx, struct xlb_pkt *p)
{
	struct icmphdr *icmph;
	struct iphdr *iph;
	__u16 old, *word;
	__be32 addr;

	if (PKT_HDR(ctx, p->l3_off, struct iphdr, iph) ||
	    PKT_HDR(ctx, p->l4_off, struct icmphdr, icmph))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
	addr = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = addr;
	word = (__u16 *)&iph->ttl;
	old = *word;
	iph->ttl = XLB_TTL;
	iph->check = csum_replace16(iph->check, old, *word);
	word = (__u16 *)icmph;
	old = *word;
	icmph->type = ICMP_ECHOREPLY;
	icmph->checksum = csum_replace16(icmph->checksum, old, *word);
	p->reason = XLB_R_TX_ICMP_ECHO;
	return reply_l2(ctx, p, ETH_P_IP);
}

/*
 * Does the request carry a routing header with segments left? Then the
 * VIP is only a waypoint on the way to another destination (RFC 8200
 * 4.4), and the ICMPv6 checksum was computed over that destination.
 * Walks the chain the parser accepted, from the IPv6 header to l4_off.
 */
static __always_inline int v6_routing_pending(struct xdp_md *ctx, const struct xlb_pkt *p,
					      __u8 nexthdr)
{
	__u32 off = p->l3_off + sizeof(struct ipv6hdr);
	struct v6_ext_hdr *ext;
	int i;

#pragma unroll
	for (i = 0; i < XLB_MAX_V6_EXT_HDRS; i++) {
		if (off >= p->l4_off)
			return 0;
		if (PKT_HDR(ctx, off, struct v6_ext_hdr, ext))
			return 1;
		if (nexthdr == IPPROTO_ROUTING && ext->data[1]) /* segments left */
			return 1;
		nexthdr = ext->nexthdr;
		off += (ext->hdrlen + 1) * 8;
	}
	return 0;
}

/*
 * The reply is a new IPv6 header (traffic class and flow label kept) right
 * in front of the request's ICMPv6 message: the request's extension
 * headers (hop-by-hop, routing, destination options) are not echoed. The
 * payload length shrinks by theirs, which leaves the checksum's
 * upper-layer length, hence the checksum, as it was.
 */
static __always_inline int v6_reply_echo(struct xdp_md *ctx, struct xlb_pkt *p)
{
	__u32 ext_len = p->l4_off - p->l3_off - sizeof(struct ipv6hdr);
	int delta = (int)p->l4_off - (int)(ETH_HLEN + sizeof(struct ipv6hdr));
	struct icmp6hdr *icmp6h;
	struct ipv6hdr *ip6h;
	struct ethhdr *eth;
	__u16 old, *word;
	__be32 first_word;
	__u16 payload_len;

	if (PKT_HDR(ctx, p->l3_off, struct ipv6hdr, ip6h))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_MALFORMED);
	if (ext_len && v6_routing_pending(ctx, p, ip6h->nexthdr))
		return set_verdict(p, XDP_PASS, XLB_R_PASS_ICMP);
	first_word = *(__be32 *)ip6h;
	payload_len = bpf_ntohs(ip6h->payload_len) - ext_len;
	if (delta && bpf_xdp_adjust_head(ctx, delta))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	eth = (void *)(long)ctx->data;
	ip6h = (void *)(eth + 1);
	icmp6h = (void *)(ip6h + 1);
	if ((void *)(icmp6h + 1) > (void *)(long)ctx->data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);

	write_eth(eth, p->eth_src, p->eth_dst, ETH_P_IPV6);
	*(__be32 *)ip6h = first_word;
	ip6h->payload_len = bpf_htons(payload_len);
	ip6h->nexthdr = IPPROTO_ICMPV6;
	ip6h->hop_limit = XLB_TTL;
	__builtin_memcpy(ip6h->saddr.in6_u.u6_addr32, p->flow.daddr, 16);
	__builtin_memcpy(ip6h->daddr.in6_u.u6_addr32, p->flow.saddr, 16);
	word = (__u16 *)icmp6h;
	old = *word;
	icmp6h->icmp6_type = ICMPV6_ECHO_REPLY;
	icmp6h->icmp6_cksum = csum_replace16(icmp6h->icmp6_cksum, old, *word);
	return set_verdict(p, XDP_TX, XLB_R_TX_ICMP_ECHO);
}

/*
 * Shape the frame as [eth][hdr_len bytes of new headers][original IP
 * packet cut to `quote` bytes]. Returns 0 or -1.
 */
static __always_inline int make_error_room(struct xdp_md *ctx, const struct xlb_pkt *p,
					   __u32 hdr_len, __u32 quote)
{
	__u32 new_len = ETH_HLEN + hdr_len + quote;
	__u32 cur_len;

	if (push_outer(ctx, p->l3_off, hdr_len))
		return -1;
	cur_len = ctx->data_end - ctx->data;
	if (cur_len > new_len && bpf_xdp_adjust_tail(ctx, (int)new_len - (int)cur_len))
		return -1;
	return 0;
}

/* ICMP 3/4 to the client: `mtu` is the next-hop MTU it should use. */
static __always_inline int v4_reply_too_big(struct xdp_md *ctx, struct xlb_pkt *p, __u32 mtu)
{
	__u32 hdr_len = sizeof(struct iphdr) + sizeof(struct icmphdr);
	__u32 quote = p->ip.len;
	void *data, *data_end;
	struct icmphdr *icmph;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u64 sum;

	if (quote > XLB_V4_ICMP_QUOTE_MAX)
		quote = XLB_V4_ICMP_QUOTE_MAX;
	if (mtu < XLB_V4_MIN_MTU)
		mtu = XLB_V4_MIN_MTU;
	if (make_error_room(ctx, p, hdr_len, quote))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	iph = (void *)(eth + 1);
	icmph = (void *)(iph + 1);
	if ((void *)(icmph + 1) > data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);

	write_eth(eth, p->eth_src, p->eth_dst, ETH_P_IP);
	iph->version = 4;
	iph->ihl = 5;
	iph->tos = XLB_ICMP_ERR_TOS;
	iph->tot_len = bpf_htons(hdr_len + quote);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = XLB_TTL;
	iph->protocol = IPPROTO_ICMP;
	iph->check = 0;
	iph->saddr = p->flow.daddr[0];
	iph->daddr = p->flow.saddr[0];
	iph->check = v4_csum_hdr(iph);

	icmph->type = ICMP_DEST_UNREACH;
	icmph->code = ICMP_FRAG_NEEDED;
	icmph->checksum = 0;
	icmph->un.frag.__unused = 0;
	icmph->un.frag.mtu = bpf_htons(mtu);
	sum = csum_add_range(icmph, data_end, sizeof(*icmph) + quote, 0);
	icmph->checksum = csum_fold(sum);
	return set_verdict(p, XDP_TX, XLB_R_TX_ICMP_TOO_BIG);
}

/* ICMPv6 packet too big to the client. */
static __always_inline int v6_reply_too_big(struct xdp_md *ctx, struct xlb_pkt *p, __u32 mtu)
{
	__u32 hdr_len = sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr);
	__u32 quote = p->ip.len, len, i;
	struct icmp6hdr *icmp6h;
	void *data, *data_end;
	struct ipv6hdr *ip6h;
	struct ethhdr *eth;
	__u64 sum = 0;

	if (quote > XLB_V6_ICMP_QUOTE_MAX)
		quote = XLB_V6_ICMP_QUOTE_MAX;
	if (mtu < XLB_V6_MIN_MTU)
		mtu = XLB_V6_MIN_MTU;
	if (make_error_room(ctx, p, hdr_len, quote))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip6h = (void *)(eth + 1);
	icmp6h = (void *)(ip6h + 1);
	if ((void *)(icmp6h + 1) > data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);

	len = sizeof(*icmp6h) + quote;
	write_eth(eth, p->eth_src, p->eth_dst, ETH_P_IPV6);
	*(__be32 *)ip6h = bpf_htonl(6U << 28);
	ip6h->payload_len = bpf_htons(len);
	ip6h->nexthdr = IPPROTO_ICMPV6;
	ip6h->hop_limit = XLB_TTL;
	__builtin_memcpy(ip6h->saddr.in6_u.u6_addr32, p->flow.daddr, 16);
	__builtin_memcpy(ip6h->daddr.in6_u.u6_addr32, p->flow.saddr, 16);

	icmp6h->icmp6_type = ICMPV6_PKT_TOOBIG;
	icmp6h->icmp6_code = 0;
	icmp6h->icmp6_cksum = 0;
	icmp6h->icmp6_mtu = bpf_htonl(mtu);
#pragma unroll
	for (i = 0; i < 4; i++)
		sum += p->flow.saddr[i] + (__u64)p->flow.daddr[i];
	sum += bpf_htonl(len);
	sum += bpf_htonl(IPPROTO_ICMPV6);
	sum = csum_add_range(icmp6h, data_end, len, sum);
	icmp6h->icmp6_cksum = csum_fold(sum);
	return set_verdict(p, XDP_TX, XLB_R_TX_ICMP_TOO_BIG);
}

/* The TCP/UDP ports at the start of a quoted transport header. */
struct quoted_ports {
	__be16 src;
	__be16 dst;
};

/*
 * Do `quoted` bytes after the ICMP header lie within the error's own IP
 * packet? The bounds checks against data_end alone would take Ethernet
 * padding (or anything else after the IP length) for the quote.
 */
static __always_inline int quote_in_packet(const struct xlb_pkt *p, __u32 quoted)
{
	return (__u32)p->l4_off + sizeof(struct icmphdr) + quoted <= (__u32)p->l3_off + p->ip.len;
}

/*
 * The client -> VIP flow of the packet quoted in an ICMP frag-needed
 * (a packet the real sent from the VIP to the client): the quote's
 * destination is the client, its source the VIP. Returns 0 or -1 when
 * the quote is not an option-less IPv4 TCP/UDP header plus ports, all
 * within the error's IP packet. A quoted first fragment (a real's reply
 * too big for the path) has the ports; a later one has none: -1.
 */
static __always_inline int v4_read_quoted_flow(struct xdp_md *ctx, const struct xlb_pkt *p,
					       struct flow_tuple *f)
{
	struct quoted_ports *ports;
	struct iphdr *q;

	if (!quote_in_packet(p, sizeof(*q) + sizeof(*ports)))
		return -1;
	if (PKT_HDR(ctx, p->l4_off + sizeof(struct icmphdr), struct iphdr, q))
		return -1;
	ports = (void *)(q + 1);
	if ((void *)(ports + 1) > (void *)(long)ctx->data_end)
		return -1;
	if (q->version != 4 || q->ihl != 5 ||
	    (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP))
		return -1;
	if (q->frag_off & bpf_htons(XLB_IP_OFFSET))
		return -1;
	__builtin_memset(f, 0, sizeof(*f));
	f->saddr[0] = q->daddr;
	f->daddr[0] = q->saddr;
	f->sport = ports->dst;
	f->dport = ports->src;
	f->proto = q->protocol;
	f->family = XLB_FAMILY_V4;
	return 0;
}

/*
 * A quoted IPv6 first fragment: the upper protocol after its fragment
 * header, and its ports behind it; -1 for a later fragment (no ports).
 */
static __always_inline int v6_skip_quoted_frag(struct xdp_md *ctx, const struct xlb_pkt *p,
					       struct ipv6hdr *q, struct quoted_ports **ports)
{
	struct v6_frag_hdr *fh = (void *)(q + 1);

	if (!quote_in_packet(p, sizeof(*q) + sizeof(*fh) + sizeof(**ports)))
		return -1;
	*ports = (void *)(fh + 1);
	if ((void *)(*ports + 1) > (void *)(long)ctx->data_end)
		return -1;
	if (fh->frag_off & bpf_htons(XLB_V6_FRAG_OFFSET))
		return -1;
	return fh->nexthdr;
}

/*
 * Same for ICMPv6 packet too big; the quote must be IPv6 + TCP/UDP, or
 * IPv6 + the fragment header of a first fragment + TCP/UDP.
 */
static __always_inline int v6_read_quoted_flow(struct xdp_md *ctx, const struct xlb_pkt *p,
					       struct flow_tuple *f)
{
	struct quoted_ports *ports;
	struct ipv6hdr *q;
	int proto;

	if (!quote_in_packet(p, sizeof(*q) + sizeof(*ports)))
		return -1;
	if (PKT_HDR(ctx, p->l4_off + sizeof(struct icmp6hdr), struct ipv6hdr, q))
		return -1;
	ports = (void *)(q + 1);
	if ((void *)(ports + 1) > (void *)(long)ctx->data_end)
		return -1;
	if (q->version != 6)
		return -1;
	proto = q->nexthdr;
	if (proto == IPPROTO_FRAGMENT)
		proto = v6_skip_quoted_frag(ctx, p, q, &ports);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	__builtin_memset(f, 0, sizeof(*f));
	__builtin_memcpy(f->saddr, q->daddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(f->daddr, q->saddr.in6_u.u6_addr32, 16);
	f->sport = ports->dst;
	f->dport = ports->src;
	f->proto = proto;
	f->family = XLB_FAMILY_V6;
	return 0;
}

#endif /* XLB_ICMP_H */
