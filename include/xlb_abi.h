/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xlb_abi.h - the one definition of everything the data plane and the
 * control plane exchange: map keys and values, flag bits, counter indexes,
 * drop/pass reasons and size limits.
 *
 * Included by the BPF C (bpf/) and by the cffi build (xlb/_ffi_build.py),
 * which preprocesses this file with XLB_CDEF defined and hands the result to
 * cffi, so Python never retypes a struct. Rules that keep the two sides in
 * step (a test compares cffi's layout with the object's BTF):
 *   - fixed-width types only, explicit padding, no bitfields;
 *   - every constant is an enum member (cffi reads enums; #define is only
 *     used for limits that may be overridden at build time, and each of those
 *     is mirrored into an enum);
 *   - the byte order of every multi-byte field is written beside it:
 *     "net" = network byte order, "host" = the CPU's.
 * Addresses are always 16 bytes: an IPv4 address sits in addr[0] with
 * addr[1..3] zero.
 */
#ifndef XLB_ABI_H
#define XLB_ABI_H

#ifndef XLB_CDEF
#include <linux/types.h>
#endif

/* ---- Limits (override with -DXLB_MAX_VIPS=... at build time) ---------- */
#ifndef XLB_MAX_VIPS
#define XLB_MAX_VIPS 16384
#endif
#ifndef XLB_MAX_REALS
#define XLB_MAX_REALS 65536
#endif
#ifndef XLB_CONN_TABLE_SIZE
#define XLB_CONN_TABLE_SIZE 1048576
#endif
#ifndef XLB_MAX_DECAP_ADDRS
#define XLB_MAX_DECAP_ADDRS 1024
#endif
#ifndef XLB_FRAG_TABLE_SIZE
#define XLB_FRAG_TABLE_SIZE 65536
#endif
#ifndef XLB_MAX_PREFIX_VIPS
#define XLB_MAX_PREFIX_VIPS 1024
#endif

enum xlb_limits {
	XLB_LIMIT_MAX_VIPS = XLB_MAX_VIPS,
	XLB_LIMIT_MAX_REALS = XLB_MAX_REALS,
	XLB_LIMIT_CONN_TABLE_SIZE = XLB_CONN_TABLE_SIZE,
	XLB_LIMIT_MAX_DECAP_ADDRS = XLB_MAX_DECAP_ADDRS,
	XLB_LIMIT_FRAG_TABLE_SIZE = XLB_FRAG_TABLE_SIZE,
	/* Prefix VIPs (`vip_prefixes`); they count among XLB_MAX_VIPS too. */
	XLB_LIMIT_MAX_PREFIX_VIPS = XLB_MAX_PREFIX_VIPS,
	/* Default Maglev ring size: prime, > 100 x reals for good balance. */
	XLB_RING_SIZE_DEFAULT = 65537,
	/* Largest ring the control plane accepts (prime). */
	XLB_RING_SIZE_MAX = 655373,
	/* IPv6 extension headers walked before giving up. */
	XLB_MAX_V6_EXT_HDRS = 4,
	/* Ring slots each VIP owns in `rings`: one live, one held as the
	 * previous ring (second chance), two spares, so that back-to-back
	 * changes find one whose RCU grace period has passed. */
	XLB_RINGS_PER_VIP = 4,
	/* Entries of the outer `rings` map. */
	XLB_LIMIT_RING_SLOTS = XLB_MAX_VIPS * XLB_RINGS_PER_VIP,
	/* `vip_filter`: 2^16 bits in 1024 words (see xlb_vip_filter_bit). */
	XLB_VIP_FILTER_BITS_LOG2 = 16,
	XLB_VIP_FILTER_WORDS = 1024,
	/* xlb_vip_meta.ring_slot of a VIP with no ring (its packets drop). */
	XLB_RING_SLOT_NONE = 255,
	/* `flow_cache` (IPv4) and `flow_cache6`: elements per CPU (a power of
	 * two, 64 B each: a set of two IPv4 ways, an IPv6 slot); each map
	 * holds possible CPUs x this many (the loader sizes them), CPU c's
	 * from c x XLB_FLOW_CACHE_SLOTS on. */
	XLB_FLOW_CACHE_SLOTS_LOG2 = 15,
	XLB_FLOW_CACHE_SLOTS = 1 << XLB_FLOW_CACHE_SLOTS_LOG2,
	/* Elements that share one epoch word of `flow_cache_epochs`. */
	XLB_FLOW_CACHE_SLOTS_PER_EPOCH_LOG2 = 3,
	XLB_FLOW_CACHE_EPOCHS = XLB_FLOW_CACHE_SLOTS >> XLB_FLOW_CACHE_SLOTS_PER_EPOCH_LOG2,
};

