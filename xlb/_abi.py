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
from .model import IPPROTO, PROTO_NAMES, BalancerConfig, Flow, IPAddress, Vip

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
        ipv4 = np.fromiter(map(int, addresses), dtype=np.uint32, count=n).astype(">u4")
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


def _frombytes(raw: bytes, width: int, n: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, width)


def set_real_field(rows: npt.NDArray[np.uint8], field: str, values: npt.NDArray[Any]) -> None:
    """Write one field of many packed `struct xlb_real` rows (a value per row)."""
    if len(rows) == 0:
        return
    offset = ffi.offsetof("struct xlb_real", field)
    column = np.ascontiguousarray(values).view(np.uint8).reshape(len(rows), -1)
    rows[:, offset : offset + column.shape[1]] = column


def retired_real_entries(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """`rows` as retired ids: not active, no VIP, no weight (address, MAC and
    gen kept, as real_entries(..., active=False) writes them)."""
    retired = rows.copy()
    for field, dtype in (("flags", np.uint8), ("vip_id", np.uint32), ("weight", np.uint32),
                         ("vip_flags", np.uint32)):  # fmt: skip
        set_real_field(retired, field, np.zeros(len(rows), dtype=dtype))
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


def vip_filter_bit(address: IPAddress) -> int:
    """The bit of a VIP address in the `vip_filter` map (rule: xlb_abi.h)."""
    words = address.packed.ljust(16, b"\0")
    folded = 0
    for i in range(0, 16, 4):
        folded ^= int.from_bytes(words[i : i + 4], "big")
    return ((folded * 2654435761) & 0xFFFFFFFF) >> (32 - int(lib.XLB_VIP_FILTER_BITS_LOG2))


def parse_conn(raw: bytes) -> tuple[int, int, int]:
    """(real_id, real_gen, atime_ns)"""
    conn = struct_from("struct xlb_conn", raw)
    return int(conn.real_id), int(conn.real_gen), int(conn.atime_ns)


# ---------------------------------------------------------------- config


def config_value(cfg: BalancerConfig, *, no_any_port_vip: bool = False) -> bytes:
    """The `config` value; `no_any_port_vip` is data-plane state the
    balancer keeps (XLB_CFG_F_NO_ANY_PORT_VIP), not a setting."""
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
    value.hash_seed = cfg.hash_seed
    value.udp_ttl_ns = int(cfg.udp_ttl_s * 1e9)
    return to_bytes(value)


def config_no_any_port_vip(raw: bytes) -> bool:
    """Whether a `config` value has XLB_CFG_F_NO_ANY_PORT_VIP set."""
    return bool(struct_from("struct xlb_config", raw).flags & lib.XLB_CFG_F_NO_ANY_PORT_VIP)


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
    )


# --------------------------------------------------------------- naming


def enum_names(ctype: str, prefix: str) -> dict[int, str]:
    """value -> lower-case name without prefix, for an ABI enum."""
    return {
        value: name[len(prefix) :].lower()
        for name, value in ffi.typeof(ctype).relements.items()
        if name.startswith(prefix)
    }
