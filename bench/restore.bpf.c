// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * restore.bpf.c - the wrapper (wrapper.bpf.c) for programs that strip or
 * rewrite the headers the wrapper restores, such as the reals' decap: it
 * puts back the whole frame, exactly RESTORE_LEN bytes, before each
 * iteration, then tail-calls the program under test. Used by
 * bench/second_chance.py for every decap row, so all of them pay the same
 * copy.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define RESTORE_LEN 128

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

struct restore_state {
	__u8 frame[RESTORE_LEN];
	__u64 iterations;
};

struct restore_state state;

SEC("xdp")
int bench_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int moved = (int)(data_end - data) - RESTORE_LEN;

	if (moved && bpf_xdp_adjust_head(ctx, moved))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + RESTORE_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, state.frame, RESTORE_LEN);
	state.iterations += 1;
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}
