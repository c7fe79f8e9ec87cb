"""Packing of map entries (xlb._abi) against the C struct, field by field; no kernel."""

from __future__ import annotations

import ipaddress

import pytest

from xlb import _abi
from xlb._bpf import ffi, lib
from xlb.model import IPAddress


def one_real(address: IPAddress, mac: str | None, gen: int, vip_id: int, weight: int) -> bytes:
    """A `struct xlb_real` filled through cffi, one field at a time: the oracle."""
    entry = ffi.new("struct xlb_real *")
    _abi.set_addr(entry.addr, address)
    ffi.memmove(entry.mac, _abi.mac_bytes(mac), 6)
    entry.family = _abi.FAMILY[address.version]
    entry.flags = lib.XLB_REAL_F_ACTIVE
    entry.gen, entry.vip_id, entry.weight, entry.vip_flags = gen, vip_id, weight, 3
    return bytes(ffi.buffer(entry))


@pytest.mark.parametrize(
    "case",
    ["ipv4", "ipv4 with some MACs", "ipv6", "both families"],
)
def test_real_entries_match_the_struct_field_by_field(case: str) -> None:
    # IPv4 reals without MACs, the common case, are packed as whole arrays;
    # every other case one address at a time: both must give the struct's bytes.
    v4: list[IPAddress] = [ipaddress.IPv4Address(0x0A000001 + 7919 * i) for i in range(300)]
    v6: list[IPAddress] = [ipaddress.IPv6Address(0x20010DB8 << 96 | 7919 * i) for i in range(300)]
    addresses = {"ipv4": v4, "ipv4 with some MACs": v4, "ipv6": v6}.get(case, v4[::2] + v6[::2])
    macs = [
        f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" if case.endswith("MACs") and i % 3 else None
        for i in range(len(addresses))
    ]
    gens = [i + 1 for i in range(len(addresses))]
    weights = [i % 7 for i in range(len(addresses))]
    rows = _abi.real_entries(addresses, macs, gens, 9, weights, active=True, vip_flags=3)
    expected = [
        one_real(a, m, g, 9, w) for a, m, g, w in zip(addresses, macs, gens, weights, strict=True)
    ]
    assert [row.tobytes() for row in rows] == expected
