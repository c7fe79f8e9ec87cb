// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * wrapper.bpf.c - makes BPF_PROG_TEST_RUN's `repeat` usable for programs
 * that change the packet.
 *
 * With repeat > 1 the kernel runs the program again on the same xdp_buff:
 * the second iteration would see the first one's encapsulated output. The
 * wrapper restores the input first (see struct bench_wrap_state in
 * bench.h), then tail-calls the program under test. Every figure and its
 * baselines go through the same wrapper, so its cost is in numerator and
 * denominator alike; bench/pktpath.py also reports that cost on its own.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bench.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

struct bench_wrap_state state;

static __always_inline __u32 next_ctr(__u32 ctr, __u32 mod)
{
	ctr += 1;
	return ctr >= mod ? 0 : ctr;
}

SEC("xdp")
int bench_wrapper(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int pushed = (int)(data_end - data) - (int)state.orig_len;
	__u32 src_off = state.src_off, dst_off = state.dst_off;

	if (pushed && bpf_xdp_adjust_head(ctx, pushed))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (src_off > BENCH_MAX_WORD_OFF || dst_off > BENCH_MAX_WORD_OFF)
		return XDP_ABORTED;
	if (data + BENCH_ETH_LEN > data_end || data + src_off + 4 > data_end ||
	    data + dst_off + 4 > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, state.eth, BENCH_ETH_LEN);
	*(__be32 *)(data + src_off) = bpf_htonl(state.src_base + state.src_ctr);
	*(__be32 *)(data + dst_off) = bpf_htonl(state.dst_base + state.dst_ctr);
	state.src_ctr = next_ctr(state.src_ctr, state.src_mod);
	state.dst_ctr = next_ctr(state.dst_ctr, state.dst_mod);
	state.iterations += 1;
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}
