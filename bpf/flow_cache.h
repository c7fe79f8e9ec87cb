/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow_cache.h - each CPU's copy of the entries it used last, in front
 * of the connection table.
 *
 * Why: the connection table is an LRU hash; its lookup (the kernel's jhash
 * of the key, the bucket walk, the key compare, behind a helper call) is
 * the largest single cost of an established flow's packet, ~40-50 ns of a
 * ~130 ns hit here (bench/RESULTS.md). A flow's set of two ways is found
 * by a multiply-shift hash of the flow and read by inlined array
 * accesses; no helper is called. Two ways: with 10000 flows on a CPU,
 * about 26% of them would share a direct-mapped slot with another and
 * keep evicting each other; in sets of two, about 12%. A copy goes over
 * the way holding an old copy of its flow, else over the one copied
 * longer ago, but over another flow's young copy only now and then
 * (may_evict()): the ~4% of 10000 flows whose set three or more share
 * would otherwise evict each other's copies just before they are read
 * (on bench/throughput.py's path, packets that found no copy: 2.85% ->
 * 1.8%). Each CPU owns XLB_FLOW_CACHE_SLOTS consecutive elements of
 * a plain array rather than a per-CPU array's element: a per-CPU element
 * is reached through a table of pointers, one more cache line per packet
 * when the flows outgrow the CPU's caches.
 *
 * Memory is what a copy costs once the flows outgrow the CPU's caches, so
 * each family has its own array, laid out for it (both mmapable only for
 * their values to start on a page: each element then fills whole lines):
 *   - `flow_cache` (IPv4): an element is one 64-byte line holding a set of
 *     two 32-byte ways; the flow is packed in two words (addrs: both
 *     addresses; tail: ports, protocol, family, and the real id in the top
 *     16 bits, ids being below XLB_LIMIT_MAX_REALS). 10000 flows on a CPU
 *     touch about 7000 lines, and one line per packet.
 *   - `flow_cache6` (IPv6): an element is one 64-byte slot with the flow in
 *     five words (key[0] as the IPv4 tail; then the addresses); a set is
 *     two consecutive slots.
 * A copy (real id, gen, hash) is used only while
 *   - its flow is the packet's,
 *   - its epoch is its group's epoch in `flow_cache_epochs` plus the
 *     control plane's word there (XLB_FLOW_CACHE_GEN): record_conn() raises
 *     the group's epoch after every entry it writes (a SYN that reuses a
 *     5-tuple, on whichever CPU, a stale entry replaced), and the control
 *     plane raises its word after removing entries (xlb/flows.py); both
 *     only grow, so their sum moves when either does. The epoch is read
 *     before the table and copied with what the table said: a copy made
 *     while a writer raced it carries the old epoch and is never used. An
 *     IPv4 way keeps the low 16 bits of it: to meet an old copy's bits
 *     again within the copy's life (below), one group of 8 lines would
 *     need 65536 entries written in about a second;
 *   - it is younger than XLB_FLOW_CACHE_JIFFIES ticks (~1 s): then the
 *     packet looks the table up again, which marks the entry used, so the
 *     LRU never evicts a busy flow because its packets came from the cache;
 *   - its real passes the entry's checks (check_real(), select.h).
 * So a copy answers what the entry would have answered; an entry the
 * table evicted meanwhile keeps its flow on its real (as a node with the
 * entry would) until the copy ages out.
 *
 * A UDP copy also carries until when it answers as its entry would: while
 * the table would neither expire the entry nor refresh its time (the
 * entry's time as copied plus the smaller of XLB_ATIME_REFRESH_NS and the
 * UDP TTL, check_conn() in select.h); after that the datagram goes to the
 * table, which refreshes the entry and copies it again. An IPv4 way keeps
 * its low 16 bits (units of ~1 ms, so they wrap after ~69 s): a copy is
 * compared only while young, when `until` lies within a few seconds of now.
 *
 * When it does not pay: with many more flows in turn on a CPU than it has
 * slots, copies are overwritten before they are used again, and each
 * packet pays a slot read (a cache miss to memory) on top of the table.
 * So each CPU judges every tick the tick before: fewer than half of at
 * least XLB_FLOW_CACHE_JUDGE lookups answered, and it stops looking; while
 * it does not look, one packet in XLB_FLOW_CACHE_SAMPLE still does
 * (and copies), so that it starts again when its flows come back to fewer.
 */
