"""The reader: TOML text into a `Config`, every problem found at once.

`load(path)` / `loads(text)` turn TOML into a `Config`. Validation keeps
going after the first problem and raises one `ConfigFileError` listing
every issue with its location (`lb.toml: vip[1].reals[2].weight: ...`).
No I/O beyond reading the file.

The schema is documented in docs/config.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import pwd
import re
import shutil
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import ConfigError
from ..maglev import check_ring_size
from ..model import (
    IPPROTO,
    MAX_WEIGHT,
    SECOND_CHANCE_DEFAULT_S,
    SECOND_CHANCE_MAX_S,
    SERVER_ID_MAX,
    UDP_TTL_MAX_S,
    IPAddress,
    IPNetwork,
    Real,
    Vip,
    VipFlags,
    check_mac,
    check_second_chance,
    overlapping_prefix,
    parse_address,
    parse_vip_address,
)
from .schema import (
    ALL_DOWN,
    ANNOUNCERS,
    CHECK_TYPES,
    DEFAULT_BIRD_INCLUDE,
    DEFAULT_BIRD_SOCKET,
    DEFAULT_HOLD_TIME,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_MIN_HEALTHY,
    ENCAPSULATIONS,
    ON_FAILURE,
    RING_SIZE_DEFAULT,
    RING_SIZE_MAX,
    XDP_MODES,
    AllDown,
    AnnouncerKind,
    BgpSettings,
    Check,
    CheckTiming,
    CheckType,
    Config,
    Encapsulation,
    HealthSettings,
    Neighbor,
    OnFailure,
    RouteAttributes,
    Settings,
    VipConfig,
    XdpMode,
)

INTERFACE_RE = re.compile(r"^[^\s/:]{1,15}$")


# ================================================================= errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file, with where it is."""

    source: str
    location: str  # "vip[1].reals[2].weight"; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.location}" if self.location else self.source
        return f"{where}: {self.message}"


class ConfigFileError(ConfigError):
    """A configuration file is invalid; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in the configuration"
        super().__init__("\n".join([head, *(f"  {issue}" for issue in self.issues)]))


# ================================================================ loading

T = TypeVar("T")


class _Issues:
    """Collects problems so validation can report all of them at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[ConfigIssue] = []

    def add(self, location: str, message: str) -> None:
        self.items.append(ConfigIssue(self.source, location, message))


