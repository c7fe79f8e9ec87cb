/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.h - the balancer's per-packet state and its return convention.
 *
 * Every stage helper returns an int that is either an XDP action (the
 * packet's fate is decided; the stage has set pkt->reason) or XLB_CONTINUE
 * (go on to the next stage). The general path has one exit, record(),
 * which counts the action and the reason (the express path, express.h,
 * counts the same through stats.h without this state).
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

/* A MAC field that copy_mac() may access as 4 + 2 bytes. */
#define XLB_MAC_ALIGNED __attribute__((aligned(4)))

/* What the outer header copies of the IP header, and the MTU check reads. */
struct ip_fields {
	__u16 len; /* IP total length */
	__u8 tos;  /* IPv4 TOS or IPv6 traffic class */
	__u8 df;   /* IPv4 DF bit set */
};

struct xlb_pkt {
	struct flow_tuple flow;		 /* the client -> VIP flow being balanced */
	__u8 eth_dst[6] XLB_MAC_ALIGNED; /* original destination MAC (our interface) */
	__u16 l3_off;			 /* offset of the IP header from data */
	__u8 eth_src[6] XLB_MAC_ALIGNED; /* original source MAC */
	__u16 l4_off;			 /* offset of the L4 header from data */
	__u32 pkt_len;			 /* frame length on arrival (stats bytes) */
	__u32 hash;			 /* flow hash (valid once a VIP matched) */
	__u32 vip_id;
	__u32 real_id;
	struct ip_fields ip;
	__u8 tcp_syn; /* TCP SYN without ACK */
	__u8 reason;  /* enum xlb_reason, meaningful once decided */
	__u8 has_vip; /* vip_id/real_id valid for per-VIP/real stats */
	__u8 has_alt; /* alt_id is the previous ring's real (prev_ring.h) */
	__u32 alt_id;
	struct xlb_cpu_row *row; /* this CPU's counters and flow-cache tally, or NULL */
};

/* Decide the packet's fate: remember why, return the action. */
static __always_inline int set_verdict(struct xlb_pkt *p, int action, enum xlb_reason reason)
{
	p->reason = reason;
	return action;
}

/*
 * MACs as one 4-byte and one 2-byte access: struct ethhdr is packed, so a
 * memcpy to or from it becomes six byte accesses plus shifts. Packet
 * pointers may be unaligned (the JITs that run XDP allow it); a MAC on
 * the stack or in a map value must be 4-byte aligned (XLB_MAC_ALIGNED),
 * as the verifier wants stack accesses aligned.
 */
static __always_inline void copy_mac(void *dst, const void *src)
{
	*(__u32 *)dst = *(const __u32 *)src;
	*(__u16 *)(dst + 4) = *(const __u16 *)(src + 4);
}

/* `mac`: 4-byte aligned or in the packet (see copy_mac()). */
static __always_inline int is_zero_mac(const __u8 *mac)
{
	return !(*(const __u32 *)mac | *(const __u16 *)(mac + 4));
}

#endif /* XLB_COMMON_H */
