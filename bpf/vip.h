/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* vip.h - VIP lookup (vip_lookup.h) and what the balancer asks of VIP addresses. */
#ifndef XLB_VIP_H
#define XLB_VIP_H

#include <linux/types.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "common.h"
#include "maps.h"
#include "vip_lookup.h"

/* Does `addr` lie in the prefix of a prefix VIP (`vip_prefix_addrs`)? */
static __always_inline int in_vip_prefix(const __be32 *addr, __u8 family)
{
	struct xlb_vip_prefix_key key;

	fill_prefix_key(&key, addr, family, 0, 0);
	return bpf_map_lookup_elem(&vip_prefix_addrs, &key) != NULL;
}

/* The bit of `addr` in `vip_filter` (the rule is in xlb_abi.h). */
static __always_inline __u32 vip_filter_bit(const __be32 *addr)
{
	__u32 folded =
		bpf_ntohl(addr[0]) ^ bpf_ntohl(addr[1]) ^ bpf_ntohl(addr[2]) ^ bpf_ntohl(addr[3]);

	return (folded * 2654435761U) >> (32 - XLB_VIP_FILTER_BITS_LOG2);
}

/*
 * May a VIP with a connection table have address `addr` (all four words:
 * an IPv4 flow's are zero past the first)? Decides whether a packet tries
 * the connection table before the VIP lookup.
 */
static __always_inline int may_be_conn_vip_addr(const __be32 *addr)
{
	__u32 bit = vip_filter_bit(addr), word = bit / 64;
	__u64 *bits = bpf_map_lookup_elem(&vip_filter, &word);

	return bits && (*bits >> (bit % 64)) & 1;
}

/*
 * Is `addr` the address of some VIP? True when it has an any-port TCP VIP,
 * an any-port UDP VIP, an entry in the optional `vip_addrs` map, or lies in
 * a prefix of `vip_prefix_addrs` (with prefix VIPs only).
 */
static __always_inline int is_vip_addr(const __be32 *addr, __u8 family,
				       const struct xlb_config *cfg)
{
	struct xlb_vip_key key;

	fill_vip_key(&key, addr, family, 0, IPPROTO_TCP);
	if (may_have_any_port_vip(cfg)) {
		if (bpf_map_lookup_elem(&vips, &key))
			return 1;
		key.proto = IPPROTO_UDP;
		if (bpf_map_lookup_elem(&vips, &key))
			return 1;
	}
	key.proto = 0;
	if (bpf_map_lookup_elem(&vip_addrs, &key))
		return 1;
	return may_have_prefix_vip(cfg) && in_vip_prefix(addr, family);
}

#endif /* XLB_VIP_H */
