/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * csum.h - Internet checksums (RFC 1071, RFC 1624).
 *
 * All sums are taken over 16/32-bit words exactly as they sit in memory: a
 * ones' complement sum is byte-order independent, so the folded result is
 * stored back in memory order without any byte swap.
 */
#ifndef XLB_CSUM_H
#define XLB_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

/* Upper bound on bytes csum_add_range() will sum (ICMPv6 PTB: 1280 - 40). */
#define XLB_CSUM_MAX_BYTES 1240

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit word, except
 * that 0x0000 comes out as 0xffff. The sum in the brackets cannot tell a
 * message whose words sum to +0 (all zero: an ICMP echo reply with id 0,
 * seq 0 and no data) from one summing to -0 (0xffff), and gives -0 for
 * both; a checksum computed from scratch is 0xffff for the first (0x0000
 * fails verification: Linux drops such a reply) and may be either for the
 * second, so 0xffff is right in both cases.
 */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (__u16)~sum;
	return sum ? sum : 0xffff;
}

/* Header checksum of an option-less IPv4 header (check must be 0). */
static __always_inline __u16 v4_csum_hdr(const struct iphdr *iph)
{
	const __u16 *w = (const __u16 *)iph;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	return csum_fold(sum);
}

/*
 * Header checksum of an option-less IPv4 header from its five 32-bit words
 * as they are stored (check zero), summed from registers: reading back a
 * header just written with narrower stores stalls store forwarding. A ones'
 * complement sum of 32-bit words folds to the sum of their 16-bit halves.
 */
static __always_inline __u16 v4_csum_words(__u32 w0, __u32 w1, __u32 w2, __u32 w3, __u32 w4)
{
	return csum_fold((__u64)w0 + w1 + w2 + w3 + w4);
}

/* Add a 64-bit word to a sum as its two 32-bit halves: the 64-bit sum
 * of a few thousand halves cannot overflow, so no carry needs handling
 * (a compare for it would be a branch, and a path for the verifier). */
static __always_inline __u64 csum_add64(__u64 sum, __u64 word)
{
	return sum + (__u32)word + (word >> 32);
}

/*
 * Add the last `len & 7` of `len` bytes at `start` (a packet pointer) to
 * `sum`, 4, 2 and 1 at a time; an odd last byte is padded with zero as
 * RFC 1071 says.
 */
static __always_inline __u64 csum_add_tail(void *start, void *data_end, __u32 len, __u64 sum)
{
	void *tail = start + (len & ~7U);

	if (len & 4) {
		if (tail + 4 > data_end)
			return sum;
		sum += *(__u32 *)tail;
		tail += 4;
	}
	if (len & 2) {
		if (tail + 2 > data_end)
			return sum;
		sum += *(__u16 *)tail;
		tail += 2;
	}
	if ((len & 1) && tail + 1 <= data_end) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		sum += *(__u8 *)tail;
#else
		sum += (__u16) * (__u8 *)tail << 8;
#endif
	}
	return sum;
}

/*
 * Add `len` bytes starting at `start` (a packet pointer) to `sum`. Stops
 * at data_end and after XLB_CSUM_MAX_BYTES. Callers make sure len bytes
 * are present.
 *
 * Shaped for the verifier, which walks the loop step by step for every
 * path that reaches it: eight bytes a step (a quarter of the steps of a
 * 16-bit loop), and the last 0-7 bytes summed before the loop, so that
 * what follows it reads nothing the step count changes and verifies once
 * for all the ways out. The program's verification went from 696k to
 * 528k instructions processed (the ICMP replies' loops ~170k -> ~55k).
 */
static __always_inline __u64 csum_add_range(void *start, void *data_end, __u32 len, __u64 sum)
{
	__u64 *q = start;
	__u32 i;

	if (len > XLB_CSUM_MAX_BYTES)
		len = XLB_CSUM_MAX_BYTES;
	sum = csum_add_tail(start, data_end, len, sum);
#pragma clang loop unroll(disable)
	for (i = 0; i < XLB_CSUM_MAX_BYTES / 8; i++) {
		/* keep i an explicit counter the verifier can bound */
		asm volatile("" : "+r"(i));
		if (8 * i + 8 > len)
			break;
		if ((void *)(q + 1) > data_end)
			break;
		sum = csum_add64(sum, *q);
		q++;
	}
	return sum;
}

#endif /* XLB_CSUM_H */
