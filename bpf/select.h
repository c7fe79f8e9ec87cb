/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * select.h - pick the real for a flow: connection table first, Maglev ring
 * on a miss.
 *
 * Connection table rules:
 *   - key = the packet's full 5-tuple (client addr/port, VIP addr/port,
 *     proto), pad zeroed, whatever the VIP's hash flags: NO_SPORT and
 *     DPORT_ONLY only change the ring hash, so a TCP SYN that reselects
 *     never moves the client's other established connections;
 *   - an entry is valid only if reals[real_id] is ACTIVE, has gen ==
 *     real_gen and serves this VIP; an invalid entry is a miss;
 *   - TCP entries never expire; UDP entries idle for more than
 *     config.udp_ttl_ns (when nonzero) are a miss (CONN_EXPIRED and
 *     CONN_MISS are both counted); UDP hits refresh atime at most once
 *     per second; times are CLOCK_MONOTONIC at tick resolution
 *     (conn_clock_ns(), clock.h);
 *   - a TCP SYN without ACK skips the lookup, goes to the ring and
 *     overwrites the entry; it counts CONN_MISS, and CONN_SYN_RESET when
 *     an entry for the 5-tuple already existed; under a SYN flood
 *     (flood.h) a SYN without an entry records none (SYN_FLOOD_SKIP);
 *   - CONN_HIT + CONN_MISS = packets of conn-table VIPs that reached
 *     selection; NO_CONN_TABLE and QUIC VIPs count neither.
 *
 * The fast path (established_real()): a packet that is not a SYN, to an
 * address `vip_filter` marks, looks up its entry before any VIP (first
 * in its CPU's flow cache, flow_cache.h). A valid
 * entry (its real ACTIVE with the entry's gen, its VIP still using the
 * table: reals carry a copy of their VIP's flags) decides alone: real, VIP
 * (the real's), flags and hash (stored in the entry) are all known, so the
 * VIP lookup and the flow hash are skipped. An established flow thus keeps
 * its real even if a more specific VIP was added over its any-port VIP
 * since. Anything else takes the VIP path, which reuses the lookup.
 */
#ifndef XLB_SELECT_H
#define XLB_SELECT_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "common.h"
#include "maps.h"
#include "stats.h"
#include "vip.h"
#include "flood.h"
#include "prev_ring.h"
#include "clock.h"
#include "flow_cache.h"

#define XLB_ATIME_REFRESH_NS 1000000000ULL
/* check_conn() on the fast path: any VIP that uses the connection table. */
#define XLB_ANY_VIP 0xffffffffU
/* VIPs that never use the connection table (QUIC VIPs route by CID: quic.h). */
#define XLB_VIP_F_TABLELESS (XLB_VIP_F_NO_CONN_TABLE | XLB_VIP_F_QUIC)

union conn_key {
	struct xlb_flow_v4 v4;
	struct xlb_flow_v6 v6;
};

/* The fast path's connection-table lookup, handed on to select_real(). */
struct conn_probe {
	union conn_key key;
	struct xlb_conn *conn; /* the entry, which the fast path rejected, or NULL */
	int done;	       /* key filled and looked up */
};

static __always_inline struct xlb_real *lookup_real(__u32 real_id)
{
	return bpf_map_lookup_elem(&reals, &real_id);
}

static __always_inline void fill_conn_key(union conn_key *key, const struct flow_tuple *f)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (f->family == XLB_FAMILY_V4) {
		key->v4.saddr = f->saddr[0];
		key->v4.daddr = f->daddr[0];
		key->v4.sport = f->sport;
		key->v4.dport = f->dport;
		key->v4.proto = f->proto;
		return;
	}
	__builtin_memcpy(key->v6.saddr, f->saddr, sizeof(key->v6.saddr));
	__builtin_memcpy(key->v6.daddr, f->daddr, sizeof(key->v6.daddr));
	key->v6.sport = f->sport;
	key->v6.dport = f->dport;
	key->v6.proto = f->proto;
}

static __always_inline struct xlb_conn *lookup_conn(const union conn_key *key, __u8 family)
{
	if (family == XLB_FAMILY_V4)
		return bpf_map_lookup_elem(&conn_v4, &key->v4);
	return bpf_map_lookup_elem(&conn_v6, &key->v6);
}

static __always_inline long update_conn(const union conn_key *key, __u8 family,
					const struct xlb_conn *conn, __u64 flags)
{
	if (family == XLB_FAMILY_V4)
		return bpf_map_update_elem(&conn_v4, &key->v4, conn, flags);
	return bpf_map_update_elem(&conn_v6, &key->v6, conn, flags);
}

/*
 * Rewrite an existing entry in place. real_id and real_gen go in one 8-byte
 * store, so a reader on another CPU sees the old pair or the new one; were
 * it ever to pair one entry's id with the other's gen, check_conn() would
 * almost always fail it (a miss: the ring picks the same real), and a pair
 * that passed names a real that is active for this VIP either way.
 */
static __always_inline void rewrite_conn(struct xlb_conn *dst, const struct xlb_conn *src)
{
	__builtin_memcpy(dst, src, 2 * sizeof(__u32));
	dst->atime_ns = src->atime_ns;
	dst->hash = src->hash;
}

/*
 * Record the flow's real; a SYN overwriting an entry counts SYN_RESET, a
 * SYN with none under a SYN flood records nothing (flood.h).
 * `old`: the entry select_real() already found for this key (stale or
 * expired), or NULL. An entry that exists is rewritten in place, never
 * through bpf_map_update_elem(): an LRU update takes a node off the free
 * list even when BPF_NOEXIST then fails, and BPF_ANY takes another to
 * replace the entry, so a SYN retransmit cost two node allocations.
 * Writing through the lookup's pointer is safe in practice: LRU nodes are
 * never freed, and our lookup has just set the node's reference bit, so
 * the owning CPU's LRU skips it when it evicts; only a forced shrink of a
 * full table in the same nanoseconds could recycle it meanwhile.
 */
static __always_inline void write_conn(const union conn_key *key, struct xlb_conn *old,
				       const struct xlb_pkt *p, const struct xlb_real *real,
				       const struct xlb_config *cfg)
{
	struct xlb_conn conn = {
		.real_id = p->real_id,
		.real_gen = real->gen,
		.atime_ns = conn_clock_ns(),
		.hash = p->hash,
	};
	int flood = 0;

	if (p->tcp_syn) {
		flood = syn_flood_count(cfg, conn.atime_ns);
		/* a SYN skipped the lookup in select_real(): do it here */
		old = lookup_conn(key, p->flow.family);
		if (old)
			count(XLB_CNT_CONN_SYN_RESET);
	}
	if (old) {
		rewrite_conn(old, &conn);
		return;
	}
	if (flood) {
		count(XLB_CNT_SYN_FLOOD_SKIP);
		return;
	}
	if (p->tcp_syn) {
		if (update_conn(key, p->flow.family, &conn, BPF_NOEXIST) != -EEXIST)
			return;
		/* another CPU inserted the key since the lookup */
		count(XLB_CNT_CONN_SYN_RESET);
	}
	update_conn(key, p->flow.family, &conn, BPF_ANY);
}

/* write_conn(), then no CPU's copy of an entry of the flow is used again. */
static __always_inline void record_conn(const union conn_key *key, struct xlb_conn *old,
					const struct xlb_pkt *p, const struct xlb_real *real,
					const struct xlb_config *cfg)
{
	write_conn(key, old, p, real, cfg);
	flow_cache_invalidate(&p->flow);
}

/*
 * The real of an entry (or of its copy in the flow cache) naming
 * (real_id, gen) if the entry is still valid: the real ACTIVE with that
 * gen, and serving VIP `vip_id`, or with XLB_ANY_VIP whichever VIP as long
 * as that VIP uses the table.
 */
static __always_inline struct xlb_real *check_real(__u32 real_id, __u32 gen, __u32 vip_id)
{
	struct xlb_real *real = lookup_real(real_id);

	if (!real || !(real->flags & XLB_REAL_F_ACTIVE) || real->gen != gen)
		return NULL;
	if (vip_id == XLB_ANY_VIP ? real->vip_flags & XLB_VIP_F_TABLELESS : real->vip_id != vip_id)
		return NULL;
	return real;
}

/*
 * The conn entry's real if the entry is still valid (and then p->real_id):
 * for VIP `vip_id`, or with XLB_ANY_VIP for whichever VIP the real serves
 * as long as that VIP uses the table. real_id is read once: record_conn()
 * may rewrite the entry in place on another CPU meanwhile.
 */
static __always_inline struct xlb_real *check_conn(struct xlb_conn *conn, struct xlb_pkt *p,
						   __u32 vip_id, const struct xlb_config *cfg)
{
	__u32 real_id = conn->real_id;
	struct xlb_real *real = check_real(real_id, conn->real_gen, vip_id);
	__u64 now, idle;

	if (!real)
		return NULL;
	if (p->flow.proto == IPPROTO_UDP) {
		now = conn_clock_ns();
		/* an atime written with a finer clock may be a tick ahead */
		idle = now > conn->atime_ns ? now - conn->atime_ns : 0;
		if (cfg->udp_ttl_ns && idle > cfg->udp_ttl_ns) {
			count(XLB_CNT_CONN_EXPIRED);
			return NULL;
		}
		if (idle > XLB_ATIME_REFRESH_NS)
			conn->atime_ns = now;
	}
	p->real_id = real_id;
	return real;
}

/*
 * Until when (conn_clock_ns) a copy of a UDP entry answers as the entry
 * would: while check_conn() would neither expire it (the UDP TTL) nor
 * refresh its atime (XLB_ATIME_REFRESH_NS), so not writing it loses
 * nothing. Read after check_conn(), which may just have refreshed it.
 */
static __always_inline __u64 udp_copy_until(const struct xlb_conn *conn,
					    const struct xlb_config *cfg)
{
	__u64 good_for = XLB_ATIME_REFRESH_NS;

	if (cfg->udp_ttl_ns && cfg->udp_ttl_ns < good_for)
		good_for = cfg->udp_ttl_ns;
	return conn->atime_ns + good_for;
}

/*
 * Maglev: real_id = ring[hash % ring_size], from the VIP's live ring slot
 * (stored in pairs, see xlb_abi.h); the real must be ACTIVE.
 */
static __always_inline int select_from_ring(struct xlb_pkt *p, const struct xlb_vip_meta *vip,
					    struct xlb_real **real_out)
{
	__u32 ring_index, slot, pair_index, real_id, *pair;
	struct xlb_real *real;
	void *ring;

	if (vip->ring_slot >= XLB_RINGS_PER_VIP)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_REAL);
	ring_index = vip->vip_id * XLB_RINGS_PER_VIP + vip->ring_slot;
	ring = bpf_map_lookup_elem(&rings, &ring_index);
	if (!ring || !vip->ring_size)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_REAL);
	slot = p->hash % vip->ring_size;
	pair_index = slot / 2;
	pair = bpf_map_lookup_elem(ring, &pair_index);
	if (!pair)
		return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_REAL);
	real_id = pair[slot & 1];
	real = lookup_real(real_id);
	if (!real || !(real->flags & XLB_REAL_F_ACTIVE))
		return set_verdict(p, XDP_DROP, XLB_R_DROP_NO_REAL);
	p->real_id = real_id;
	*real_out = real;
	return XLB_CONTINUE;
}

