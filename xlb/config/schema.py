"""The model of a configuration file: what `xlb serve` is told to run.

Frozen dataclasses (`Config`, `Settings`, `HealthSettings`, `VipConfig`,
`Check`, `CheckTiming`, `BgpSettings`, `Neighbor`, `RouteAttributes`), the
defaults of the file's fields, and what follows from a model without any
I/O (`balancer_config`, `effective_flags`, `probe_destination`). The
reader builds these, the reconcile compares them with a running data
plane, the writer turns them back into a file.

The schema is documented in docs/config.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Literal

from .. import _limits
from ..model import SECOND_CHANCE_DEFAULT_S, BalancerConfig, IPAddress, Real, Vip, VipFlags
from ..pins import DEFAULT_PIN_ROOT

XdpMode = Literal["native", "generic"]
Encapsulation = Literal["ipip", "gue"]
OnFailure = Literal["remove", "drain"]
AllDown = Literal["keep", "drop"]
CheckType = Literal["tcp", "http", "https", "udp", "command"]
AnnouncerKind = Literal["exabgp", "bird"]

XDP_MODES: tuple[XdpMode, ...] = ("native", "generic")
ENCAPSULATIONS: tuple[Encapsulation, ...] = ("ipip", "gue")
ON_FAILURE: tuple[OnFailure, ...] = ("remove", "drain")
ALL_DOWN: tuple[AllDown, ...] = ("keep", "drop")
CHECK_TYPES: tuple[CheckType, ...] = ("tcp", "http", "https", "udp", "command")
ANNOUNCERS: tuple[AnnouncerKind, ...] = ("exabgp", "bird")

RING_SIZE_DEFAULT = _limits.XLB_RING_SIZE_DEFAULT
RING_SIZE_MAX = _limits.XLB_RING_SIZE_MAX
DEFAULT_LOCK_DIR = Path("/run/xlb")
# Policy-routing table and rule priority of the health-check probe path
# (see xlb/health.py): arbitrary, but fixed so a restart finds its own.
DEFAULT_PROBE_TABLE = 30818
DEFAULT_PROBE_RULE_PRIORITY = 30818
# Where the daemon serves its metrics unless told otherwise (`metrics = false`:
# nowhere). Not 9100 (node_exporter): 9100-9999 is Prometheus' exporter range,
# every port of it allocated; 9090-9094 are Prometheus' own. See docs/metrics.md.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9077"

_DEFAULTS = BalancerConfig()


@dataclass(frozen=True, slots=True)
class CheckTiming:
    """When to probe and how many results in a row change a real's state."""

    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class Check:
    """How to tell that a real serves a VIP.

    The probe goes to (address, port) -- by default the VIP's own address
    and port -- through the tunnel to one real (`via_vip`), so it tests the
    path clients take. Fields that do not apply to `type` keep their default.
    """

    type: CheckType
    timing: CheckTiming = CheckTiming()
    port: int | None = None  # None: the VIP's port
    address: IPAddress | None = None  # None: the VIP's address
    via_vip: bool = True  # False: probe the real's own address instead
    # http / https
    path: str = "/"
    host: str | None = None  # Host header; None: the probed address
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None
    tls_verify: bool = False
    # udp
    send: str = ""
    expect: str | None = None  # None: any reply passes
    # command
    command: tuple[str, ...] = ()
    user: str | None = None  # run the command as this user (None: as the daemon, root)


@dataclass(frozen=True, slots=True)
class RouteAttributes:
    """BGP path attributes a VIP's prefix is announced with ([vip.bgp])."""

    communities: tuple[str, ...] = ()  # "ASN:VALUE", each half 0-65535
    med: int | None = None
    local_pref: int | None = None


@dataclass(frozen=True, slots=True)
class VipConfig:
    """One VIP of the file: what the data plane gets plus how health acts on it."""

    vip: Vip
    reals: tuple[Real, ...] = ()
    flags: VipFlags = VipFlags.NONE  # without GUE: that is `encapsulation`; QUIC is `quic`
    encapsulation: Encapsulation | None = None  # None: the global setting
    ring_size: int = RING_SIZE_DEFAULT
    # seconds a ring change's previous ring is carried (0: off; math.inf:
    # until the next change); see docs/ecmp.md
    second_chance: float = SECOND_CHANCE_DEFAULT_S
    on_failure: OnFailure = "remove"
    all_down: AllDown = "keep"
    check: Check | None = None
    route: RouteAttributes = RouteAttributes()


