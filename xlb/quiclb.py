"""QUIC-LB connection IDs: the format, the server ids of a VIP's reals.

xlb routes the datagrams of a QUIC VIP (`VipFlags.QUIC`) by the server id
its servers put in their connection IDs, in the IETF QUIC-LB format
(draft-ietf-quic-load-balancers), plaintext algorithm, one configuration:

    octet 0      config id (top 3 bits, XLB_QUIC_CONFIG_ID) and the CID
                 length minus one (low 5 bits: "length self-description")
    octets 1-2   the server id, big-endian
    the rest     a nonce, at least 4 octets (random, per CID)

so a CID is 7 to 20 octets long. Any QUIC server that implements the draft
can be configured with those parameters and the id xlb gives it;
`xlb.quic` does it for aioquic. The data plane (bpf/quic.h) and this
module agree through the ABI header's constants (xlb/_limits.py).

Each real of a QUIC VIP has a server id, unique within the VIP:
`assign_server_ids` gives every real the id it is pinned to (`Real.server_id`,
the `server_id` of the configuration file), keeps the id a real already
holds, and gives a new real the low 16 bits of its address (10.30.1.2 ->
0x0102), the next free id upward when another real holds that one,
new reals taken in address order. A node that starts from the same
configuration thus assigns the same ids, and a running node never moves a
real's id while the real stays (its connections would break); only two
reals whose addresses share their low 16 bits can get ids that depend on
history, which `server_id` pins.

Pure: no I/O, no binding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import _limits
from .errors import CapacityError, ConfigError
from .model import SERVER_ID_MAX, IPAddress, Real

CONFIG_ID: int = _limits.XLB_QUIC_CONFIG_ID
SERVER_ID_LEN: int = _limits.XLB_QUIC_SERVER_ID_LEN
NONCE_MIN_LEN: int = _limits.XLB_QUIC_NONCE_MIN_LEN
#: The CID octets the data plane hashes when no server id routes a datagram.
HASH_LEN: int = _limits.XLB_QUIC_HASH_LEN
MIN_CID_LEN = 1 + SERVER_ID_LEN + NONCE_MIN_LEN
MAX_CID_LEN: int = _limits.XLB_QUIC_MAX_CID_LEN
#: Offsets in a long-header packet (RFC 8999): DCID length, then the DCID.
LONG_DCID_LEN_OFF: int = _limits.XLB_QUIC_LONG_DCID_LEN_OFF
LONG_DCID_OFF: int = _limits.XLB_QUIC_LONG_DCID_OFF
SERVER_IDS = SERVER_ID_MAX + 1
_CONFIG_SHIFT = 5
_LENGTH_MASK = 0x1F
_LONG_HEADER = 0x80

__all__ = [
    "CONFIG_ID",
    "HASH_LEN",
    "MAX_CID_LEN",
    "MIN_CID_LEN",
    "SERVER_ID_LEN",
    "SERVER_ID_MAX",
    "CidGenerator",
    "assign_server_ids",
    "check_cid_length",
    "derived_server_id",
    "destination_cid",
    "encode_cid",
    "server_id_of",
]


# ================================================================= ids


def derived_server_id(address: IPAddress) -> int:
    """The id a real gets when nothing else decides: its address's low bits."""
    return int.from_bytes(address.packed[-SERVER_ID_LEN:], "big")


def assign_server_ids(
    reals: Iterable[Real], current: Mapping[IPAddress, int] | None = None
) -> dict[IPAddress, int]:
    """Each real's server id, unique among `reals` (see the module docstring).

    `current`: the ids the reals hold now (a real absent from `reals` frees
    its id). Raises ConfigError when two reals are pinned to one id, and
    CapacityError when there are more reals than ids.
    """
    wanted = list(reals)
    if len(wanted) > SERVER_IDS:
        raise CapacityError(
            f"{len(wanted)} reals but QUIC-LB {SERVER_ID_LEN}-octet server ids number {SERVER_IDS}"
        )
    ids = _pinned_ids(wanted)
    taken = {sid: address for address, sid in ids.items()}
    for real in wanted:  # keep what a real holds unless a pinned real claims it
        held = (current or {}).get(real.address)
        if real.address not in ids and held is not None and held not in taken:
            ids[real.address] = held
            taken[held] = real.address
    new = sorted((r.address for r in wanted if r.address not in ids), key=_address_key)
    for address in new:
        sid = derived_server_id(address)
        while sid in taken:
            sid = (sid + 1) % SERVER_IDS
        ids[address] = sid
        taken[sid] = address
    return ids