#ifndef XLB_FLOW_CACHE_H
#define XLB_FLOW_CACHE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "hash.h"
#include "clock.h"

/* A UDP copy's `until` is in units of 2^20 ns (~1 ms; wraps after 52 days). */
#define XLB_FLOW_CACHE_CLOCK_SHIFT 20
/* Ticks a copy stays good for: 1 s at HZ=250, 0.26 s at 1000, 2.6 s at 100. */
#define XLB_FLOW_CACHE_JIFFIES 256
#define XLB_FLOW_CACHE_MIX 0x9E3779B97F4A7C15ULL
/* Lookups in a tick that may turn the cache on or off; fewer change nothing. */
#define XLB_FLOW_CACHE_JUDGE 16
/* While off, one packet in this many (a power of two) looks anyway. */
#define XLB_FLOW_CACHE_SAMPLE 64
/* A copy evicts another flow's young copy one time in this many (a power of two). */
#define XLB_FLOW_CACHE_EVICT 8
/* flow_cache_ref.index when the packet did not look (nothing to copy). */
#define XLB_FLOW_CACHE_NO_SLOT XLB_FLOW_CACHE_SLOTS
/* An IPv4 way's tail: the real id above the flow's 48 bits. */
#define XLB_FLOW_CACHE_ID_SHIFT 48
#define XLB_FLOW_CACHE_FLOW_BITS ((1ULL << XLB_FLOW_CACHE_ID_SHIFT) - 1)
/* A group of elements (IPv4 sets, IPv6 slots) shares one epoch word: 16
 * KB of words stay in the CPU's caches where one word per element (128
 * KB) would be one more miss per packet; an entry written makes up to 8
 * elements' copies old, not 1. */
#define XLB_FLOW_CACHE_EPOCH_OF(index) ((index) >> XLB_FLOW_CACHE_SLOTS_PER_EPOCH_LOG2)

/* The data plane's alone, so not in xlb_abi.h. */

/* One IPv4 way (32 bytes); a set is two, one line. */
struct xlb_flow_cache_way4 {
	__u64 addrs;	/* saddr | daddr << 32 */
	__u64 tail;	/* flow_tail() | real id << XLB_FLOW_CACHE_ID_SHIFT */
	__u32 real_gen; /* as the entry's */
	__u32 hash;	/* as the entry's */
	__u32 jiffies;	/* low bits of bpf_jiffies64() when copied */
	__u16 epoch;	/* low bits of group epoch + XLB_FLOW_CACHE_GEN when copied */
	__u16 until; /* UDP: low bits of the clock >> XLB_FLOW_CACHE_CLOCK_SHIFT it is good before */
};

struct xlb_flow_cache_set4 {
	struct xlb_flow_cache_way4 way[2];
};

/* One IPv6 slot (64 bytes); a set is two consecutive slots. */
struct xlb_flow_cache_slot6 {
	__u64 key[5];	/* the flow, packed (see the top of this file) */
	__u32 real_id;	/* as the entry's */
	__u32 real_gen; /* as the entry's */
	__u32 hash;	/* as the entry's */
	__u32 epoch;	/* group epoch + XLB_FLOW_CACHE_GEN when copied */
	__u32 jiffies;	/* low bits of bpf_jiffies64() when copied */
	__u32 until;	/* UDP: conn_clock_ns() >> XLB_FLOW_CACHE_CLOCK_SHIFT it is good before */
};

