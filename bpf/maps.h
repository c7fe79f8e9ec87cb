/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.h - the balancer's maps. Names, types, keys and values are part of
 * the contract with the Python control plane (xlb/_bpf.py, balancer.py):
 * change nothing here without changing it there.
 */
#ifndef XLB_MAPS_H
#define XLB_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"

/* `vips` is in vips_map.h, shared with the health-check program. */
#include "vips_map.h"

/*
 * Optional: (addr, port 0, proto 0, family) -> number of VIPs on that
 * address. Only consulted to decide whether an address is "a VIP address"
 * (ICMP echo, PASS_ICMP / PASS_PROTO vs PASS_NOT_VIP) when the address has
 * no any-port TCP or UDP VIP in `vips`.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_VIPS);
	__type(key, struct xlb_vip_key);
	__type(value, __u32);
} vip_addrs SEC(".maps");

/*
 * Optional: prefix (key with proto 0 and port 0, see xlb_abi.h) -> number
 * of prefix VIPs on it. For "is a VIP address" as `vip_addrs` is, when
 * config has XLB_CFG_F_PREFIX_VIPS.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, XLB_MAX_PREFIX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct xlb_vip_prefix_key);
	__type(value, __u32);
} vip_prefix_addrs SEC(".maps");

/* Addresses that may have a connection-table VIP, as bits (xlb_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_VIP_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

/* Template of the inner Maglev rings: slot -> real_id. */
struct xlb_ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, (XLB_RING_SIZE_DEFAULT + 1) / 2);
	/* Any size; filled by the control plane through mmap, not per slot. */
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64); /* two __u32 real ids (xlb_abi.h) */
};

/* vip_id * XLB_RINGS_PER_VIP + ring_slot -> ring (inner map). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, XLB_LIMIT_RING_SLOTS);
	__type(key, __u32);
	__array(values, struct xlb_ring);
} rings SEC(".maps");

/* real_id -> the real. Mmapable: the control plane writes a change's
 * entries through a shared mapping, not one update per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_REALS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xlb_real);
} reals SEC(".maps");

/* vip_id -> the ring before its last change, and until when (alternate.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct xlb_prev_ring);
} prev_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_CONN_TABLE_SIZE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct xlb_flow_v4);
	__type(value, struct xlb_conn);
} conn_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_CONN_TABLE_SIZE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct xlb_flow_v6);
	__type(value, struct xlb_conn);
} conn_v6 SEC(".maps");

/* `config` is in config_map.h, shared with the health-check program. */
#include "config_map.h"

/* One row per CPU (struct xlb_cpu_row): one here, the loader makes it
 * possible CPUs (a CPU beyond its end counts nothing). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xlb_cpu_row);
} stats SEC(".maps");

#endif /* XLB_MAPS_H */
