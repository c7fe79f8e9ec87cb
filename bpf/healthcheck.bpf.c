// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * healthcheck.bpf.c - tc egress of the balancer's interface: send health
 * probes to VIP:port through the tunnel to one chosen real.
 *
 * The control plane's probe sockets set SO_MARK = XLB_HC_MARK_BASE | n and
 * connect to the VIP; policy routing sends them out of this interface.
 * Here the mark selects a target (`hc_targets`: the real, its MAC, GUE or
 * not) and the packet gets exactly the outer headers a client's packet of
 * the same 5-tuple gets from the balancer: the same builders (outer.h) and
 * the same flow hash (hash.h) with the probe VIP's hash flags, looked up
 * in the balancer's (shared, pinned) `vips` map; to an address that is no
 * VIP, or for a protocol other than TCP/UDP (ports 0), without flags.
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
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "hash.h"
#include "outer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* mark -> target. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_HC_TARGETS);
	__type(key, __u32);
	__type(value, struct xlb_hc_target);
} hc_targets SEC(".maps");

/* The balancer's `config` and `vips`: the same definitions, so the running
 * balancer's pinned maps are reused and the two programs agree. */
#include "config_map.h"
#include "vip_lookup.h"

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
	struct flow_tuple flow; /* as the balancer would parse it */
	struct outer_flow outer;
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

/* TCP/UDP ports at `off`; they stay 0 for other protocols or if unreadable. */
static __always_inline void read_ports(struct __sk_buff *skb, __u32 off, struct flow_tuple *flow)
{
	__be16 ports[2];

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return;
	flow->sport = ports[0];
	flow->dport = ports[1];
}

static __always_inline int v4_read_inner(struct __sk_buff *skb, struct probe *p)
{
	struct iphdr iph;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)))
		return -1;
	p->flow.family = XLB_FAMILY_V4;
	p->flow.saddr[0] = iph.saddr;
	p->flow.daddr[0] = iph.daddr;
	p->flow.proto = iph.protocol;
	p->outer.tos = iph.tos;
	p->outer.df = !!(iph.frag_off & bpf_htons(XLB_IP_DF));
	/* the balancer takes no ports from a fragment (it passes fragments) */
	if (!(iph.frag_off & bpf_htons(XLB_IP_MF | XLB_IP_OFFSET)))
		read_ports(skb, ETH_HLEN + iph.ihl * 4, &p->flow);
	return 0;
}

/* Ports only right after the fixed header: probe sockets add no extension headers. */
static __always_inline int v6_read_inner(struct __sk_buff *skb, struct probe *p)
{
	struct ipv6hdr ip6h;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6h, sizeof(ip6h)))
		return -1;
	p->flow.family = XLB_FAMILY_V6;
	__builtin_memcpy(p->flow.saddr, ip6h.saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(p->flow.daddr, ip6h.daddr.in6_u.u6_addr32, 16);
	p->flow.proto = ip6h.nexthdr;
	p->outer.tos = (ip6h.priority << 4) | (ip6h.flow_lbl[0] >> 4);
	read_ports(skb, ETH_HLEN + sizeof(ip6h), &p->flow);
	return 0;
}

/* The inner packet's flow, length and TOS; -1 if not IPv4/IPv6. */
static __always_inline int read_inner(struct __sk_buff *skb, struct probe *p)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	int err;

	if (skb->len <= ETH_HLEN)
		return -1;
	if (proto == ETH_P_IP)
		err = v4_read_inner(skb, p);
	else if (proto == ETH_P_IPV6)
		err = v6_read_inner(skb, p);
	else
		return -1;
	p->outer.family = p->flow.family;
	p->outer.len = skb->len - ETH_HLEN;
	return err;
}

/* The balancer's flow hash: with the flags of the VIP the probe goes to. */
static __always_inline __u32 probe_hash(const struct probe *p)
{
	struct xlb_vip_meta vip;
	__u32 flags = lookup_vip(&p->flow, p->cfg, &vip) ? vip.flags : 0;

	return hash_flow(&p->flow, flags, p->cfg->hash_seed);
}

/* Open a gap for the outer header between Ethernet and the inner IP. */
static __always_inline int grow(struct __sk_buff *skb, const struct probe *p)
{
	__u8 family = p->target->family;
	__u64 flags = family == XLB_FAMILY_V4 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
					      : BPF_F_ADJ_ROOM_ENCAP_L3_IPV6;

	if (p->outer.gue)
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	return bpf_skb_adjust_room(skb, (__s32)outer_hdr_len(family, p->outer.gue),
				   BPF_ADJ_ROOM_MAC, flags);
}

/* The outer headers, built on the stack (outer.h), into the gap. */
static __always_inline int store_outer(struct __sk_buff *skb, const struct probe *p)
{
	__u32 hdr[XLB_OUTER_MAX_LEN / sizeof(__u32)];

	__builtin_memset(hdr, 0, sizeof(hdr));
	write_outer(hdr, &p->outer, p->cfg, p->target->addr, p->target->family);
	return bpf_skb_store_bytes(skb, ETH_HLEN, hdr,
				   outer_hdr_len(p->target->family, p->outer.gue), 0);
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
	if (store_outer(skb, p))
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
	p.outer.gue = !!(p.target->flags & XLB_HC_F_GUE);
	p.outer.hash = probe_hash(&p);
	return encap_probe(skb, &p);
}
