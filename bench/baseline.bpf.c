// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * baseline.bpf.c - the programs xlb's figures are divided by.
 *
 *   bench_tx         XDP_TX and nothing else: the floor of any XDP_TX path
 *                    (also the reflector of the veth throughput test);
 *   bench_min_encap  the least an IP-in-IP balancer must do: prepend a
 *                    20-byte IPv4 header (fixed addresses, valid checksum)
 *                    behind a moved Ethernet header, then XDP_TX;
 *   bench_pass       XDP_PASS (lets frames into the stack of a veth for
 *                    the nftables baseline).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MIN_ENCAP_SADDR 0xac100001 /* 172.16.0.1 */
#define MIN_ENCAP_DADDR 0x0a010001 /* 10.1.0.1 */

SEC("xdp")
int bench_tx(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_TX;
}

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

static __always_inline __u16 ipv4_csum(const struct iphdr *iph)
{
	const __u16 *word = (const __u16 *)iph;
	__u32 sum = 0;

	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += word[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int bench_min_encap(struct xdp_md *ctx)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *iph;

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;
	/* The old Ethernet header starts 20 bytes in: move it to the front. */
	__builtin_memcpy(eth, (void *)eth + sizeof(*iph), ETH_HLEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	iph->version = 4;
	iph->ihl = 5;
	iph->tos = 0;
	iph->tot_len = bpf_htons((__u16)(data_end - (void *)iph));
	iph->id = 0;
	iph->frag_off = bpf_htons(0x4000);
	iph->ttl = 64;
	iph->protocol = IPPROTO_IPIP;
	iph->check = 0;
	iph->saddr = bpf_htonl(MIN_ENCAP_SADDR);
	iph->daddr = bpf_htonl(MIN_ENCAP_DADDR);
	iph->check = ipv4_csum(iph);
	return XDP_TX;
}
