"""Value types of the public API: Vip, Real, VipFlags, Flow, BalancerConfig.

Frozen, slotted, validated on construction: an invalid value never reaches
the maps. Flag values come from the ABI header (xlb/_limits.py, generated
from it at build time), so Python and the data plane cannot disagree on a bit.

Addresses that no packet can be balanced to or from are refused as VIPs and
as reals (`unusable_reason`): unspecified, broadcast, multicast, loopback and
link-local. Link-local is refused in both families because such addresses
are not routed (an ECMP router never sends a VIP's traffic to one, a real
behind a gateway is never reached at one) and because an IPv6 link-local
address is only usable with an interface scope, which neither a real's map
entry nor the health checker's probes carry. `Vip.from_data_plane` and
`Real.from_data_plane` skip only that check, for values read back from the
maps (an older xlb may have written them) and for packet destinations.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, cast

from . import _limits
from .errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AddressLike = str | bytes | IPAddress
#: What a VIP's address may be given as: an address, or a prefix (text or network).
VipAddressLike = AddressLike | IPNetwork
Protocol = Literal["tcp", "udp"]

IPPROTO = {"tcp": 6, "udp": 17}
PROTO_NAMES = {v: k for k, v in IPPROTO.items()}
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
U32_MAX = 2**32 - 1
MAX_WEIGHT = 0xFFFF
#: Largest QUIC-LB server id: XLB_QUIC_SERVER_ID_LEN octets (xlb/quiclb.py).
SERVER_ID_MAX = 256**_limits.XLB_QUIC_SERVER_ID_LEN - 1
#: Longest udp_ttl_s: the `config` map holds it as a u64 of nanoseconds.
UDP_TTL_MAX_S = (2**64 - 1) // 10**9
#: Second chance (docs/ecmp.md): how long after a VIP's ring change its
#: previous ring is carried for flows the change moved, by default; 0 = off,
#: math.inf = until the VIP's next change.
SECOND_CHANCE_DEFAULT_S = 3600.0
SECOND_CHANCE_MAX_S = 30 * 24 * 3600  # a longer finite window is "until the next change"
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _read_address_int() -> Callable[[IPAddress], int]:
    """How address_ints reads an address's integer: the attribute ipaddress
    keeps it in, if this Python's ipaddress has it (int() reads the same
    through a method of its own, three times slower), else int()."""
    read = operator.attrgetter("_ip")
    probes = (LIMITED_BROADCAST, ipaddress.IPv6Address("2001:db8::1"))
    try:
        if all(read(address) == int(address) for address in probes):
            return cast("Callable[[IPAddress], int]", read)
    except AttributeError:
        pass
    return int


_address_int = _read_address_int()


def address_ints(addresses: Iterable[IPAddress]) -> Iterator[int]:
    """int() of each address, for the thousands of reals a change may
    carry (the Maglev build and the `reals` entries read them all)."""
    return map(_address_int, addresses)


VIP_TEXT_HINT = (
    "expected ADDR:PORT/PROTO, [V6ADDR]:PORT/PROTO, "
    "PREFIX/LEN:PORT/PROTO or [V6PREFIX/LEN]:PORT/PROTO"
)
#: Where no VIP may reach: the ranges of unusable_reason(), for prefixes.
UNUSABLE_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("0.0.0.0/32"), "the unspecified address"),
    (ipaddress.ip_network("255.255.255.255/32"), "the broadcast address"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast addresses"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback addresses"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local addresses"),
    (ipaddress.ip_network("::/128"), "the unspecified address"),
    (ipaddress.ip_network("ff00::/8"), "multicast addresses"),
    (ipaddress.ip_network("::1/128"), "the loopback address"),
    (ipaddress.ip_network("fe80::/10"), "link-local addresses"),
)


class VipFlags(enum.IntFlag):
    """Per-VIP behaviour bits (enum xlb_vip_flags in include/xlb_abi.h)."""

    NONE = _limits.XLB_VIP_F_NONE
    #: Hash on the client address only: one client sticks to one real.
    NO_SPORT = _limits.XLB_VIP_F_NO_SPORT
    #: Hash on the destination port only.
    DPORT_ONLY = _limits.XLB_VIP_F_DPORT_ONLY
    #: Skip the connection table: every packet follows the ring.
    NO_CONN_TABLE = _limits.XLB_VIP_F_NO_CONN_TABLE
    #: Encapsulate in GUE (UDP) instead of IP-in-IP.
    GUE = _limits.XLB_VIP_F_GUE
    #: UDP VIP serving QUIC: route by the server id in the connection ID
    #: (QUIC-LB, xlb/quiclb.py); no connection table.
    QUIC = _limits.XLB_VIP_F_QUIC

    @classmethod
    def parse(cls, names: str | list[str]) -> VipFlags:
        """Flags from names like "no_sport,gue" or ["NO_SPORT", "GUE"]."""
        if isinstance(names, str):
            items = names.split(",")
        elif isinstance(names, list | tuple) and all(isinstance(i, str) for i in names):
            items = list(names)
        else:
            raise ConfigError(
                f"invalid VIP flags {names!r}: names like 'no_sport,gue' or a list of names"
            )
        flags = cls.NONE
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                flags |= cls[item.upper().replace("-", "_")]
            except KeyError:
                known = ", ".join(m.name.lower() for m in cls if m.name and m.value)
                raise ConfigError(f"unknown VIP flag {item!r} (known: {known})") from None
        return flags

    def names(self) -> list[str]:
        """The set flags' names in lower case, in bit order."""
        return [m.name.lower() for m in VipFlags if m.value and m in self and m.name]