/* ---- Address families as stored in keys ------------------------------- */
enum xlb_family {
	XLB_FAMILY_NONE = 0,
	XLB_FAMILY_V4 = 4,
	XLB_FAMILY_V6 = 6,
};

/* ---- VIPs --------------------------------------------------------------- */

/* Per-VIP behaviour bits (xlb_vip_meta.flags). */
enum xlb_vip_flags {
	XLB_VIP_F_NONE = 0,
	/* Hash on source address only: one client sticks to one real. */
	XLB_VIP_F_NO_SPORT = 1 << 0,
	/* Hash on destination port only (all clients of a port -> one real). */
	XLB_VIP_F_DPORT_ONLY = 1 << 1,
	/* Do not use the connection table: every packet goes through the ring. */
	XLB_VIP_F_NO_CONN_TABLE = 1 << 2,
	/* Encapsulate in GUE (UDP) instead of IP-in-IP. */
	XLB_VIP_F_GUE = 1 << 3,
	/*
	 * UDP VIP serving QUIC: route by the server id in the destination
	 * connection ID (QUIC-LB, below); no connection table.
	 */
	XLB_VIP_F_QUIC = 1 << 4,
	XLB_VIP_F_ALL = (1 << 5) - 1,
};

/* Key of the `vips` hash map. port 0 = every port of address+proto. */
struct xlb_vip_key {
	__be32 addr[4]; /* net */
	__be16 port;	/* net; 0 = any port */
	__u8 proto;	/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;	/* enum xlb_family */
};

/*
 * A VIP may be a prefix (10.100.0.0/24:80/tcp, [2001:db8:100::/64]:0/udp):
 * `vip_prefixes` (LPM_TRIE, key below, value struct xlb_vip_meta) holds
 * those, and is looked up only when the exact lookups of `vips` missed and
 * config has XLB_CFG_F_PREFIX_VIPS: the exact port first, then port 0; the
 * longest matching prefix wins. The key's `prefixlen` counts the bits of
 * family, proto and port (always matched: XLB_VIP_PREFIX_FIXED_BITS) plus
 * the address's prefix length. A prefix VIP is one VIP: one vip_id, one
 * ring, for every address in it (the flow hash has the destination, so the
 * addresses' flows spread over the ring independently).
 * `vip_prefix_addrs` (LPM_TRIE, same key with proto 0 and port 0, value
 * __u32 = number of prefix VIPs on that prefix) is to prefixes what
 * `vip_addrs` is to addresses.
 */
struct xlb_vip_prefix_key {
	__u32 prefixlen; /* host; XLB_VIP_PREFIX_FIXED_BITS + address bits */
	__u8 family;	 /* enum xlb_family */
	__u8 proto;	 /* IPPROTO_TCP / IPPROTO_UDP; 0 in vip_prefix_addrs */
	__be16 port;	 /* net; 0 = any port */
	__be32 addr[4];	 /* net; the prefix, host bits zero */
};

enum xlb_vip_prefix_limits {
	XLB_VIP_PREFIX_FIXED_BITS = 32, /* family, proto, port */
};

/*
 * `vip_addrs` (HASH, key struct xlb_vip_key with port 0 and proto 0, value
 * __u32 = number of VIPs on that address) tells the data plane which
 * addresses are VIP addresses: it answers pings to them and routes ICMP
 * errors quoting them. The control plane keeps it in step with `vips`.
 */

