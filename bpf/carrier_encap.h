/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * carrier_encap.h - v4_encap()/v6_encap() (encap.h) plus second chance's
 * carrier: the alternate prev_ring.h found (p->alt_id), written in the
 * outer headers as carrier.h and xlb_abi.h lay it out. forward()
 * (xlb.bpf.c) adds carrier_len() to the outer header size before its MTU
 * check and next-hop lookup, so both count the carrier. Counts SC_CARRIED.
 */
#ifndef XLB_CARRIER_ENCAP_H
#define XLB_CARRIER_ENCAP_H

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
#include "maps.h"
#include "stats.h"
#include "select.h"
#include "csum.h"
#include "outer.h"
#include "encap.h"
#include "carrier.h"

/* Outer IPv4 with the carrier option (ihl 7), as v4_write_outer() writes
 * the option-less one: whole words, checksum from the values. */
static __always_inline void v4_write_outer_carrier(struct iphdr *iph, const struct outer_flow *f,
						   const struct xlb_config *cfg, __be32 daddr,
						   __be32 alt)
{
	__u32 hdr_len = sizeof(*iph) + XLB_CARRIER_V4_OPT_LEN;
	__u32 tot_len = f->len + hdr_len;
	__u32 w0 = bpf_htonl(((0x40U | hdr_len / 4) << 24) | ((__u32)f->tos << 16) |
			     (tot_len & 0xffff));
	__u32 w1 = bpf_htonl(f->df ? XLB_IP_DF : 0);
	__u32 w2 = bpf_htonl(((__u32)XLB_TTL << 24) | ((__u32)IPPROTO_IPIP << 16));
	__u32 w5 = carrier_word(XLB_CARRIER_V4_OPT_LEN);
	__be32 saddr = v4_outer_src(cfg, f->hash);
	__u32 *w = (__u32 *)iph;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = saddr;
	w[4] = daddr;
	w[5] = w5;
	w[6] = alt;
	iph->check = csum_fold((__u64)w0 + w1 + w2 + saddr + daddr + w5 + alt);
}

/* The destination-options header after an outer IPv6 header. */
static __always_inline void v6_write_carrier(void *hdr, __u8 nexthdr, const __be32 *alt)
{
	__u32 *w = hdr;

	w[0] = bpf_htonl(((__u32)nexthdr << 24) | ((XLB_CARRIER_V6_HDR_LEN / 8 - 1) << 16) |
			 XLB_IPV6_PAD2);
	w[1] = carrier_word(XLB_CARRIER_V6_OPT_LEN);
	__builtin_memcpy(&w[2], alt, 16);
}

/* A GUE variant 0 header whose private data is the carrier. */
static __always_inline void gue_write_carrier(void *hdr, __u8 inner_family, __u8 family,
					      const __be32 *alt)
{
	__u32 priv = gue_carrier_len(family);
	__u8 proto = inner_family == XLB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u32 *w = hdr;

	w[0] = bpf_htonl(((priv / 4) << 24) | ((__u32)proto << 16));
	w[1] = carrier_word(priv);
	if (family == XLB_FAMILY_V4)
		w[2] = alt[0];
	else
		__builtin_memcpy(&w[2], alt, 16);
}

#define V4_GUE_HDRS (sizeof(struct iphdr) + sizeof(struct udphdr))
#define V6_GUE_HDRS (sizeof(struct ipv6hdr) + sizeof(struct udphdr))
#define V4_GUE_CARRIER_HDRS (V4_GUE_HDRS + sizeof(struct gue_hdr) + XLB_CARRIER_GUE_V4_LEN)
#define V6_GUE_CARRIER_HDRS (V6_GUE_HDRS + sizeof(struct gue_hdr) + XLB_CARRIER_GUE_V6_LEN)

/* v4_encap()/v6_encap() with the carrier of p->alt_id. */
static __always_inline int encap_with_carrier(struct xdp_md *ctx, struct xlb_pkt *p,
					      const struct xlb_config *cfg,
					      const struct xlb_real *real,
					      const struct next_hop *nh, int gue)
{
	__u32 extra = carrier_len(real->family, gue);
	__u32 hdr_len = outer_hdr_len(real->family, gue) + extra;
	__u16 eth_proto = real->family == XLB_FAMILY_V4 ? ETH_P_IP : ETH_P_IPV6;
	struct xlb_real *alt = lookup_real(p->alt_id);
	void *data, *data_end, *l3;
	struct outer_flow f;

	if (!alt || push_outer(ctx, p->l3_off, hdr_len))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	l3 = data + sizeof(struct ethhdr);
	/* the shortest layout (IPv4 with the option); each branch checks its own */
	if (l3 + sizeof(struct iphdr) + XLB_CARRIER_V4_OPT_LEN > data_end)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	write_eth(data, nh->dmac, nh->smac, eth_proto);
	outer_flow_of(&f, p, gue);
	/* one branch per layout, its length a constant: bounds the verifier keeps */
	if (gue && real->family == XLB_FAMILY_V4) {
		if (l3 + V4_GUE_CARRIER_HDRS > data_end)
			return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
		f.len += extra;
		v4_write_outer(l3, &f, cfg, real->addr[0]);
		gue_write_carrier(l3 + V4_GUE_HDRS, p->flow.family, XLB_FAMILY_V4, alt->addr);
	} else if (gue) {
		if (l3 + V6_GUE_CARRIER_HDRS > data_end)
			return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
		f.len += extra;
		v6_write_outer(l3, &f, cfg, real->addr);
		gue_write_carrier(l3 + V6_GUE_HDRS, p->flow.family, XLB_FAMILY_V6, alt->addr);
	} else if (real->family == XLB_FAMILY_V4) {
		v4_write_outer_carrier(l3, &f, cfg, real->addr[0], alt->addr[0]);
	} else {
		if (l3 + sizeof(struct ipv6hdr) + XLB_CARRIER_V6_HDR_LEN > data_end)
			return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
		f.len += extra;
		v6_write_outer(l3, &f, cfg, real->addr);
		((struct ipv6hdr *)l3)->nexthdr = IPPROTO_DSTOPTS;
		v6_write_carrier(l3 + sizeof(struct ipv6hdr), outer_next_proto(&f), alt->addr);
	}
	count(XLB_CNT_SC_CARRIED);
	return tx_action(nh);
}

#endif /* XLB_CARRIER_ENCAP_H */