def parse_address(value: AddressLike, what: str = "address") -> IPAddress:
    """An IPv4/IPv6 address from text, packed bytes or an ipaddress object."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        if isinstance(value, bytes):  # packed: 4 or 16 bytes
            return ipaddress.ip_address(value)
        if isinstance(value, str):
            return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        pass
    raise ConfigError(f"invalid {what} {value!r}: not an IPv4 or IPv6 address")


def unusable_reason(address: IPAddress) -> str | None:
    """Why no packet can be balanced to `address` as a VIP or sent to it as
    a real (see the module docstring); None for an ordinary unicast address."""
    if address.is_unspecified:
        return "it is the unspecified address, which no host has"
    if address == LIMITED_BROADCAST:
        return "it is the broadcast address, which is never routed to one host"
    if address.is_multicast:
        return "it is a multicast address, which names a group, not one host"
    if address.is_loopback:
        return "it is a loopback address, which never leaves its host"
    if address.is_link_local:
        return "it is link-local: never routed, and usable only with an interface scope"
    return None


def check_usable(address: IPAddress, what: str) -> IPAddress:
    reason = unusable_reason(address)
    if reason is not None:
        raise ConfigError(f"invalid {what} {address}: {reason}")
    return address


def check_usable_prefix(network: IPNetwork) -> IPNetwork:
    """A VIP prefix holds no address a VIP may not have (unusable_reason)."""
    for unusable, what in UNUSABLE_RANGES:
        if unusable.version == network.version and network.overlaps(unusable):
            raise ConfigError(
                f"invalid VIP prefix {network}: it holds {what} ({unusable}), "
                "to which no packet can be balanced"
            )
    return network


def parse_vip_address(value: object) -> tuple[IPAddress, int]:
    """(address, prefix length) of a VIP given as an address ("10.0.0.1",
    prefix length 32 / 128) or a prefix ("10.100.0.0/24", "[2001:db8::/64]",
    an ip_network): host bits must be zero."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value.network_address, value.prefixlen
    if not isinstance(value, str) or "/" not in value:
        address = parse_address(cast(AddressLike, value), "VIP address")
        return address, address.max_prefixlen
    text = value.strip().strip("[]")
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(
                f"invalid VIP prefix {value!r}: expected an IPv4 or IPv6 prefix "
                "like 10.100.0.0/24 or 2001:db8:100::/64"
            ) from None
        raise ConfigError(
            f"invalid VIP prefix {value!r}: host bits are set (the prefix is {loose})"
        ) from None
    return network.network_address, network.prefixlen


