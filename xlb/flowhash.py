"""Pure-Python mirror of the data plane's flow hash (bpf/hash.h).

``flow_hash`` returns exactly the 32-bit value the XDP program computes, so
the control plane can predict the ring slot (``flow_hash(...) % ring_size``)
and thus the real a flow is sent to, and the outer source address / GUE
source port the balancer will use for it.

Algorithm: Bob Jenkins' lookup3 ``hashword`` as Linux ``jhash2()`` over
32-bit words, with ``initval = seed`` (``config.hash_seed``):

* IPv4: ``[saddr, daddr, sport << 16 | dport, proto]``
* IPv6: ``[saddr[0:4], ..., saddr[12:16], daddr[0:4], ..., sport << 16 | dport, proto]``
  (each address word is four address bytes read big-endian)
* ``XLB_VIP_F_NO_SPORT``: sport is 0 in the ports word
* ``XLB_VIP_F_DPORT_ONLY``: the single word ``[dport]`` (takes precedence)

A QUIC VIP's datagrams whose connection ID names no known server hash the
CID instead (``quic_cid_hash``, bpf/quic.h): its first ``XLB_QUIC_HASH_LEN``
(7) octets, zero-padded to 8, as two big-endian words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = [
    "VIP_F_DPORT_ONLY",
    "VIP_F_NO_SPORT",
    "flow_hash",
    "gue_source_port",
    "jhash2",
    "outer_source_v4",
    "outer_source_v6",
    "quic_cid_hash",
    "ring_slot",
]

# Mirrors enum xlb_vip_flags in include/xlb_abi.h (only the bits the hash uses).
VIP_F_NO_SPORT: Final = 1 << 0
VIP_F_DPORT_ONLY: Final = 1 << 1

# Mirrors XLB_QUIC_HASH_LEN (a test compares them).
_QUIC_HASH_LEN: Final = 7
_JHASH_INITVAL: Final = 0xDEADBEEF
_MASK: Final = 0xFFFFFFFF


def _rol32(word: int, shift: int) -> int:
    return ((word << shift) | (word >> (32 - shift))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _MASK
    a ^= _rol32(c, 4)
    c = (c + b) & _MASK
    b = (b - a) & _MASK
    b ^= _rol32(a, 6)
    a = (a + c) & _MASK
    c = (c - b) & _MASK
    c ^= _rol32(b, 8)
    b = (b + a) & _MASK
    a = (a - c) & _MASK
    a ^= _rol32(c, 16)
    c = (c + b) & _MASK
    b = (b - a) & _MASK
    b ^= _rol32(a, 19)
    a = (a + c) & _MASK
    c = (c - b) & _MASK
    c ^= _rol32(b, 4)
    b = (b + a) & _MASK
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b
    c = (c - _rol32(b, 14)) & _MASK
    a ^= c
    a = (a - _rol32(c, 11)) & _MASK
    b ^= a
    b = (b - _rol32(a, 25)) & _MASK
    c ^= b
    c = (c - _rol32(b, 16)) & _MASK
    a ^= c
    a = (a - _rol32(c, 4)) & _MASK
    b ^= a
    b = (b - _rol32(a, 14)) & _MASK
    c ^= b
    c = (c - _rol32(b, 24)) & _MASK
    return c


def jhash2(words: Sequence[int], initval: int) -> int:
    """Linux ``jhash2()``: lookup3 over 32-bit words (values taken mod 2**32)."""
    k = [w & _MASK for w in words]
    n = len(k)
    a = b = c = (_JHASH_INITVAL + (n << 2) + initval) & _MASK
    i = 0
    while n - i > 3:
        a = (a + k[i]) & _MASK
        b = (b + k[i + 1]) & _MASK
        c = (c + k[i + 2]) & _MASK
        a, b, c = _mix(a, b, c)
        i += 3
    rest = n - i
    if rest == 0:
        return c
    if rest == 3:
        c = (c + k[i + 2]) & _MASK
    if rest >= 2:
        b = (b + k[i + 1]) & _MASK
    a = (a + k[i]) & _MASK
    return _final(a, b, c)


def _addr_words(addr: bytes) -> list[int]:
    return [int.from_bytes(addr[i : i + 4], "big") for i in range(0, len(addr), 4)]


def flow_hash(
    saddr: bytes,
    daddr: bytes,
    sport: int,
    dport: int,
    proto: int,
    seed: int,
    flags: int,
) -> int:
    """The data plane's 32-bit flow hash.

    ``saddr``/``daddr`` are packed addresses (both 4 or both 16 bytes),
    ``sport``/``dport`` host-order ports, ``proto`` an IPPROTO number,
    ``seed`` the config's ``hash_seed`` and ``flags`` the VIP's flags.
    """
    if len(saddr) != len(daddr) or len(saddr) not in (4, 16):
        raise ValueError("addresses must both be 4 or both be 16 bytes")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError("ports must be 0..65535")
    if not 0 <= proto <= 0xFF:
        raise ValueError("proto must be 0..255")
    seed &= _MASK
    if flags & VIP_F_DPORT_ONLY:
        return jhash2([dport], seed)
    ports = dport if flags & VIP_F_NO_SPORT else (sport << 16) | dport
    return jhash2([*_addr_words(saddr), *_addr_words(daddr), ports, proto], seed)


def quic_cid_hash(cid: bytes, seed: int) -> int:
    """The data plane's hash of a QUIC destination connection ID (as much
    of it as bpf/quic.h reads: xlb.quiclb.destination_cid)."""
    octets = cid[:_QUIC_HASH_LEN].ljust(8, b"\0")
    return jhash2([int.from_bytes(octets[:4], "big"), int.from_bytes(octets[4:], "big")], seed)


def ring_slot(hash_value: int, ring_size: int) -> int:
    """The Maglev ring position the data plane reads for ``hash_value``."""
    return hash_value % ring_size


def gue_source_port(hash_value: int) -> int:
    """GUE outer UDP source port (host order): 49152..65535."""
    return 0xC000 | ((hash_value >> 16) & 0x3FFF)


def outer_source_v4(base: bytes, hash_value: int) -> bytes:
    """Outer IPv4 source: ``base`` with its low 16 bits from the hash."""
    if len(base) != 4:
        raise ValueError("base must be 4 bytes")
    return base[:2] + (hash_value & 0xFFFF).to_bytes(2, "big")


def outer_source_v6(base: bytes, hash_value: int) -> bytes:
    """Outer IPv6 source: ``base`` with its low 32 bits replaced by the hash."""
    if len(base) != 16:
        raise ValueError("base must be 16 bytes")
    return base[:12] + (hash_value & _MASK).to_bytes(4, "big")
