/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * config_map.h - the global settings map (struct xlb_config, one entry).
 *
 * Its own header because two programs share it: the balancer defines it
 * (bpf/maps.h) and the health-check program reuses the balancer's pinned
 * copy, which libbpf allows only when both definitions are identical.
 */
#ifndef XLB_CONFIG_MAP_H
#define XLB_CONFIG_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xlb_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_config);
} config SEC(".maps");

#endif /* XLB_CONFIG_MAP_H */