_Static_assert(sizeof(struct xlb_flow_cache_set4) == 64, "an IPv4 set is one line");
_Static_assert(sizeof(struct xlb_flow_cache_slot6) == 64, "an IPv6 slot is one line");
_Static_assert(XLB_LIMIT_MAX_REALS <= 1 << 16, "a real id fits the top of an IPv4 tail");

/* Both arrays hold one CPU's worth here; the loader makes them possible
 * CPUs x this (a CPU beyond their end finds nothing: it uses the table alone). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_FLOW_CACHE_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xlb_flow_cache_set4);
} flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_FLOW_CACHE_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xlb_flow_cache_slot6);
} flow_cache6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_FLOW_CACHE_EPOCHS + 1);
	__type(key, __u32);
	__type(value, __u32);
} flow_cache_epochs SEC(".maps");

/* Where the packet's flow goes in the cache, and the epoch to match. */
struct flow_cache_ref {
	__u32 index; /* among a CPU's elements: IPv4, its set; IPv6, its set's first slot */
	__u32 epoch;
	__u32 key; /* in its family's array: this CPU's element `index` */
};

/* What a good copy says the entry says. */
struct flow_copy {
	__u32 real_id;
	__u32 real_gen;
	__u32 hash;
};

static __always_inline __u64 flow_word(__be32 lo, __be32 hi)
{
	return (__u64)lo | ((__u64)hi << 32);
}

/* The ports, protocol and family (48 bits); the same for both families. */
static __always_inline __u64 flow_tail(const struct flow_tuple *f)
{
	return (__u64)f->sport | ((__u64)f->dport << 16) | ((__u64)f->proto << 32) |
	       ((__u64)f->family << 40);
}

static __always_inline __u32 flow_cache_index(const struct flow_tuple *f)
{
	__u64 h = flow_tail(f) * XLB_FLOW_CACHE_MIX;

	h = (h ^ flow_word(f->saddr[0], f->daddr[0])) * XLB_FLOW_CACHE_MIX;
	if (f->family == XLB_FAMILY_V6) {
		h = (h ^ flow_word(f->saddr[1], f->saddr[2])) * XLB_FLOW_CACHE_MIX;
		h = (h ^ flow_word(f->saddr[3], f->daddr[1])) * XLB_FLOW_CACHE_MIX;
		h = (h ^ flow_word(f->daddr[2], f->daddr[3])) * XLB_FLOW_CACHE_MIX;
	}
	/* fold the high half in and multiply again: without it, clients that
	 * differ in the last two bytes of their address fall on a lattice of
	 * few slots (10000 such flows: 4300 of 16384 slots used, 1600 alone) */
	h = (h ^ (h >> 32)) * XLB_FLOW_CACHE_MIX;
	if (f->family == XLB_FAMILY_V4)
		return (__u32)(h >> (64 - XLB_FLOW_CACHE_SLOTS_LOG2));
	return (__u32)(h >> (64 - XLB_FLOW_CACHE_SLOTS_LOG2 + 1)) << 1;
}

static __always_inline __u32 *epoch_word(__u32 index)
{
	return bpf_map_lookup_elem(&flow_cache_epochs, &index);
}

/* The element's group epoch plus the control plane's word: what a copy must carry. */
static __always_inline __u32 current_epoch(__u32 index)
{
	__u32 *group = epoch_word(XLB_FLOW_CACHE_EPOCH_OF(index));
	__u32 *gen = epoch_word(XLB_FLOW_CACHE_GEN);

	return (group ? *group : 0) + (gen ? *gen : 0);
}

/* Copied less than XLB_FLOW_CACHE_JIFFIES ticks ago (now: this tick). */
static __always_inline int young(__u32 copied, __u32 now)
{
	return now - copied < XLB_FLOW_CACHE_JIFFIES;
}

