"""Packing and unpacking of the ABI structs (include/xlb_abi.h) as map bytes.

The only place that knows how a Vip or a Real becomes map bytes. Structs
come from cffi, so field offsets are the compiler's, never retyped here.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import numpy as np
import numpy.typing as npt

from ._bpf import ffi, lib
from .model import IPPROTO, PROTO_NAMES, BalancerConfig, Flow, IPAddress, Vip, address_ints

FAMILY = {4: lib.XLB_FAMILY_V4, 6: lib.XLB_FAMILY_V6}
VERSION = {lib.XLB_FAMILY_V4: 4, lib.XLB_FAMILY_V6: 6}


def to_bytes(cdata: Any) -> bytes:
    return bytes(ffi.buffer(cdata))


def struct_from(ctype: str, raw: bytes) -> Any:
    """A fresh cdata struct holding a copy of `raw`."""
    obj = ffi.new(f"{ctype} *")
    ffi.memmove(obj, raw, ffi.sizeof(ctype))
    return obj


def u32(value: int) -> bytes:
    return to_bytes(ffi.new("__u32 *", value))


def read_u32(raw: bytes) -> int:
    return int(ffi.cast("__u32 *", ffi.from_buffer(raw))[0])


def u32_keys(values: list[int]) -> bytes:
    """Many u32 keys as one buffer, for a batch operation."""
    return np.asarray(values, dtype=np.uint32).tobytes()


def set_addr(field: Any, address: IPAddress) -> None:
    """Write an address into a `__be32 addr[4]` field (IPv4 in addr[0])."""
    packed = address.packed
    ffi.memmove(field, packed + bytes(16 - len(packed)), 16)


def get_addr(field: Any, family: int) -> IPAddress:
    raw = bytes(ffi.buffer(field, 16))
    if family == lib.XLB_FAMILY_V4:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def mac_bytes(mac: str | None) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) if mac else bytes(6)


def mac_text(raw: bytes) -> str | None:
    return None if raw == bytes(6) else ":".join(f"{b:02x}" for b in raw)


def htons(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, "big"), "little")


def ntohs(value: int) -> int:
    return htons(value)


# ------------------------------------------------------------------ VIPs


def vip_key(vip: Vip) -> bytes:
    key = ffi.new("struct xlb_vip_key *")
    set_addr(key.addr, vip.address)
    key.port = htons(vip.port)
    key.proto = IPPROTO[vip.proto]
    key.family = FAMILY[vip.family]
    return to_bytes(key)


def vip_prefix_key(vip: Vip, *, address_only: bool = False) -> bytes:
    """Key of a prefix VIP in `vip_prefixes`; with `address_only`, of its
    prefix in `vip_prefix_addrs` (proto 0, port 0)."""
    key = ffi.new("struct xlb_vip_prefix_key *")
    key.prefixlen = lib.XLB_VIP_PREFIX_FIXED_BITS + vip.prefixlen
    key.family = FAMILY[vip.family]
    if not address_only:
        key.proto = IPPROTO[vip.proto]
        key.port = htons(vip.port)
    set_addr(key.addr, vip.address)
    return to_bytes(key)


def parse_vip_prefix_key(raw: bytes) -> Vip:
    key = struct_from("struct xlb_vip_prefix_key", raw)
    return Vip.from_data_plane(
        get_addr(key.addr, key.family),
        ntohs(key.port),
        PROTO_NAMES[key.proto],
        int(key.prefixlen) - lib.XLB_VIP_PREFIX_FIXED_BITS,
    )


def vip_address_key(address: IPAddress) -> bytes:
    """Key of `vip_addrs`: the address alone (port 0, proto 0)."""
    key = ffi.new("struct xlb_vip_key *")
    set_addr(key.addr, address)
    key.family = FAMILY[address.version]
    return to_bytes(key)


def parse_vip_key(raw: bytes) -> Vip:
    key = struct_from("struct xlb_vip_key", raw)
    # As the maps hold it: an address refused for new VIPs (an older xlb
    # wrote it) is still adopted, so the operator can see and remove it.
    return Vip.from_data_plane(
        get_addr(key.addr, key.family), ntohs(key.port), PROTO_NAMES[key.proto]
    )


def vip_meta(vip_id: int, flags: int, ring_size: int, ring_slot: int) -> bytes:
    meta = ffi.new("struct xlb_vip_meta *")
    meta.vip_id, meta.flags, meta.ring_size, meta.ring_slot = vip_id, flags, ring_size, ring_slot
    return to_bytes(meta)


def parse_vip_meta(raw: bytes) -> tuple[int, int, int, int]:
    """(vip_id, flags, ring_size, ring_slot)"""
    meta = struct_from("struct xlb_vip_meta", raw)
    return int(meta.vip_id), int(meta.flags), int(meta.ring_size), int(meta.ring_slot)


# ----------------------------------------------------------------- reals


def real_entries(
    addresses: list[IPAddress],
    macs: list[str | None],
    gens: list[int],
    vip_id: int,
    weights: list[int],
    active: bool,
    vip_flags: int = 0,
) -> npt.NDArray[np.uint8]:
    """Many `struct xlb_real` at once, as rows of bytes (vectorised: a VIP
    of thousands of reals is packed in microseconds, not milliseconds)."""
    n = len(addresses)
    rows = np.zeros((n, ffi.sizeof("struct xlb_real")), dtype=np.uint8)
    if n == 0:
        return rows

    def put(field: str, values: npt.NDArray[Any]) -> None:
        set_real_field(rows, field, values)

    if set(map(type, addresses)) == {ipaddress.IPv4Address}:  # the common case, as arrays
        ipv4 = np.fromiter(address_ints(addresses), dtype=np.uint32, count=n).astype(">u4")
        addr = np.zeros((n, 16), dtype=np.uint8)
        addr[:, :4] = ipv4.view(np.uint8).reshape(n, 4)
        put("addr", addr)
        put("family", np.full(n, FAMILY[4], dtype=np.uint8))
    else:
        put("addr", _frombytes(b"".join(a.packed.ljust(16, b"\0") for a in addresses), 16, n))
        put("family", np.array([FAMILY[a.version] for a in addresses], dtype=np.uint8))
    if any(macs):
        put("mac", _frombytes(b"".join(mac_bytes(m) for m in macs), 6, n))
    put("flags", np.full(n, lib.XLB_REAL_F_ACTIVE if active else 0, dtype=np.uint8))
    put("gen", np.array(gens, dtype=np.uint32))
    put("vip_id", np.full(n, vip_id, dtype=np.uint32))
    put("weight", np.array(weights, dtype=np.uint32))
    put("vip_flags", np.full(n, vip_flags, dtype=np.uint32))
    return rows


def prev_ring_entry(ring_slot: int, until_ns: int, window_ns: int) -> bytes:
    """A `prev_rings` value (struct xlb_prev_ring)."""
    entry = ffi.new("struct xlb_prev_ring *")
    entry.ring_slot, entry.until_ns, entry.window_ns = ring_slot, until_ns, window_ns
    return to_bytes(entry)


def parse_prev_ring(raw: bytes) -> tuple[int, int, int]:
    """(ring_slot, until_ns, window_ns) of a `prev_rings` value."""
    entry = struct_from("struct xlb_prev_ring", raw)
    return int(entry.ring_slot), int(entry.until_ns), int(entry.window_ns)


def _frombytes(raw: bytes, width: int, n: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, width)


def set_real_field(rows: npt.NDArray[np.uint8], field: str, values: npt.NDArray[Any]) -> None:
    """Write one field of many packed `struct xlb_real` rows (a value per row)."""
    if len(rows) == 0:
        return
    offset = ffi.offsetof("struct xlb_real", field)
    column = np.ascontiguousarray(values).view(np.uint8).reshape(len(rows), -1)
    rows[:, offset : offset + column.shape[1]] = column


def retired_real_entries(
    rows: npt.NDArray[np.uint8], alternate: bool = False
) -> npt.NDArray[np.uint8]:
    """`rows` as retired ids: not active, no weight (address, MAC and gen
    kept, as real_entries(..., active=False) writes them). `alternate`: the
    VIP's previous ring may still name them (XLB_REAL_F_ALTERNATE), so
    they keep their vip_id; else they lose it too."""
    retired = rows.copy()
    n = len(rows)
    flags = lib.XLB_REAL_F_ALTERNATE if alternate else 0
    set_real_field(retired, "flags", np.full(n, flags, dtype=np.uint8))
    zeroed = ["weight", "vip_flags"] if alternate else ["weight", "vip_flags", "vip_id"]
    for field in zeroed:
        set_real_field(retired, field, np.zeros(n, dtype=np.uint32))
    return retired


def real_field(rows: npt.NDArray[np.uint8], field: str, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """One field of many packed `struct xlb_real` rows, as a numpy column."""
    offset = ffi.offsetof("struct xlb_real", field)
    width = np.dtype(dtype).itemsize
    return rows[:, offset : offset + width].copy().view(dtype)[:, 0]


def parse_real_entry(raw: bytes) -> dict[str, Any]:
    real = struct_from("struct xlb_real", raw)
    family = int(real.family)
    return {
        "address": get_addr(real.addr, family) if family in VERSION else None,
        "mac": mac_text(bytes(ffi.buffer(real.mac, 6))),
        "active": bool(real.flags & lib.XLB_REAL_F_ACTIVE),
        "gen": int(real.gen),
        "vip_id": int(real.vip_id),
        "weight": int(real.weight),
    }


# ------------------------------------------------------------ QUIC ids


def quic_server_key(vip_id: int, server_id: int) -> bytes:
    key = ffi.new("struct xlb_quic_server_key *")
    key.vip_id, key.server_id = vip_id, server_id
    return to_bytes(key)


def quic_server_value(real_id: int, pinned: bool) -> bytes:
    value = ffi.new("struct xlb_quic_server *")
    value.real_id = real_id
    value.flags = lib.XLB_QUIC_SERVER_F_PINNED if pinned else lib.XLB_QUIC_SERVER_F_NONE
    return to_bytes(value)


def parse_quic_server(key_raw: bytes, value_raw: bytes) -> tuple[int, int, int, bool]:
    """(vip_id, server_id, real_id, pinned) of a `quic_servers` entry."""
    key = struct_from("struct xlb_quic_server_key", key_raw)
    value = struct_from("struct xlb_quic_server", value_raw)
    pinned = bool(value.flags & lib.XLB_QUIC_SERVER_F_PINNED)
    return int(key.vip_id), int(key.server_id), int(value.real_id), pinned


def parse_flow_key(map_name: str, raw: bytes) -> Flow:
    src: IPAddress
    dst: IPAddress
    if map_name == "conn_v4":
        key = struct_from("struct xlb_flow_v4", raw)
        src = ipaddress.IPv4Address(int(key.saddr).to_bytes(4, "little"))
        dst = ipaddress.IPv4Address(int(key.daddr).to_bytes(4, "little"))
    else:
        key = struct_from("struct xlb_flow_v6", raw)
        src = get_addr(key.saddr, lib.XLB_FAMILY_V6)
        dst = get_addr(key.daddr, lib.XLB_FAMILY_V6)
    return Flow(src, dst, ntohs(key.sport), ntohs(key.dport), PROTO_NAMES.get(key.proto, "tcp"))


def flow_key(flow: Flow) -> tuple[str, bytes]:
    """The connection table of `flow` and its key there (the full 5-tuple)."""
    if flow.src.version == 4:
        key = ffi.new("struct xlb_flow_v4 *")
        key.saddr = int.from_bytes(flow.src.packed, "little")
        key.daddr = int.from_bytes(flow.dst.packed, "little")
        table = "conn_v4"
    else:
        key = ffi.new("struct xlb_flow_v6 *")
        set_addr(key.saddr, flow.src)
        set_addr(key.daddr, flow.dst)
        table = "conn_v6"
    key.sport = htons(flow.sport)
    key.dport = htons(flow.dport)
    key.proto = IPPROTO[flow.proto]
    return table, to_bytes(key)


def vip_filter_bit(address: IPAddress) -> int:
    """The bit of a VIP address in the `vip_filter` map (rule: xlb_abi.h)."""
    words = address.packed.ljust(16, b"\0")
    folded = 0
    for i in range(0, 16, 4):
        folded ^= int.from_bytes(words[i : i + 4], "big")
    return ((folded * 2654435761) & 0xFFFFFFFF) >> (32 - int(lib.XLB_VIP_FILTER_BITS_LOG2))


def conn_records(values: bytes) -> npt.NDArray[Any]:
    """Packed `struct xlb_conn` values (a batch lookup's) as a numpy record
    array with the fields real_id, real_gen and atime_ns."""
    ctype = "struct xlb_conn"
    names = ["real_id", "real_gen", "atime_ns"]
    dtype = np.dtype(
        {
            "names": names,
            "formats": ["=u4", "=u4", "=u8"],
            "offsets": [ffi.offsetof(ctype, name) for name in names],
            "itemsize": ffi.sizeof(ctype),
        }
    )
    return np.frombuffer(values, dtype=dtype)


def flow_key_protos(map_name: str, keys: bytes) -> npt.NDArray[np.uint8]:
    """The IP protocol of each packed flow key of `conn_v4` or `conn_v6`."""
    ctype = "struct xlb_flow_v4" if map_name == "conn_v4" else "struct xlb_flow_v6"
    size = ffi.sizeof(ctype)
    rows = np.frombuffer(keys, dtype=np.uint8).reshape(-1, size)
    return rows[:, ffi.offsetof(ctype, "proto")]


def parse_conn(raw: bytes) -> tuple[int, int, int]:
    """(real_id, real_gen, atime_ns)"""
    conn = struct_from("struct xlb_conn", raw)
    return int(conn.real_id), int(conn.real_gen), int(conn.atime_ns)


def conn_owners(values: bytes, count: int) -> npt.NDArray[np.uint32]:
    """(real_id, real_gen) of `count` packed `struct xlb_conn` values, as a
    (count, 2) array: the connection table read in one batch."""
    size = ffi.sizeof("struct xlb_conn")
    words = np.frombuffer(values, np.uint32, count * size // 4).reshape(count, size // 4)
    columns = [ffi.offsetof("struct xlb_conn", f) // 4 for f in ("real_id", "real_gen")]
    return words[:, columns]


# ---------------------------------------------------------------- config


def config_value(
    cfg: BalancerConfig, *, no_any_port_vip: bool = False, prefix_vips: bool = False
) -> bytes:
    """The `config` value; `no_any_port_vip` and `prefix_vips` are
    data-plane state the balancer keeps (XLB_CFG_F_NO_ANY_PORT_VIP,
    XLB_CFG_F_PREFIX_VIPS), not settings."""
    value = ffi.new("struct xlb_config *")
    ffi.memmove(value.gw_mac, mac_bytes(cfg.gateway_mac), 6)
    value.gue_port = htons(cfg.gue_port)
    value.src_v4 = int.from_bytes(ipaddress.IPv4Address(cfg.src_v4).packed, "little")
    set_addr(value.src_v6, ipaddress.IPv6Address(cfg.src_v6))
    value.mtu = cfg.mtu
    value.flags = (lib.XLB_CFG_F_FIB_LOOKUP if cfg.fib_lookup else 0) | (
        lib.XLB_CFG_F_GUE_ALL if cfg.gue_all else 0
    )
    if no_any_port_vip:
        value.flags |= lib.XLB_CFG_F_NO_ANY_PORT_VIP
    if prefix_vips:
        value.flags |= lib.XLB_CFG_F_PREFIX_VIPS
    value.hash_seed = cfg.hash_seed
    value.udp_ttl_ns = int(cfg.udp_ttl_s * 1e9)
    value.syn_flood_threshold = cfg.syn_flood_threshold
    return to_bytes(value)


def config_no_any_port_vip(raw: bytes) -> bool:
    """Whether a `config` value has XLB_CFG_F_NO_ANY_PORT_VIP set."""
    return bool(struct_from("struct xlb_config", raw).flags & lib.XLB_CFG_F_NO_ANY_PORT_VIP)


def config_prefix_vips(raw: bytes) -> bool:
    """Whether a `config` value has XLB_CFG_F_PREFIX_VIPS set."""
    return bool(struct_from("struct xlb_config", raw).flags & lib.XLB_CFG_F_PREFIX_VIPS)


def parse_config(raw: bytes) -> BalancerConfig:
    value = struct_from("struct xlb_config", raw)
    return BalancerConfig(
        gateway_mac=mac_text(bytes(ffi.buffer(value.gw_mac, 6))),
        fib_lookup=bool(value.flags & lib.XLB_CFG_F_FIB_LOOKUP),
        src_v4=str(ipaddress.IPv4Address(int(value.src_v4).to_bytes(4, "little"))),
        src_v6=str(get_addr(value.src_v6, lib.XLB_FAMILY_V6)),
        mtu=int(value.mtu),
        gue_port=ntohs(value.gue_port),
        gue_all=bool(value.flags & lib.XLB_CFG_F_GUE_ALL),
        hash_seed=int(value.hash_seed),
        udp_ttl_s=int(value.udp_ttl_ns) / 1e9,
        syn_flood_threshold=int(value.syn_flood_threshold),
    )


# --------------------------------------------------------------- naming


def enum_names(ctype: str, prefix: str) -> dict[int, str]:
    """value -> lower-case name without prefix, for an ABI enum."""
    return {
        value: name[len(prefix) :].lower()
        for name, value in ffi.typeof(ctype).relements.items()
        if name.startswith(prefix)
    }