def check_int(value: object, what: str, low: int, high: int) -> int:
    """An int (not a bool) from `low` to `high`, or a ConfigError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"invalid {what} {value!r}: must be an integer {low}-{high}")
    return value


def check_weight(weight: object, address: IPAddress) -> int:
    """A real's weight: an int from 0 (drained) to 65535."""
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ConfigError(f"invalid weight {weight!r} for real {address}: must be an int >= 0")
    if weight > MAX_WEIGHT:
        raise ConfigError(f"invalid weight {weight} for real {address}: at most {MAX_WEIGHT}")
    return weight


def check_server_id(server_id: object, address: IPAddress) -> int | None:
    """A real's QUIC-LB server id: None (xlb assigns one) or 0-SERVER_ID_MAX."""
    if server_id is None:
        return None
    if (
        isinstance(server_id, bool)
        or not isinstance(server_id, int)
        or not 0 <= server_id <= SERVER_ID_MAX
    ):
        octets = _limits.XLB_QUIC_SERVER_ID_LEN
        raise ConfigError(
            f"invalid server_id {server_id!r} for real {address}: QUIC-LB server ids are "
            f"{octets} octets here, an integer 0-{SERVER_ID_MAX}"
        )
    return server_id


def check_port(port: object, what: str = "port", *, minimum: int = 0) -> int:
    return check_int(port, what, minimum, 65535)


def check_proto(proto: object, what: str = "protocol") -> Protocol:
    if not isinstance(proto, str) or proto not in IPPROTO:
        raise ConfigError(f"invalid {what} {proto!r}: must be 'tcp' or 'udp'")
    return cast(Protocol, proto)


def check_mac(mac: str | None, what: str = "MAC address") -> str | None:
    if mac is None:
        return None
    if not isinstance(mac, str) or not MAC_RE.match(mac):
        raise ConfigError(f"invalid {what} {mac!r}: expected six hex bytes like 02:00:00:00:00:01")
    return mac.lower()