/* Whether a copy made at tick `a` is older than one made at tick `b`. */
static __always_inline int copied_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline __u32 clock_units(__u64 ns)
{
	return (__u32)(ns >> XLB_FLOW_CACHE_CLOCK_SHIFT);
}

/*
 * Whether a copy may go over one of two ways copied at ticks `a` and `b`
 * (neither holding its flow): always when either copy is old, else one
 * time in XLB_FLOW_CACHE_EVICT. Three flows taking turns on a set of two
 * would otherwise evict the copies the next packets are about to read (at
 * most one packet in three found its copy: the one flow a way kept within
 * a tick); this way two of them stay. The odd eviction lets a new flow in
 * beside young copies of flows that ended, and a burst of new flows (each
 * copied at its second packet) evicts few copies of the established ones.
 */
static __always_inline int may_evict(__u32 a, __u32 b, __u32 now)
{
	if (!young(a, now) || !young(b, now))
		return 1;
	return !(bpf_get_prandom_u32() & (XLB_FLOW_CACHE_EVICT - 1));
}

/* ---- IPv4: sets of two ways in one line */

static __always_inline int same_flow4(const struct xlb_flow_cache_way4 *w,
				      const struct flow_tuple *f)
{
	return w->addrs == flow_word(f->saddr[0], f->daddr[0]) &&
	       (w->tail & XLB_FLOW_CACHE_FLOW_BITS) == flow_tail(f);
}

static __always_inline int good_way4(const struct xlb_flow_cache_way4 *w,
				     const struct flow_tuple *f, const struct flow_cache_ref *ref,
				     __u32 now)
{
	if (w->epoch != (__u16)ref->epoch || !same_flow4(w, f) || !young(w->jiffies, now))
		return 0;
	return f->proto != IPPROTO_UDP ||
	       (__s16)(w->until - (__u16)clock_units(conn_clock_ns())) > 0;
}

static __always_inline int read_way4(const struct xlb_flow_cache_way4 *w, struct flow_copy *copy)
{
	copy->real_id = w->tail >> XLB_FLOW_CACHE_ID_SHIFT;
	copy->real_gen = w->real_gen;
	copy->hash = w->hash;
	return 1;
}

static __always_inline int find4(const struct flow_tuple *f, const struct flow_cache_ref *ref,
				 __u32 now, struct flow_copy *copy)
{
	struct xlb_flow_cache_set4 *set = bpf_map_lookup_elem(&flow_cache, &ref->key);

	if (!set)
		return 0;
	if (good_way4(&set->way[0], f, ref, now))
		return read_way4(&set->way[0], copy);
	if (good_way4(&set->way[1], f, ref, now))
		return read_way4(&set->way[1], copy);
	return 0;
}

/* The way to copy the flow into: the one already holding it (an old
 * copy), else the one copied longer ago, unless both hold young copies of
 * other flows and may_evict() says no. */
static __always_inline struct xlb_flow_cache_way4 *victim4(struct xlb_flow_cache_set4 *set,
							   const struct flow_tuple *f, __u32 now)
{
	if (same_flow4(&set->way[1], f))
		return &set->way[1];
	if (same_flow4(&set->way[0], f))
		return &set->way[0];
	if (!may_evict(set->way[0].jiffies, set->way[1].jiffies, now))
		return NULL;
	return copied_before(set->way[1].jiffies, set->way[0].jiffies) ? &set->way[1]
								       : &set->way[0];
}

