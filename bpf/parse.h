/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h - cursor-based packet parser shared by xlb.bpf.c and decap.bpf.c.
 *
 * Contract (every parse_* / v4_ / v6_ parser in this file):
 *   - The cursor holds three pointers into the packet: `pos`, the next byte
 *     to parse; `end`, data_end (the only bound the verifier trusts); and
 *     `limit`, the logical end of the current IP packet (IP total length),
 *     which is <= end once an IP header has been parsed.
 *   - A parser bounds-checks every byte it reads against `end` (and the
 *     L3/L4 parsers also against `limit`) before reading it.
 *   - On success it stores a pointer to the header it parsed in *hdr,
 *     advances `pos` past that header (options and IPv6 extension headers
 *     included) and returns the next protocol: an ethertype in host order
 *     for parse_eth, an IPPROTO_* for the IP parsers, 0 for L4 parsers.
 *   - On failure it returns a negative enum parse_err and leaves `pos`
 *     where it was. For PARSE_E_OPTIONS and PARSE_E_FRAGMENT the fixed IP
 *     header was in bounds and *hdr is set, so the caller may still read it.
 *     PARSE_E_FRAGMENT is the one failure that moves the cursor, so that a
 *     caller may go on (bpf/frag.h): `pos` is after the IPv4 header or at
 *     the IPv6 fragment header, `limit` is the IP packet's end.
 * The parsers never modify the packet and call no helper.
 */
#ifndef XLB_PARSE_H
#define XLB_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb_abi.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#define XLB_IP_MF 0x2000
#define XLB_IP_DF 0x4000
#define XLB_IP_OFFSET 0x1fff

/* Negative results of the parsers. */
enum parse_err {
	PARSE_E_MALFORMED = -1, /* truncated or inconsistent header */
	PARSE_E_OPTIONS = -2,	/* IPv4 header with options */
	PARSE_E_FRAGMENT = -3,	/* IPv4 or IPv6 fragment */
	PARSE_E_EXT_HDRS = -4,	/* IPv6 extension chain too long or unknown */
};

struct cursor {
	void *pos;
	void *end;
	void *limit;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/*
 * ICMPv4 header. <linux/icmp.h> pulls in <linux/if.h> and libc's
 * <sys/socket.h>, which do not build for the bpf target, so the few
 * definitions used are spelled out here (values from RFC 792/1191).
 */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		__be32 gateway;
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
	} un;
};

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_FRAG_NEEDED 4

/* The IPv6 fragment header (RFC 8200 4.5). */
struct v6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M */
	__be32 id;
};

#define XLB_V6_FRAG_OFFSET 0xfff8

/* Generic IPv6 extension header (hop-by-hop, routing, destination opts). */
struct v6_ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-byte units, not counting the first 8 bytes */
	__u8 data[6];
};

static __always_inline void init_cursor(struct cursor *c, void *data, void *data_end)
{
	c->pos = data;
	c->end = data_end;
	c->limit = data_end;
}

/* Ethernet plus at most one 802.1Q tag. Returns the ethertype (host). */
static __always_inline int parse_eth(struct cursor *c, struct ethhdr **hdr)
{
	struct ethhdr *eth = c->pos;
	struct vlan_hdr *vlan;
	__u16 proto;

	if ((void *)(eth + 1) > c->end)
		return PARSE_E_MALFORMED;
	proto = bpf_ntohs(eth->h_proto);
	c->pos = eth + 1;
	if (proto == ETH_P_8021Q) {
		vlan = c->pos;
		if ((void *)(vlan + 1) > c->end) {
			c->pos = eth;
			return PARSE_E_MALFORMED;
		}
		proto = bpf_ntohs(vlan->proto);
		c->pos = vlan + 1;
	}
	*hdr = eth;
	return proto;
}

