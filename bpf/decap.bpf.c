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

SEC("xdp")
int xlb_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decap_info di;
	int verdict, action = XDP_PASS;

	verdict = classify_encap(data, data_end, &di);
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
	if (verdict == DECAP_DROP) {
		action = TC_ACT_SHOT;
	} else if (verdict == DECAP_STRIP && tc_strip(skb, &di)) {
		di.counter = XLB_DCNT_DROP_MALFORMED;
		action = TC_ACT_SHOT;
	}
	count_decap(di.counter);
	return action;
}
