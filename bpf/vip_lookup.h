/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vip_lookup.h - the VIP of a flow, for the balancer (vip.h) and the
 * health-check program (a probe is hashed with its VIP's flags).
 */
#ifndef XLB_VIP_LOOKUP_H
#define XLB_VIP_LOOKUP_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "hash.h"
#include "vips_map.h"
#include "vip_prefix.h"

static __always_inline void fill_vip_key(struct xlb_vip_key *key, const __be32 *addr, __u8 family,
					 __be16 port, __u8 proto)
{
	key->addr[0] = addr[0];
	key->addr[1] = family == XLB_FAMILY_V6 ? addr[1] : 0;
	key->addr[2] = family == XLB_FAMILY_V6 ? addr[2] : 0;
	key->addr[3] = family == XLB_FAMILY_V6 ? addr[3] : 0;
	key->port = port;
	key->proto = proto;
	key->family = family;
}

/* Can `vips` hold an any-port (port 0) entry? See XLB_CFG_F_NO_ANY_PORT_VIP. */
static __always_inline int may_have_any_port_vip(const struct xlb_config *cfg)
{
	return !(cfg->flags & XLB_CFG_F_NO_ANY_PORT_VIP);
}

/*
 * The VIP of (daddr, dport, proto): exact port first, then port 0 unless
 * the control plane says no any-port VIP exists (traffic to no VIP would
 * otherwise always pay two hash lookups), then the prefix VIPs if there
 * are any (vip_prefix.h). An exact VIP is found as fast as without them.
 * The VIP is copied to *out (0 if none, else 1): an entry of `vips` and
 * one of `vip_prefixes` are pointers into two maps, which the verifier
 * would follow apart through the rest of the balancer.
 */
static __always_inline int lookup_vip(const struct flow_tuple *f, const struct xlb_config *cfg,
				      struct xlb_vip_meta *out)
{
	struct xlb_vip_key key;
	struct xlb_vip_meta *vip;

	fill_vip_key(&key, f->daddr, f->family, f->dport, f->proto);
	vip = bpf_map_lookup_elem(&vips, &key);
	if (!vip && f->dport && may_have_any_port_vip(cfg)) {
		key.port = 0;
		vip = bpf_map_lookup_elem(&vips, &key);
	}
	if (!vip && may_have_prefix_vip(cfg))
		vip = lookup_prefix_vip(f);
	if (!vip)
		return 0;
	*out = *vip;
	return 1;
}

#endif /* XLB_VIP_LOOKUP_H */