/*
 * `vip_filter` (ARRAY of XLB_VIP_FILTER_WORDS __u64) has bit
 * xlb_vip_filter_bit(daddr) set when a VIP that uses the connection table
 * may have that address; only such packets look up the connection table
 * before the VIP (the fast path for established flows). A stale bit costs
 * a lookup, a missing one the fast path: neither changes where a packet
 * goes. The bit: fold the address's four 32-bit words (host order of the
 * network-order words, zero past an IPv4 address) with XOR, multiply by
 * 2654435761 modulo 2^32, keep the top XLB_VIP_FILTER_BITS_LOG2 bits.
 */

/* Value of the `vips` hash map. */
struct xlb_vip_meta {
	__u32 vip_id;	 /* host; index into a `stats` row's vip[]; owns `rings` slots */
	__u32 flags;	 /* host; enum xlb_vip_flags */
	__u32 ring_size; /* host; entries in this VIP's ring (a prime) */
	__u32 ring_slot; /* host; live ring, < XLB_RINGS_PER_VIP, or _NONE */
};

/*
 * `rings` is an ARRAY_OF_MAPS of XLB_MAX_VIPS * XLB_RINGS_PER_VIP entries;
 * the VIP's live ring is at vip_id * XLB_RINGS_PER_VIP + ring_slot. Each
 * inner map is an ARRAY (flags BPF_F_INNER_MAP so sizes may differ and
 * BPF_F_MMAPABLE so it is written in one copy) of (ring_size + 1) / 2
 * 8-byte elements, each two host __u32 real ids: ring slot s is the
 * (s % 2)-th of element s / 2. Pairs, because an array element takes 8
 * bytes whatever its value size: the ring is then a plain __u32 array in
 * memory, half the size. The control plane writes a new ring into a slot
 * no packet reads and then flips ring_slot with one update of the VIP's
 * `vips` entry (see xlb/rings.py).
 */

/* ---- Reals -------------------------------------------------------------- */

/*
 * Real ids index `reals` and a `stats` row's real[]. An id belongs to one (VIP, real)
 * pair: removing a real from a VIP retires its id, so connection-table
 * entries pointing to it become misses. `gen` changes each time an id is
 * handed out again, so an old entry never follows a reused id.
 */
enum xlb_real_flags {
	XLB_REAL_F_NONE = 0,
	XLB_REAL_F_ACTIVE = 1 << 0, /* id in use; cleared when retired */
	/*
	 * Retired from a VIP whose previous ring (`prev_rings`) may still name
	 * it: second chance carries its address (vip_id is kept). Never set
	 * with ACTIVE; cleared when the real is known dead.
	 */
	XLB_REAL_F_ALTERNATE = 1 << 1,
};

struct xlb_real {
	__be32 addr[4];	 /* net */
	__u8 mac[6];	 /* next-hop MAC for flat L2; all zero = use config */
	__u8 family;	 /* enum xlb_family */
	__u8 flags;	 /* enum xlb_real_flags */
	__u32 gen;	 /* host; allocation generation of this id */
	__u32 vip_id;	 /* host; the VIP this id serves */
	__u32 weight;	 /* host; Maglev weight (control plane only) */
	__u32 vip_flags; /* host; the VIP's xlb_vip_meta.flags, for the fast path */
};

/* ---- QUIC connection-ID routing (bpf/quic.h) ------------------------- */

/*
 * QUIC-LB (draft-ietf-quic-load-balancers), plaintext algorithm, one
 * configuration: a connection ID the servers issue is
 *   octet 0    config id (top 3 bits) | CID length - 1 (low 5 bits)
 *   octets 1-2 the server id, big-endian
 *   then       a nonce of at least 4 octets
 * A datagram to an XLB_VIP_F_QUIC VIP is routed by its destination CID
 * (short header: from octet 1 of the UDP payload; long header: length in
 * octet 5, CID from octet 6): config id XLB_QUIC_CONFIG_ID and a server id
 * in `quic_servers` -> that real, whatever its weight; otherwise the ring
 * at a hash of the CID's first XLB_QUIC_HASH_LEN octets (zero-padded), the
 * same for every packet carrying that CID from any address. A datagram too
 * short for that (or a long header whose CID length exceeds
 * XLB_QUIC_MAX_CID_LEN) follows the ring by its 5-tuple.
 */