def format_endpoint(address: IPAddress, port: int) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True, init=False)
class Vip:
    """A virtual service: (address, port, protocol). Port 0 means every port.

    The address may be a prefix ("10.100.0.0/24", "2001:db8:100::/64"): a
    prefix VIP serves every address in it, with one ring (the data plane
    finds it by longest-prefix match after the exact VIPs, see
    docs/config.md). `address` is then the prefix's first address and
    `prefixlen` its length; an exact VIP has prefixlen 32 / 128.
    """

    address: IPAddress
    port: int
    proto: Protocol
    prefixlen: int

    def __init__(self, address: VipAddressLike, port: int, proto: str = "tcp") -> None:
        addr, prefixlen = parse_vip_address(address)
        if prefixlen == addr.max_prefixlen:
            check_usable(addr, "VIP address")
        else:
            check_usable_prefix(ipaddress.ip_network(f"{addr}/{prefixlen}"))
        self._set(addr, port, proto, prefixlen)

    def _set(self, address: AddressLike, port: int, proto: str, prefixlen: int | None) -> None:
        addr = parse_address(address, "VIP address")
        plen = addr.max_prefixlen if prefixlen is None else prefixlen
        check_int(plen, "VIP prefix length", 0, addr.max_prefixlen)
        object.__setattr__(self, "address", addr)
        object.__setattr__(self, "port", check_port(port, "VIP port"))
        object.__setattr__(self, "proto", check_proto(proto, "VIP protocol"))
        object.__setattr__(self, "prefixlen", plen)

    @classmethod
    def from_data_plane(
        cls, address: AddressLike, port: int, proto: str = "tcp", prefixlen: int | None = None
    ) -> Vip:
        """A VIP as the maps hold it or a packet names it: checked like
        `Vip()` except that the address may be one xlb refuses for new VIPs."""
        vip = cls.__new__(cls)
        vip._set(address, port, proto, prefixlen)
        return vip

    @classmethod
    def parse(cls, text: str) -> Vip:
        """A VIP from "10.0.0.1:80/tcp", "[2001:db8::1]:443/udp",
        "10.100.0.0/24:80/tcp" or "[2001:db8:100::/64]:0/udp" (proto
        defaults to tcp)."""
        if not isinstance(text, str):
            raise ConfigError(f"invalid VIP {text!r}: {VIP_TEXT_HINT} text")
        match = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+):(\d+)(?:/(\w+))?", text.strip())
        if not match:
            raise ConfigError(f"invalid VIP {text!r}: {VIP_TEXT_HINT}")
        host, port, proto = match.groups()
        return cls(host.strip("[]"), int(port), proto or "tcp")

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.address.version

    @property
    def is_prefix(self) -> bool:
        """Whether the VIP serves a prefix rather than one address."""
        return self.prefixlen < self.address.max_prefixlen

    @property
    def network(self) -> IPNetwork:
        """Every address the VIP serves: its prefix, or a /32 or /128."""
        return ipaddress.ip_network(f"{self.address}/{self.prefixlen}")

    @property
    def address_text(self) -> str:
        """The address, or the prefix: "10.0.0.1", "10.100.0.0/24"."""
        return str(self.network) if self.is_prefix else str(self.address)

    @property
    def destination(self) -> IPAddress | IPNetwork:
        """What routers must send to the balancer: the address, or the prefix."""
        return self.network if self.is_prefix else self.address

    @property
    def probe_address(self) -> IPAddress:
        """Where a health probe of the VIP goes: its address; for a prefix,
        its first host address (the one after the prefix's own, when the
        prefix has more than two addresses)."""
        if self.network.num_addresses > 2:
            return self.address + 1
        return self.address

    def holds(self, address: IPAddress) -> bool:
        """Whether a packet to `address` may be this VIP's."""
        if not self.is_prefix:
            return address == self.address
        return address.version == self.family and address in self.network

    def __str__(self) -> str:
        host = f"[{self.address_text}]" if self.family == 6 else self.address_text
        return f"{host}:{self.port}/{self.proto}"


def overlapping_prefix(vip: Vip, others: Iterable[Vip]) -> Vip | None:
    """A prefix VIP among `others` (not `vip` itself) whose prefix overlaps
    `vip`'s with the same protocol and port, or None. Two such VIPs are
    refused: one would hide part of the other (the longest prefix wins), so
    which one a packet reaches depends on the address in a way a typo
    (/16 for /24) makes silently. An exact VIP inside a prefix VIP is
    allowed: it is looked up first, a deliberate exception."""
    if not vip.is_prefix:
        return None
    for other in others:
        if other == vip or not other.is_prefix:
            continue
        same_service = (other.family, other.proto, other.port) == (vip.family, vip.proto, vip.port)
        if same_service and other.network.overlaps(vip.network):
            return other
    return None


