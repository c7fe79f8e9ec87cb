/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flood.h - the SYN-flood guard: a flood of spoofed SYNs must not push
 * established flows out of the connection table.
 *
 * Each SYN to a connection-table VIP that reaches record_conn() (select.h)
 * is counted in its CPU's window of XLB_SYN_FLOOD_WINDOW_NS (xlb_abi.h,
 * struct xlb_syn_flood). While the count of the current window, or of the
 * window just before it, exceeds config.syn_flood_threshold, the CPU is
 * under a flood: a SYN whose 5-tuple has an entry still rewrites it in
 * place (that takes no LRU node, and the client's reused 5-tuple must not
 * keep an old real), but a SYN without one records nothing (counted
 * SYN_FLOOD_SKIP). The ring routes it anyway, and the connection's first
 * ACK, a miss, records the entry: so a flood costs the table at most
 * `threshold` entries per CPU (those of its first window), not its whole
 * share. SYN_FLOOD_WINDOWS counts the windows that crossed the threshold.
 *
 * Why not a second table for established flows: it costs every new flow a
 * second lookup and insert (promotion), doubles the memory, and spoofed
 * ACKs could still fill it; skipping the insert costs nothing per packet
 * outside a flood. docs/config.md (syn_flood_threshold) argues it further.
 */
#ifndef XLB_FLOOD_H
#define XLB_FLOOD_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "stats.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_syn_flood);
} syn_flood SEC(".maps");

/* Open a new window at `now` if the current one has ended. */
static __always_inline void syn_flood_roll(struct xlb_syn_flood *st, __u64 now)
{
	/* signed: a window_ns ahead of `now` (a finer clock) is a current window */
	__s64 age = (__s64)(now - st->window_ns);

	if (age < XLB_SYN_FLOOD_WINDOW_NS)
		return;
	st->last_syns = age < 2LL * XLB_SYN_FLOOD_WINDOW_NS ? st->syns : 0;
	st->syns = 0;
	st->window_ns = now;
}

/*
 * Count one SYN at time `now` (conn_clock_ns()); is this CPU under a SYN
 * flood? Always 0 with the guard off (threshold 0).
 */
static __always_inline int syn_flood_count(const struct xlb_config *cfg, __u64 now)
{
	__u32 threshold = cfg->syn_flood_threshold, zero = 0;
	struct xlb_syn_flood *st;

	if (!threshold)
		return 0;
	st = bpf_map_lookup_elem(&syn_flood, &zero);
	if (!st)
		return 0;
	syn_flood_roll(st, now);
	st->syns += 1;
	if (st->syns == threshold + 1)
		count(XLB_CNT_SYN_FLOOD_WINDOWS);
	return st->syns > threshold || st->last_syns > threshold;
}

#endif /* XLB_FLOOD_H */
