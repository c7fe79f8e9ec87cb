/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * encap.h - wrap the inner IP packet for its real and pick the next hop.
 *
 * Output frame: Ethernet (untagged: a VLAN tag on input is dropped) +
 * outer IPv4 (IPIP, proto 4) or outer IPv6 (next header 41 for IPv6
 * inner, 4 for IPv4 inner), or with GUE (variant 1, no GUE header) outer
 * IP + UDP (dst config.gue_port, src 0xc000 | (hash >> 16 & 0x3fff),
 * checksum 0 for both families: RFC 6935/6936 allow a zero UDP checksum
 * for tunnels over IPv6, and the inner packet carries its own checksums).
 * The inner IP packet follows byte for byte as it arrived (any Ethernet
 * padding after it stays after it).
 * Outer: TTL/hop limit 64, TOS/traffic class copied from the inner, IPv4
 * DF copied from the inner (RFC 2003) and id 0, IPv6 flow label = hash & 0xfffff; source = config
 * source with its low 16 (IPv4) / 32 (IPv6) bits replaced by the flow
 * hash, destination = the real.
 * Next hop: dst MAC = real.mac, else config.gw_mac, else (with
 * XLB_CFG_F_FIB_LOOKUP) bpf_fib_lookup(); src MAC = the frame's original
 * destination MAC (the FIB's smac when the FIB was used).
 */
#ifndef XLB_ENCAP_H
#define XLB_ENCAP_H

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
#include "common.h"
#include "csum.h"
#include "parse.h"

struct next_hop {
	__u8 dmac[6] XLB_MAC_ALIGNED;
	__u8 smac[6] XLB_MAC_ALIGNED;
	__u32 ifindex; /* 0: XDP_TX out of the ingress interface */
};

/* Outer header bytes (without Ethernet) for a real of `family`. */
static __always_inline __u32 outer_hdr_len(__u8 family, int gue)
{
	__u32 len = family == XLB_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	return gue ? len + sizeof(struct udphdr) : len;
}

static __always_inline __be32 v4_outer_src(const struct xlb_config *cfg, __u32 hash)
{
	return bpf_htonl((bpf_ntohl(cfg->src_v4) & 0xffff0000) | (hash & 0xffff));
}

static __always_inline void v6_outer_src(__be32 *dst, const struct xlb_config *cfg, __u32 hash)
{
	dst[0] = cfg->src_v6[0];
	dst[1] = cfg->src_v6[1];
	dst[2] = cfg->src_v6[2];
	dst[3] = bpf_htonl(hash);
}

static __always_inline __be16 gue_src_port(__u32 hash)
{
	return bpf_htons(0xc000 | ((hash >> 16) & 0x3fff));
}

static __always_inline int fib_next_hop(struct xdp_md *ctx, struct xlb_pkt *p,
					const struct xlb_config *cfg, const struct xlb_real *real,
					__u32 hdr_len, struct next_hop *nh)
{
	struct bpf_fib_lookup fib;
	long rc;

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.ifindex = ctx->ingress_ifindex;
	fib.tot_len = p->l3_len + hdr_len;
	if (real->family == XLB_FAMILY_V4) {
		fib.family = XLB_AF_INET;
		fib.tos = p->tos;
		fib.l4_protocol = IPPROTO_IPIP;
		fib.ipv4_src = v4_outer_src(cfg, p->hash);
		fib.ipv4_dst = real->addr[0];
	} else {
		fib.family = XLB_AF_INET6;
		fib.l4_protocol = IPPROTO_IPV6;
		v6_outer_src(fib.ipv6_src, cfg, p->hash);
		__builtin_memcpy(fib.ipv6_dst, real->addr, sizeof(fib.ipv6_dst));
	}
	/*
	 * A forwarding lookup (no BPF_FIB_LOOKUP_OUTPUT): with OUTPUT the IPv4
	 * lookup only considers routes out of the ingress device, so a real
	 * behind another device would be unreachable. It needs forwarding
	 * enabled on the ingress device, as any router does.
	 */
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_ROUTE);
	__builtin_memcpy(nh->dmac, fib.dmac, 6);
	__builtin_memcpy(nh->smac, fib.smac, 6);
	if (fib.ifindex != ctx->ingress_ifindex)
		nh->ifindex = fib.ifindex;
	return XLB_CONTINUE;
}

/* Fill *nh: real.mac, else gw_mac, else the FIB, else DROP_NO_ROUTE. */
static __always_inline int resolve_next_hop(struct xdp_md *ctx, struct xlb_pkt *p,
					    const struct xlb_config *cfg,
					    const struct xlb_real *real, __u32 hdr_len,
					    struct next_hop *nh)
{
	nh->ifindex = 0;
	copy_mac(nh->smac, p->eth_dst);
	if (!is_zero_mac(real->mac)) {
		copy_mac(nh->dmac, real->mac);
		return XLB_CONTINUE;
	}
	if (!is_zero_mac(cfg->gw_mac)) {
		copy_mac(nh->dmac, cfg->gw_mac);
		return XLB_CONTINUE;
	}
	if (cfg->flags & XLB_CFG_F_FIB_LOOKUP)
		return fib_next_hop(ctx, p, cfg, real, hdr_len, nh);
	return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_ROUTE);
}

