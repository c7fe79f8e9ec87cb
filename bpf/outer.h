/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * outer.h - the tunnel's outer headers, built in one place for the balancer
 * (encap.h, XDP) and the health probes (healthcheck.bpf.c, tc egress): a
 * probe must leave with the header a client packet of the same 5-tuple
 * gets, or an ECMP fabric may carry it on another path than the traffic
 * it checks.
 *
 * Outer IPv4 (IPIP, proto 4; with GUE proto 17): version 4, ihl 5, TOS
 * copied from the inner, id 0, DF copied from the inner IPv4 header (RFC
 * 2003; never set over an inner IPv6 packet), TTL 64, source = config
 * src_v4 with its low 16 bits replaced by the flow hash, destination = the
 * real, checksum computed.
 * Outer IPv6 (next header 41 for IPv6 inner, 4 for IPv4 inner, 17 for
 * GUE): traffic class copied from the inner, flow label = hash & 0xfffff,
 * hop limit 64, source = config src_v6 with its low 32 bits = the hash.
 * GUE (variant 1, no GUE header): UDP from 0xc000 | (hash >> 16 & 0x3fff)
 * to config.gue_port, length 8 + inner, checksum 0 for both families (RFC
 * 6935/6936 allow it for tunnels over IPv6; the inner packet carries its
 * own checksums).
 * The hash is hash_flow() (hash.h) of the inner 5-tuple with the VIP's
 * hash flags and config.hash_seed.
 */
#ifndef XLB_OUTER_H
#define XLB_OUTER_H

#include <linux/types.h>
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

/* The most outer header bytes: IPv6 + UDP (xlb/health.py MAX_OUTER_BYTES). */
#define XLB_OUTER_MAX_LEN (sizeof(struct ipv6hdr) + sizeof(struct udphdr))

/* What the outer headers take from the inner packet and the tunnel. */
struct outer_flow {
	__u32 hash;  /* hash_flow() of the inner 5-tuple */
	__u32 len;   /* inner IP packet bytes */
	__u8 family; /* enum xlb_family of the inner packet */
	__u8 tos;    /* inner IPv4 TOS or IPv6 traffic class */
	__u8 df;     /* inner IPv4 DF bit set */
	__u8 gue;    /* outer UDP (GUE) rather than IP-in-IP */
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

/* Outer protocol / next header: UDP for GUE, else what the inner packet is. */
static __always_inline __u8 outer_next_proto(const struct outer_flow *f)
{
	if (f->gue)
		return IPPROTO_UDP;
	return f->family == XLB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
}

static __always_inline void write_gue(struct udphdr *uh, const struct outer_flow *f,
				      const struct xlb_config *cfg)
{
	uh->source = gue_src_port(f->hash);
	uh->dest = cfg->gue_port;
	uh->len = bpf_htons(f->len + sizeof(*uh));
	uh->check = 0;
}

/*
 * Outer IPv4 (+ UDP for GUE) at `iph`, which must have room for
 * outer_hdr_len(XLB_FAMILY_V4, f->gue) bytes. The header goes as whole
 * 32-bit words, checksum computed from the values rather than re-read:
 * reading back a header just written with narrower stores stalls store
 * forwarding.
 */
static __always_inline void v4_write_outer(struct iphdr *iph, const struct outer_flow *f,
					   const struct xlb_config *cfg, __be32 daddr)
{
	__u32 tot_len = f->len + outer_hdr_len(XLB_FAMILY_V4, f->gue);
	/* version 4, ihl 5, tos | tot_len */
	__u32 w0 = bpf_htonl((0x45U << 24) | ((__u32)f->tos << 16) | (tot_len & 0xffff));
	/* id 0 | frag_off */
	__u32 w1 = bpf_htonl(f->df ? XLB_IP_DF : 0);
	/* ttl, protocol | check 0 */
	__u32 w2 = bpf_htonl(((__u32)XLB_TTL << 24) | ((__u32)outer_next_proto(f) << 16));
	__be32 saddr = v4_outer_src(cfg, f->hash);
	__u32 *w = (__u32 *)iph;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = saddr;
	w[4] = daddr;
	iph->check = v4_csum_words(w0, w1, w2, saddr, daddr);
	if (f->gue)
		write_gue((struct udphdr *)(iph + 1), f, cfg);
}

/*
 * Outer IPv6 (+ UDP for GUE) at `ip6h`, which must have room for
 * outer_hdr_len(XLB_FAMILY_V6, f->gue) bytes.
 */
static __always_inline void v6_write_outer(struct ipv6hdr *ip6h, const struct outer_flow *f,
					   const struct xlb_config *cfg, const __be32 *daddr)
{
	__u32 payload_len = f->len + outer_hdr_len(XLB_FAMILY_V6, f->gue) - sizeof(*ip6h);

	/* version 6, traffic class, flow label */
	*(__be32 *)ip6h = bpf_htonl((6U << 28) | ((__u32)f->tos << 20) | (f->hash & 0xfffff));
	ip6h->payload_len = bpf_htons(payload_len);
	ip6h->nexthdr = outer_next_proto(f);
	ip6h->hop_limit = XLB_TTL;
	v6_outer_src(ip6h->saddr.in6_u.u6_addr32, cfg, f->hash);
	__builtin_memcpy(ip6h->daddr.in6_u.u6_addr32, daddr, 16);
	if (f->gue)
		write_gue((struct udphdr *)(ip6h + 1), f, cfg);
}

/* The outer headers for a real at `daddr` of `family` (enum xlb_family). */
static __always_inline void write_outer(void *hdr, const struct outer_flow *f,
					const struct xlb_config *cfg, const __be32 *daddr,
					__u8 family)
{
	if (family == XLB_FAMILY_V4)
		v4_write_outer(hdr, f, cfg, daddr[0]);
	else
		v6_write_outer(hdr, f, cfg, daddr);
}

#endif /* XLB_OUTER_H */
