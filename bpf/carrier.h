/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * carrier.h - second chance's carrier on the wire: the previous ring's real
 * (the "alternate") in the outer headers. The balancer writes it
 * (alternate.h), a real reads it and, when it hands the packet on, clears
 * it (handoff.h). The layout is in xlb_abi.h (enum xlb_carrier): a 4-byte
 * word {type, length, flags, 0} and the address, in an IPv4 option, an
 * IPv6 destination-options header or a GUE header's private data. Each of
 * the three leaves a packet that the kernel's own tunnels (ipip, ip6_tnl,
 * fou in GUE mode) accept: unknown IPv4 options are ignored, an unknown
 * IPv6 option of type 00xxxxxx is skipped, GUE private data is skipped.
 */
#ifndef XLB_CARRIER_H
#define XLB_CARRIER_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"
#include "parse.h"

#define XLB_IPV6_PAD2 0x0100 /* PadN of no data bytes: type 1, length 0 */

/* The word every carrier starts with. */
struct carrier_word {
	__u8 type; /* XLB_CARRIER_TYPE */
	__u8 len;  /* per place: see xlb_abi.h */
	__u8 flags;
	__u8 zero;
};

/* GUE variant 0 header (draft-ietf-intarea-gue): version 0, C 0, hlen. */
struct gue_hdr {
	__u8 hlen; /* version (2 bits) 0 | C 0 | words of optional fields */
	__u8 proto;
	__be16 flags;
};

/* The carrier's word, as one 32-bit store in memory order. */
static __always_inline __u32 carrier_word(__u8 len)
{
	return bpf_htonl(((__u32)XLB_CARRIER_TYPE << 24) | ((__u32)len << 16));
}

static __always_inline __u32 gue_carrier_len(__u8 family)
{
	return family == XLB_FAMILY_V4 ? XLB_CARRIER_GUE_V4_LEN : XLB_CARRIER_GUE_V6_LEN;
}

/* Bytes the carrier adds to the outer headers of a real of `family`. */
static __always_inline __u32 carrier_len(__u8 family, int gue)
{
	if (gue)
		return sizeof(struct gue_hdr) + gue_carrier_len(family);
	return family == XLB_FAMILY_V4 ? XLB_CARRIER_V4_OPT_LEN : XLB_CARRIER_V6_HDR_LEN;
}

/* ---- reading (the reals) --------------------------------------------- */

/*
 * An IPv4 header with options (v4_parse_ip said PARSE_E_OPTIONS) that are
 * exactly our carrier: ihl 7, the option first. Not a fragment. Advances
 * the cursor like v4_parse_ip and returns the protocol; *word = the
 * carrier. Anything else: PARSE_E_OPTIONS (or PARSE_E_FRAGMENT).
 */
static __always_inline int v4_parse_carrier(struct cursor *c, struct iphdr *iph,
					    struct carrier_word **word)
{
	struct carrier_word *w = (void *)(iph + 1);

	if (iph->ihl * 4 != sizeof(*iph) + XLB_CARRIER_V4_OPT_LEN)
		return PARSE_E_OPTIONS;
	if ((void *)w + XLB_CARRIER_V4_OPT_LEN > c->end)
		return PARSE_E_OPTIONS;
	if (w->type != XLB_CARRIER_TYPE || w->len != XLB_CARRIER_V4_OPT_LEN)
		return PARSE_E_OPTIONS;
	if (iph->frag_off & bpf_htons(XLB_IP_MF | XLB_IP_OFFSET))
		return PARSE_E_FRAGMENT;
	*word = w;
	c->pos = (void *)w + XLB_CARRIER_V4_OPT_LEN;
	c->limit = (void *)iph + bpf_ntohs(iph->tot_len);
	return iph->protocol;
}

/* Our destination-options header right after an IPv6 header, or NULL. */
static __always_inline struct carrier_word *v6_find_carrier(struct ipv6hdr *ip6h, void *end)
{
	struct v6_ext_hdr *ext = (void *)(ip6h + 1);
	struct carrier_word *w = (void *)ext + 4;

	if (ip6h->nexthdr != IPPROTO_DSTOPTS)
		return NULL;
	if ((void *)ext + XLB_CARRIER_V6_HDR_LEN > end)
		return NULL;
	if (ext->hdrlen != XLB_CARRIER_V6_HDR_LEN / 8 - 1 ||
	    *(__be16 *)ext->data != bpf_htons(XLB_IPV6_PAD2))
		return NULL;
	if (w->type != XLB_CARRIER_TYPE || w->len != XLB_CARRIER_V6_OPT_LEN)
		return NULL;
	return w;
}

/*
 * A GUE variant 0 header at c->pos (after the UDP header): flags 0,
 * proto 4 or 41. Advances past it and its optional fields; sets
 * *inner_proto (ethertype) and *word when the private data is our carrier
 * for an outer header of `family`. 0, or PARSE_E_MALFORMED.
 */
static __always_inline int parse_gue(struct cursor *c, __u8 family, __u16 *inner_proto,
				     struct carrier_word **word)
{
	struct gue_hdr *gh = c->pos;
	struct carrier_word *w = (void *)(gh + 1);
	__u32 opt_len;

	if ((void *)(gh + 1) > c->end || (void *)(gh + 1) > c->limit)
		return PARSE_E_MALFORMED;
	if (gh->hlen >> 5 || gh->flags)
		return PARSE_E_MALFORMED; /* version 0 with C 0 and no flags only */
	if (gh->proto == IPPROTO_IPIP)
		*inner_proto = ETH_P_IP;
	else if (gh->proto == IPPROTO_IPV6)
		*inner_proto = ETH_P_IPV6;
	else
		return PARSE_E_MALFORMED;
	opt_len = gh->hlen * 4;
	if ((void *)(gh + 1) + opt_len > c->end || (void *)(gh + 1) + opt_len > c->limit)
		return PARSE_E_MALFORMED;
	if (opt_len == gue_carrier_len(family) && (void *)(w + 1) <= c->end &&
	    w->type == XLB_CARRIER_TYPE && w->len == opt_len)
		*word = w;
	c->pos = (void *)(gh + 1) + opt_len;
	return 0;
}

/* Is the first byte after a GUE UDP header that of a variant 0 header? */
static __always_inline int is_gue_v0(const struct cursor *c)
{
	__u8 *first = c->pos;

	return (void *)(first + 1) <= c->end && !(*first >> 6);
}

#endif /* XLB_CARRIER_H */
