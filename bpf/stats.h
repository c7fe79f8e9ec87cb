/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * stats.h - counters (each CPU's row of `stats`: plain increments, no
 * atomics) and record(), the balancer's single exit.
 */
#ifndef XLB_STATS_H
#define XLB_STATS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "common.h"
#include "maps.h"

/* This CPU's row (xlb_abi.h): the program finds it once per packet,
 * into xlb_pkt.row. */
static __always_inline struct xlb_cpu_row *cpu_row(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&stats, &cpu);
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

/* One event of a stage's own in `row` (NULL: none): `index` is a
 * constant (record() counts the rest). */
static __always_inline void count_in(struct xlb_cpu_row *row, __u32 index)
{
	if (row && index < XLB_CNT_COUNT)
		row->counters[index] += 1;
}

/* count_in() this CPU's row, for a stage without the packet's. */
static __always_inline void count(__u32 index)
{
	count_in(cpu_row(), index);
}

/* c += one packet of `bytes`. */
static __always_inline void count_bytes(struct xlb_counter *c, __u32 bytes)
{
	c->packets += 1;
	c->bytes += bytes;
}

/* vip[vip_id] and real[real_id] of `row` += one packet of `bytes`. */
static __always_inline void count_traffic(struct xlb_cpu_row *row, __u32 vip_id, __u32 real_id,
					  __u32 bytes)
{
	/* opaque, as in bump(): the ids' bounds may not survive to here */
	barrier_var(vip_id);
	barrier_var(real_id);
	if (vip_id < XLB_MAX_VIPS)
		count_bytes(&row->vip[vip_id], bytes);
	if (real_id < XLB_MAX_REALS)
		count_bytes(&row->real[real_id], bytes);
}

/*
 * The general path's single exit: counts, in the CPU's row (p->row),
 * counters[ACTION + action] and counters[REASON + reason]; for packets
 * forwarded to a real (including routed ICMP errors) also vip[vip_id] and
 * real[real_id], with the frame length as it arrived. Returns `action`.
 */
static __always_inline int record(struct xlb_pkt *p, int action)
{
	struct xlb_cpu_row *row = p->row;
	__u32 act = action;

	if (act >= XLB_CNT_ACTION_COUNT) {
		act = XDP_ABORTED;
		action = XDP_ABORTED;
	}
	if (!row)
		return action;
	bump(row->counters, XLB_CNT_ACTION + act);
	if (p->reason < XLB_R_COUNT)
		bump(row->counters, XLB_CNT_REASON + p->reason);
	if (p->has_vip && (p->reason == XLB_R_FORWARD || p->reason == XLB_R_FORWARD_ICMP_ERROR))
		count_traffic(row, p->vip_id, p->real_id, p->pkt_len);
	return action;
}

/* What record() counts of a packet encapsulated to a real and sent back
 * out (XDP_TX, FORWARD), for the express path (express.h). */
static __always_inline int record_tx_forward(struct xlb_cpu_row *row, __u32 vip_id, __u32 real_id,
					     __u32 bytes)
{
	count_in(row, XLB_CNT_ACTION + XDP_TX);
	count_in(row, XLB_CNT_REASON + XLB_R_FORWARD);
	count_traffic(row, vip_id, real_id, bytes);
	return XDP_TX;
}

/* What record() counts of a packet dropped for `reason`, for the express path. */
static __always_inline int record_drop(struct xlb_cpu_row *row, enum xlb_reason reason)
{
	count_in(row, XLB_CNT_ACTION + XDP_DROP);
	count_in(row, XLB_CNT_REASON + reason);
	return XDP_DROP;
}

#endif /* XLB_STATS_H */
