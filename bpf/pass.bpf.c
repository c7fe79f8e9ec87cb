// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pass.bpf.c - XDP_PASS and nothing else.
 *
 * The lab attaches it to the veth peer of an interface whose XDP program
 * answers with XDP_TX: native XDP_TX on a veth only reaches the peer when the
 * peer runs in NAPI mode, which an attached XDP program guarantees (GRO alone
 * loses frames). Also the baseline of the cheapest XDP program for bench/.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xlb_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