/*
 * The fast path: the real of an established flow, from its entry alone
 * (see the top of this file); sets p->real_id, p->vip_id and p->hash.
 * NULL: take the VIP path, with `probe` saying what was looked up.
 * `look`: the flow cache's answer if the express path (express.h) asked.
 */
static __always_inline struct xlb_real *established_real(struct xlb_pkt *p,
							 const struct xlb_config *cfg,
							 struct conn_probe *probe,
							 struct flow_look *look)
{
	struct xlb_real *real;

	if (p->tcp_syn || !may_be_conn_vip_addr(p->flow.daddr))
		return NULL;
	if (flow_cache_find_once(&p->flow, p->row ? &p->row->flow_cache : NULL, look)) {
		real = check_real(look->copy.real_id, look->copy.real_gen, XLB_ANY_VIP);
		if (real) {
			count_in(p->row, XLB_CNT_CONN_HIT);
			p->real_id = look->copy.real_id;
			p->vip_id = real->vip_id;
			p->hash = look->copy.hash;
			return real;
		}
	}
	fill_conn_key(&probe->key, &p->flow);
	probe->conn = lookup_conn(&probe->key, p->flow.family);
	probe->done = 1;
	if (!probe->conn)
		return NULL;
	real = check_conn(probe->conn, p, XLB_ANY_VIP, cfg);
	if (!real)
		return NULL;
	count_in(p->row, XLB_CNT_CONN_HIT);
	p->vip_id = real->vip_id;
	p->hash = probe->conn->hash;
	flow_cache_fill(&p->flow, &look->ref, probe->conn, udp_copy_until(probe->conn, cfg));
	return real;
}

