/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * prev_ring.h - second chance at the balancer: name the real the previous
 * ring gave a flow (its "alternate") to the real the current ring gives
 * it, so that a real without a socket for the flow hands the packet on
 * (handoff.h on the reals). That is what keeps a connection alive when a
 * ring change meets a balancer node whose connection table never saw it.
 *
 * find_alternate() runs after the ring chose (select.h), for TCP packets
 * that are not SYNs (a SYN starts a connection where the ring says), when
 * the VIP's `prev_rings` entry names a slot other than the live one and its
 * window is open (now < until_ns). The alternate is the previous ring's
 * real for the packet's slot when it differs from the chosen one in id and
 * address, serves this VIP (ACTIVE, or retired with XLB_REAL_F_ALTERNATE)
 * and has the chosen real's family (an outer header carries one family;
 * another family counts SC_OTHER_FAMILY and is not carried). Such a
 * packet is not recorded in the connection table: its flow may belong to
 * the alternate, and an entry would send its next packets without one.
 *
 * carrier_encap.h then writes the alternate into the outer headers.
 */
#ifndef XLB_PREV_RING_H
#define XLB_PREV_RING_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "common.h"
#include "maps.h"
#include "stats.h"
#include "clock.h"

/*
 * -DXLB_SECOND_CHANCE=0 compiles second chance out of the balancer's packet
 * path (the maps stay): the benchmarks' "before" (bench/second_chance.py).
 */
#ifndef XLB_SECOND_CHANCE
#define XLB_SECOND_CHANCE 1
#endif

/* The real id in slot `hash % ring_size` of ring slot `ring_slot`; 0 or -1. */
static __always_inline int read_ring(__u32 vip_id, __u32 ring_slot, __u32 ring_size, __u32 hash,
				     __u32 *real_id)
{
	__u32 ring_index = vip_id * XLB_RINGS_PER_VIP + ring_slot, slot, pair_index, *pair;
	void *ring;

	if (!ring_size)
		return -1;
	ring = bpf_map_lookup_elem(&rings, &ring_index);
	if (!ring)
		return -1;
	slot = hash % ring_size;
	pair_index = slot / 2;
	pair = bpf_map_lookup_elem(ring, &pair_index);
	if (!pair)
		return -1;
	*real_id = pair[slot & 1];
	return 0;
}

/* Is `alt` one of this VIP's reals, now or as of its previous ring? */
static __always_inline int serves_vip(const struct xlb_real *alt, __u32 vip_id)
{
	return alt->vip_id == vip_id && (alt->flags & (XLB_REAL_F_ACTIVE | XLB_REAL_F_ALTERNATE));
}

static __always_inline int same_real_addr(const struct xlb_real *a, const struct xlb_real *b)
{
	return !((a->addr[0] ^ b->addr[0]) | (a->addr[1] ^ b->addr[1]) | (a->addr[2] ^ b->addr[2]) |
		 (a->addr[3] ^ b->addr[3]));
}

/*
 * After the ring chose `real` (p->real_id) for p: set p->alt_id and
 * p->has_alt if the packet is to carry an alternate (see the top of this
 * file). Returns p->has_alt.
 */
static __always_inline int find_alternate(struct xlb_pkt *p, const struct xlb_vip_meta *vip,
					  const struct xlb_real *real)
{
	struct xlb_prev_ring *prev;
	struct xlb_real *alt;
	__u32 alt_id;

	if (p->flow.proto != IPPROTO_TCP || p->tcp_syn)
		return 0;
	prev = bpf_map_lookup_elem(&prev_rings, &vip->vip_id);
	if (!prev || prev->ring_slot >= XLB_RINGS_PER_VIP || prev->ring_slot == vip->ring_slot)
		return 0;
	/*
	 * CLOCK_MONOTONIC, as the control plane's until_ns, at tick resolution
	 * (the control plane allows for it). The clock before the ring: after
	 * its window a VIP pays one read.
	 */
	if (conn_clock_ns() >= prev->until_ns)
		return 0;
	if (read_ring(vip->vip_id, prev->ring_slot, vip->ring_size, p->hash, &alt_id))
		return 0;
	if (alt_id == p->real_id)
		return 0;
	alt = bpf_map_lookup_elem(&reals, &alt_id);
	if (!alt || !serves_vip(alt, vip->vip_id) || same_real_addr(alt, real))
		return 0;
	if (alt->family != real->family) {
		count(XLB_CNT_SC_OTHER_FAMILY);
		return 0;
	}
	p->alt_id = alt_id;
	p->has_alt = 1;
	return 1;
}

#endif /* XLB_PREV_RING_H */