static __always_inline void write_eth(struct ethhdr *eth, const __u8 *dst, const __u8 *src,
				      __u16 proto)
{
	copy_mac(eth->h_dest, dst);
	copy_mac(eth->h_source, src);
	/* one 2-byte store, not two byte stores (packed struct) */
	*(__be16 *)((void *)eth + __builtin_offsetof(struct ethhdr, h_proto)) = bpf_htons(proto);
}

/*
 * Make room for `hdr_len` bytes of new headers (after a fresh untagged
 * Ethernet header) in front of the IP header at p->l3_off. Returns 0 or
 * a negative error; data/data_end must be re-read afterwards.
 */
static __always_inline int push_outer(struct xdp_md *ctx, const struct xlb_pkt *p, __u32 hdr_len)
{
	return bpf_xdp_adjust_head(ctx, (int)p->l3_off - (int)(ETH_HLEN + hdr_len));
}

static __always_inline int tx_action(const struct next_hop *nh)
{
	if (nh->ifindex)
		return bpf_redirect(nh->ifindex, 0);
	return XDP_TX;
}

static __always_inline void write_gue(struct udphdr *uh, const struct xlb_config *cfg,
				      const struct xlb_pkt *p)
{
	uh->source = gue_src_port(p->hash);
	uh->dest = cfg->gue_port;
	uh->len = bpf_htons(p->l3_len + sizeof(*uh));
	uh->check = 0;
}

/*
 * The outer IPv4 header as whole 32-bit words, checksum included, computed
 * from the values rather than re-read from the packet.
 */
static __always_inline void v4_write_outer(struct iphdr *iph, const struct xlb_pkt *p,
					   __u16 tot_len, __u8 proto, __be32 saddr, __be32 daddr)
{
	/* version 4, ihl 5, tos | tot_len */
	__u32 w0 = bpf_htonl((0x45U << 24) | ((__u32)p->tos << 16) | tot_len);
	/* id 0 | frag_off */
	__u32 w1 = bpf_htonl(p->df ? XLB_IP_DF : 0);
	/* ttl, protocol | check 0 */
	__u32 w2 = bpf_htonl(((__u32)XLB_TTL << 24) | ((__u32)proto << 16));
	__u32 *w = (__u32 *)iph;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = saddr;
	w[4] = daddr;
	iph->check = v4_csum_words(w0, w1, w2, saddr, daddr);
}

/* IPv4 in IPv4 (IPIP), or IPv4 + UDP (GUE). */
static __always_inline int v4_encap(struct xdp_md *ctx, struct xlb_pkt *p,
				    const struct xlb_config *cfg, const struct xlb_real *real,
				    const struct next_hop *nh, int gue)
{
	__u32 hdr_len = outer_hdr_len(XLB_FAMILY_V4, gue);
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *uh;

	if (push_outer(ctx, p, hdr_len))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	iph = (void *)(eth + 1);
	uh = (void *)(iph + 1);
	if ((void *)(uh + 1) > data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);

	write_eth(eth, nh->dmac, nh->smac, ETH_P_IP);
	v4_write_outer(iph, p, p->l3_len + hdr_len, gue ? IPPROTO_UDP : IPPROTO_IPIP,
		       v4_outer_src(cfg, p->hash), real->addr[0]);
	if (gue)
		write_gue(uh, cfg, p);
	return tx_action(nh);
}

/* IPv6 or IPv4 in IPv6 (next header 41 / 4), or IPv6 + UDP (GUE). */
static __always_inline int v6_encap(struct xdp_md *ctx, struct xlb_pkt *p,
				    const struct xlb_config *cfg, const struct xlb_real *real,
				    const struct next_hop *nh, int gue)
{
	__u32 hdr_len = outer_hdr_len(XLB_FAMILY_V6, gue);
	void *data, *data_end;
	struct ethhdr *eth;
	struct ipv6hdr *ip6h;
	struct udphdr *uh;
	__u8 nexthdr;

	if (gue)
		nexthdr = IPPROTO_UDP;
	else
		nexthdr = p->flow.family == XLB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	if (push_outer(ctx, p, hdr_len))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip6h = (void *)(eth + 1);
	uh = (void *)(ip6h + 1);
	if ((void *)(uh + 1) > data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);

	write_eth(eth, nh->dmac, nh->smac, ETH_P_IPV6);
	*(__be32 *)ip6h = bpf_htonl((6U << 28) | ((__u32)p->tos << 20) | (p->hash & 0xfffff));
	ip6h->payload_len = bpf_htons(p->l3_len + hdr_len - sizeof(*ip6h));
	ip6h->nexthdr = nexthdr;
	ip6h->hop_limit = XLB_TTL;
	v6_outer_src(ip6h->saddr.in6_u.u6_addr32, cfg, p->hash);
	__builtin_memcpy(ip6h->daddr.in6_u.u6_addr32, real->addr, 16);
	if (gue)
		write_gue(uh, cfg, p);
	return tx_action(nh);
}

#endif /* XLB_ENCAP_H */
