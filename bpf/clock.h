/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * clock.h - the balancer's clock: CLOCK_MONOTONIC at tick resolution
 * (bpf_ktime_get_coarse_ns()), read from the kernel once per tick per CPU.
 *
 * Who reads it: a UDP connection-table hit (ageing, select.h), a new
 * entry's atime and the SYN-flood window (select.h, flood.h), the end of a
 * ring's second-chance window (prev_ring.h). A tick (1-10 ms) is plenty for
 * timeouts counted in seconds.
 *
 * Why a cache: bpf_ktime_get_coarse_ns() is a helper call that costs ~30 ns
 * on this VM, a fifth of a UDP hit (bench/RESULTS.md says what it bought),
 * while bpf_jiffies64() is inlined by the verifier into one load. The
 * coarse clock only moves when the tick moves jiffies, so each CPU keeps
 * the last (jiffies, coarse ns) pair and calls the helper only when jiffies
 * has moved on. The tick updates jiffies just before the coarse clock: a
 * packet in between caches the tick-old time until the next tick, so a
 * value may lag the helper's by one tick more; nothing here is finer.
 */
#ifndef XLB_CLOCK_H
#define XLB_CLOCK_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct xlb_clock_cache {
	__u64 jiffies; /* bpf_jiffies64() when `ns` was read */
	__u64 ns;      /* bpf_ktime_get_coarse_ns() then */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_clock_cache);
} clock_cache SEC(".maps");

static __always_inline __u64 conn_clock_ns(void)
{
	struct xlb_clock_cache *cache;
	__u32 zero = 0;
	__u64 jiffies;

	cache = bpf_map_lookup_elem(&clock_cache, &zero);
	if (!cache)
		return bpf_ktime_get_coarse_ns();
	jiffies = bpf_jiffies64();
	if (cache->jiffies != jiffies) {
		cache->ns = bpf_ktime_get_coarse_ns();
		cache->jiffies = jiffies;
	}
	return cache->ns;
}

#endif /* XLB_CLOCK_H */
