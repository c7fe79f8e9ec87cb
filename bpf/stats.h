/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * stats.h - counters (per-CPU arrays: plain increments, no atomics) and
 * record(), the balancer's single exit.
 */
#ifndef XLB_STATS_H
#define XLB_STATS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "common.h"
#include "maps.h"

/* This CPU's global counters: __u64[XLB_CNT_COUNT] (maps.h). */
static __always_inline __u64 *cpu_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

/*
 * counters[index] += 1. The check is the verifier's: an index the compiler
 * knows to be in range may reach here through a merge of branches that
 * loses the bound, so it is made opaque and checked again.
 */
static __always_inline void bump(__u64 *c, __u32 index)
{
	barrier_var(index);
	if (index < XLB_CNT_COUNT)
		c[index] += 1;
}

/* One event of a stage's own: `index` is a constant (record() counts the rest). */
static __always_inline void count(__u32 index)
{
	__u64 *c = cpu_counters();

	if (c && index < XLB_CNT_COUNT)
		c[index] += 1;
}

static __always_inline void count_bytes(void *map, __u32 index, __u32 bytes)
{
	struct xlb_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

/*
 * The single exit: counts counters[ACTION + action] and
 * counters[REASON + reason], with one lookup of the CPU's counters; for packets forwarded to a real (including
 * routed ICMP errors) also vip_stats[vip_id] and real_stats[real_id], with
 * the frame length as it arrived. Returns `action`.
 */
static __always_inline int record(struct xlb_pkt *p, int action)
{
	__u32 act = action;
	__u64 *c;

	if (act >= XLB_CNT_ACTION_COUNT) {
		act = XDP_ABORTED;
		action = XDP_ABORTED;
	}
	c = cpu_counters();
	if (c) {
		bump(c, XLB_CNT_ACTION + act);
		if (p->reason < XLB_R_COUNT)
			bump(c, XLB_CNT_REASON + p->reason);
	}
	if (p->has_vip && (p->reason == XLB_R_FORWARD || p->reason == XLB_R_FORWARD_ICMP_ERROR)) {
		count_bytes(&vip_stats, p->vip_id, p->pkt_len);
		count_bytes(&real_stats, p->real_id, p->pkt_len);
	}
	return action;
}

#endif /* XLB_STATS_H */