class _Table:
    """A TOML table being read: typed getters that record issues, not raise.

    A getter returns the default when the key is missing *or* invalid (the
    issue is recorded), so reading can go on and find the next problem.
    `finish()` reports keys nobody asked for: a typo is an error, not a
    silently ignored setting.
    """

    def __init__(self, data: Mapping[str, Any], path: str, issues: _Issues) -> None:
        self.data = data
        self.path = path
        self.issues = issues
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.issues.add(self.where(key) if key else self.path, message)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def raw(self, key: str) -> Any:
        return self._get(key)

    def get_str(
        self, key: str, default: T, choices: Sequence[str] | None = None, required: bool = False
    ) -> str | T:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return default
        if not isinstance(value, str):
            self.error(key, f"must be a string, not {_kind(value)}")
            return default
        if choices is not None and value not in choices:
            self.error(key, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
            return default
        return value

    def get_int(self, key: str, default: T, low: int, high: int, required: bool = False) -> int | T:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bound = f">= {low}" if high >= 2**62 else f"{low}-{high}"
            self.error(key, f"must be an integer {bound}, not {value!r}")
            return default
        return value

    def get_float(self, key: str, default: float, low: float, high: float = math.inf) -> float:
        """Seconds and the like: an integer or a float, low < value <= high."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"must be a number, not {_kind(value)}")
            return default
        if not (low < value <= high) or math.isnan(value):
            self.error(
                key,
                f"must be a number > {low:g}" + (f" and <= {high:g}" if high < math.inf else ""),
            )
            return default
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, not {value!r}")
            return default
        return value

    def table(self, key: str) -> _Table | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(key, f"must be a table, not {_kind(value)}")
            return None
        return _Table(value, self.where(key), self.issues)

    def tables(self, key: str) -> list[_Table]:
        """An array of tables ([[key]]), each with its index in its path."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(key, f"must be an array of tables ([[{key}]]), not {_kind(value)}")
            return []
        return [_Table(v, f"{self.where(key)}[{i}]", self.issues) for i, v in enumerate(value)]

    def finish(self) -> None:
        for key in self.data:
            if key not in self.seen:
                self.error(key, "unknown key")


def _kind(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _guard(issues: _Issues, location: str, make: Callable[[], T]) -> T | None:
    """Build a model value; a ConfigError it raises becomes an issue."""
    try:
        return make()
    except ConfigError as exc:
        issues.add(location, str(exc))
        return None


def load(path: str | Path) -> Config:
    """Read and validate a configuration file (every issue reported at once)."""
    return loads_bytes(read_bytes(path), source=str(path))


def read_bytes(path: str | Path) -> bytes:
    """A configuration file's bytes; one that cannot be read is a config error."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigFileError(
            [ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]
        ) from None


def loads_bytes(data: bytes, source: str) -> Config:
    """`loads` for a file's bytes: text that is not UTF-8 is a config error."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigFileError([ConfigIssue(source, "", f"not UTF-8 text: {exc}")]) from None
    return loads(text, source=source)


def loads(text: str, source: str = "<config>") -> Config:
    """Validate configuration text; `source` names it in messages."""
    issues = _Issues(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([ConfigIssue(source, "", f"invalid TOML: {exc}")]) from None
    config = _read_config(_Table(data, "", issues), source)
    if issues.items or config is None:
        raise ConfigFileError(issues.items)
    return config


def _read_config(root: _Table, source: str) -> Config | None:
    settings_table = root.table("balancer")
    settings = _read_settings(settings_table or _Table({}, "balancer", root.issues))
    health_table = root.table("health")
    health = _read_health(health_table or _Table({}, "health", root.issues))
    vips = [_read_vip(t, settings, health) for t in root.tables("vip")]
    empty_on_purpose = _read_no_vips(root, len(vips))
    bgp_table = root.table("bgp")
    bgp = _read_bgp(bgp_table) if bgp_table is not None else None
    root.finish()
    _check_vips_unique(root.issues, vips)
    _check_routes_agree(root.issues, vips)
    if bgp is not None:
        _check_next_hops(root.issues, bgp, vips)
    if any(v is None for v in vips) or (bgp_table is not None and bgp is None):
        return None
    return Config(
        settings, health, tuple(cast(list[VipConfig], vips)), source, empty_on_purpose, bgp
    )


def _read_no_vips(root: _Table, vip_count: int) -> bool:
    """`vips = []`: the file has no VIPs on purpose (see `refuse_removing_every_vip`)."""
    if not root.has("vips"):
        return False
    value = root.raw("vips")
    if value != []:
        root.error("vips", "may only be `vips = []` (no VIPs, on purpose); VIPs are [[vip]] tables")
        return False
    if vip_count:
        root.error("vips", f"says there are no VIPs, but the file has {vip_count} [[vip]] tables")
        return False
    return True


def _read_settings(t: _Table) -> Settings:
    d = Settings()
    interface = t.get_str("interface", None)
    if interface is not None and not INTERFACE_RE.match(interface):
        t.error("interface", f"{interface!r} is not a valid interface name")
        interface = None
    settings = Settings(
        interface=interface,
        xdp_mode=cast(XdpMode, t.get_str("xdp_mode", d.xdp_mode, XDP_MODES)),
        gateway_mac=_mac(t, "gateway_mac"),
        fib_lookup=t.get_bool("fib_lookup", d.fib_lookup),
        encapsulation=cast(
            Encapsulation, t.get_str("encapsulation", d.encapsulation, ENCAPSULATIONS)
        ),
        gue_port=t.get_int("gue_port", d.gue_port, 1, 65535),
        mtu=_mtu(t),
        pin_dir=_path(t, "pin_dir", None),
        metrics=_metrics_address(t),
        hash_seed=t.get_int("hash_seed", d.hash_seed, 0, 2**32 - 1),
        udp_ttl=t.get_float("udp_ttl", d.udp_ttl, 0.0, UDP_TTL_MAX_S),
        syn_flood_threshold=t.get_int("syn_flood_threshold", d.syn_flood_threshold, 0, 2**32 - 1),
        src_v4=_source_prefix(t, "src_v4", 4, d.src_v4),
        src_v6=_source_prefix(t, "src_v6", 6, d.src_v6),
        lock_dir=_path(t, "lock_dir", d.lock_dir) or d.lock_dir,
    )
    t.finish()
    return settings


def _mac(t: _Table, key: str) -> str | None:
    value = t.get_str(key, None)
    if value is None:
        return None
    try:
        return check_mac(value)
    except ConfigError:
        t.error(key, f"{value!r} is not a MAC address (six hex bytes like 02:00:00:00:00:01)")
        return None


def _mtu(t: _Table) -> int:
    default = Settings().mtu
    value = t.get_int("mtu", default, 0, 65535)
    if value != 0 and value < 576:
        t.error("mtu", f"must be 0 (no check) or 576-65535, not {value}")
        return default
    return value


def _path(t: _Table, key: str, default: Path | None) -> Path | None:
    value = t.get_str(key, None)
    if value is None:
        return default
    if not value.startswith("/"):
        t.error(key, f"must be an absolute path, not {value!r}")
        return default
    return Path(value)


def _metrics_address(t: _Table) -> str | None:
    value = t.raw("metrics")
    if value is None:
        return DEFAULT_METRICS_ADDRESS
    if value is False:
        return None
    if not isinstance(value, str):
        t.error("metrics", f"must be HOST:PORT or false, not {_kind(value)}")
        return None
    try:
        parse_listen_address(value)
    except ConfigError as exc:
        t.error("metrics", str(exc))
        return None
    return value


def parse_listen_address(text: str) -> tuple[str, int]:
    """Where to listen: "HOST:PORT" (an IP address or localhost), "[V6]:PORT",
    or ":PORT" for every IPv4 address (0.0.0.0, as Prometheus exporters read
    it). Port 0: any free port."""
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):(\d{1,5})", text.strip())
    host = match.group(1) if match else ""
    port = int(match.group(2)) if match else -1
    if host == "":
        host = "0.0.0.0"
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        host_ok = True
    except ValueError:
        host_ok = host == "localhost"
    if not (match and host_ok and 0 <= port <= 65535):
        raise ConfigError(
            "must be HOST:PORT with an IP address (like 127.0.0.1:9077 or [::1]:9077), "
            f"or :PORT for every IPv4 address, not {text!r}"
        )
    return host, port


def _source_prefix(t: _Table, key: str, version: int, default: str) -> str:
    value = t.get_str(key, default)
    try:
        if ipaddress.ip_address(value).version == version:
            return value
    except ValueError:
        pass
    t.error(key, f"must be an IPv{version} address, not {value!r}")
    return default


def _read_timing(t: _Table, base: CheckTiming) -> CheckTiming:
    interval = t.get_float("interval", base.interval, 0.0, 3600.0)
    timeout = t.get_float("timeout", base.timeout, 0.0, 3600.0)
    if timeout > interval:
        # A probe must end before the next one starts; an inherited timeout
        # shrinks to fit a shorter interval, an explicit one is an error.
        if t.has("timeout"):
            t.error("timeout", f"must be <= interval ({timeout:g} > {interval:g})")
        timeout = interval
    return CheckTiming(
        interval=interval,
        timeout=timeout,
        rise=t.get_int("rise", base.rise, 1, 1000),
        fall=t.get_int("fall", base.fall, 1, 1000),
    )


def _read_health(t: _Table) -> HealthSettings:
    d = HealthSettings()
    health = HealthSettings(
        timing=_read_timing(t, d.timing),
        route_table=t.get_int("route_table", d.route_table, 1, 2**31 - 1),
        rule_priority=t.get_int("rule_priority", d.rule_priority, 1, 2**31 - 1),
    )
    t.finish()
    return health


def _read_vip(t: _Table, settings: Settings, health: HealthSettings) -> VipConfig | None:
    """One [[vip]]. Each part is checked on its own, and the rules that tie
    parts together run on whatever parts are valid, so one bad value (the
    port, say) never hides the errors of another (the address, a real)."""
    address = _vip_address(t)
    port = t.get_int("port", None, 0, 65535, required=True)
    proto = t.get_str("protocol", "tcp", tuple(IPPROTO))
    flags, encapsulation = _read_flags(t)
    flags = _read_quic(t, flags, proto)
    ring_size = _ring_size(t)
    second_chance = _second_chance(t)
    on_failure = cast(OnFailure, t.get_str("on_failure", "remove", ON_FAILURE))
    all_down = cast(AllDown, t.get_str("all_down", "keep", ALL_DOWN))
    reals = [_read_real(r) for r in t.tables("reals")]
    check_table = t.table("check")
    check = _read_check(check_table, health.timing) if check_table is not None else None
    route_table = t.table("bgp")
    route = _read_route(route_table) if route_table is not None else RouteAttributes()
    t.finish()
    valid_reals = {i: real for i, real in enumerate(reals) if real is not None}
    _check_reals(t, address, valid_reals, settings)
    _check_server_ids(t, valid_reals, VipFlags.QUIC in flags)
    _check_ring_holds_reals(t, ring_size, valid_reals.values())
    if check is not None:
        _check_check(t, check, address, port, proto)
    vip = None
    if address is not None and port is not None:
        vip = _guard(t.issues, t.where("address"), lambda: Vip(address, port, proto))
    if vip is None or len(valid_reals) < len(reals) or (check_table and check is None):
        return None
    return VipConfig(
        vip=vip,
        reals=tuple(valid_reals.values()),
        flags=flags,
        encapsulation=encapsulation,
        ring_size=ring_size,
        second_chance=second_chance,
        on_failure=on_failure,
        all_down=all_down,
        check=check,
        route=route,
    )


def _vip_address(t: _Table) -> IPAddress | IPNetwork | None:
    """The VIP's address, or its prefix ("10.100.0.0/24")."""
    value = t.get_str("address", None, required=True)
    if value is None:
        return None
    if "/" in value:
        try:
            address, prefixlen = parse_vip_address(value)
        except ConfigError as exc:
            t.error("address", str(exc).removeprefix("invalid VIP prefix "))
            return None
        return ipaddress.ip_network(f"{address}/{prefixlen}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        t.error("address", f"{value!r} is not an IPv4 or IPv6 address or prefix")
        return None


def _read_flags(t: _Table) -> tuple[VipFlags, Encapsulation | None]:
    encapsulation = cast(Encapsulation | None, t.get_str("encapsulation", None, ENCAPSULATIONS))
    raw = t.raw("flags")
    if raw is None:
        return VipFlags.NONE, encapsulation
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        t.error("flags", f"must be an array of flag names, not {_kind(raw)}")
        return VipFlags.NONE, encapsulation
    flags = _guard(t.issues, t.where("flags"), lambda: VipFlags.parse(raw))
    if flags is None:
        return VipFlags.NONE, encapsulation
    if VipFlags.NO_SPORT in flags and VipFlags.DPORT_ONLY in flags:
        t.error("flags", "no_sport and dport_only exclude each other")
    if VipFlags.GUE in flags:
        # "gue" as a flag is another way to say encapsulation = "gue".
        if encapsulation == "ipip":
            t.error("flags", 'flag "gue" contradicts encapsulation = "ipip"')
        encapsulation = "gue"
        flags &= ~VipFlags.GUE
    return flags, encapsulation


def _second_chance(t: _Table) -> float:
    """Seconds, 0 (off) or inf (until the next ring change)."""
    value = t.raw("second_chance")
    if value is None:
        return SECOND_CHANCE_DEFAULT_S
    try:
        return check_second_chance(value)
    except ConfigError:
        t.error(
            "second_chance",
            f"must be seconds: 0 (off), 0.001-{SECOND_CHANCE_MAX_S} or inf "
            f"(until the next ring change), not {value!r}",
        )
        return SECOND_CHANCE_DEFAULT_S


def _read_quic(t: _Table, flags: VipFlags, proto: str) -> VipFlags:
    """`quic = true`: route by QUIC connection ID (the flag "quic" says
    the same); only a UDP VIP carries QUIC."""
    quic = t.get_bool("quic", False)
    if VipFlags.QUIC in flags and t.has("quic") and not quic:
        t.error("quic", 'false contradicts flag "quic"')
    if quic:
        flags |= VipFlags.QUIC
    if VipFlags.QUIC in flags and proto != "udp":
        t.error("quic" if t.has("quic") else "flags", 'QUIC routing needs protocol = "udp"')
    return flags


def _check_server_ids(t: _Table, reals: Mapping[int, Real], quic: bool) -> None:
    """A pinned server_id belongs to a QUIC VIP and names one of its reals."""
    seen: dict[int, int] = {}
    for i, real in reals.items():
        if real.server_id is None:
            continue
        where = f"{t.path}.reals[{i}].server_id"
        if not quic:
            t.issues.add(where, "is for a VIP with quic = true")
        elif real.server_id in seen:
            t.issues.add(where, f"{real.server_id} is already reals[{seen[real.server_id]}]'s")
        seen.setdefault(real.server_id, i)


def _ring_size(t: _Table) -> int:
    size = t.get_int("ring_size", RING_SIZE_DEFAULT, 2, RING_SIZE_MAX)
    try:
        check_ring_size(size)
    except ConfigError:  # get_int checked the range, so: not a prime
        t.error("ring_size", f"must be a prime number (like 65537 or 655373), not {size}")
        return RING_SIZE_DEFAULT
    return size


def _read_real(t: _Table) -> Real | None:
    address = t.get_str("address", None, required=True)
    weight = t.get_int("weight", 1, 0, MAX_WEIGHT)
    mac = _mac(t, "mac")
    server_id = t.get_int("server_id", None, 0, SERVER_ID_MAX)
    t.finish()
    if address is None:
        return None
    try:
        parse_address(address)
    except ConfigError:
        t.error("address", f"{address!r} is not an IPv4 or IPv6 address")
        return None
    return _guard(t.issues, t.path, lambda: Real(address, weight, mac, server_id))


_CHECK_KEYS: dict[str, set[str]] = {
    "tcp": set(),
    "http": {"path", "host", "expect_status", "expect_body"},
    "https": {"path", "host", "expect_status", "expect_body", "tls_verify"},
    "udp": {"send", "expect"},
    "command": {"command", "user"},
}
_COMMON_CHECK_KEYS = {"type", "port", "address", "via_vip", "interval", "timeout", "rise", "fall"}


def _read_check(t: _Table, defaults: CheckTiming) -> Check | None:
    kind = t.get_str("type", None, CHECK_TYPES, required=True)
    if kind is None:
        t.seen.update(t.data)  # without a type, other keys cannot be judged
        return None
    for key in t.data:
        if key not in _COMMON_CHECK_KEYS and key not in _CHECK_KEYS[kind]:
            t.seen.add(key)
            known = set().union(*_CHECK_KEYS.values())
            hint = f"not used by a {kind!r} check" if key in known else "unknown key"
            t.error(key, hint)
    check = Check(
        type=cast(CheckType, kind),
        timing=_read_timing(t, defaults),
        port=t.get_int("port", None, 1, 65535),
        address=_check_address(t),
        via_vip=t.get_bool("via_vip", True),
        path=_http_path(t),
        host=t.get_str("host", None),
        expect_status=_expect_status(t),
        expect_body=t.get_str("expect_body", None),
        tls_verify=t.get_bool("tls_verify", False),
        send=t.get_str("send", ""),
        expect=t.get_str("expect", None),
        command=_command(t, kind),
        user=_check_user(t),
    )
    t.finish()
    return check


def _check_user(t: _Table) -> str | None:
    name = t.get_str("user", None)
    if name is None:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        t.error("user", f"no user {name!r} on this host")
        return None
    return name


def _check_address(t: _Table) -> IPAddress | None:
    value = t.get_str("address", None)
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        t.error("address", f"{value!r} is not an IPv4 or IPv6 address")
        return None


def _http_path(t: _Table) -> str:
    path = t.get_str("path", "/")
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        t.error("path", f"must start with / and contain no spaces, not {path!r}")
        return "/"
    return path


_STATUS_RANGE_RE = re.compile(r"^(\d{3})-(\d{3})$")


def _expect_status(t: _Table) -> tuple[int, ...]:
    """A status, a "FIRST-LAST" range of them, or an array of both."""
    raw = t.raw("expect_status")
    if raw is None:
        return (200,)
    items = [_status_codes(value) for value in (raw if isinstance(raw, list) else [raw])]
    codes = [code for item in items for code in item]
    if not items or not all(items):
        t.error(
            "expect_status",
            'must be an HTTP status (100-599), a range like "200-299", or an array of them, '
            f"not {raw!r}",
        )
        return (200,)
    return tuple(codes)


def _status_codes(value: object) -> list[int]:
    """The codes one expect_status item stands for ([] for an invalid item)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] if 100 <= value <= 599 else []
    match = _STATUS_RANGE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        return []
    first, last = int(match.group(1)), int(match.group(2))
    return list(range(first, last + 1)) if 100 <= first <= last <= 599 else []


def _command(t: _Table, kind: str) -> tuple[str, ...]:
    raw = t.raw("command")
    if raw is None:
        if kind == "command":
            t.error("command", 'is required for a "command" check (an array: program, args...)')
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
        t.error(
            "command", 'must be a non-empty array of strings, like ["/usr/bin/check", "{real}"]'
        )
        return ()
    return tuple(raw)


def _check_reals(
    t: _Table,
    vip_address: IPAddress | IPNetwork | None,
    reals: Mapping[int, Real],
    settings: Settings,
) -> None:
    """Rules between a VIP's reals, its address family and the next hop."""
    seen: dict[IPAddress, int] = {}
    for i, real in reals.items():
        where = f"{t.path}.reals[{i}]"
        if real.address in seen:
            t.issues.add(
                f"{where}.address", f"{real.address} is already reals[{seen[real.address]}]"
            )
        seen.setdefault(real.address, i)
        if vip_address is not None and vip_address.version == 6 and real.address.version == 4:
            t.issues.add(
                f"{where}.address",
                f"IPv4 real for IPv6 VIP {vip_address} (no 6-in-4 encapsulation)",
            )
        if real.mac is None and settings.gateway_mac is None and not settings.fib_lookup:
            t.issues.add(
                where,
                "no next hop: set mac here, or balancer.gateway_mac, or balancer.fib_lookup = true",
            )


def _check_ring_holds_reals(t: _Table, ring_size: int, reals: Iterable[Real]) -> None:
    serving = sum(1 for r in reals if r.weight > 0)
    try:
        check_ring_size(ring_size, serving)
    except ConfigError:  # `_ring_size` gave a valid size, so: too small for the reals
        t.error("ring_size", f"{ring_size} is smaller than the {serving} serving reals")


def _check_check(
    t: _Table,
    check: Check,
    vip_address: IPAddress | IPNetwork | None,
    port: int | None,
    proto: str,
) -> None:
    """Rules between a check and its VIP (each needs only the VIP parts it names)."""
    where = f"{t.path}.check"
    if check.port is None and port == 0 and check.type != "command":
        t.issues.add(f"{where}.port", "is required: the VIP has port 0 (every port)")
    family = vip_address.version if vip_address is not None else None
    if check.address is not None and family is not None and check.address.version != family:
        t.issues.add(f"{where}.address", f"must be an IPv{family} address like the VIP")
    if check.type == "udp" and proto == "tcp" and check.port is None:
        t.issues.add(f"{where}.type", "a udp check of a tcp VIP needs its own port")


def _check_vips_unique(issues: _Issues, vips: list[VipConfig | None]) -> None:
    seen: dict[Vip, int] = {}
    for i, entry in enumerate(vips):
        if entry is None:
            continue
        if entry.vip in seen:
            issues.add(f"vip[{i}]", f"VIP {entry.vip} is already vip[{seen[entry.vip]}]")
        else:
            _check_prefix_overlap(issues, i, entry.vip, seen)
        seen.setdefault(entry.vip, i)


def _check_prefix_overlap(issues: _Issues, i: int, vip: Vip, before: Mapping[Vip, int]) -> None:
    """Prefix VIPs of one port and protocol may not overlap (model.overlapping_prefix)."""
    other = overlapping_prefix(vip, before)
    if other is not None:
        issues.add(
            f"vip[{i}].address",
            f"prefix {vip.address_text} overlaps vip[{before[other]}] ({other}): prefix "
            "VIPs of one port and protocol may not overlap (an exact VIP inside a prefix may)",
        )


# ==================================================================== BGP

# 0 is reserved (RFC 7607), 4294967295 too (RFC 7300).
AS_MAX = 2**32 - 2
_COMMUNITY_RE = re.compile(r"^(\d{1,5}):(\d{1,5})$")


def _read_bgp(t: _Table) -> BgpSettings | None:
    """The [bgp] table; None when a required part is missing or invalid."""
    announcer = cast(AnnouncerKind, t.get_str("announcer", "exabgp", ANNOUNCERS))
    local_as = t.get_int("local_as", None, 1, AS_MAX, required=True)
    router_id = _address_of(t, "router_id", 4, required=True)
    neighbors = [_read_neighbor(n) for n in t.tables("neighbors")]
    exabgp = t.get_str("exabgp", "exabgp")
    settings_ok = local_as is not None and router_id is not None
    bgp = BgpSettings(
        local_as=local_as or 1,
        router_id=cast(ipaddress.IPv4Address, router_id or ipaddress.IPv4Address(1)),
        neighbors=tuple(n for n in neighbors if n is not None),
        announcer=announcer,
        next_hop_v4=cast(ipaddress.IPv4Address | None, _address_of(t, "next_hop_v4", 4)),
        next_hop_v6=cast(ipaddress.IPv6Address | None, _address_of(t, "next_hop_v6", 6)),
        min_healthy=t.get_int("min_healthy", DEFAULT_MIN_HEALTHY, 1, 2**31 - 1),
        exabgp=exabgp,
        bird_socket=_path(t, "bird_socket", None) or DEFAULT_BIRD_SOCKET,
        bird_include=_path(t, "bird_include", None) or DEFAULT_BIRD_INCLUDE,
        drain_on_stop=t.get_bool("drain_on_stop", False),
    )
    t.finish()
    _check_neighbors(t, announcer, neighbors)
    if announcer == "exabgp" and find_exabgp(exabgp) is None:
        t.error(
            "exabgp",
            f"ExaBGP missing: no executable {exabgp!r} (install the bgp extra: "
            "pip install 'xlb[bgp]', or set bgp.exabgp to its path)",
        )
        settings_ok = False
    if not settings_ok or len(bgp.neighbors) < len(neighbors):
        return None
    return bgp


def find_exabgp(name: str) -> str | None:
    """The ExaBGP executable a [bgp] table names: a path, or a name looked up
    beside this Python (a virtualenv's bin/, where the bgp extra puts it),
    then on PATH. None when there is none."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and Path(name).is_file() else None
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK) and beside.is_file():
        return str(beside)
    return shutil.which(name)


def _read_neighbor(t: _Table) -> Neighbor | None:
    address = _address_of(t, "address", None, required=True)
    peer_as = t.get_int("as", None, 1, AS_MAX, required=True)
    hold_time = t.get_int("hold_time", DEFAULT_HOLD_TIME, 0, 65535)
    if hold_time in (1, 2):  # RFC 4271 4.2: zero or at least three seconds
        t.error("hold_time", f"must be 0 or 3-65535 seconds, not {hold_time}")
    password = t.get_str("password", None)
    if password is not None and not 1 <= len(password.encode()) <= 80:
        t.error("password", "must be 1-80 bytes (the TCP MD5 key limit)")
    local_address = _address_of(t, "local_address", None)
    t.finish()
    if (
        local_address is not None
        and address is not None
        and local_address.version != address.version
    ):
        t.error("local_address", f"must be an IPv{address.version} address like address")
    if address is None or peer_as is None:
        return None
    return Neighbor(address, peer_as, hold_time, password, local_address)


def _check_neighbors(t: _Table, announcer: str, neighbors: list[Neighbor | None]) -> None:
    seen: dict[IPAddress, int] = {}
    for i, neighbor in enumerate(neighbors):
        if neighbor is None:
            continue
        if neighbor.address in seen:
            t.issues.add(
                f"{t.path}.neighbors[{i}].address",
                f"{neighbor.address} is already neighbors[{seen[neighbor.address]}]",
            )
        seen.setdefault(neighbor.address, i)
    if announcer == "exabgp" and not neighbors:
        t.error("neighbors", "is required: ExaBGP needs at least one [[bgp.neighbors]]")
    if announcer == "bird" and neighbors:
        t.error("neighbors", 'not used with announcer = "bird": BIRD\'s own file has the sessions')


def _address_of(
    t: _Table, key: str, version: int | None, required: bool = False
) -> IPAddress | None:
    value = t.get_str(key, None, required=required)
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or (version is not None and address.version != version):
        family = f"an IPv{version}" if version else "an IPv4 or IPv6"
        t.error(key, f"must be {family} address, not {value!r}")
        return None
    return address


def _read_route(t: _Table) -> RouteAttributes:
    route = RouteAttributes(
        communities=_communities(t),
        med=t.get_int("med", None, 0, 2**32 - 1),
        local_pref=t.get_int("local_pref", None, 0, 2**32 - 1),
    )
    t.finish()
    return route


def _communities(t: _Table) -> tuple[str, ...]:
    raw = t.raw("communities")
    if raw is None:
        return ()
    values = raw if isinstance(raw, list) else [raw]
    for value in values:
        match = _COMMUNITY_RE.match(value) if isinstance(value, str) else None
        if match is None or any(int(half) > 65535 for half in match.groups()):
            t.error("communities", f'must be "ASN:VALUE" strings (each 0-65535), not {value!r}')
            return ()
    return tuple(values)


def _check_routes_agree(issues: _Issues, vips: list[VipConfig | None]) -> None:
    """VIPs of one address (or prefix) are one route: one set of attributes."""
    first: dict[IPAddress | IPNetwork, int] = {}
    for i, entry in enumerate(vips):
        if entry is None:
            continue
        address = entry.vip.destination
        j = first.setdefault(address, i)
        other = vips[j]
        if j != i and other is not None and other.route != entry.route:
            issues.add(
                f"vip[{i}].bgp",
                f"differs from vip[{j}].bgp: both announce {address} (one prefix, one [vip.bgp])",
            )


def _check_next_hops(issues: _Issues, bgp: BgpSettings, vips: list[VipConfig | None]) -> None:
    """ExaBGP's "next-hop self" is the session's address: a VIP of the other
    family needs an explicit next hop (BIRD's own file decides there)."""
    if bgp.announcer != "exabgp":
        return
    families = {n.address.version for n in bgp.neighbors}
    for i, entry in enumerate(vips):
        if entry is None:
            continue
        version = entry.vip.address.version
        explicit = bgp.next_hop_v4 if version == 4 else bgp.next_hop_v6
        if explicit is None and version not in families:
            issues.add(
                f"bgp.next_hop_v{version}",
                f"is required: vip[{i}] ({entry.vip.address_text}) is IPv{version} "
                f"and no neighbour is, so there is no session address to use",
            )
            return
