// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sink.bpf.c - counts and drops what arrives at the far end of the veth
 * path (bench/throughput.py), per CPU, in three buckets by the outermost
 * IPv4 destination: a real (BENCH_REAL_NET/16: xlb's outer header, or
 * nftables' DNAT), the VIP (the reflector), anything else.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef BENCH_REAL_NET
#define BENCH_REAL_NET 0x0a010000 /* 10.1.0.0/16 */
#endif
#ifndef BENCH_VIP
#define BENCH_VIP 0x0a090001 /* 10.9.0.1 */
#endif

enum { SINK_REAL = 0, SINK_VIP, SINK_OTHER, SINK_COUNT };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SINK_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u32 bucket = SINK_OTHER;
	__u64 *value;

	if ((void *)(iph + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP)) {
		if ((bpf_ntohl(iph->daddr) & 0xffff0000) == BENCH_REAL_NET)
			bucket = SINK_REAL;
		else if (bpf_ntohl(iph->daddr) == BENCH_VIP)
			bucket = SINK_VIP;
	}
	value = bpf_map_lookup_elem(&sink_counts, &bucket);
	if (value)
		*value += 1;
	return XDP_DROP;
}