static __always_inline void fill4(const struct flow_tuple *f, const struct flow_cache_ref *ref,
				  const struct xlb_conn *conn, __u64 until_ns)
{
	struct xlb_flow_cache_set4 *set = bpf_map_lookup_elem(&flow_cache, &ref->key);
	struct xlb_flow_cache_way4 *w;
	__u32 now;

	if (!set)
		return;
	now = bpf_jiffies64();
	w = victim4(set, f, now);
	if (!w)
		return;
	/* stale while half-written: a program nested on this CPU skips it */
	w->jiffies = now - XLB_FLOW_CACHE_JIFFIES;
	barrier();
	w->addrs = flow_word(f->saddr[0], f->daddr[0]);
	w->tail = flow_tail(f) | ((__u64)conn->real_id << XLB_FLOW_CACHE_ID_SHIFT);
	w->real_gen = conn->real_gen;
	w->hash = conn->hash;
	w->until = (__u16)clock_units(until_ns);
	w->epoch = (__u16)ref->epoch;
	barrier();
	w->jiffies = now;
}

/* ---- IPv6: sets of two consecutive slots */

static __always_inline int same_flow6(const struct xlb_flow_cache_slot6 *s,
				      const struct flow_tuple *f)
{
	return s->key[0] == flow_tail(f) && s->key[1] == flow_word(f->saddr[0], f->saddr[1]) &&
	       s->key[2] == flow_word(f->saddr[2], f->saddr[3]) &&
	       s->key[3] == flow_word(f->daddr[0], f->daddr[1]) &&
	       s->key[4] == flow_word(f->daddr[2], f->daddr[3]);
}

static __always_inline int good_slot6(const struct xlb_flow_cache_slot6 *s,
				      const struct flow_tuple *f, const struct flow_cache_ref *ref,
				      __u32 now)
{
	if (s->epoch != ref->epoch || !same_flow6(s, f) || !young(s->jiffies, now))
		return 0;
	return f->proto != IPPROTO_UDP || (__s32)(s->until - clock_units(conn_clock_ns())) > 0;
}

static __always_inline int read_slot6(const struct xlb_flow_cache_slot6 *s, struct flow_copy *copy)
{
	copy->real_id = s->real_id;
	copy->real_gen = s->real_gen;
	copy->hash = s->hash;
	return 1;
}

static __always_inline int find6(const struct flow_tuple *f, const struct flow_cache_ref *ref,
				 __u32 now, struct flow_copy *copy)
{
	__u32 second = ref->key + 1;
	struct xlb_flow_cache_slot6 *s;

	s = bpf_map_lookup_elem(&flow_cache6, &ref->key);
	if (s && good_slot6(s, f, ref, now))
		return read_slot6(s, copy);
	s = bpf_map_lookup_elem(&flow_cache6, &second);
	if (s && good_slot6(s, f, ref, now))
		return read_slot6(s, copy);
	return 0;
}

/* As victim4(). */
static __always_inline struct xlb_flow_cache_slot6 *victim6(struct xlb_flow_cache_slot6 *first,
							    struct xlb_flow_cache_slot6 *second,
							    const struct flow_tuple *f, __u32 now)
{
	if (same_flow6(second, f))
		return second;
	if (same_flow6(first, f))
		return first;
	if (!may_evict(first->jiffies, second->jiffies, now))
		return NULL;
	return copied_before(second->jiffies, first->jiffies) ? second : first;
}

static __always_inline void fill6(const struct flow_tuple *f, const struct flow_cache_ref *ref,
				  const struct xlb_conn *conn, __u64 until_ns)
{
	struct xlb_flow_cache_slot6 *s, *first;
	__u32 now, second = ref->key + 1;

	first = bpf_map_lookup_elem(&flow_cache6, &ref->key);
	s = bpf_map_lookup_elem(&flow_cache6, &second);
	if (!first || !s)
		return;
	now = bpf_jiffies64();
	s = victim6(first, s, f, now);
	if (!s)
		return;
	s->jiffies = now - XLB_FLOW_CACHE_JIFFIES; /* stale while half-written, as fill4() */
	barrier();
	s->key[0] = flow_tail(f);
	s->key[1] = flow_word(f->saddr[0], f->saddr[1]);
	s->key[2] = flow_word(f->saddr[2], f->saddr[3]);
	s->key[3] = flow_word(f->daddr[0], f->daddr[1]);
	s->key[4] = flow_word(f->daddr[2], f->daddr[3]);
	s->real_id = conn->real_id;
	s->real_gen = conn->real_gen;
	s->hash = conn->hash;
	s->until = clock_units(until_ns);
	s->epoch = ref->epoch;
	barrier();
	s->jiffies = now;
}