/*
 * Choose the real for p->flow (p->hash already set). `learn`: record a
 * ring choice in the connection table and look for second chance's
 * alternate (false for routed ICMP errors, which must not create entries). `probe`: a lookup the fast path made
 * (its entry, if any, is not valid: no second look). Sets p->real_id and
 * *real_out.
 */
static __always_inline int select_real(struct xlb_pkt *p, const struct xlb_vip_meta *vip,
				       const struct xlb_config *cfg, int learn,
				       struct conn_probe *probe, struct xlb_real **real_out)
{
	int use_table = !(vip->flags & XLB_VIP_F_TABLELESS);
	struct xlb_real *real;
	int action;

	if (use_table) {
		if (!probe->done) {
			fill_conn_key(&probe->key, &p->flow);
			if (!p->tcp_syn)
				probe->conn = lookup_conn(&probe->key, p->flow.family);
		}
		if (probe->conn && !probe->done) {
			real = check_conn(probe->conn, p, vip->vip_id, cfg);
			if (real) {
				count_in(p->row, XLB_CNT_CONN_HIT);
				*real_out = real;
				return XLB_CONTINUE;
			}
		}
		count_in(p->row, XLB_CNT_CONN_MISS);
	}
	action = select_from_ring(p, vip, real_out);
	if (action != XLB_CONTINUE)
		return action;
	if (XLB_SECOND_CHANCE && learn && find_alternate(p, vip, *real_out))
		return XLB_CONTINUE; /* second chance: not recorded (prev_ring.h) */
	if (use_table && learn)
		record_conn(&probe->key, probe->conn, p, *real_out, cfg);
	return XLB_CONTINUE;
}

#endif /* XLB_SELECT_H */