enum xlb_quic_format {
	XLB_QUIC_CONFIG_ID = 0,
	XLB_QUIC_SERVER_ID_LEN = 2,
	XLB_QUIC_NONCE_MIN_LEN = 4,
	/* config octet + server id + the shortest nonce */
	XLB_QUIC_HASH_LEN = 1 + XLB_QUIC_SERVER_ID_LEN + XLB_QUIC_NONCE_MIN_LEN,
	XLB_QUIC_MAX_CID_LEN = 20,
	XLB_QUIC_LONG_DCID_LEN_OFF = 5,
	XLB_QUIC_LONG_DCID_OFF = 6,
};

/*
 * Key of `quic_servers` (HASH): a QUIC VIP's server id. The value is the
 * real that owns it; the control plane writes one entry per real of each
 * XLB_VIP_F_QUIC VIP, before the real's first ring and until it is retired.
 */
struct xlb_quic_server_key {
	__u32 vip_id;	 /* host */
	__u32 server_id; /* host; the CID's server-id octets as a number */
};

enum xlb_quic_server_flags {
	XLB_QUIC_SERVER_F_NONE = 0,
	/* the id was set by the operator, not derived (control plane only) */
	XLB_QUIC_SERVER_F_PINNED = 1 << 0,
};

struct xlb_quic_server {
	__u32 real_id; /* host; must be ACTIVE and serve the key's VIP */
	__u32 flags;   /* host; enum xlb_quic_server_flags */
};

/* ---- Connection table (LRU hashes, per-CPU LRU lists) ---------------- */

struct xlb_flow_v4 {
	__be32 saddr; /* net */
	__be32 daddr; /* net */
	__be16 sport; /* net */
	__be16 dport; /* net */
	__u8 proto;
	__u8 pad[3]; /* zero */
};

struct xlb_flow_v6 {
	__be32 saddr[4]; /* net */
	__be32 daddr[4]; /* net */
	__be16 sport;	 /* net */
	__be16 dport;	 /* net */
	__u8 proto;
	__u8 pad[3]; /* zero */
};

struct xlb_conn {
	__u32 real_id;	/* host */
	__u32 real_gen; /* host; must equal reals[real_id].gen to be valid */
	/* host; CLOCK_MONOTONIC ns at last use, tick resolution (UDP ageing) */
	__u64 atime_ns;
	__u32 hash;	/* host; the flow's hash when it was recorded (outer source) */
	__u32 reserved; /* zero */
};

/*
 * `flow_cache` and `flow_cache6` (ARRAYs of possible CPUs x
 * XLB_FLOW_CACHE_SLOTS): each CPU's copy of the entries it used last, in
 * front of the connection table (see bpf/flow_cache.h). `flow_cache_epochs` (ARRAY of
 * XLB_FLOW_CACHE_EPOCHS + 1 __u32): the epoch of a group of elements, raised
 * by the data plane whenever it writes an entry that hashes into the
 * group; the last word is the control plane's, raised whenever it removes
 * entries (XLB_FLOW_CACHE_GEN). A cached copy is good while the sum of the
 * two is what it was when copied.
 */
enum xlb_flow_cache_index {
	XLB_FLOW_CACHE_GEN = XLB_FLOW_CACHE_EPOCHS,
};

/* ---- Global configuration (`config`, ARRAY of one) ------------------- */

enum xlb_config_flags {
	XLB_CFG_F_NONE = 0,
	/* Find the next-hop MAC with bpf_fib_lookup when the real has none. */
	XLB_CFG_F_FIB_LOOKUP = 1 << 0,
	/* GUE for every VIP (as if each had XLB_VIP_F_GUE). */
	XLB_CFG_F_GUE_ALL = 1 << 1,
	/*
	 * No VIP has port 0: a packet whose exact port has no VIP is not
	 * looked up again with port 0. The control plane sets it while no
	 * any-port VIP exists and clears it before adding one; clear (the
	 * default) always makes the port-0 lookup.
	 */
	XLB_CFG_F_NO_ANY_PORT_VIP = 1 << 2,
	/*
	 * Some VIP is a prefix: a packet the exact lookups miss is looked up
	 * in `vip_prefixes`. Set by the control plane before the first prefix
	 * VIP is inserted, cleared after the last one went; clear (the default)
	 * never looks, so traffic to no VIP pays nothing without prefix VIPs.
	 */
	XLB_CFG_F_PREFIX_VIPS = 1 << 3,
};

