"""Value types of the public API: Vip, Real, VipFlags, Flow, BalancerConfig.

Frozen, slotted, validated on construction: an invalid value never reaches
the maps. Flag values come from the ABI header through cffi, so Python and
the data plane cannot disagree on a bit.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from ._bpf import lib
from .errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressLike = str | bytes | IPAddress
Protocol = Literal["tcp", "udp"]

IPPROTO = {"tcp": 6, "udp": 17}
PROTO_NAMES = {v: k for k, v in IPPROTO.items()}
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class VipFlags(enum.IntFlag):
    """Per-VIP behaviour bits (enum xlb_vip_flags in include/xlb_abi.h)."""

    NONE = lib.XLB_VIP_F_NONE
    #: Hash on the client address only: one client sticks to one real.
    NO_SPORT = lib.XLB_VIP_F_NO_SPORT
    #: Hash on the destination port only.
    DPORT_ONLY = lib.XLB_VIP_F_DPORT_ONLY
    #: Skip the connection table: every packet follows the ring.
    NO_CONN_TABLE = lib.XLB_VIP_F_NO_CONN_TABLE
    #: Encapsulate in GUE (UDP) instead of IP-in-IP.
    GUE = lib.XLB_VIP_F_GUE

    @classmethod
    def parse(cls, names: str | list[str]) -> VipFlags:
        """Flags from names like "no_sport,gue" or ["NO_SPORT", "GUE"]."""
        items = names.split(",") if isinstance(names, str) else names
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
        if isinstance(value, bytes):
            return ipaddress.ip_address(value)
        return ipaddress.ip_address(value.strip("[]"))
    except (ValueError, AttributeError):
        raise ConfigError(f"invalid {what} {value!r}: not an IPv4 or IPv6 address") from None


def check_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"invalid {what} {port!r}: must be an integer 0-65535")
    return port


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
    """A virtual service: (address, port, protocol). Port 0 means every port."""

    address: IPAddress
    port: int
    proto: Protocol

    def __init__(self, address: AddressLike, port: int, proto: str = "tcp") -> None:
        object.__setattr__(self, "address", parse_address(address, "VIP address"))
        object.__setattr__(self, "port", check_port(port, "VIP port"))
        if proto not in IPPROTO:
            raise ConfigError(f"invalid VIP protocol {proto!r}: must be 'tcp' or 'udp'")
        object.__setattr__(self, "proto", proto)

    @classmethod
    def parse(cls, text: str) -> Vip:
        """A VIP from "10.0.0.1:80/tcp" or "[2001:db8::1]:443/udp" (proto defaults to tcp)."""
        match = re.fullmatch(r"(\[[^\]]+\]|[^:/\[\]]+):(\d+)(?:/(\w+))?", text.strip())
        if not match:
            raise ConfigError(
                f"invalid VIP {text!r}: expected ADDR:PORT/PROTO, [V6ADDR]:PORT/PROTO"
            )
        host, port, proto = match.groups()
        return cls(host, int(port), proto or "tcp")

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.address.version

    def __str__(self) -> str:
        return f"{format_endpoint(self.address, self.port)}/{self.proto}"


@dataclass(frozen=True, slots=True, init=False)
class Real:
    """A backend server. Weight 0 drains it: no new flows, existing ones stay.

    `mac` is the next-hop MAC for flat L2 deployments (None: the balancer's
    gateway MAC or a FIB lookup decides).
    """

    address: IPAddress
    weight: int
    mac: str | None

    def __init__(self, address: AddressLike, weight: int = 1, mac: str | None = None) -> None:
        addr = parse_address(address, "real address")
        object.__setattr__(self, "address", addr)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ConfigError(f"invalid weight {weight!r} for real {addr}: must be an int >= 0")
        if weight > 0xFFFF:
            raise ConfigError(f"invalid weight {weight} for real {addr}: at most 65535")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "mac", check_mac(mac, f"MAC of real {addr}"))

    def __str__(self) -> str:
        return str(self.address)


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
        if proto not in IPPROTO:
            raise ConfigError(f"invalid protocol {proto!r}: must be 'tcp' or 'udp'")
        object.__setattr__(self, "src", src_addr)
        object.__setattr__(self, "dst", dst_addr)
        object.__setattr__(self, "sport", check_port(sport, "source port"))
        object.__setattr__(self, "dport", check_port(dport, "destination port"))
        object.__setattr__(self, "proto", proto)


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
    mtu: largest outer IP packet the path to the reals carries; 0 = no check.
    gue_port: UDP destination port of GUE encapsulation; gue_all: GUE for all.
    hash_seed: must be the same on every balancer node behind one ECMP group.
    udp_ttl_s: idle seconds after which a UDP flow may pick a new real
        (TCP flows never expire by time).
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

    def __post_init__(self) -> None:
        check_mac(self.gateway_mac, "gateway MAC")
        if parse_address(self.src_v4, "src_v4").version != 4:
            raise ConfigError(f"src_v4 {self.src_v4!r} is not an IPv4 address")
        if parse_address(self.src_v6, "src_v6").version != 6:
            raise ConfigError(f"src_v6 {self.src_v6!r} is not an IPv6 address")
        if not isinstance(self.mtu, int) or not (self.mtu == 0 or 576 <= self.mtu <= 65535):
            raise ConfigError(f"invalid mtu {self.mtu!r}: 0 (no check) or 576-65535")
        check_port(self.gue_port, "GUE port")
        if not isinstance(self.hash_seed, int) or not 0 <= self.hash_seed < 2**32:
            raise ConfigError(f"invalid hash_seed {self.hash_seed!r}: a 32-bit unsigned int")
        if not isinstance(self.udp_ttl_s, int | float) or self.udp_ttl_s < 0:
            raise ConfigError(f"invalid udp_ttl_s {self.udp_ttl_s!r}: seconds >= 0")