def _pinned_ids(reals: list[Real]) -> dict[IPAddress, int]:
    ids: dict[IPAddress, int] = {}
    owner: dict[int, IPAddress] = {}
    for real in reals:
        if real.server_id is None:
            continue
        other = owner.get(real.server_id)
        if other is not None:
            raise ConfigError(
                f"reals {other} and {real.address} are both given server_id {real.server_id}: "
                "a server id names one real of a VIP"
            )
        ids[real.address] = owner_id = real.server_id
        owner[owner_id] = real.address
    return ids


def _address_key(address: IPAddress) -> tuple[int, bytes]:
    return address.version, address.packed


# ================================================================ CIDs


def check_cid_length(length: object) -> int:
    """A connection-ID length that holds the config octet, a server id and
    the shortest nonce QUIC-LB allows, and that QUIC allows (7-20)."""
    if isinstance(length, bool) or not isinstance(length, int):
        raise ConfigError(f"invalid connection ID length {length!r}: an integer")
    if not MIN_CID_LEN <= length <= MAX_CID_LEN:
        raise ConfigError(
            f"invalid connection ID length {length}: QUIC-LB needs {MIN_CID_LEN}-{MAX_CID_LEN} "
            f"octets (1 config octet, {SERVER_ID_LEN} of server id, a nonce of at least "
            f"{NONCE_MIN_LEN})"
        )
    return length


def encode_cid(server_id: int, nonce: bytes) -> bytes:
    """A connection ID naming `server_id`, its length self-described."""
    length = check_cid_length(1 + SERVER_ID_LEN + len(nonce))
    first = CONFIG_ID << _CONFIG_SHIFT | (length - 1) & _LENGTH_MASK
    return bytes([first]) + _check_id(server_id).to_bytes(SERVER_ID_LEN, "big") + nonce


def server_id_of(cid: bytes) -> int | None:
    """The server id a connection ID names, as the data plane reads it; None
    when it names none (another config id, or too short)."""
    if len(cid) < 1 + SERVER_ID_LEN or cid[0] >> _CONFIG_SHIFT != CONFIG_ID:
        return None
    return int.from_bytes(cid[1 : 1 + SERVER_ID_LEN], "big")


def destination_cid(datagram: bytes) -> bytes | None:
    """The part of a QUIC datagram's destination CID the data plane reads:
    the whole CID of a long header, the first HASH_LEN octets of a short one
    (whose length the packet does not tell). None for a datagram the data
    plane routes by its 5-tuple (too short, or a CID over 20 octets)."""
    if len(datagram) < LONG_DCID_OFF:
        return None
    if datagram[0] & _LONG_HEADER:
        length = datagram[LONG_DCID_LEN_OFF]
        if length > MAX_CID_LEN or len(datagram) < LONG_DCID_OFF + max(length, HASH_LEN):
            return None
        return datagram[LONG_DCID_OFF : LONG_DCID_OFF + length]
    if len(datagram) < 1 + HASH_LEN:
        return None
    return datagram[1 : 1 + HASH_LEN]


def _check_id(server_id: object) -> int:
    if (
        isinstance(server_id, bool)
        or not isinstance(server_id, int)
        or not 0 <= server_id <= SERVER_ID_MAX
    ):
        raise ConfigError(
            f"invalid server id {server_id!r}: QUIC-LB server ids here are {SERVER_ID_LEN} "
            f"octets, 0-{SERVER_ID_MAX}"
        )
    return server_id


@dataclass(frozen=True, slots=True)
class CidGenerator:
    """New connection IDs of `length` octets naming `server_id`, each with a
    fresh random nonce (`random`: os.urandom, or a test's own source)."""

    server_id: int
    length: int = 8
    random: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        _check_id(self.server_id)
        check_cid_length(self.length)

    def new(self) -> bytes:
        return encode_cid(self.server_id, self.random(self.length - 1 - SERVER_ID_LEN))