struct xlb_config {
	__u8 gw_mac[6];	  /* next-hop MAC in routed mode; zero = unset */
	__be16 gue_port;  /* net; GUE destination UDP port */
	__be32 src_v4;	  /* net; outer IPv4 source base, low 16 bits vary */
	__be32 src_v6[4]; /* net; outer IPv6 source base, low 32 bits vary */
	__u32 mtu;	  /* host; max outer packet (L3) size; 0 = no check */
	__u32 flags;	  /* host; enum xlb_config_flags */
	__u32 hash_seed;  /* host; Maglev flow-hash seed, same on all nodes */
	/* host; SYNs per CPU per second above which a SYN records no entry
	 * (the SYN-flood guard, bpf/flood.h); 0 = guard off */
	__u32 syn_flood_threshold;
	__u32 pad;	  /* zero; explicit padding before the __u64 */
	__u64 udp_ttl_ns; /* host; idle time after which a UDP entry is a miss */
};

/* ---- Fragments (bpf/frag.h) -------------------------------------------- */

/*
 * `frags` (LRU_HASH of XLB_FRAG_TABLE_SIZE): the ports of a datagram's
 * first fragment, by what every fragment of the datagram carries, so that
 * its later fragments (which have no L4 header) are balanced as its
 * 5-tuple. An IPv4 id sits in the low 16 bits of `id` (host order).
 */
struct xlb_frag_key {
	__be32 saddr[4]; /* net */
	__be32 daddr[4]; /* net */
	__u32 id;	 /* host; IPv4 16-bit id, or IPv6 32-bit identification */
	__u8 proto;	 /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;	 /* enum xlb_family */
	__u8 pad[2];	 /* zero */
};

struct xlb_frag_ports {
	__be16 sport; /* net */
	__be16 dport; /* net */
};

/* ---- SYN-flood guard (bpf/flood.h) ------------------------------------ */

enum xlb_syn_flood_limits {
	/* The guard's rate window: SYNs are counted per CPU per window. */
	XLB_SYN_FLOOD_WINDOW_NS = 1000000000,
};

/*
 * Value of `syn_flood` (PERCPU_ARRAY of one): each CPU's count of TCP SYNs
 * to connection-table VIPs in its current window. A CPU is under a flood
 * while `syns` or `last_syns` exceeds config.syn_flood_threshold; then a
 * SYN whose 5-tuple has no entry gets none (the ring routes it, its first
 * ACK records it). A SYN starting a window XLB_SYN_FLOOD_WINDOW_NS or more
 * after window_ns opens a new one: last_syns = syns if the old window was
 * the one just before (it started less than two windows ago), else 0.
 * Times are conn_clock_ns() (CLOCK_MONOTONIC, coarse): the control plane
 * may move window_ns back to make a window end (xlb/synflood.py).
 */
struct xlb_syn_flood {
	__u64 window_ns; /* host; start of the current window */
	__u32 syns;	 /* host; SYNs counted in it */
	__u32 last_syns; /* host; SYNs of the window before, if adjacent */
};

/* ---- Counters ---------------------------------------------------------- */

/* Packets and bytes forwarded, per VIP and per real (struct xlb_cpu_row). */
struct xlb_counter {
	__u64 packets;
	__u64 bytes;
};

