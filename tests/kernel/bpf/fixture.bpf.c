// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A small program for the binding's own tests: one map of each kind we use. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} fx_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} fx_action SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fx_packets SEC(".maps");

/* Counts packets per CPU; returns fx_action[0] (XDP_PASS if unset) after
 * swapping the Ethernet addresses, so a test sees both verdict and bytes. */
SEC("xdp")
int fx_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0, *action;
	__u64 *count;
	unsigned char tmp[ETH_ALEN];

	count = bpf_map_lookup_elem(&fx_packets, &zero);
	if (count)
		*count += 1;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	action = bpf_map_lookup_elem(&fx_action, &zero);
	if (action && *action)
		return *action;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
