/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vips_map.h - the VIP table: (addr, port, proto, family) -> VIP; port 0 =
 * every port.
 *
 * Its own header because two programs share it, as config_map.h: the
 * balancer defines it (bpf/maps.h) and the health-check program reuses the
 * balancer's pinned copy to hash a probe with its VIP's flags.
 */
#ifndef XLB_VIPS_MAP_H
#define XLB_VIPS_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xlb_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_VIPS);
	__type(key, struct xlb_vip_key);
	__type(value, struct xlb_vip_meta);
} vips SEC(".maps");

#endif /* XLB_VIPS_MAP_H */