/* Why the program returned what it returned. Recorded once, at the exit. */
enum xlb_reason {
	XLB_R_FORWARD = 0,	   /* encapsulated to a real (XDP_TX) */
	XLB_R_PASS_NOT_IP,	   /* ARP, LLDP, ... */
	XLB_R_PASS_NOT_VIP,	   /* IP but no VIP matches */
	XLB_R_PASS_PROTO,	   /* to a VIP address, not TCP/UDP/ICMP */
	XLB_R_PASS_IP_OPTIONS,	   /* IPv4 with options: not balanced */
	XLB_R_PASS_FRAGMENT,	   /* not TCP/UDP, or first unseen, not to a VIP */
	XLB_R_PASS_EXT_HDRS,	   /* IPv6 extension chain too long/unknown */
	XLB_R_PASS_ICMP,	   /* ICMP we do not handle */
	XLB_R_DROP_MALFORMED,	   /* truncated or inconsistent headers */
	XLB_R_DROP_NO_REAL,	   /* VIP has no ring or an empty slot */
	XLB_R_DROP_ENCAP,	   /* could not grow/shape the packet */
	XLB_R_DROP_NO_ROUTE,	   /* no next-hop MAC could be found */
	XLB_R_TX_ICMP_ECHO,	   /* answered an echo request to a VIP */
	XLB_R_TX_ICMP_TOO_BIG,	   /* told the client the path MTU */
	XLB_R_FORWARD_ICMP_ERROR,  /* PMTU error routed to the owning real */
	XLB_R_DROP_FRAG_NOT_FOUND, /* later fragment to a VIP, first one unseen */
	XLB_R_DROP_FRAG_TOO_BIG,   /* later IPv4 fragment too big: no ICMP */
	XLB_R_COUNT,
};

/* Indexes into a CPU's counters (struct xlb_cpu_row). */
enum xlb_counter_index {
	/* XDP_ABORTED..XDP_REDIRECT map to XLB_CNT_ACTION + action. */
	XLB_CNT_ACTION = 0,
	XLB_CNT_ACTION_COUNT = 5,
	/* enum xlb_reason maps to XLB_CNT_REASON + reason. */
	XLB_CNT_REASON = XLB_CNT_ACTION + XLB_CNT_ACTION_COUNT,
	XLB_CNT_CONN_HIT = XLB_CNT_REASON + XLB_R_COUNT,
	XLB_CNT_CONN_MISS,	/* no entry, or entry for a retired real */
	XLB_CNT_CONN_EXPIRED,	/* UDP entry older than udp_ttl_ns */
	XLB_CNT_CONN_SYN_RESET, /* SYN for a known 5-tuple: reselected */
	/* QUIC VIPs (bpf/quic.h); each of their datagrams counts one of these */
	XLB_CNT_QUIC_ROUTED_BY_CID, /* the CID named a known server: its real */
	XLB_CNT_QUIC_UNKNOWN_ID,    /* short header, no known server: CID hash */
	XLB_CNT_QUIC_INITIAL,	    /* long header (Initial, 0-RTT), no known server */
	XLB_CNT_QUIC_MALFORMED,	    /* too short for a CID: 5-tuple hash */
	/* second chance (bpf/prev_ring.h, bpf/carrier_encap.h) */
	XLB_CNT_SC_CARRIED,	   /* previous ring's real carried */
	XLB_CNT_SC_OTHER_FAMILY,   /* previous ring's real of another family: not carried */
	XLB_CNT_SYN_FLOOD_SKIP,	   /* SYN under a flood: ring only, no entry */
	XLB_CNT_SYN_FLOOD_WINDOWS, /* a CPU's 1-s window crossed the threshold */
	XLB_CNT_FRAG_FIRST,	   /* first TCP/UDP fragment: its ports kept */
	XLB_CNT_FRAG_LATER,	   /* later fragment balanced with its first's ports */
	XLB_CNT_COUNT,
	/* the counters' room in a row: whole 64-byte lines */
	XLB_CNT_ROOM = (XLB_CNT_COUNT + 7) / 8 * 8,
};

/* A CPU's use of its flow cache in this tick and whether it looks at all:
 * the data plane's own (bpf/flow_cache.h); one line. */
struct xlb_flow_cache_use {
	__u64 jiffies;	/* the tick counted */
	__u32 lookups;	/* sets read in it */
	__u32 answered; /* of which held a good copy */
	__u32 off;	/* the tick before was judged not worth it */
	__u32 skipped;	/* packets that did not look while off */
	__u64 spare[5];
};

/*
 * One CPU's row of the `stats` map (a plain mmapable array, one element
 * per possible CPU, key: the CPU's number): everything a packet counts,
 * and the flow cache's tally. A packet finds its row by the CPU's number
 * alone, where each of the three per-CPU maps this replaced was reached
 * through a table of per-CPU pointers: once many flows fill a CPU's
 * caches, every line a packet touches counts (3% of the live rate at
 * 10000 flows, bench/RESULTS.md). The control plane reads and zeroes the
 * rows through the mapping, summing them.
 */