@dataclass(frozen=True, slots=True, init=False)
class Real:
    """A backend server. Weight 0 drains it: no new flows, existing ones stay.

    `mac` is the next-hop MAC for flat L2 deployments (None: the balancer's
    gateway MAC or a FIB lookup decides). `server_id` pins the real's
    QUIC-LB server id in a QUIC VIP (None: xlb assigns one, see
    xlb/quiclb.py); VIPs without QUIC routing ignore it.
    """

    address: IPAddress
    weight: int
    mac: str | None
    server_id: int | None

    def __init__(
        self,
        address: AddressLike,
        weight: int = 1,
        mac: str | None = None,
        server_id: int | None = None,
    ) -> None:
        addr = check_usable(parse_address(address, "real address"), "real address")
        self._set(addr, weight, mac, server_id)

    def _set(
        self, address: AddressLike, weight: int, mac: str | None, server_id: int | None
    ) -> None:
        addr = parse_address(address, "real address")
        object.__setattr__(self, "address", addr)
        object.__setattr__(self, "weight", check_weight(weight, addr))
        object.__setattr__(self, "mac", check_mac(mac, f"MAC of real {addr}"))
        object.__setattr__(self, "server_id", check_server_id(server_id, addr))

    @classmethod
    def from_data_plane(
        cls, address: AddressLike, weight: int, mac: str | None, server_id: int | None = None
    ) -> Real:
        """A real as the maps hold it: checked like `Real()` except that the
        address may be one xlb refuses for new reals (an older xlb wrote it)."""
        real = cls.__new__(cls)
        real._set(address, weight, mac, server_id)
        return real

    def with_weight(self, weight: int) -> Real:
        """This real with another weight (its address was checked when it was made)."""
        return Real.from_data_plane(self.address, weight, self.mac, self.server_id)

    def __str__(self) -> str:
        return str(self.address)


#: What the Balancer takes where it wants a Vip: text goes through Vip.parse.
VipLike = Vip | str
#: What the Balancer takes where it wants a Real: an address is Real(address).
RealLike = Real | AddressLike


def to_vip(value: object) -> Vip:
    """A Vip, or a Vip parsed from text like "10.0.0.1:80/tcp"."""
    if isinstance(value, Vip):
        return value
    if isinstance(value, str):
        return Vip.parse(value)
    raise ConfigError(f"expected a Vip or text like 10.0.0.1:80/tcp, got {value!r}")