@dataclass(frozen=True, slots=True)
class Settings:
    """The [balancer] table: where and how the data plane runs."""

    interface: str | None = None
    xdp_mode: XdpMode = "native"
    gateway_mac: str | None = None
    fib_lookup: bool = False
    encapsulation: Encapsulation = "ipip"
    gue_port: int = _DEFAULTS.gue_port
    mtu: int = _DEFAULTS.mtu
    pin_dir: Path | None = None  # None: /sys/fs/bpf/xlb/<interface>
    metrics: str | None = DEFAULT_METRICS_ADDRESS  # HOST:PORT of the endpoint; None: off
    hash_seed: int = _DEFAULTS.hash_seed
    udp_ttl: float = _DEFAULTS.udp_ttl_s
    syn_flood_threshold: int = _DEFAULTS.syn_flood_threshold  # SYNs/s per CPU; 0 = guard off
    src_v4: str = _DEFAULTS.src_v4
    src_v6: str = _DEFAULTS.src_v6
    lock_dir: Path = DEFAULT_LOCK_DIR

    @property
    def effective_pin_dir(self) -> Path | None:
        if self.pin_dir is not None:
            return self.pin_dir
        return DEFAULT_PIN_ROOT / self.interface if self.interface else None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """The [health] table: defaults for every check and the probe plumbing."""

    timing: CheckTiming = CheckTiming()
    route_table: int = DEFAULT_PROBE_TABLE
    rule_priority: int = DEFAULT_PROBE_RULE_PRIORITY


DEFAULT_HOLD_TIME = 90  # RFC 4271's suggestion; a fast failover wants 3 (or BFD)
DEFAULT_MIN_HEALTHY = 1
DEFAULT_BIRD_SOCKET = Path("/run/bird/bird.ctl")  # Debian's bird2
DEFAULT_BIRD_INCLUDE = Path("/etc/bird/xlb-routes.conf")


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One BGP peer of the node (a [[bgp.neighbors]] table)."""

    address: IPAddress
    peer_as: int
    hold_time: int = DEFAULT_HOLD_TIME  # 0 (no keepalives) or 3-65535 seconds
    password: str | None = None  # TCP MD5 signature (RFC 2385)
    local_address: IPAddress | None = None  # None: the kernel's source towards `address`


@dataclass(frozen=True, slots=True)
class BgpSettings:
    """The [bgp] table: who announces the VIPs, to whom, and when.

    `announcer = "exabgp"`: xlb runs ExaBGP with `neighbors`; `"bird"`: xlb
    writes `bird_include` (static routes) and reloads the BIRD behind
    `bird_socket`, whose own configuration holds the sessions (and BFD).
    """

    local_as: int
    router_id: IPv4Address
    neighbors: tuple[Neighbor, ...] = ()
    announcer: AnnouncerKind = "exabgp"
    next_hop_v4: IPv4Address | None = None  # None: the session's own address ("self")
    next_hop_v6: IPv6Address | None = None
    min_healthy: int = DEFAULT_MIN_HEALTHY
    exabgp: str = "exabgp"  # the executable: a path, or a name looked up at load
    bird_socket: Path = DEFAULT_BIRD_SOCKET
    bird_include: Path = DEFAULT_BIRD_INCLUDE
    drain_on_stop: bool = False  # SIGTERM withdraws and waits as `xlb node drain` does


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file."""

    settings: Settings = Settings()
    health: HealthSettings = HealthSettings()
    vips: tuple[VipConfig, ...] = ()
    source: str = "<config>"  # the file name, for messages
    # The file says `vips = []`: having no VIPs is meant, not a truncated file.
    empty_on_purpose: bool = False
    bgp: BgpSettings | None = None  # None: no [bgp], nothing is announced

    def vip(self, vip: Vip) -> VipConfig:
        for entry in self.vips:
            if entry.vip == vip:
                return entry
        raise KeyError(vip)


def balancer_config(settings: Settings) -> BalancerConfig:
    """The data plane's global settings. GUE is set per VIP, never `gue_all`,
    so a VIP can override the global encapsulation in either direction."""
    return BalancerConfig(
        gateway_mac=settings.gateway_mac,
        fib_lookup=settings.fib_lookup,
        src_v4=settings.src_v4,
        src_v6=settings.src_v6,
        mtu=settings.mtu,
        gue_port=settings.gue_port,
        gue_all=False,
        hash_seed=settings.hash_seed,
        udp_ttl_s=settings.udp_ttl,
        syn_flood_threshold=settings.syn_flood_threshold,
    )


def effective_encapsulation(entry: VipConfig, settings: Settings) -> Encapsulation:
    return entry.encapsulation or settings.encapsulation


def effective_flags(entry: VipConfig, settings: Settings) -> VipFlags:
    """The VIP's flags as the data plane stores them (GUE included)."""
    if effective_encapsulation(entry, settings) == "gue":
        return entry.flags | VipFlags.GUE
    return entry.flags & ~VipFlags.GUE


def probe_destination(entry: VipConfig) -> tuple[IPAddress, int]:
    """Where a VIP's check connects: the VIP (or the check's override); a
    prefix VIP's first host address (Vip.probe_address)."""
    check = entry.check
    if check is None:
        return entry.vip.probe_address, entry.vip.port
    port = check.port if check.port is not None else entry.vip.port
    return check.address or entry.vip.probe_address, port


def sort_reals(reals: Iterable[Real]) -> tuple[Real, ...]:
    """Reals in canonical order (IPv4 first, then by address): states and saved files."""
    return tuple(sorted(reals, key=lambda r: (r.address.version, r.address.packed)))
