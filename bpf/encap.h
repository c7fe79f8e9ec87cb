/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * encap.h - wrap the inner IP packet for its real and pick the next hop.
 *
 * Output frame: Ethernet (untagged: a VLAN tag on input is dropped) +
 * the outer headers of outer.h (IPIP, IPv6 or IPv4 in IPv6, or GUE), built
 * there for the health probes too, then the inner IP packet byte for byte
 * as it arrived (any Ethernet padding after it stays after it).
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
#include "parse.h"
#include "outer.h"

struct next_hop {
	__u8 dmac[6] XLB_MAC_ALIGNED;
	__u8 smac[6] XLB_MAC_ALIGNED;
	__u32 ifindex; /* 0: XDP_TX out of the ingress interface */
};

static __always_inline int fib_next_hop(struct xdp_md *ctx, struct xlb_pkt *p,
					const struct xlb_config *cfg, const struct xlb_real *real,
					__u32 hdr_len, struct next_hop *nh)
{
	struct bpf_fib_lookup fib;
	long rc;

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.ifindex = ctx->ingress_ifindex;
	fib.tot_len = p->ip.len + hdr_len;
	if (real->family == XLB_FAMILY_V4) {
		fib.family = XLB_AF_INET;
		fib.tos = p->ip.tos;
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

/* Whether a real of `real_family` can take an inner packet of
 * `inner_family`: IPv4 in IPv4 or IPv6, IPv6 in IPv6 (no IPv6 in IPv4). */
static __always_inline int real_carries(__u8 real_family, __u8 inner_family)
{
	return real_family == XLB_FAMILY_V6 ||
	       (real_family == XLB_FAMILY_V4 && inner_family == XLB_FAMILY_V4);
}

/* GUE (UDP) rather than IP-in-IP: the VIP's flag, or config's for all. */
static __always_inline int uses_gue(__u32 vip_flags, const struct xlb_config *cfg)
{
	return (vip_flags & XLB_VIP_F_GUE) || (cfg->flags & XLB_CFG_F_GUE_ALL);
}

/* A next hop out of the ingress interface, from `smac` (the frame's
 * destination MAC) to real.mac, else gw_mac: 1, or 0 when neither is set. */
static __always_inline int known_next_hop(const struct xlb_config *cfg, const struct xlb_real *real,
					  const __u8 *smac, struct next_hop *nh)
{
	nh->ifindex = 0;
	copy_mac(nh->smac, smac);
	if (!is_zero_mac(real->mac)) {
		copy_mac(nh->dmac, real->mac);
		return 1;
	}
	if (!is_zero_mac(cfg->gw_mac)) {
		copy_mac(nh->dmac, cfg->gw_mac);
		return 1;
	}
	return 0;
}

/* Fill *nh: real.mac, else gw_mac, else the FIB, else DROP_NO_ROUTE. */
static __always_inline int resolve_next_hop(struct xdp_md *ctx, struct xlb_pkt *p,
					    const struct xlb_config *cfg,
					    const struct xlb_real *real, __u32 hdr_len,
					    struct next_hop *nh)
{
	if (known_next_hop(cfg, real, p->eth_dst, nh))
		return XLB_CONTINUE;
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
 * Ethernet header) in front of the IP header at `l3_off`. Returns 0 or
 * a negative error; data/data_end must be re-read afterwards.
 */
static __always_inline int push_outer(struct xdp_md *ctx, __u32 l3_off, __u32 hdr_len)
{
	return bpf_xdp_adjust_head(ctx, (int)l3_off - (int)(ETH_HLEN + hdr_len));
}

static __always_inline int tx_action(const struct next_hop *nh)
{
	if (nh->ifindex)
		return bpf_redirect(nh->ifindex, 0);
	return XDP_TX;
}

/* What outer.h needs of the packet being sent to a real. */
static __always_inline void outer_flow_of(struct outer_flow *f, const struct xlb_pkt *p, int gue)
{
	f->hash = p->hash;
	f->len = p->ip.len;
	f->family = p->flow.family;
	f->tos = p->ip.tos;
	f->df = p->ip.df;
	f->gue = gue;
}

/*
 * Ethernet and outer IPv4 (+ UDP for f->gue) in front of the IP packet at
 * `l3_off`, for the real at `daddr`: 0, or -1 when the frame cannot take
 * them (the packet is then dropped: DROP_ENCAP; if the head already moved,
 * the frame is no longer the one that arrived).
 */
static __always_inline int v4_push_outer(struct xdp_md *ctx, __u32 l3_off,
					 const struct outer_flow *f, const struct xlb_config *cfg,
					 __be32 daddr, const struct next_hop *nh)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *uh;

	if (push_outer(ctx, l3_off, outer_hdr_len(XLB_FAMILY_V4, f->gue)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	iph = (void *)(eth + 1);
	uh = (void *)(iph + 1);
	if ((void *)(uh + 1) > data_end)
		return -1;
	write_eth(eth, nh->dmac, nh->smac, ETH_P_IP);
	v4_write_outer(iph, f, cfg, daddr);
	return 0;
}

/* IPv4 in IPv4 (IPIP), or IPv4 + UDP (GUE). */
static __always_inline int v4_encap(struct xdp_md *ctx, struct xlb_pkt *p,
				    const struct xlb_config *cfg, const struct xlb_real *real,
				    const struct next_hop *nh, int gue)
{
	struct outer_flow f;

	outer_flow_of(&f, p, gue);
	if (v4_push_outer(ctx, p->l3_off, &f, cfg, real->addr[0], nh))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	return tx_action(nh);
}

/* v4_push_outer() for a real at `daddr` (16 bytes): outer IPv6 (+ UDP). */
static __always_inline int v6_push_outer(struct xdp_md *ctx, __u32 l3_off,
					 const struct outer_flow *f, const struct xlb_config *cfg,
					 const __be32 *daddr, const struct next_hop *nh)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct ipv6hdr *ip6h;
	struct udphdr *uh;

	if (push_outer(ctx, l3_off, outer_hdr_len(XLB_FAMILY_V6, f->gue)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip6h = (void *)(eth + 1);
	uh = (void *)(ip6h + 1);
	if ((void *)(uh + 1) > data_end)
		return -1;
	write_eth(eth, nh->dmac, nh->smac, ETH_P_IPV6);
	v6_write_outer(ip6h, f, cfg, daddr);
	return 0;
}

/* IPv6 or IPv4 in IPv6 (next header 41 / 4), or IPv6 + UDP (GUE). */
static __always_inline int v6_encap(struct xdp_md *ctx, struct xlb_pkt *p,
				    const struct xlb_config *cfg, const struct xlb_real *real,
				    const struct next_hop *nh, int gue)
{
	struct outer_flow f;

	outer_flow_of(&f, p, gue);
	if (v6_push_outer(ctx, p->l3_off, &f, cfg, real->addr, nh))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_ENCAP);
	return tx_action(nh);
}

#endif /* XLB_ENCAP_H */
