/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vip_prefix.h - prefix VIPs (10.100.0.0/24:80/tcp): the `vip_prefixes`
 * LPM trie and its lookup, after the exact lookups of `vips` missed
 * (xlb_abi.h, struct xlb_vip_prefix_key). Its own header, as vips_map.h,
 * because the health-check program shares the map (through the balancer's
 * pinned copy) to hash a probe with its VIP's flags.
 */
#ifndef XLB_VIP_PREFIX_H
#define XLB_VIP_PREFIX_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "hash.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, XLB_MAX_PREFIX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* the kernel wants it of LPM tries */
	__type(key, struct xlb_vip_prefix_key);
	__type(value, struct xlb_vip_meta);
} vip_prefixes SEC(".maps");

/* May `vip_prefixes` hold anything? See XLB_CFG_F_PREFIX_VIPS. */
static __always_inline int may_have_prefix_vip(const struct xlb_config *cfg)
{
	return cfg->flags & XLB_CFG_F_PREFIX_VIPS;
}

/* The key that finds the longest prefix holding `addr`, for proto and port. */
static __always_inline void fill_prefix_key(struct xlb_vip_prefix_key *key, const __be32 *addr,
					    __u8 family, __be16 port, __u8 proto)
{
	key->prefixlen = XLB_VIP_PREFIX_FIXED_BITS + (family == XLB_FAMILY_V4 ? 32 : 128);
	key->family = family;
	key->proto = proto;
	key->port = port;
	key->addr[0] = addr[0];
	key->addr[1] = family == XLB_FAMILY_V6 ? addr[1] : 0;
	key->addr[2] = family == XLB_FAMILY_V6 ? addr[2] : 0;
	key->addr[3] = family == XLB_FAMILY_V6 ? addr[3] : 0;
}

/* The prefix VIP of (daddr, dport, proto): the exact port, then port 0. */
static __always_inline struct xlb_vip_meta *lookup_prefix_vip(const struct flow_tuple *f)
{
	struct xlb_vip_prefix_key key;
	struct xlb_vip_meta *vip;

	fill_prefix_key(&key, f->daddr, f->family, f->dport, f->proto);
	vip = bpf_map_lookup_elem(&vip_prefixes, &key);
	if (vip || !f->dport)
		return vip;
	key.port = 0;
	return bpf_map_lookup_elem(&vip_prefixes, &key);
}

#endif /* XLB_VIP_PREFIX_H */
