/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * quic.h - QUIC connection-ID routing for XLB_VIP_F_QUIC VIPs (QUIC-LB,
 * plaintext algorithm; the format is in xlb_abi.h, xlb/quiclb.py mirrors
 * it for the control plane and the servers).
 *
 * quic_select_real() takes the place of the flow hash and select_real()
 * for such a VIP. Per datagram, exactly one counter:
 *   destination CID names a server in `quic_servers`  -> that real, even
 *     at weight 0 (drained: its connections live on)   QUIC_ROUTED_BY_CID
 *   short header, no known server in the CID            QUIC_UNKNOWN_ID
 *   long header, no known server (a client's Initial
 *     and 0-RTT carry a CID the client chose)           QUIC_INITIAL
 *     both -> ring at the hash of the CID: every packet with that CID
 *     lands on one real whatever address and port it comes from
 *   too short for a CID, or a long header whose CID is
 *     longer than QUIC allows -> ring by 5-tuple         QUIC_MALFORMED
 * No connection table: a CID outlives the 5-tuple it came from, and an
 * entry per 5-tuple would only pin what the CID already decides.
 *
 * The CID hash covers XLB_QUIC_HASH_LEN octets (config octet, server id,
 * the shortest nonce QUIC-LB allows), not the whole CID: a short header
 * does not say how long its CID is, and the same CID must hash the same
 * in a long header (a client's Handshake) and a short one.
 */
#ifndef XLB_QUIC_H
#define XLB_QUIC_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "xlb_abi.h"
#include "common.h"
#include "hash.h"
#include "stats.h"
#include "select.h"

#define XLB_QUIC_LONG_HEADER 0x80
#define XLB_QUIC_CONFIG_SHIFT 5

/* (VIP id, server id) -> real id; written by the control plane (xlb/serverids.py). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_REALS);
	__type(key, struct xlb_quic_server_key);
	__type(value, struct xlb_quic_server);
} quic_servers SEC(".maps");

/* What routing needs of a datagram's destination CID. */
struct quic_cid {
	__u32 words[2];	 /* its first XLB_QUIC_HASH_LEN octets, big-endian, zero-padded */
	__u32 server_id; /* valid if has_server_id */
	__u8 has_server_id;
	__u8 is_long;
	__u8 pad[2];
};

/*
 * Read the destination CID of the UDP payload at p->l4_off + 8. The octets
 * read must lie within the IP packet (not Ethernet padding) and the frame.
 * 0, or -1 when there is no CID to route by.
 */
static __always_inline int quic_read_cid(struct xdp_md *ctx, const struct xlb_pkt *p,
					 struct quic_cid *cid)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	/* masked: the verifier learns packet bounds only for offsets < 64 KiB */
	__u32 off = (p->l4_off & 0x3fff) + sizeof(struct udphdr);
	__u32 ip_end = p->l3_off + p->ip.len;
	__u32 avail = ip_end > off ? ip_end - off : 0; /* UDP payload octets */
	__u8 octets[8] = {}, *q = data + off, *dcid;
	__u32 len, dcid_off, sid = 0, i;

	if ((void *)(q + XLB_QUIC_LONG_DCID_OFF) > data_end || !avail)
		return -1;
	if (q[0] & XLB_QUIC_LONG_HEADER) {
		dcid_off = XLB_QUIC_LONG_DCID_OFF;
		len = q[XLB_QUIC_LONG_DCID_LEN_OFF];
		if (len > XLB_QUIC_MAX_CID_LEN || dcid_off + len > avail)
			return -1;
		cid->is_long = 1;
	} else {
		dcid_off = 1;
		len = XLB_QUIC_HASH_LEN;
		cid->is_long = 0;
	}
	/* a long header has its SCID, packet number and AEAD tag after the
	 * DCID: the window is within any valid packet, even for a short DCID */
	if (dcid_off + XLB_QUIC_HASH_LEN > avail)
		return -1;
	dcid = q + dcid_off;
	if ((void *)(dcid + XLB_QUIC_HASH_LEN) > data_end)
		return -1;
#pragma unroll
	for (i = 0; i < XLB_QUIC_HASH_LEN; i++)
		octets[i] = i < len ? dcid[i] : 0;
	cid->words[0] =
		(__u32)octets[0] << 24 | (__u32)octets[1] << 16 | (__u32)octets[2] << 8 | octets[3];
	cid->words[1] =
		(__u32)octets[4] << 24 | (__u32)octets[5] << 16 | (__u32)octets[6] << 8 | octets[7];
#pragma unroll
	for (i = 1; i <= XLB_QUIC_SERVER_ID_LEN; i++)
		sid = sid << 8 | octets[i];
	cid->server_id = sid;
	cid->has_server_id = len >= 1 + XLB_QUIC_SERVER_ID_LEN &&
			     octets[0] >> XLB_QUIC_CONFIG_SHIFT == XLB_QUIC_CONFIG_ID;
	return 0;
}

/* The real owning the CID's server id, if it is still that VIP's and active. */
static __always_inline struct xlb_real *quic_server_real(struct xlb_pkt *p, __u32 vip_id,
							 const struct quic_cid *cid)
{
	struct xlb_quic_server_key key = { .vip_id = vip_id, .server_id = cid->server_id };
	struct xlb_quic_server *server;
	struct xlb_real *real;
	__u32 real_id;

	if (!cid->has_server_id)
		return NULL;
	server = bpf_map_lookup_elem(&quic_servers, &key);
	if (!server)
		return NULL;
	real_id = server->real_id;
	real = lookup_real(real_id);
	if (!real || !(real->flags & XLB_REAL_F_ACTIVE) || real->vip_id != vip_id)
		return NULL;
	p->real_id = real_id;
	return real;
}

/* The real for a datagram to a QUIC VIP (see the top of this file); sets p->hash. */
static __always_inline int quic_select_real(struct xdp_md *ctx, struct xlb_pkt *p,
					    const struct xlb_vip_meta *vip,
					    const struct xlb_config *cfg,
					    struct xlb_real **real_out)
{
	struct quic_cid cid;
	struct xlb_real *real;

	if (p->flow.proto != IPPROTO_UDP || quic_read_cid(ctx, p, &cid)) {
		count(XLB_CNT_QUIC_MALFORMED);
		p->hash = hash_flow(&p->flow, vip->flags, cfg->hash_seed);
		return select_from_ring(p, vip, real_out);
	}
	p->hash = hash_words(cid.words, 2, cfg->hash_seed);
	real = quic_server_real(p, vip->vip_id, &cid);
	if (real) {
		count(XLB_CNT_QUIC_ROUTED_BY_CID);
		*real_out = real;
		return XLB_CONTINUE;
	}
	count(cid.is_long ? XLB_CNT_QUIC_INITIAL : XLB_CNT_QUIC_UNKNOWN_ID);
	return select_from_ring(p, vip, real_out);
}

#endif /* XLB_QUIC_H */
