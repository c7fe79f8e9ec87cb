// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * decap.bpf.c - for the reals: strip the balancer's outer header(s) and
 * hand the inner packet (client -> VIP) to the local stack, where a socket
 * bound to the VIP answers the client directly.
 *
 * xlb_decap (XDP): bpf_xdp_adjust_head() removes the outer IP (+ UDP); the
 * Ethernet header (and its VLAN tag, if any) is rewritten in front of the
 * inner packet with the same MACs and the inner family's ethertype;
 * XDP_PASS. xlb_decap_tc (tc, ingress): bpf_skb_change_proto() when the
 * family changes, then bpf_skb_adjust_room(BPF_ADJ_ROOM_MAC) removes the
 * rest; TC_ACT_OK. Both drop malformed encapsulation (XDP_DROP /
 * TC_ACT_SHOT). What is stripped and what is counted: decap.h.
 *
 * A frame that carries second chance's alternate is first asked whether
 * it is ours (handoff.h): if not, it is readdressed to the alternate and
 * sent on (XDP: the FIB's next hop, or back to the hop it came from; tc:
 * bpf_redirect_neigh()); if that fails it is dropped.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "parse.h"
#include "decap.h"
#include "handoff.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define XLB_DECAP_PULL_LEN 128 /* eth + vlan + outer v6 + udp + inner v6 */

/* Remove strip_len bytes after the L2 header; keep MACs and VLAN tag. */
static __always_inline int xdp_strip(struct xdp_md *ctx, const struct decap_info *di)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[sizeof(struct ethhdr) + sizeof(struct vlan_hdr)];
	int tagged = di->l2_len != sizeof(struct ethhdr);

	if (data + sizeof(l2) > data_end)
		return -1;
	__builtin_memcpy(l2, data, sizeof(l2));
	if (bpf_xdp_adjust_head(ctx, di->strip_len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(l2) > data_end)
		return -1;
	if (tagged) {
		__builtin_memcpy(data, l2, sizeof(l2) - 2);
		*(__be16 *)(data + sizeof(l2) - 2) = bpf_htons(di->inner_proto);
	} else {
		__builtin_memcpy(data, l2, ETH_ALEN * 2);
		*(__be16 *)(data + ETH_ALEN * 2) = bpf_htons(di->inner_proto);
	}
	return 0;
}

/* Send a frame that is not ours to the alternate; an XDP action. */
static __always_inline int xdp_hand_on(struct xdp_md *ctx, const struct decap_info *di)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib;
	struct ethhdr *eth = data;
	__u8 sender[ETH_ALEN];
	long rc;

	if ((void *)(eth + 1) > data_end || sc_readdress(data, data_end, di) ||
	    sc_fib_query(data, data_end, di, &fib))
		return XDP_DROP;
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		if (fib.ifindex == ctx->ingress_ifindex)
			return XDP_TX;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc != BPF_FIB_LKUP_RET_FWD_DISABLED && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return XDP_DROP;
	/* back to the hop it came from (handoff.h) */
	__builtin_memcpy(sender, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, sender, ETH_ALEN);
	return XDP_TX;
}

/* A frame with a carrier: hand it on (an action) or strip it (XDP_PASS). */
static __always_inline int xdp_second_chance(struct xdp_md *ctx, struct decap_info *di)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 outcome = sc_decide(ctx, data, data_end, di);
	int action;

	if (outcome != XLB_DCNT_SC_HANDED_ON) {
		count_decap(outcome);
		return XDP_PASS;
	}
	action = xdp_hand_on(ctx, di);
	count_decap(action == XDP_DROP ? XLB_DCNT_SC_NO_ROUTE : XLB_DCNT_SC_HANDED_ON);
	return action;
}

SEC("xdp")
int xlb_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decap_info di;
	int verdict, action = XDP_PASS;

	verdict = classify_encap(data, data_end, &di);
	if (verdict == DECAP_STRIP && di.carrier_off) {
		action = xdp_second_chance(ctx, &di);
		if (action != XDP_PASS)
			return action; /* handed on or dropped, and counted */
	}
	if (verdict == DECAP_DROP) {
		action = XDP_DROP;
	} else if (verdict == DECAP_STRIP && xdp_strip(ctx, &di)) {
		di.counter = XLB_DCNT_DROP_MALFORMED;
		action = XDP_DROP;
	}
	count_decap(di.counter);
	return action;
}

static __always_inline int tc_strip(struct __sk_buff *skb, const struct decap_info *di)
{
	__u32 strip = di->strip_len, proto_off = di->l2_len - 2;
	void *data, *data_end;

	if (di->inner_proto != di->outer_proto) {
		/* Rewrites the L3 room by the header size difference. */
		if (bpf_skb_change_proto(skb, bpf_htons(di->inner_proto), 0))
			return -1;
		if (di->inner_proto == ETH_P_IP)
			strip -= sizeof(struct ipv6hdr) - sizeof(struct iphdr);
		else
			strip += sizeof(struct ipv6hdr) - sizeof(struct iphdr);
	}
	if (bpf_skb_adjust_room(skb, -(__s32)strip, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (proto_off > sizeof(struct ethhdr) + sizeof(struct vlan_hdr) - 2)
		return -1;
	if (data + proto_off + 2 > data_end)
		return -1;
	*(__be16 *)(data + proto_off) = bpf_htons(di->inner_proto);
	return 0;
}

/* Send a frame that is not ours to the alternate; a tc action. */
static __always_inline int tc_hand_on(struct __sk_buff *skb, const struct decap_info *di)
{
	if (sc_readdress((void *)(long)skb->data, (void *)(long)skb->data_end, di))
		return TC_ACT_SHOT;
	/* routed and its neighbour resolved by the kernel, out of this device */
	return (int)bpf_redirect_neigh(skb->ifindex, NULL, 0, 0);
}

/* A frame with a carrier: hand it on (an action) or strip it (TC_ACT_OK). */
static __always_inline int tc_second_chance(struct __sk_buff *skb, struct decap_info *di)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 outcome = sc_decide(skb, data, data_end, di);
	int action;

	if (outcome != XLB_DCNT_SC_HANDED_ON) {
		count_decap(outcome);
		return TC_ACT_OK;
	}
	action = tc_hand_on(skb, di);
	count_decap(action == TC_ACT_SHOT ? XLB_DCNT_SC_NO_ROUTE : XLB_DCNT_SC_HANDED_ON);
	return action;
}

SEC("tc")
int xlb_decap_tc(struct __sk_buff *skb)
{
	struct decap_info di;
	int verdict, action = TC_ACT_OK;
	__u32 pull;

	if (skb->data_end - skb->data < XLB_DECAP_PULL_LEN &&
	    skb->data_end - skb->data < skb->len) {
		pull = skb->len < XLB_DECAP_PULL_LEN ? skb->len : XLB_DECAP_PULL_LEN;
		bpf_skb_pull_data(skb, pull);
	}
	verdict = classify_encap((void *)(long)skb->data, (void *)(long)skb->data_end, &di);
	if (verdict == DECAP_STRIP && di.carrier_off) {
		action = tc_second_chance(skb, &di);
		if (action != TC_ACT_OK)
			return action; /* handed on or dropped, and counted */
	}
	if (verdict == DECAP_DROP) {
		action = TC_ACT_SHOT;
	} else if (verdict == DECAP_STRIP && tc_strip(skb, &di)) {
		di.counter = XLB_DCNT_DROP_MALFORMED;
		action = TC_ACT_SHOT;
	}
	count_decap(di.counter);
	return action;
}