struct xlb_cpu_row {
	__u64 counters[XLB_CNT_ROOM]; /* enum xlb_counter_index */
	struct xlb_flow_cache_use flow_cache;
	struct xlb_counter vip[XLB_MAX_VIPS];	/* index: vip_id */
	struct xlb_counter real[XLB_MAX_REALS]; /* index: real id */
};

/* ---- Second chance: the previous ring (bpf/alternate.h) ------------- */

/*
 * `prev_rings` (ARRAY of XLB_MAX_VIPS, key vip_id) names the ring slot that
 * was live before the VIP's last ring change, until `until_ns`. A TCP
 * packet that is not a SYN and that the ring (not the connection table)
 * sent to a real other than the one the previous ring gives for its slot
 * carries that previous real's address to its real (the carrier below),
 * and is not recorded in the connection table. ring_slot ==
 * XLB_RING_SLOT_NONE, or == the live slot, or a passed until_ns: nothing
 * is carried.
 */
struct xlb_prev_ring {
	__u32 ring_slot; /* host; the previously live slot, or XLB_RING_SLOT_NONE */
	__u32 reserved;	 /* zero */
	__u64 until_ns;	 /* host; CLOCK_MONOTONIC ns; carried while now < until_ns */
	__u64 window_ns; /* host; the VIP's setting, read by the control plane
			    only (all ones: until the next change) */
};

/*
 * The carrier: the previous ring's real (the "alternate") in the outer
 * headers, in one of three places, each starting with the same 4-byte
 * word {type XLB_CARRIER_TYPE, length, flags, 0} and followed by the
 * address of the outer header's family (the alternate is only carried
 * when it has that family):
 *   IPv4 outer (IPIP): an IP option (RFC 4727 experimental type 30: not
 *     copied, class 0), length 8, right after the 20-byte header (ihl 7);
 *   IPv6 outer (IP6IP6, 4in6): a destination-options header (next header
 *     60) of 24 bytes: next header, hdrlen 2, Pad2 (type 1, length 0), the
 *     option (RFC 4727 experimental type 0x1e: skip if unknown, does not
 *     change en route) of data length 18 (flags, 0, address);
 *   GUE: variant 0 GUE header {version 0, C 0, hlen, proto 4 or 41, flags
 *     0} whose private data (hlen 2 or 5 words) is the word (length 8 or
 *     20) and the address.
 * XLB_CARRIER_F_HANDED_OVER with a zero address: a real already handed
 * the packet on (bpf/handoff.h); it is handed on once only.
 */
enum xlb_carrier {
	XLB_CARRIER_TYPE = 0x1e,
	XLB_CARRIER_V4_OPT_LEN = 8,  /* option bytes, type and length included */
	XLB_CARRIER_V6_OPT_LEN = 18, /* option data bytes (RFC 8200 counts so) */
	XLB_CARRIER_V6_HDR_LEN = 24, /* the destination-options header */
	XLB_CARRIER_GUE_V4_LEN = 8,  /* private data: word + IPv4 address */
	XLB_CARRIER_GUE_V6_LEN = 20, /* private data: word + IPv6 address */
	XLB_CARRIER_F_HANDED_OVER = 1 << 0,
};

/* ---- Decap program for the reals (bpf/decap.bpf.c) ------------------- */

/* Key of `decap_addrs`: local outer destination addresses we decapsulate. */
struct xlb_decap_addr {
	__be32 addr[4]; /* net */
	__u8 family;	/* enum xlb_family */
	__u8 pad[3];	/* zero */
};

struct xlb_decap_config {
	__be16 gue_port; /* net; 0 = GUE not decapsulated */
	__u8 pad[6];	 /* zero */
};

