/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.h - the balancer's per-packet state and its return convention.
 *
 * Every stage helper returns an int that is either an XDP action (the
 * packet's fate is decided; the stage has set pkt->reason) or XLB_CONTINUE
 * (go on to the next stage). The program has one exit, record(), which
 * counts the action and the reason.
 */
#ifndef XLB_COMMON_H
#define XLB_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "hash.h"

#define XLB_CONTINUE (-1)

#define XLB_AF_INET 2
#define XLB_AF_INET6 10
#define XLB_TTL 64

struct xlb_pkt {
	struct flow_tuple flow; /* the client -> VIP flow being balanced */
	__u8 eth_dst[6];	/* original destination MAC (our interface) */
	__u8 eth_src[6];	/* original source MAC */
	__u32 pkt_len;		/* frame length on arrival (stats bytes) */
	__u32 hash;		/* flow hash (valid once a VIP matched) */
	__u32 vip_id;
	__u32 real_id;
	__u16 l3_off; /* offset of the IP header from data */
	__u16 l3_len; /* IP total length */
	__u16 l4_off; /* offset of the L4 header from data */
	__u8 tos;     /* IPv4 TOS or IPv6 traffic class */
	__u8 tcp_syn; /* TCP SYN without ACK */
	__u8 df;      /* IPv4 DF bit set */
	__u8 reason;  /* enum xlb_reason, meaningful once decided */
	__u8 has_vip; /* vip_id/real_id valid for per-VIP/real stats */
	__u8 pad;
};

/* Decide the packet's fate: remember why, return the action. */
static __always_inline int set_verdict(struct xlb_pkt *p, int action, enum xlb_reason reason)
{
	p->reason = reason;
	return action;
}

static __always_inline int is_zero_mac(const __u8 *mac)
{
	return !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]);
}

#endif /* XLB_COMMON_H */
