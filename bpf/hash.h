/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * hash.h - the flow hash. xlb/flowhash.py mirrors it bit for bit so the
 * control plane can tell which ring slot (and real) a flow gets.
 *
 * Algorithm: Bob Jenkins' lookup3 as Linux's jhash2() over 32-bit words,
 * initval = config.hash_seed:
 *   a = b = c = 0xdeadbeef + 4 * nwords + seed
 *   while more than 3 words remain: a += k0; b += k1; c += k2; mix; k += 3
 *   then the 1..3 remaining words: c += k2; b += k1; a += k0; final
 *   result = c
 * Words (all values in host order, i.e. as numbers):
 *   IPv4: [saddr, daddr, sport << 16 | dport, proto]                  (4)
 *   IPv6: [saddr0..3, daddr0..3, sport << 16 | dport, proto]         (10)
 *         each address word is 4 address bytes read big-endian
 *   XLB_VIP_F_NO_SPORT: sport is 0 in the ports word
 *   XLB_VIP_F_DPORT_ONLY: the single word [dport]                     (1)
 * Derived values: ring slot = hash % ring_size; outer IPv4 source = low 16
 * bits of the hash; outer IPv6 source = low 32 bits; IPv6 outer flow label
 * = hash & 0xfffff; GUE source port = 0xc000 | (hash >> 16 & 0x3fff).
 */
#ifndef XLB_HASH_H
#define XLB_HASH_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"

#define XLB_JHASH_INITVAL 0xdeadbeef

/* Internal flow tuple: what the balancer knows about a packet's flow. */
struct flow_tuple {
	__be32 saddr[4]; /* net; IPv4 in [0] */
	__be32 daddr[4]; /* net */
	__be16 sport;	 /* net; 0 for ICMP */
	__be16 dport;	 /* net */
	__u8 proto;
	__u8 family; /* enum xlb_family */
	__u8 pad[2];
};

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define jhash_mix(a, b, c)         \
	do {                       \
		a -= c;            \
		a ^= rol32(c, 4);  \
		c += b;            \
		b -= a;            \
		b ^= rol32(a, 6);  \
		a += c;            \
		c -= b;            \
		c ^= rol32(b, 8);  \
		b += a;            \
		a -= c;            \
		a ^= rol32(c, 16); \
		c += b;            \
		b -= a;            \
		b ^= rol32(a, 19); \
		a += c;            \
		c -= b;            \
		c ^= rol32(b, 4);  \
		b += a;            \
	} while (0)

#define jhash_final(a, b, c)       \
	do {                       \
		c ^= b;            \
		c -= rol32(b, 14); \
		a ^= c;            \
		a -= rol32(c, 11); \
		b ^= a;            \
		b -= rol32(a, 25); \
		c ^= b;            \
		c -= rol32(b, 16); \
		a ^= c;            \
		a -= rol32(c, 4);  \
		b ^= a;            \
		b -= rol32(a, 14); \
		c ^= b;            \
		c -= rol32(b, 24); \
	} while (0)

/* jhash2(); n is a compile-time constant at every call site. */
static __always_inline __u32 hash_words(const __u32 *k, const int n, __u32 seed)
{
	__u32 a, b, c;
	int len = n;

	a = b = c = XLB_JHASH_INITVAL + ((__u32)n << 2) + seed;
	while (len > 3) {
		a += k[0];
		b += k[1];
		c += k[2];
		jhash_mix(a, b, c);
		len -= 3;
		k += 3;
	}
	switch (len) {
	case 3:
		c += k[2];
		/* fallthrough */
	case 2:
		b += k[1];
		/* fallthrough */
	case 1:
		a += k[0];
		jhash_final(a, b, c);
		break;
	default:
		break;
	}
	return c;
}

/* The flow hash of `f` for a VIP with `vip_flags` (see the top comment). */
static __always_inline __u32 hash_flow(const struct flow_tuple *f, __u32 vip_flags, __u32 seed)
{
	__u32 ports, sport_mask, k[10];

	if (vip_flags & XLB_VIP_F_DPORT_ONLY) {
		k[0] = bpf_ntohs(f->dport);
		return hash_words(k, 1, seed);
	}
	/* The source port unless NO_SPORT, without a branch: a branch here
	 * doubled what the verifier walks through the hash below (the
	 * balancer's verification 528k -> 475k instructions processed). */
	_Static_assert(XLB_VIP_F_NO_SPORT == 1, "sport_mask takes NO_SPORT as bit 0");
	sport_mask = (vip_flags & XLB_VIP_F_NO_SPORT) - 1; /* 0 with NO_SPORT, else all ones */
	ports = bpf_ntohs(f->dport) | (((__u32)bpf_ntohs(f->sport) << 16) & sport_mask);
	if (f->family == XLB_FAMILY_V4) {
		k[0] = bpf_ntohl(f->saddr[0]);
		k[1] = bpf_ntohl(f->daddr[0]);
		k[2] = ports;
		k[3] = f->proto;
		return hash_words(k, 4, seed);
	}
	k[0] = bpf_ntohl(f->saddr[0]);
	k[1] = bpf_ntohl(f->saddr[1]);
	k[2] = bpf_ntohl(f->saddr[2]);
	k[3] = bpf_ntohl(f->saddr[3]);
	k[4] = bpf_ntohl(f->daddr[0]);
	k[5] = bpf_ntohl(f->daddr[1]);
	k[6] = bpf_ntohl(f->daddr[2]);
	k[7] = bpf_ntohl(f->daddr[3]);
	k[8] = ports;
	k[9] = f->proto;
	return hash_words(k, 10, seed);
}

#endif /* XLB_HASH_H */
