// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * healthcheck.bpf.c - tc egress of the balancer's interface: send health
 * probes to VIP:port through the tunnel to one chosen real.
 *
 * The control plane's probe sockets set SO_MARK = XLB_HC_MARK_BASE | n and
 * connect to the VIP; policy routing sends them out of this interface.
 * Here the mark selects a target (`hc_targets`: the real, its MAC, GUE or
 * not) and the packet gets the outer header the balancer would give a
 * client's packet (see encap.h): IPIP / IP6IP6 / IPv4-in-IPv6, or GUE
 * (outer IP + UDP to config.gue_port, no GUE header); TTL 64, TOS copied,
 * IPv4 DF and id 0, outer source = config prefix with per-flow low bits.
 * The real decapsulates and answers the probe's source (this host) directly.
 *
 * Next hop: target MAC, else config.gw_mac (Ethernet destination
 * rewritten, TC_ACT_OK), else with XLB_CFG_F_FIB_LOOKUP the mark is
 * cleared (policy routing must not apply to the outer packet) and
 * bpf_redirect_neigh() routes the outer packet and resolves its neighbour.
 * Unmarked packets pass untouched; a marked one that cannot be sent to
 * its real is dropped, never sent as is.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define HC_TTL 64
#define HC_IP_DF 0x4000

/* mark -> target. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_HC_TARGETS);
	__type(key, __u32);
	__type(value, struct xlb_hc_target);
} hc_targets SEC(".maps");

/* The balancer's `config`: the same definition, so the running balancer's
 * pinned map is reused and the two programs agree. */
#include "config_map.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_HCNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hc_counters SEC(".maps");

/* What to build, gathered before the packet is touched. */
struct probe {
	const struct xlb_hc_target *target;
	const struct xlb_config *cfg;
	__u32 inner_len;   /* inner IP packet bytes */
	__u32 hash;	   /* per-flow bits for the outer source and GUE port */
	__u16 inner_proto; /* ETH_P_IP / ETH_P_IPV6 of the inner packet */
	__u8 tos;
	__u8 gue;
};

/* The single exit: count why, return the verdict. */
static __always_inline int record(enum xlb_hc_counter_index why, int verdict)
{
	__u32 key = why;
	__u64 *count = bpf_map_lookup_elem(&hc_counters, &key);

	if (count)
		*count += 1;
	return verdict;
}

static __always_inline int is_probe_mark(__u32 mark)
{
	return (mark >> XLB_HC_MARK_INDEX_BITS) == (XLB_HC_MARK_BASE >> XLB_HC_MARK_INDEX_BITS);
}

static __always_inline int is_zero_mac(const __u8 *mac)
{
	return !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]);
}

/* Inner family, length and TOS/traffic class; -1 if not IPv4/IPv6. */
static __always_inline int read_inner(struct __sk_buff *skb, struct probe *p)
{
	__u8 first[2];

	p->inner_proto = bpf_ntohs(skb->protocol);
	if (p->inner_proto != ETH_P_IP && p->inner_proto != ETH_P_IPV6)
		return -1;
	if (skb->len <= ETH_HLEN || bpf_skb_load_bytes(skb, ETH_HLEN, first, sizeof(first)))
		return -1;
	p->inner_len = skb->len - ETH_HLEN;
	if (p->inner_proto == ETH_P_IP)
		p->tos = first[1];
	else
		p->tos = (__u8)((first[0] & 0x0f) << 4 | first[1] >> 4);
	return 0;
}

static __always_inline __u32 outer_len(const struct probe *p)
{
	__u32 len =
		p->target->family == XLB_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	return p->gue ? len + sizeof(struct udphdr) : len;
}

/* Outer protocol number: UDP for GUE, else what the inner packet is. */
static __always_inline __u8 outer_next_proto(const struct probe *p)
{
	if (p->gue)
		return IPPROTO_UDP;
	return p->inner_proto == ETH_P_IP ? IPPROTO_IPIP : IPPROTO_IPV6;
}

/* Open a gap for the outer header between Ethernet and the inner IP. */
static __always_inline int grow(struct __sk_buff *skb, const struct probe *p)
{
	__u64 flags = p->target->family == XLB_FAMILY_V4 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
							 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV6;

	if (p->gue)
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	return bpf_skb_adjust_room(skb, (__s32)outer_len(p), BPF_ADJ_ROOM_MAC, flags);
}

static __always_inline void fill_gue(struct udphdr *uh, const struct probe *p)
{
	uh->source = bpf_htons(0xc000 | ((p->hash >> 16) & 0x3fff));
	uh->dest = p->cfg->gue_port;
	uh->len = bpf_htons(p->inner_len + sizeof(*uh));
	uh->check = 0; /* allowed for tunnels over IPv4 and IPv6 (RFC 6935) */
}