def to_real(value: object) -> Real:
    """A Real, or one made from an address (weight 1, no MAC)."""
    if isinstance(value, Real):
        return value
    if isinstance(value, str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return Real(value)
    raise ConfigError(f"expected a Real or an address, got {value!r}")


@dataclass(frozen=True, slots=True, init=False)
class Flow:
    """A client's 5-tuple towards a VIP, as the balancer sees it."""

    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    proto: Protocol

    def __init__(
        self, src: AddressLike, dst: AddressLike, sport: int, dport: int, proto: str = "tcp"
    ) -> None:
        src_addr, dst_addr = parse_address(src, "source"), parse_address(dst, "destination")
        if src_addr.version != dst_addr.version:
            raise ConfigError(f"flow mixes address families: {src_addr} -> {dst_addr}")
        object.__setattr__(self, "src", src_addr)
        object.__setattr__(self, "dst", dst_addr)
        object.__setattr__(self, "sport", check_port(sport, "source port"))
        object.__setattr__(self, "dport", check_port(dport, "destination port"))
        object.__setattr__(self, "proto", check_proto(proto))


@dataclass(frozen=True, slots=True)
class Counter:
    """Packets and bytes, summed over CPUs."""

    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """Data-plane settings shared by every VIP (the `config` map).

    gateway_mac: next hop for encapsulated packets in routed deployments.
    fib_lookup: when a real has no MAC and there is no gateway MAC, ask the
        kernel's FIB/neighbour table (flat L2 without static MACs).
    src_v4 / src_v6: outer source prefixes; the low 16 (v4) / 32 (v6) bits
        vary per flow so the real's NIC spreads flows over its queues.
    mtu: largest outer IP packet the path to the reals carries; 0 = no check,
        else 576-65535.
    gue_port: UDP destination port of GUE encapsulation (1-65535);
        gue_all: GUE for all.
    hash_seed: must be the same on every balancer node behind one ECMP group
        (0-4294967295).
    udp_ttl_s: idle seconds after which a UDP flow may pick a new real
        (TCP flows never expire by time); 0 (never) to UDP_TTL_MAX_S.
    syn_flood_threshold: TCP SYNs per CPU per second above which the CPU is
        under a SYN flood: a SYN then records no connection-table entry (the
        ring routes it; its first ACK records it), so a flood cannot push
        established flows out of the table (bpf/flood.h); 0 = guard off,
        else 1-4294967295.

    Every field is checked here, so `configure()` never fails on a value;
    src_v4/src_v6 are kept as canonical text (an ipaddress object is taken).
    """

    gateway_mac: str | None = None
    fib_lookup: bool = False
    src_v4: str = "172.16.0.0"
    src_v6: str = "fd00:7862::"
    mtu: int = 1500
    gue_port: int = 6080
    gue_all: bool = False
    hash_seed: int = 0x786C62
    udp_ttl_s: float = 300.0
    syn_flood_threshold: int = 1000

    def __post_init__(self) -> None:
        check_mac(self.gateway_mac, "gateway_mac")
        _check_bool(self.fib_lookup, "fib_lookup")
        _check_bool(self.gue_all, "gue_all")
        object.__setattr__(self, "src_v4", _source_prefix(self.src_v4, 4, "src_v4"))
        object.__setattr__(self, "src_v6", _source_prefix(self.src_v6, 6, "src_v6"))
        _check_mtu(self.mtu)
        check_port(self.gue_port, "gue_port", minimum=1)
        check_int(self.hash_seed, "hash_seed", 0, U32_MAX)
        _check_seconds(self.udp_ttl_s, "udp_ttl_s", UDP_TTL_MAX_S)
        check_int(self.syn_flood_threshold, "syn_flood_threshold", 0, U32_MAX)


def _check_bool(value: object, what: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"invalid {what} {value!r}: True or False")


def _check_mtu(mtu: object) -> None:
    """0 (no check), or from 576 (the IPv4 datagram every host must accept)
    to 65535 (the largest IP packet)."""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not (mtu == 0 or 576 <= mtu <= 65535):
        raise ConfigError(f"invalid mtu {mtu!r}: must be 0 (no check) or an integer 576-65535")


def _source_prefix(value: object, version: int, what: str) -> str:
    """The outer source prefix as canonical text, which is what the map is packed from."""
    address = parse_address(cast(AddressLike, value), what)
    if address.version != version:
        raise ConfigError(f"invalid {what} {value!r}: not an IPv{version} address")
    return str(address)


def _check_seconds(value: object, what: str, most: int) -> None:
    """Seconds as an int or a finite float from 0 to `most`, stored in whole
    nanoseconds: a positive value below 1 ns would be stored as 0, which
    means the opposite (never)."""
    # nan and inf fail the comparison; no float conversion, which a huge int overflows
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value == 0 or 1e-9 <= value <= most)
    ):
        raise ConfigError(f"invalid {what} {value!r}: seconds 0-{most} (0: never; else >= 1e-9)")


def check_second_chance(value: object, what: str = "second_chance") -> float:
    """A second-chance window: seconds 0 (off) to SECOND_CHANCE_MAX_S, or
    math.inf (until the VIP's next ring change). Returned as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"invalid {what} {value!r}: seconds (a number), or inf")
    if value == math.inf:
        return math.inf
    # nan fails the comparison; a positive value below 1 ms is taken for a typo of 0
    if not (value == 0 or 1e-3 <= value <= SECOND_CHANCE_MAX_S):
        raise ConfigError(
            f"invalid {what} {value!r}: seconds 0 (off) or 0.001-{SECOND_CHANCE_MAX_S}, "
            "or inf (until the next ring change)"
        )
    return float(value)


def vip_sort_key(vip: Vip) -> tuple[int, bytes, int, int, str]:
    """The order VIPs are listed and applied in: family, address, prefix
    length, port, protocol."""
    return vip.family, vip.address.packed, vip.prefixlen, vip.port, vip.proto
