/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench.h - shared by the benchmark programs (bench/ *.bpf.c): the state
 * the Python side (bench/progs.py) writes into each program's .bss, and a
 * few header helpers. Every struct here is packed by hand in progs.py with
 * the same field order; all fields are host order unless marked "net".
 */
#ifndef XLB_BENCH_H
#define XLB_BENCH_H

#include <linux/types.h>

#define BENCH_ETH_LEN 14
#define BENCH_MAX_WORD_OFF 124

/*
 * State of the test-run wrapper (wrapper.bpf.c). One iteration:
 *   1. pop whatever the previous iteration pushed (data_end - data minus
 *      orig_len bytes, with bpf_xdp_adjust_head) and write the original
 *      Ethernet header back;
 *   2. advance the flow counters and write the two flow words:
 *      word at src_off = htonl(src_base + src_ctr), src_ctr in [0, src_mod)
 *      word at dst_off = htonl(dst_base + dst_ctr), dst_ctr in [0, dst_mod)
 *      (mod 1 keeps a word constant: the same stores happen in every run);
 *   3. tail-call the program under test (prog array `target`, index 0).
 */
struct bench_wrap_state {
	__u8 eth[BENCH_ETH_LEN]; /* the original Ethernet header */
	__u16 orig_len;		 /* frame length as given to BPF_PROG_TEST_RUN */
	__u16 src_off;		 /* offset of the first flow word (4-aligned) */
	__u16 dst_off;		 /* offset of the second flow word */
	__u32 src_base;
	__u32 src_mod;
	__u32 dst_base;
	__u32 dst_mod;
	__u32 src_ctr; /* advanced by the program */
	__u32 dst_ctr;
	__u64 iterations; /* advanced by the program */
};

/*
 * State of the live-frames generator (gen.bpf.c): every frame gets the
 * template headers (Ethernet + IPv4 + TCP, checksums valid for flow 0)
 * rewritten in full, then flow i of `flows` (a per-CPU round robin): the
 * IPv4 source is template source + i, both checksums patched to match.
 */
#define BENCH_GEN_HDR_LEN 56 /* 14 + 20 + 20 rounded up to 8 */
struct bench_gen_state {
	__u8 hdr[BENCH_GEN_HDR_LEN]; /* template headers, net order inside */
	__u32 flows;		     /* >= 1; source low 16 bits must not wrap */
	__u32 pad;
};

/* One's-complement add of a 16-bit value to a checksum field. */
static __always_inline __u16 bench_csum_add(__u16 check, __u16 add)
{
	__u32 sum = (__u16)~check;

	sum += add;
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif /* XLB_BENCH_H */