/* Indexes of the decap program's `decap_counters` per-CPU array of __u64. */
enum xlb_decap_counter_index {
	XLB_DCNT_IPIP = 0,	 /* IPv4 in IPv4 stripped */
	XLB_DCNT_IP6IP6,	 /* IPv6 in IPv6 stripped */
	XLB_DCNT_4IN6,		 /* IPv4 in IPv6 stripped */
	XLB_DCNT_GUE,		 /* GUE (v4 or v6 outer) stripped */
	XLB_DCNT_PASS_NOT_ENCAP, /* ordinary traffic, untouched */
	XLB_DCNT_PASS_FOREIGN,	 /* encapsulated but not to a local address */
	XLB_DCNT_DROP_MALFORMED, /* encapsulated but truncated/inconsistent */
	XLB_DCNT_PASS_FRAGMENT,	 /* outer fragment/options to a local address */
	/* Second chance (bpf/handoff.h): packets that carry an alternate. */
	XLB_DCNT_SC_SOCKET,    /* a socket of ours (established, request, time-wait) */
	XLB_DCNT_SC_SYN,       /* a SYN: ours to answer */
	XLB_DCNT_SC_SYNCOOKIE, /* only a listener, whose syncookie the ACK holds */
	XLB_DCNT_SC_HANDED_ON, /* no socket: sent on to the alternate */
	XLB_DCNT_SC_RECEIVED,  /* handed over by another real (carrier cleared) */
	XLB_DCNT_SC_NOT_TCP,   /* carrier on a non-TCP packet: decapsulated */
	XLB_DCNT_SC_ALT_LOCAL, /* the alternate is one of our addresses: kept */
	XLB_DCNT_SC_NO_ROUTE,  /* no socket, no route/neighbour to the alternate: dropped */
	XLB_DCNT_COUNT,
};

/* ---- Health-check probe path (bpf/healthcheck.bpf.c) ----------------- */

/*
 * The control plane's probe sockets carry SO_MARK = XLB_HC_MARK_BASE | n
 * (n = 1 .. XLB_HC_MAX_TARGETS). At tc egress of the balancer's interface
 * the program looks the whole mark up in `hc_targets` and encapsulates the
 * probe to that real the way the balancer would, so the probe to VIP:port
 * travels the clients' path. The outer source prefix, GUE port, gateway MAC
 * and FIB flag come from the balancer's (shared, pinned) `config` map.
 */
#ifndef XLB_MAX_HC_TARGETS
#define XLB_MAX_HC_TARGETS 65535
#endif

enum xlb_hc_limits {
	XLB_HC_MARK_BASE = 0x786c0000, /* "xl" in the upper 16 bits */
	XLB_HC_MARK_INDEX_BITS = 16,   /* low bits: the target's index */
	XLB_HC_LIMIT_MAX_TARGETS = XLB_MAX_HC_TARGETS,
};

enum xlb_hc_target_flags {
	XLB_HC_F_NONE = 0,
	XLB_HC_F_GUE = 1 << 0, /* GUE (UDP) instead of IP-in-IP */
};

/* Value of `hc_targets` (key: __u32 mark, host order). */
struct xlb_hc_target {
	__be32 addr[4]; /* net; the real: outer destination */
	__u8 mac[6];	/* next-hop MAC; all zero = config gw_mac, else FIB */
	__u8 family;	/* enum xlb_family of addr */
	__u8 flags;	/* enum xlb_hc_target_flags */
};

/* Indexes of the `hc_counters` per-CPU array of __u64. */
enum xlb_hc_counter_index {
	XLB_HCNT_PASS_UNMARKED = 0, /* not a probe: untouched */
	XLB_HCNT_ENCAP_V4,	    /* probe encapsulated in outer IPv4 */
	XLB_HCNT_ENCAP_V6,	    /* probe encapsulated in outer IPv6 */
	XLB_HCNT_FIB_REDIRECT,	    /* next hop left to bpf_redirect_neigh() */
	XLB_HCNT_DROP_NO_TARGET,    /* probe mark without a target */
	XLB_HCNT_DROP_MALFORMED,    /* not IPv4/IPv6, or unreadable */
	XLB_HCNT_DROP_ENCAP,	    /* could not grow or write the packet */
	XLB_HCNT_DROP_NO_ROUTE,	    /* no MAC, no gateway MAC, no FIB lookup */
	XLB_HCNT_COUNT,
};

#endif /* XLB_ABI_H */