/* IPv4 without options, not a fragment. Sets c->limit to the packet end. */
static __always_inline int v4_parse_ip(struct cursor *c, struct iphdr **hdr)
{
	struct iphdr *iph = c->pos;
	__u32 ihl_len, tot_len;

	if ((void *)(iph + 1) > c->end)
		return PARSE_E_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_E_MALFORMED;
	ihl_len = iph->ihl * 4;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < ihl_len || (void *)iph + tot_len > c->end)
		return PARSE_E_MALFORMED;
	*hdr = iph;
	if (ihl_len != sizeof(*iph))
		return PARSE_E_OPTIONS;
	c->pos = iph + 1;
	c->limit = (void *)iph + tot_len;
	if (iph->frag_off & bpf_htons(XLB_IP_MF | XLB_IP_OFFSET))
		return PARSE_E_FRAGMENT;
	return iph->protocol;
}

static __always_inline int v6_is_ext_hdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS;
}

/*
 * IPv6 header, then hop-by-hop / routing / destination-options headers up
 * to XLB_MAX_V6_EXT_HDRS of them. A fragment header is PARSE_E_FRAGMENT;
 * a longer chain, or AH, is PARSE_E_EXT_HDRS. Returns the upper protocol.
 */
static __always_inline int v6_parse_ip(struct cursor *c, struct ipv6hdr **hdr)
{
	struct ipv6hdr *ip6h = c->pos;
	struct v6_ext_hdr *ext;
	void *pos, *limit;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > c->end)
		return PARSE_E_MALFORMED;
	if (ip6h->version != 6)
		return PARSE_E_MALFORMED;
	limit = (void *)(ip6h + 1) + bpf_ntohs(ip6h->payload_len);
	if (limit > c->end)
		return PARSE_E_MALFORMED;
	*hdr = ip6h;
	nexthdr = ip6h->nexthdr;
	pos = ip6h + 1;

#pragma unroll
	for (i = 0; i < XLB_MAX_V6_EXT_HDRS; i++) {
		if (!v6_is_ext_hdr(nexthdr))
			break;
		ext = pos;
		if ((void *)(ext + 1) > c->end || (void *)(ext + 1) > limit)
			return PARSE_E_MALFORMED;
		nexthdr = ext->nexthdr;
		pos += (ext->hdrlen + 1) * 8;
		if (pos > limit)
			return PARSE_E_MALFORMED;
	}
	if (nexthdr == IPPROTO_FRAGMENT) {
		c->pos = pos;
		c->limit = limit;
		return PARSE_E_FRAGMENT;
	}
	if (v6_is_ext_hdr(nexthdr) || nexthdr == IPPROTO_AH)
		return PARSE_E_EXT_HDRS;
	c->pos = pos;
	c->limit = limit;
	return nexthdr;
}

/* TCP header and its options must lie within the IP packet. */
static __always_inline int parse_tcp(struct cursor *c, struct tcphdr **hdr)
{
	struct tcphdr *th = c->pos;

	if ((void *)(th + 1) > c->end || (void *)(th + 1) > c->limit)
		return PARSE_E_MALFORMED;
	if (th->doff < 5 || (void *)th + th->doff * 4 > c->limit)
		return PARSE_E_MALFORMED;
	*hdr = th;
	c->pos = (void *)th + th->doff * 4;
	return 0;
}

/* UDP header; its length field must be 8..(rest of the IP packet). */
static __always_inline int parse_udp(struct cursor *c, struct udphdr **hdr)
{
	struct udphdr *uh = c->pos;
	__u32 len;

	if ((void *)(uh + 1) > c->end || (void *)(uh + 1) > c->limit)
		return PARSE_E_MALFORMED;
	len = bpf_ntohs(uh->len);
	if (len < sizeof(*uh) || (void *)uh + len > c->limit)
		return PARSE_E_MALFORMED;
	*hdr = uh;
	c->pos = uh + 1;
	return 0;
}

/* The 8-byte ICMP or ICMPv6 header (type, code, checksum, 4 more bytes). */
static __always_inline int parse_icmp(struct cursor *c, struct icmphdr **hdr)
{
	struct icmphdr *icmph = c->pos;

	if ((void *)(icmph + 1) > c->end || (void *)(icmph + 1) > c->limit)
		return PARSE_E_MALFORMED;
	*hdr = icmph;
	c->pos = icmph + 1;
	return 0;
}

#endif /* XLB_PARSE_H */
