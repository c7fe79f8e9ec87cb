"""The writer: a running data plane back into a file that `load()` accepts.

`from_balancer(balancer)` reads what the data plane holds into a `Config`
(what it does not hold comes from a base file), and `dumps(config)` writes
a `Config` as TOML (for `xlb save`). `loads(dumps(config))` gives back an
equal `Config`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model import Vip, VipFlags
from ..pins import DEFAULT_PIN_ROOT
from .schema import (
    DEFAULT_BIRD_INCLUDE,
    DEFAULT_BIRD_SOCKET,
    DEFAULT_HOLD_TIME,
    DEFAULT_MIN_HEALTHY,
    BgpSettings,
    Check,
    CheckTiming,
    Config,
    Encapsulation,
    HealthSettings,
    Neighbor,
    RouteAttributes,
    Settings,
    VipConfig,
    sort_reals,
)

if TYPE_CHECKING:
    from ..balancer import Balancer


def from_balancer(balancer: Balancer, base: Config | None = None) -> Config:
    """A running data plane as a Config (for `xlb save`).

    Global settings and VIPs come from the balancer; what the data plane
    does not hold (checks, on_failure, all_down, health settings) comes
    from `base` for VIPs it names, else the defaults.
    """
    settings = _settings_from(balancer, base.settings if base else Settings())
    known = {entry.vip: entry for entry in base.vips} if base else {}
    running = balancer.vips()
    # The base file's order first, so a saved file diffs well against it.
    ordered = [vip for vip in known if vip in running] + [v for v in running if v not in known]
    vips = []
    for vip in ordered:
        flags = balancer.vip_flags(vip)
        is_gue = VipFlags.GUE in flags or balancer.config.gue_all
        encapsulation: Encapsulation = "gue" if is_gue else "ipip"
        template = known.get(vip, VipConfig(vip))
        vips.append(
            replace(
                template,
                reals=sort_reals(balancer.reals(vip)),
                flags=flags & ~VipFlags.GUE,
                encapsulation=None if encapsulation == settings.encapsulation else encapsulation,
                ring_size=balancer.ring_size(vip),
                second_chance=balancer.second_chance(vip),
            )
        )
    health = base.health if base else HealthSettings()
    source = base.source if base else "<balancer>"
    # An empty data plane saved is empty on purpose: applying it back must not be refused.
    bgp = base.bgp if base else None
    return Config(settings, health, tuple(vips), source, empty_on_purpose=not vips, bgp=bgp)


def _settings_from(balancer: Balancer, base: Settings) -> Settings:
    cfg = balancer.config
    default_pin = DEFAULT_PIN_ROOT / balancer.interface if balancer.interface else None
    return replace(
        base,
        interface=balancer.interface,
        xdp_mode=balancer.mode,
        gateway_mac=cfg.gateway_mac,
        fib_lookup=cfg.fib_lookup,
        encapsulation="gue" if cfg.gue_all else base.encapsulation,
        gue_port=cfg.gue_port,
        mtu=cfg.mtu,
        pin_dir=balancer.pin_dir if balancer.pin_dir != default_pin else None,
        hash_seed=cfg.hash_seed,
        udp_ttl=cfg.udp_ttl_s,
        syn_flood_threshold=cfg.syn_flood_threshold,
        src_v4=cfg.src_v4,
        src_v6=cfg.src_v6,
    )


def dumps(
    config: Config, header: str | None = None, vip_comments: Mapping[Vip, str] | None = None
) -> str:
    """A Config as TOML that `loads()` reads back to an equal Config.

    Settings equal to their default are left out so the file stays short;
    VIP fields are written in full so each VIP reads on its own. `header`
    (lines) opens the file as comments, and each `vip_comments` entry is a
    comment line above its VIP's table (where an imported VIP came from).
    """
    out = _TomlWriter()
    if header:
        out.comment(header)
        out.lines.append("")
    if config.empty_on_purpose:
        out.pairs([("vips", [])])
    out.table("balancer", _settings_items(config.settings))
    out.table("health", _health_items(config.health))
    if config.bgp is not None:
        out.table("bgp", _bgp_items(config.bgp))
        for neighbor in config.bgp.neighbors:
            out.array_table("bgp.neighbors", _neighbor_items(neighbor))
    for entry in config.vips:
        comment = vip_comments.get(entry.vip) if vip_comments else None
        out.array_table("vip", _vip_items(entry, config.health.timing), comment)
        for real in entry.reals:
            items: list[tuple[str, object]] = [
                ("address", str(real.address)),
                ("weight", real.weight),
            ]
            if real.mac:
                items.append(("mac", real.mac))
            if real.server_id is not None:
                items.append(("server_id", real.server_id))
            out.array_table("vip.reals", items)
        if entry.check is not None:
            out.table("vip.check", _check_items(entry.check, config.health.timing))
        out.table("vip.bgp", _route_items(entry.route))
    return out.text()


def _non_default(pairs: Iterable[tuple[str, object, object]]) -> list[tuple[str, object]]:
    return [(key, value) for key, value, default in pairs if value is not None and value != default]


def _settings_items(s: Settings) -> list[tuple[str, object]]:
    d = Settings()
    return _non_default(
        [
            ("interface", s.interface, None),
            ("xdp_mode", s.xdp_mode, d.xdp_mode),
            ("gateway_mac", s.gateway_mac, None),
            ("fib_lookup", s.fib_lookup, d.fib_lookup),
            ("encapsulation", s.encapsulation, d.encapsulation),
            ("gue_port", s.gue_port, d.gue_port),
            ("mtu", s.mtu, d.mtu),
            ("pin_dir", str(s.pin_dir) if s.pin_dir else None, None),
            ("metrics", s.metrics if s.metrics is not None else False, d.metrics),
            ("hash_seed", s.hash_seed, d.hash_seed),
            ("udp_ttl", s.udp_ttl, d.udp_ttl),
            ("syn_flood_threshold", s.syn_flood_threshold, d.syn_flood_threshold),
            ("src_v4", s.src_v4, d.src_v4),
            ("src_v6", s.src_v6, d.src_v6),
            ("lock_dir", str(s.lock_dir), str(d.lock_dir)),
        ]
    )


def _bgp_items(b: BgpSettings) -> list[tuple[str, object]]:
    required: list[tuple[str, object]] = [
        ("local_as", b.local_as),
        ("router_id", str(b.router_id)),
    ]
    return required + _non_default(
        [
            ("announcer", b.announcer, "exabgp"),
            ("next_hop_v4", str(b.next_hop_v4) if b.next_hop_v4 else None, None),
            ("next_hop_v6", str(b.next_hop_v6) if b.next_hop_v6 else None, None),
            ("min_healthy", b.min_healthy, DEFAULT_MIN_HEALTHY),
            ("exabgp", b.exabgp, "exabgp"),
            ("bird_socket", str(b.bird_socket), str(DEFAULT_BIRD_SOCKET)),
            ("bird_include", str(b.bird_include), str(DEFAULT_BIRD_INCLUDE)),
            ("drain_on_stop", b.drain_on_stop, False),
        ]
    )


def _neighbor_items(n: Neighbor) -> list[tuple[str, object]]:
    required: list[tuple[str, object]] = [("address", str(n.address)), ("as", n.peer_as)]
    return required + _non_default(
        [
            ("hold_time", n.hold_time, DEFAULT_HOLD_TIME),
            ("password", n.password, None),
            ("local_address", str(n.local_address) if n.local_address else None, None),
        ]
    )


def _route_items(r: RouteAttributes) -> list[tuple[str, object]]:
    return _non_default(
        [
            ("communities", list(r.communities), []),
            ("med", r.med, None),
            ("local_pref", r.local_pref, None),
        ]
    )


def _timing_items(t: CheckTiming, base: CheckTiming) -> list[tuple[str, object, object]]:
    return [
        ("interval", t.interval, base.interval),
        ("timeout", t.timeout, base.timeout),
        ("rise", t.rise, base.rise),
        ("fall", t.fall, base.fall),
    ]


def _health_items(h: HealthSettings) -> list[tuple[str, object]]:
    d = HealthSettings()
    return _non_default(
        [
            *_timing_items(h.timing, d.timing),
            ("route_table", h.route_table, d.route_table),
            ("rule_priority", h.rule_priority, d.rule_priority),
        ]
    )


def _vip_items(entry: VipConfig, timing: CheckTiming) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = [
        ("address", entry.vip.address_text),
        ("port", entry.vip.port),
        ("protocol", entry.vip.proto),
    ]
    if VipFlags.QUIC in entry.flags:
        items.append(("quic", True))
    items.append(("flags", (entry.flags & ~VipFlags.QUIC).names()))
    if entry.encapsulation is not None:
        items.append(("encapsulation", entry.encapsulation))
    items += [
        ("ring_size", entry.ring_size),
        ("second_chance", entry.second_chance),
        ("on_failure", entry.on_failure),
        ("all_down", entry.all_down),
    ]
    return items


def _check_items(check: Check, health_timing: CheckTiming) -> list[tuple[str, object]]:
    d = Check(check.type)
    pairs: list[tuple[str, object, object]] = [
        ("type", check.type, None),
        *_timing_items(check.timing, health_timing),
        ("port", check.port, None),
        ("address", str(check.address) if check.address else None, None),
        ("via_vip", check.via_vip, d.via_vip),
    ]
    if check.type in ("http", "https"):
        pairs += [
            ("path", check.path, d.path),
            ("host", check.host, None),
            ("expect_status", status_items(check.expect_status), list(d.expect_status)),
            ("expect_body", check.expect_body, None),
        ]
    if check.type == "https":
        pairs.append(("tls_verify", check.tls_verify, d.tls_verify))
    if check.type == "udp":
        pairs += [("send", check.send, d.send), ("expect", check.expect, None)]
    if check.type == "command":
        pairs += [("command", list(check.command), None), ("user", check.user, None)]
    return _non_default(pairs)


def status_items(codes: tuple[int, ...]) -> list[int | str]:
    """expect_status as written: runs of three or more consecutive codes as
    "FIRST-LAST" ranges (the reader expands them back to the same codes)."""
    items: list[int | str] = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        if j - i >= 2:
            items.append(f"{codes[i]}-{codes[j]}")
        else:
            items += codes[i : j + 1]
        i = j + 1
    return items


class _TomlWriter:
    """Just enough TOML output for a Config: tables, arrays of tables, scalars."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.commented = -1  # len(lines) right after a comment: no blank line follows it

    def table(self, name: str, items: list[tuple[str, object]]) -> None:
        if items:
            self._block(f"[{name}]", items)

    def comment(self, text: str) -> None:
        """Comment lines (before any table header, or above the next table)."""
        self.lines += [f"# {line}".rstrip() for line in text.splitlines()]
        self.commented = len(self.lines)

    def pairs(self, items: list[tuple[str, object]]) -> None:
        """Keys of the root table: before any table header."""
        assert all(not line or line.startswith("#") for line in self.lines), "root keys first"
        self.lines += [f"{key} = {toml_value(value)}" for key, value in items]

    def array_table(
        self, name: str, items: list[tuple[str, object]], comment: str | None = None
    ) -> None:
        if comment:
            if self.lines and self.lines[-1]:
                self.lines.append("")
            self.comment(comment)
        self._block(f"[[{name}]]", items)

    def _block(self, header: str, items: list[tuple[str, object]]) -> None:
        if self.lines and self.lines[-1] and self.commented != len(self.lines):
            self.lines.append("")
        self.lines.append(header)
        self.lines += [f"{key} = {toml_value(value)}" for key, value in items]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def toml_value(value: object) -> str:
    """One TOML value: string, integer, float, boolean or array of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == math.inf:
            return "inf"  # TOML's own spelling (second_chance: until the next change)
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value!r} here")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