/* ---- Both */

/* Judge the tick before at a new tick; should this packet look? */
static __always_inline int flow_cache_wanted(struct xlb_flow_cache_use *use)
{
	__u64 now = bpf_jiffies64();

	if (use->jiffies != now) {
		if (use->lookups >= XLB_FLOW_CACHE_JUDGE)
			use->off = use->answered * 2 < use->lookups;
		use->lookups = 0;
		use->answered = 0;
		use->jiffies = now;
	}
	if (use->off && (++use->skipped & (XLB_FLOW_CACHE_SAMPLE - 1)))
		return 0;
	use->lookups++;
	return 1;
}

/*
 * Whether the flow's set holds a good copy of its entry (then in *copy);
 * fills *ref either way (flow_cache_fill() needs it, with the epoch read
 * now; index XLB_FLOW_CACHE_NO_SLOT when this CPU does not look now).
 * `use`: this CPU's tally (its row of `stats`), NULL when it has none.
 */
static __always_inline int flow_cache_find(const struct flow_tuple *f,
					   struct xlb_flow_cache_use *use,
					   struct flow_cache_ref *ref, struct flow_copy *copy)
{
	int found;

	ref->index = XLB_FLOW_CACHE_NO_SLOT;
	if (!use || !flow_cache_wanted(use))
		return 0;
	ref->index = flow_cache_index(f);
	ref->epoch = current_epoch(ref->index);
	ref->key = bpf_get_smp_processor_id() * XLB_FLOW_CACHE_SLOTS + ref->index;
	/* use->jiffies: this tick, as flow_cache_wanted() just read it */
	if (f->family == XLB_FAMILY_V4)
		found = find4(f, ref, use->jiffies, copy);
	else
		found = find6(f, ref, use->jiffies, copy);
	use->answered += found;
	return found;
}

/*
 * One look in the flow cache, made early (express.h) and handed to the
 * general path when that one must take the packet anyway: it does not
 * look again, which would count the look twice in the CPU's tally.
 */
struct flow_look {
	int looked; /* 0: no look yet (the fields below are unset) */
	int found;  /* flow_cache_find()'s answer */
	struct flow_cache_ref ref;
	struct flow_copy copy;
};

/* flow_cache_find(), or the answer of the look made before. */
static __always_inline int flow_cache_find_once(const struct flow_tuple *f,
						struct xlb_flow_cache_use *use,
						struct flow_look *look)
{
	if (!look->looked) {
		look->found = flow_cache_find(f, use, &look->ref, &look->copy);
		look->looked = 1;
	}
	return look->found;
}

/* Copy a valid entry of the flow into its set, with the epoch of *ref;
 * `until_ns`: UDP, the clock it answers before (ignored for TCP). */
static __always_inline void flow_cache_fill(const struct flow_tuple *f,
					    const struct flow_cache_ref *ref,
					    const struct xlb_conn *conn, __u64 until_ns)
{
	if (ref->index == XLB_FLOW_CACHE_NO_SLOT)
		return;
	if (f->family == XLB_FAMILY_V4)
		fill4(f, ref, conn, until_ns);
	else
		fill6(f, ref, conn, until_ns);
}

/* An entry of the flow was written: every CPU's copy of it is old. */
static __always_inline void flow_cache_invalidate(const struct flow_tuple *f)
{
	__u32 *epoch = epoch_word(XLB_FLOW_CACHE_EPOCH_OF(flow_cache_index(f)));

	if (epoch)
		__sync_fetch_and_add(epoch, 1);
}

#endif /* XLB_FLOW_CACHE_H */
