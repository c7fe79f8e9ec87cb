/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * handoff.h - second chance on the reals: a packet whose outer headers
 * carry an alternate (carrier.h) is ours if we hold a socket for its inner
 * 4-tuple; if we do not, it belongs to the alternate, the real the
 * balancer's previous ring gave the flow, and we hand it on.
 *
 * sc_decide() names the outcome by its counter (enum
 * xlb_decap_counter_index); XLB_DCNT_SC_HANDED_ON means "hand on", every
 * other outcome decapsulates as usual:
 *   carrier already cleared (a real handed it to us)   SC_RECEIVED
 *   inner packet not TCP (UDP is out of scope)          SC_NOT_TCP
 *   a SYN (without ACK): ours to answer                 SC_SYN
 *   the alternate is one of our decap addresses         SC_ALT_LOCAL
 *   bpf_skc_lookup_tcp() finds a socket that is not a
 *     listener (established, a request socket of a
 *     handshake in progress, time-wait)                 SC_SOCKET
 *   only a listener, and bpf_tcp_check_syncookie()
 *     accepts the ACK (a handshake we answered with a
 *     syncookie)                                        SC_SYNCOOKIE
 *   otherwise (nothing, or a listener only: the lookup
 *     falls back to a listener for any tuple)           SC_HANDED_ON
 * The lookup is in the namespace of the device (BPF_F_CURRENT_NETNS).
 *
 * Handing on (sc_readdress(), then the program's own transmit): the outer
 * destination becomes the alternate, the carrier is cleared (flag
 * XLB_CARRIER_F_HANDED_OVER, address zero) so the alternate never hands
 * it on again, the TTL / hop limit loses one (a packet arriving with 1 is
 * dropped); the outer source stays the balancer's. Then, at tc,
 * bpf_redirect_neigh() out of the device it came in on (the kernel routes
 * it and resolves the neighbour, as for a packet of its own). At XDP, an
 * output FIB lookup (sc_fib_query()) out of the ingress device gives the
 * next hop (XDP_TX, or XDP_REDIRECT to another device), but the kernel
 * answers it only for a device that forwards (net.ipv4.conf.<dev>.
 * forwarding, IPv6 likewise): without forwarding, or without a neighbour
 * entry, the packet goes back to the hop that sent it (the frame's source
 * MAC: the router, in a routed network), which routes it to the
 * alternate. A packet that cannot be handed on is dropped (SC_NO_ROUTE):
 * passed up, our stack would reset a connection that lives on the
 * alternate.
 */
#ifndef XLB_HANDOFF_H
#define XLB_HANDOFF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "parse.h"
#include "carrier.h"
#include "decap.h"
#include "csum.h"

#ifndef XLB_AF_INET
#define XLB_AF_INET 2
#define XLB_AF_INET6 10
#endif

#define XLB_CARRIER_MAX_OFF 127
/* The inner header's offset in the frames we make: at most 90 bytes. */
#define XLB_INNER_MAX_OFF 255

/* The inner TCP packet of an encapsulated frame. */
struct inner_tcp {
	void *iph; /* struct iphdr or struct ipv6hdr */
	struct tcphdr *th;
	struct bpf_sock_tuple tuple;
	__u32 tuple_len;
	__u8 family;
};

static __always_inline struct carrier_word *carrier_of(void *data, void *data_end,
						       const struct decap_info *di)
{
	__u32 off = di->carrier_off;
	struct carrier_word *w;

	/* a bound the verifier keeps: the carrier is at most 70 bytes in
	 * (Ethernet, VLAN tag, IPv6, UDP, GUE header) */
	if (off > XLB_CARRIER_MAX_OFF)
		return NULL;
	w = data + off;
	/* the address after the word: 4 or 16 bytes */
	if ((void *)(w + 1) + 16 > data_end &&
	    (di->outer_proto != ETH_P_IP || (void *)(w + 1) + 4 > data_end))
		return NULL;
	return w;
}

/* The inner packet's TCP header and its tuple as the stack sees it; 0 or -1. */
static __always_inline int parse_inner_tcp(void *data, void *data_end, const struct decap_info *di,
					   struct inner_tcp *in)
{
	struct ipv6hdr *ip6h;
	struct iphdr *iph;
	struct cursor c;
	int proto;
	__u32 off = di->l2_len + di->strip_len;

	if (off > XLB_INNER_MAX_OFF)
		return -1; /* not our headers; also a bound the verifier keeps */
	init_cursor(&c, data + off, data_end);
	if (di->inner_proto == ETH_P_IP) {
		proto = v4_parse_ip(&c, &iph);
		if (proto != IPPROTO_TCP)
			return -1;
		in->iph = iph;
		in->family = XLB_FAMILY_V4;
		in->tuple.ipv4.saddr = iph->saddr;
		in->tuple.ipv4.daddr = iph->daddr;
		in->tuple_len = sizeof(in->tuple.ipv4);
	} else {
		proto = v6_parse_ip(&c, &ip6h);
		if (proto != IPPROTO_TCP)
			return -1;
		in->iph = ip6h;
		in->family = XLB_FAMILY_V6;
		__builtin_memcpy(in->tuple.ipv6.saddr, ip6h->saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(in->tuple.ipv6.daddr, ip6h->daddr.in6_u.u6_addr32, 16);
		in->tuple_len = sizeof(in->tuple.ipv6);
	}
	if (parse_tcp(&c, &in->th))
		return -1;
	if (in->family == XLB_FAMILY_V4) {
		in->tuple.ipv4.sport = in->th->source;
		in->tuple.ipv4.dport = in->th->dest;
	} else {
		in->tuple.ipv6.sport = in->th->source;
		in->tuple.ipv6.dport = in->th->dest;
	}
	return 0;
}

/* Only a listener answered the lookup: is the ACK one of its syncookies? */
static __always_inline int is_syncookie_ack(struct bpf_sock *listener, const struct inner_tcp *in,
					    void *data_end)
{
	if (in->family == XLB_FAMILY_V4) {
		if (in->iph + sizeof(struct iphdr) > data_end)
			return 0;
		return bpf_tcp_check_syncookie(listener, in->iph, sizeof(struct iphdr), in->th,
					       sizeof(struct tcphdr)) == 0;
	}
	if (in->iph + sizeof(struct ipv6hdr) > data_end)
		return 0;
	return bpf_tcp_check_syncookie(listener, in->iph, sizeof(struct ipv6hdr), in->th,
				       sizeof(struct tcphdr)) == 0;
}

/* The outcome for a frame that classify_encap() found a carrier in. */
static __always_inline __u32 sc_decide(void *ctx, void *data, void *data_end,
				       const struct decap_info *di)
{
	__u8 family = di->outer_proto == ETH_P_IP ? XLB_FAMILY_V4 : XLB_FAMILY_V6;
	struct carrier_word *w = carrier_of(data, data_end, di);
	struct inner_tcp in = {};
	struct bpf_sock *sk;
	__be32 *alt;
	__u32 outcome;

	if (!w || (w->flags & XLB_CARRIER_F_HANDED_OVER))
		return XLB_DCNT_SC_RECEIVED;
	alt = (__be32 *)(w + 1);
	if (!alt[0] && (family == XLB_FAMILY_V4 || !(alt[1] | alt[2] | alt[3])))
		return XLB_DCNT_SC_RECEIVED;
	if (parse_inner_tcp(data, data_end, di, &in))
		return XLB_DCNT_SC_NOT_TCP;
	if (in.th->syn && !in.th->ack)
		return XLB_DCNT_SC_SYN;
	if (is_decap_addr(alt, family))
		return XLB_DCNT_SC_ALT_LOCAL;
	sk = bpf_skc_lookup_tcp(ctx, &in.tuple, in.tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return XLB_DCNT_SC_HANDED_ON;
	if (sk->state != BPF_TCP_LISTEN)
		outcome = XLB_DCNT_SC_SOCKET;
	else if (is_syncookie_ack(sk, &in, data_end))
		outcome = XLB_DCNT_SC_SYNCOOKIE;
	else
		outcome = XLB_DCNT_SC_HANDED_ON;
	bpf_sk_release(sk);
	return outcome;
}

/* Header checksum of an outer IPv4 header of 20 or 28 bytes (ihl 5 or 7). */
static __always_inline __u16 v4_csum_outer(struct iphdr *iph, void *data_end)
{
	__u16 *w = (__u16 *)iph;
	__u64 sum = 0;
	int i;

	iph->check = 0;
#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	if (iph->ihl == 7 && (void *)(w + 14) <= data_end) {
#pragma unroll
		for (i = 10; i < 14; i++)
			sum += w[i];
	}
	return csum_fold(sum);
}

/*
 * Address the outer header to the alternate and clear the carrier (see
 * the top of this file). 0, or -1 when the TTL runs out or the headers are
 * not where they were.
 */
static __always_inline int sc_readdress(void *data, void *data_end, const struct decap_info *di)
{
	/* 14 or 18, as constants: a bound the verifier keeps */
	void *l3 = data + (di->l2_len == ETH_HLEN ? ETH_HLEN : ETH_HLEN + sizeof(struct vlan_hdr));
	struct carrier_word *w = carrier_of(data, data_end, di);
	struct ipv6hdr *ip6h = l3;
	struct iphdr *iph = l3;
	__be32 *alt;

	if (!w)
		return -1;
	alt = (__be32 *)(w + 1);
	if (di->outer_proto == ETH_P_IP) {
		if ((void *)(iph + 1) > data_end || iph->ttl <= 1)
			return -1;
		iph->ttl--;
		iph->daddr = alt[0];
		alt[0] = 0;
		w->flags |= XLB_CARRIER_F_HANDED_OVER;
		iph->check = v4_csum_outer(iph, data_end);
		return 0;
	}
	if ((void *)(ip6h + 1) > data_end || ip6h->hop_limit <= 1)
		return -1;
	ip6h->hop_limit--;
	__builtin_memcpy(ip6h->daddr.in6_u.u6_addr32, alt, 16);
	__builtin_memset(alt, 0, 16);
	w->flags |= XLB_CARRIER_F_HANDED_OVER;
	return 0;
}

/* The FIB query for a readdressed outer header: where the alternate is. */
static __always_inline int sc_fib_query(void *data, void *data_end, const struct decap_info *di,
					struct bpf_fib_lookup *fib)
{
	void *l3 = data + (di->l2_len == ETH_HLEN ? ETH_HLEN : ETH_HLEN + sizeof(struct vlan_hdr));
	struct ipv6hdr *ip6h = l3;
	struct iphdr *iph = l3;

	__builtin_memset(fib, 0, sizeof(*fib));
	if (di->outer_proto == ETH_P_IP) {
		if ((void *)(iph + 1) > data_end)
			return -1;
		fib->family = XLB_AF_INET;
		fib->tos = iph->tos;
		fib->l4_protocol = iph->protocol;
		fib->tot_len = bpf_ntohs(iph->tot_len);
		fib->ipv4_src = iph->saddr;
		fib->ipv4_dst = iph->daddr;
		return 0;
	}
	if ((void *)(ip6h + 1) > data_end)
		return -1;
	fib->family = XLB_AF_INET6;
	fib->l4_protocol = ip6h->nexthdr;
	fib->tot_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	__builtin_memcpy(fib->ipv6_src, ip6h->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(fib->ipv6_dst, ip6h->daddr.in6_u.u6_addr32, 16);
	return 0;
}

#endif /* XLB_HANDOFF_H */
