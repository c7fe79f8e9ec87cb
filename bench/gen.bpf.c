// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * gen.bpf.c - traffic generator for BPF_PROG_TEST_RUN's live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES). Returns XDP_TX, which that mode turns into
 * a redirect out of ctx->ingress_ifindex, i.e. into the veth whose peer is
 * the device under test.
 *
 * Pages are recycled without being reinitialised, and the far side may
 * have rewritten them (xlb's encap overwrites the Ethernet header, NAT and
 * forwarding rewrite IP and TCP headers), so every frame gets the whole
 * template header block written again (struct bench_gen_state, bench.h).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bench.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct bench_gen_state state;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} flow_ctr SEC(".maps");

SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct tcphdr *th = (void *)(iph + 1);
	__u32 zero = 0, i, *ctr;
	__u16 add;

	if (data + BENCH_GEN_HDR_LEN > data_end)
		return XDP_DROP;
	ctr = bpf_map_lookup_elem(&flow_ctr, &zero);
	if (!ctr)
		return XDP_DROP;
	i = *ctr;
	*ctr = i + 1 >= state.flows ? 0 : i + 1;
	__builtin_memcpy(data, state.hdr, BENCH_GEN_HDR_LEN);
	add = bpf_htons((__u16)i);
	iph->saddr = bpf_htonl(bpf_ntohl(iph->saddr) + i);
	iph->check = bench_csum_add(iph->check, add);
	th->check = bench_csum_add(th->check, add);
	return XDP_TX;
}