static __always_inline int v4_write_outer(struct __sk_buff *skb, const struct probe *p)
{
	struct {
		struct iphdr ip;
		struct udphdr udp;
	} hdr;

	__builtin_memset(&hdr, 0, sizeof(hdr));
	hdr.ip.version = 4;
	hdr.ip.ihl = 5;
	hdr.ip.tos = p->tos;
	hdr.ip.tot_len = bpf_htons(p->inner_len + outer_len(p));
	hdr.ip.frag_off = bpf_htons(HC_IP_DF);
	hdr.ip.ttl = HC_TTL;
	hdr.ip.protocol = outer_next_proto(p);
	hdr.ip.saddr = bpf_htonl((bpf_ntohl(p->cfg->src_v4) & 0xffff0000) | (p->hash & 0xffff));
	hdr.ip.daddr = p->target->addr[0];
	hdr.ip.check = v4_csum_hdr(&hdr.ip);
	if (p->gue)
		fill_gue(&hdr.udp, p);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &hdr, outer_len(p), 0);
}

static __always_inline int v6_write_outer(struct __sk_buff *skb, const struct probe *p)
{
	struct {
		struct ipv6hdr ip;
		struct udphdr udp;
	} hdr;

	__builtin_memset(&hdr, 0, sizeof(hdr));
	*(__be32 *)&hdr.ip = bpf_htonl((6U << 28) | ((__u32)p->tos << 20) | (p->hash & 0xfffff));
	hdr.ip.payload_len = bpf_htons(p->inner_len + outer_len(p) - sizeof(hdr.ip));
	hdr.ip.nexthdr = outer_next_proto(p);
	hdr.ip.hop_limit = HC_TTL;
	hdr.ip.saddr.in6_u.u6_addr32[0] = p->cfg->src_v6[0];
	hdr.ip.saddr.in6_u.u6_addr32[1] = p->cfg->src_v6[1];
	hdr.ip.saddr.in6_u.u6_addr32[2] = p->cfg->src_v6[2];
	hdr.ip.saddr.in6_u.u6_addr32[3] = bpf_htonl(p->hash);
	__builtin_memcpy(hdr.ip.daddr.in6_u.u6_addr32, p->target->addr, 16);
	if (p->gue)
		fill_gue(&hdr.udp, p);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &hdr, outer_len(p), 0);
}

/* Ethernet type of the outer packet, and the destination MAC if we know it. */
static __always_inline int write_eth(struct __sk_buff *skb, const __u8 *dmac, __u16 proto)
{
	__be16 h_proto = bpf_htons(proto);

	if (dmac && bpf_skb_store_bytes(skb, 0, dmac, ETH_ALEN, 0))
		return -1;
	return bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &h_proto, sizeof(h_proto), 0);
}

/* The MAC to send to, or NULL when the FIB must decide. */
static __always_inline const __u8 *next_hop_mac(const struct probe *p)
{
	if (!is_zero_mac(p->target->mac))
		return p->target->mac;
	if (!is_zero_mac(p->cfg->gw_mac))
		return p->cfg->gw_mac;
	return NULL;
}

static __always_inline int encap_probe(struct __sk_buff *skb, struct probe *p)
{
	const __u8 *dmac = next_hop_mac(p);
	int v4 = p->target->family == XLB_FAMILY_V4;

	if (!dmac && !(p->cfg->flags & XLB_CFG_F_FIB_LOOKUP))
		return record(XLB_HCNT_DROP_NO_ROUTE, TC_ACT_SHOT);
	if (grow(skb, p))
		return record(XLB_HCNT_DROP_ENCAP, TC_ACT_SHOT);
	if (v4 ? v4_write_outer(skb, p) : v6_write_outer(skb, p))
		return record(XLB_HCNT_DROP_ENCAP, TC_ACT_SHOT);
	if (write_eth(skb, dmac, v4 ? ETH_P_IP : ETH_P_IPV6))
		return record(XLB_HCNT_DROP_ENCAP, TC_ACT_SHOT);
	record(v4 ? XLB_HCNT_ENCAP_V4 : XLB_HCNT_ENCAP_V6, 0);
	if (dmac)
		return TC_ACT_OK;
	/* Unmarked, the outer packet follows the main table, not the probe rule. */
	skb->mark = 0;
	return record(XLB_HCNT_FIB_REDIRECT, (int)bpf_redirect_neigh(skb->ifindex, NULL, 0, 0));
}

SEC("tc")
int xlb_healthcheck(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;
	__u32 zero = 0;
	struct probe p;

	if (!is_probe_mark(mark))
		return record(XLB_HCNT_PASS_UNMARKED, TC_ACT_OK);
	__builtin_memset(&p, 0, sizeof(p));
	p.target = bpf_map_lookup_elem(&hc_targets, &mark);
	if (!p.target)
		return record(XLB_HCNT_DROP_NO_TARGET, TC_ACT_SHOT);
	p.cfg = bpf_map_lookup_elem(&config, &zero);
	if (!p.cfg || (p.target->family != XLB_FAMILY_V4 && p.target->family != XLB_FAMILY_V6))
		return record(XLB_HCNT_DROP_NO_ROUTE, TC_ACT_SHOT);
	if (read_inner(skb, &p))
		return record(XLB_HCNT_DROP_MALFORMED, TC_ACT_SHOT);
	p.gue = !!(p.target->flags & XLB_HC_F_GUE);
	p.hash = bpf_get_hash_recalc(skb);
	return encap_probe(skb, &p);
}
