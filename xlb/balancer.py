"""Balancer: the public API that programs the data plane's maps.

Every change follows one order so that no packet ever sees a half-made
state: validate everything first; write new reals (inactive ids become
active) before any ring points at them; write the VIP's new ring into one
of its ring slots that no packet reads (xlb/rings.py); flip the VIP's entry
to that slot with one map update; only then retire the reals that left. A
failure before the flip restores every entry it wrote, so the maps end as
they were (a spare ring slot may hold the unused ring).

A retired real id is handed out again only after an RCU grace period, so a
packet that read the old ring just before the flip can never reach the
id's next owner.

Second chance (xlb/prevring.py): just before the flip, the VIP's
`prev_rings` entry is pointed at the slot that is still live, which from
the flip on is the previous ring, carried for the VIP's window; reals that
left are retired as alternates and their ids held for as long.

The Balancer keeps the VIP table and runs each change in that order; the
parts it delegates live beside it: ids.py (free VIP ids, real ids and
when a retired one may be reused), rings.py (Maglev rings, ring slots,
grace periods), prevring.py (second chance's previous rings),
vipaddrs.py (vip_filter bits, vip_addrs counts), stats.py (counters),
synflood.py (the SYN-flood guard's windows), flows.py (the connection
table), events.py (what
observers hear of each change) and testrun.py (BPF_PROG_TEST_RUN).

Wherever a method takes a VIP it also takes its text ("10.0.0.1:80/tcp",
through Vip.parse); wherever it takes a real it also takes an address (a
real of weight 1, no MAC). Wrong input raises ConfigError (or NotFoundError,
ExistsError, CapacityError; TypeError where Python would) before any map is
written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _abi, _limits, maglev
from ._bpf import BpfObject, Map, Program, XdpLink, XdpMode, ifindex, lib
from .errors import (
    CapacityError,
    ConfigError,
    ExistsError,
    NotFoundError,
)
from .events import Observers, UpdateEvent, UpdateObserver, observed
from .flowhash import flow_hash, quic_cid_hash
from .flows import (
    ConnSnapshot,
    TableFill,
    check_sample_limit,
    clear_conn_tables,
    flow_cache_sizes,
    forget_cached_flows,
    lookup_flow,
    owners_by_key,
    sample_flows,
    table_fill,
)
from .ids import MAX_REALS as MAX_REALS  # re-exported: xlb.balancer.MAX_REALS
from .ids import MAX_VIPS as MAX_VIPS
from .ids import RealIds, free_vip_id
from .model import (
    IPPROTO,
    SECOND_CHANCE_DEFAULT_S,
    AddressLike,
    BalancerConfig,
    Counter,
    Flow,
    IPAddress,
    Real,
    RealLike,
    Vip,
    VipFlags,
    VipLike,
    check_second_chance,
    check_weight,
    overlapping_prefix,
    parse_address,
    to_real,
    to_vip,
    vip_sort_key,
)
from .pins import DEFAULT_PIN_ROOT
from .prevring import (
    UNTIL_CHANGE_NS,
    PrevRings,
    Transition,
    window_end,
    window_ns,
    window_seconds,
)
from .quiclb import assign_server_ids, destination_cid, server_id_of
from .rings import (
    NO_RING,
    GraceSource,
    RingSlots,
    VipRings,
    build_ring,
    ring_addresses,
    ring_fractions,
)
from .serverids import Entry, QuicServers, Undo
from .stats import CpuStats, counter_names, stats_sizes
from .synflood import CpuFloodWindow, flood_windows
from .testrun import RunResult, run_packet
from .vipaddrs import VipFilter, count_vip_address, count_vip_prefix

log = logging.getLogger("xlb.balancer")

OBJECT_DIR = Path(__file__).resolve().parent / "_bpf_objects"
BALANCER_OBJECT = OBJECT_DIR / "xlb.bpf.o"
PROGRAM_NAME = "xlb_balancer"
LINK_PIN_NAME = "link"
RING_SIZE_DEFAULT = _limits.XLB_RING_SIZE_DEFAULT
RING_SIZE_MAX = _limits.XLB_RING_SIZE_MAX
MAX_PREFIX_VIPS = _limits.XLB_LIMIT_MAX_PREFIX_VIPS


@dataclass(slots=True)
class _Member:
    real: Real
    real_id: int
    gen: int


@dataclass(slots=True)
class _VipState:
    vip_id: int
    flags: VipFlags
    ring_size: int
    members: dict[IPAddress, _Member] = field(default_factory=dict)
    ring: npt.NDArray[np.uint32] | None = None  # real id per slot; None = no ring
    rings: VipRings = field(default_factory=VipRings)  # where the ring lives
    window_ns: int = window_ns(SECOND_CHANCE_DEFAULT_S)  # second chance (prevring.py)
    transition: Transition | None = None  # the last change, while its window is open
    # QUIC VIPs: each real's server id (xlb/quiclb.py); empty for the others
    server_ids: dict[IPAddress, int] = field(default_factory=dict)


class Balancer:
    """Load (and optionally attach) the balancer and program its maps.

    `Balancer()` loads the program for BPF_PROG_TEST_RUN only. With an
    `interface` it also attaches at XDP ("native" or "generic") and pins
    maps and the link under `pin_dir` (default /sys/fs/bpf/xlb/<interface>):
    a later Balancer on the same interface adopts that running data plane
    (VIPs, reals, rings, connection table) instead of replacing it, and
    killing the Python process never stops forwarding. A new build of the
    object adopted this way replaces the program but keeps the maps.
    """

    def __init__(
        self,
        interface: str | None = None,
        mode: XdpMode = "native",
        *,
        pin_dir: str | Path | None = None,
        config: BalancerConfig | None = None,
        object_path: str | Path | None = None,
        grace_periods: GraceSource | None = None,
    ) -> None:
        """`grace_periods` replaces the kernel's RCU grace periods as the
        source of grace tickets (xlb/rings.py): for tests that must decide
        when a retired ring slot or real id becomes reusable. The Balancer
        closes it."""
        self._observers = Observers()
        #: Rings switched by this handle (every set_reals that changed a ring).
        self.ring_swaps = 0
        if mode not in ("native", "generic"):
            raise ConfigError(f"invalid XDP mode {mode!r}: 'native' or 'generic'")
        if config is not None and not isinstance(config, BalancerConfig):
            raise ConfigError(f"expected a BalancerConfig or None, got {config!r}")
        if interface is not None:
            ifindex(interface)  # fail on a missing interface before loading anything
        self.interface = interface
        self.mode = mode
        self.pin_dir = self._pin_dir(interface, pin_dir)
        self._obj = self._open_object(object_path or BALANCER_OBJECT, reload=False)
        self._prog: Program = self._obj.program(PROGRAM_NAME)
        self._map: dict[str, Map] = self._obj.maps
        self._link: XdpLink | None = None
        self._attached_here = False
        self._closed = False
        self._slots = RingSlots(self._map["rings"], grace_periods)
        self._prev = PrevRings(self._map["prev_rings"])
        self._quic = QuicServers(self._map["quic_servers"])
        # The `reals` map itself (we are its only writer): a failed change
        # takes its undo from its rows, and adoption its members.
        try:
            self._reals = self._map["reals"].mapped()
            self._stats = CpuStats(self._map["stats"])
            self._vips = self._read_vips()
            self._real_ids = self._adopt_real_ids()
            self._vip_filter = VipFilter(
                self._map["vip_filter"], ((vip, s.flags) for vip, s in self._vips.items())
            )
            self._adopt_config(config)
            if interface is not None:
                self._attach(interface, mode)
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _pin_dir(interface: str | None, pin_dir: str | Path | None) -> Path | None:
        if pin_dir is None and interface is None:
            return None
        path = Path(pin_dir) if pin_dir is not None else DEFAULT_PIN_ROOT / str(interface)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _open_object(self, object_path: str | Path, reload: bool) -> BpfObject:
        """The balancer program over this handle's maps; with pins, the
        program pinned for this build unless `reload` (adopting the same
        build loads nothing)."""
        return BpfObject(
            object_path,
            pin_dir=self.pin_dir,
            only=[PROGRAM_NAME],
            sizes=flow_cache_sizes() | stats_sizes(),
            pin_programs=True,
            reload=reload,
        )

    def _attach(self, interface: str, mode: XdpMode) -> None:
        link_pin = self.pin_dir / LINK_PIN_NAME if self.pin_dir else None
        self._link, self._attached_here = XdpLink.attach_or_adopt(
            self._prog, interface, mode, link_pin
        )
        if not self._attached_here:
            log.info("adopted the data plane pinned at %s", self.pin_dir)

    def close(self, detach: bool | None = None) -> None:
        """Release this handle. `detach`: None = only if this Balancer attached;
        True = detach and remove every pin (tear the data plane down);
        False = leave it forwarding."""
        if self._closed:
            return
        self._closed = True
        if detach is None:
            detach = self._attached_here
        if self._link is not None:
            if detach:
                self._link.detach()
            else:
                self._link.close()
        self._release()
        if detach and self.pin_dir is not None:
            shutil.rmtree(self.pin_dir, ignore_errors=True)

    def _release(self) -> None:
        """Unmap what this handle mapped (as far as it got) and close its
        object; the data plane itself is left as it is."""
        self._slots.close()
        for mapped in (getattr(self, "_reals", None), getattr(self, "_stats", None)):
            if mapped is not None:
                mapped.close()
        self._obj.close()

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def program(self) -> Program:
        """The loaded balancer program (for test runs and introspection)."""
        return self._prog

    def map(self, name: str) -> Map:
        """One of the data plane's maps, by its name in bpf/maps.h."""
        if not isinstance(name, str):
            raise TypeError(f"a map name is text, not {name!r}")
        return self._obj.map(name)

    def upgrade(self, object_path: str | Path) -> None:
        """Load a new build of the program over the same maps and swap it in."""
        if self.pin_dir is None:
            raise ConfigError("upgrade needs pinned maps (an interface or a pin_dir)")
        new = self._open_object(object_path, reload=True)  # even a build already pinned
        if self._link is not None:
            self._link.update(new.program(PROGRAM_NAME))
        old, self._obj = self._obj, new
        self._prog = new.program(PROGRAM_NAME)
        self._map = new.maps
        self._slots.outer = new.maps["rings"]
        self._prev.map = new.maps["prev_rings"]
        self._vip_filter.map = new.maps["vip_filter"]
        self._quic.map = new.maps["quic_servers"]
        old.close()

    def add_observer(self, observer: UpdateObserver) -> None:
        """Call `observer(UpdateEvent)` after every change made through this handle."""
        self._observers.add(observer)

    def remove_observer(self, observer: UpdateObserver) -> None:
        """Stop calling an observer added with add_observer (no error if absent)."""
        self._observers.remove(observer)

    # ---------------------------------------------------------- adoption

    def _read_vips(self) -> dict[Vip, _VipState]:
        """VIPs and their members from the maps (a fresh data plane: none)."""
        vips: dict[Vip, _VipState] = {}
        entries = [(_abi.parse_vip_key(k), v) for k, v in self._map["vips"].items()]
        entries += [(_abi.parse_vip_prefix_key(k), v) for k, v in self._map["vip_prefixes"].items()]
        for vip, value in entries:
            vip_id, flags, ring_size, ring_slot = _abi.parse_vip_meta(value)
            state = _VipState(vip_id, VipFlags(flags), ring_size)
            state.rings, state.ring = self._slots.adopt(vip_id, ring_slot, ring_size)
            self._adopt_transition(state)
            vips[vip] = state
        by_id = {s.vip_id: s for s in vips.values()}
        real_flags = _abi.real_field(self._reals.rows, "flags", np.uint8)
        for real_id in np.flatnonzero(real_flags & _limits.XLB_REAL_F_ACTIVE).tolist():
            entry = _abi.parse_real_entry(self._reals.rows[real_id].tobytes())
            owner = by_id.get(entry["vip_id"])
            if owner is not None:
                real = Real.from_data_plane(entry["address"], entry["weight"], entry["mac"])
                owner.members[real.address] = _Member(real, real_id, entry["gen"])
        for real_id in np.flatnonzero(real_flags & _limits.XLB_REAL_F_ALTERNATE).tolist():
            entry = _abi.parse_real_entry(self._reals.rows[real_id].tobytes())
            owner = by_id.get(entry["vip_id"])
            change = owner.transition if owner is not None else None
            if change is not None and np.any(change.ring == real_id):
                change.departed[real_id] = entry["address"]
        self._adopt_server_ids(by_id)
        return vips

    def _adopt_transition(self, state: _VipState) -> None:
        """A pinned VIP's second-chance window and, if its previous ring is
        still carried, that ring (read back from its slot)."""
        slot, until, window = self._prev.read(state.vip_id)
        state.window_ns = window
        live = state.rings.live
        if NO_RING in (slot, live) or slot == live or time.monotonic_ns() >= until:
            return
        ring = self._slots.read(state.vip_id, slot, state.ring_size)
        if ring is None:
            return
        state.rings.prev, state.rings.prev_until_ns = slot, until
        changed = until - window if window != UNTIL_CHANGE_NS else time.monotonic_ns()
        state.transition = Transition(ring, changed, until)

    def _adopt_server_ids(self, by_id: dict[int, _VipState]) -> None:
        """The QUIC VIPs' server ids from `quic_servers` (a pinned one goes
        back into its Real); entries no QUIC VIP's real holds any more (a
        process stopped between a change's steps) are deleted."""
        for vip_id, entries in self._quic.read().items():
            state = by_id.get(vip_id)
            owners = {m.real_id: m for m in state.members.values()} if state else {}
            stale = []
            for server_id, (real_id, pinned) in entries.items():
                member = owners.get(real_id)
                if state is None or VipFlags.QUIC not in state.flags or member is None:
                    stale.append(server_id)
                    continue
                real = member.real
                state.server_ids[real.address] = server_id
                if pinned:
                    member.real = Real.from_data_plane(
                        real.address, real.weight, real.mac, server_id
                    )
            self._quic.delete(vip_id, stale)

    def _adopt_real_ids(self) -> RealIds:
        """The real ids the adopted VIPs hold are in use; the others are
        free, retired ones after a grace period."""
        gens = _abi.real_field(self._reals.rows, "gen", np.uint32)
        in_use = (m.real_id for s in self._vips.values() for m in s.members.values())
        ids = RealIds(gens, in_use, self._slots.grace)
        for state in self._vips.values():
            if state.transition is not None:
                departed = list(state.transition.departed)
                ids.hold(departed, state.transition.until_ns)
        return ids

    def _adopt_config(self, config: BalancerConfig | None) -> None:
        raw = self._map["config"].lookup(_abi.u32(0))
        # what the map says until written below
        self._no_any_port_vip, self._prefix_vips = False, False
        if config is None and raw is not None and raw != bytes(len(raw)):
            self._config = _abi.parse_config(raw)
            self._no_any_port_vip = _abi.config_no_any_port_vip(raw)
            self._prefix_vips = _abi.config_prefix_vips(raw)
            self._sync_lookup_flags()
            return
        config = _checked_config(config or BalancerConfig())
        # the flow caches' UDP copies were made under a TTL this handle did
        # not set (or none): forget them all
        self._set_config(config, forget_copies=True)

    # ------------------------------------------------------------- config

    @property
    def config(self) -> BalancerConfig:
        """The data-plane settings in force (the `config` map)."""
        return self._config

    @observed
    def configure(self, config: BalancerConfig) -> None:
        """Replace the global data-plane settings (one map update)."""
        config = _checked_config(config)
        # a UDP copy in a flow cache is good for as long as the TTL it was
        # copied under allowed (bpf/flow_cache.h): none outlives a new TTL
        self._set_config(config, forget_copies=config.udp_ttl_s != self._config.udp_ttl_s)

    def _set_config(self, config: BalancerConfig, forget_copies: bool) -> None:
        self._no_any_port_vip = not self._has_any_port_vip()
        self._prefix_vips = self._has_prefix_vip()
        self._write_config(config)
        self._config = config
        if forget_copies:
            forget_cached_flows(self._map)

    def _write_config(self, config: BalancerConfig) -> None:
        value = _abi.config_value(
            config, no_any_port_vip=self._no_any_port_vip, prefix_vips=self._prefix_vips
        )
        self._map["config"].update(_abi.u32(0), value)

    def _has_any_port_vip(self) -> bool:
        """An any-port VIP in `vips` (a prefix VIP's port 0 is its own lookup)."""
        return any(vip.port == 0 and not vip.is_prefix for vip in self._vips)

    def _has_prefix_vip(self) -> bool:
        return any(vip.is_prefix for vip in self._vips)

    def _sync_lookup_flags(self, adding: Vip | None = None) -> None:
        """Keep the config flags that let the data plane skip lookups true to
        the VIPs: XLB_CFG_F_NO_ANY_PORT_VIP (no port-0 lookup in `vips`) is
        cleared before an any-port VIP is inserted and set only after the
        last one was deleted; XLB_CFG_F_PREFIX_VIPS (look in `vip_prefixes`)
        is set before a prefix VIP is inserted and cleared only after the
        last one was deleted. `adding`: the VIP about to be inserted."""
        adding_any_port = adding is not None and adding.port == 0 and not adding.is_prefix
        no_any_port = not adding_any_port and not self._has_any_port_vip()
        prefix = (adding is not None and adding.is_prefix) or self._has_prefix_vip()
        if (no_any_port, prefix) != (self._no_any_port_vip, self._prefix_vips):
            self._no_any_port_vip, self._prefix_vips = no_any_port, prefix
            self._write_config(self._config)

    # --------------------------------------------------------------- VIPs

    def vips(self) -> list[Vip]:
        """Every configured VIP, sorted."""
        return sorted(self._vips, key=vip_sort_key)

    def vip_flags(self, vip: VipLike) -> VipFlags:
        """The VIP's behaviour flags."""
        return self._state(vip).flags

    def ring_size(self, vip: VipLike) -> int:
        """The number of slots in the VIP's Maglev ring."""
        return self._state(vip).ring_size

    def second_chance(self, vip: VipLike) -> float:
        """The VIP's second-chance window in seconds (0: off; math.inf:
        until its next ring change): how long after a ring change the
        previous ring's real is carried for flows the change moved."""
        return window_seconds(self._state(vip).window_ns)

    def server_ids(self, vip: VipLike) -> dict[IPAddress, int]:
        """Each real's QUIC-LB server id in a QUIC VIP ({} for another VIP):
        what its server must put in its connection IDs (xlb/quiclb.py)."""
        return dict(self._state(vip).server_ids)

    @observed
    def add_vip(
        self,
        vip: VipLike,
        flags: VipFlags = VipFlags.NONE,
        ring_size: int = RING_SIZE_DEFAULT,
        second_chance: float = SECOND_CHANCE_DEFAULT_S,
    ) -> None:
        """Add a VIP with no reals yet (its packets are dropped until it has
        some). `second_chance`: see second_chance()."""
        vip = to_vip(vip)
        flags = _check_vip_flags(vip, flags)
        _check_ring_size(ring_size)
        window = window_ns(check_second_chance(second_chance))
        if vip in self._vips:
            raise ExistsError(f"VIP {vip} already exists")
        self._check_prefix_room(vip)
        vip_id = free_vip_id({s.vip_id for s in self._vips.values()})
        self._prev.closed(vip_id, window)  # whatever an earlier VIP of this id left
        self._stats.zero_vip(vip_id)
        self._count_address(vip, +1)
        self._vip_filter.mark(vip, flags, +1)
        try:
            self._sync_lookup_flags(adding=vip)
            table, key = self._vip_entry(vip)
            table.update(key, _abi.vip_meta(vip_id, flags, ring_size, NO_RING), lib.BPF_NOEXIST)
        except BaseException:
            self._count_address(vip, -1)
            self._vip_filter.mark(vip, flags, -1)
            self._sync_lookup_flags()
            raise
        self._vips[vip] = _VipState(vip_id, flags, ring_size, window_ns=window)

    @observed
    def set_second_chance(self, vip: VipLike, seconds: float) -> None:
        """Change the VIP's second-chance window (see second_chance()). An
        open window is measured from its change again: shorter, it may
        close at once; 0 closes it."""
        vip, state = self._lookup(vip)
        window = window_ns(check_second_chance(seconds))
        state.window_ns = window
        change = state.transition
        if change is None or not window:
            self._end_transition(state)
            return
        change.until_ns = window_end(change.changed_ns, window)
        state.rings.prev_until_ns = change.until_ns
        self._prev.write(state.vip_id, state.rings.prev, change.until_ns, window)
        self._real_ids.hold(list(change.departed), change.until_ns)

    def _end_transition(self, state: _VipState) -> None:
        """Stop carrying the VIP's previous ring (if it was): its slot and
        the ids of the reals it named are reusable after a grace period."""
        self._prev.closed(state.vip_id, state.window_ns)
        change, state.transition = state.transition, None
        if change is None:
            return
        ticket = self._slots.grace.ticket()
        state.rings.release_prev(ticket)
        departed = list(change.departed)
        self._real_ids.hold(departed, 0)
        self._real_ids.reusable_after(departed, ticket)

    def _check_prefix_room(self, vip: Vip) -> None:
        """A prefix VIP: no other of the same port and protocol overlaps it
        (model.overlapping_prefix), and `vip_prefixes` has room."""
        if not vip.is_prefix:
            return
        other = overlapping_prefix(vip, self._vips)
        if other is not None:
            raise ConfigError(
                f"VIP {vip} overlaps VIP {other}: prefix VIPs of one port and protocol "
                "may not overlap (an exact VIP inside a prefix may)"
            )
        if sum(1 for v in self._vips if v.is_prefix) >= MAX_PREFIX_VIPS:
            raise CapacityError(f"no room for VIP {vip}: {MAX_PREFIX_VIPS} prefix VIPs at most")

    def _vip_entry(self, vip: Vip) -> tuple[Map, bytes]:
        """The map and key of a VIP's entry: `vips`, or `vip_prefixes`."""
        if vip.is_prefix:
            return self._map["vip_prefixes"], _abi.vip_prefix_key(vip)
        return self._map["vips"], _abi.vip_key(vip)

    def _count_address(self, vip: Vip, delta: int) -> None:
        """Count a VIP in or out of `vip_addrs`, or for a prefix of `vip_prefix_addrs`."""
        if vip.is_prefix:
            count_vip_prefix(self._map["vip_prefix_addrs"], vip, delta)
        else:
            count_vip_address(self._map["vip_addrs"], vip, delta)

    @observed
    def set_vip_flags(self, vip: VipLike, flags: VipFlags) -> None:
        """Change a VIP's flags in place: its entry, and the copy its reals
        carry for the data plane's fast path (one batch)."""
        vip, state = self._lookup(vip)
        flags = _check_vip_flags(vip, flags)
        server_ids = self._server_ids_for(flags, state, [m.real for m in state.members.values()])
        self._vip_filter.mark(vip, flags, +1)
        members = list(state.members.values())
        reals_undo = self._write_reals(members, state.vip_id, active=True, vip_flags=flags)
        sid_undo: Undo | None = None
        try:
            # a VIP turning QUIC finds its servers' entries from its first packet
            sid_undo = self._write_server_ids(state, state.members, server_ids)
            self._write_vip_meta(vip, state, flags, state.rings.live)
        except BaseException:
            if sid_undo is not None:
                self._quic.restore(sid_undo)
            self._put_reals(*reals_undo)
            self._vip_filter.mark(vip, flags, -1)
            raise
        self._quic.delete(state.vip_id, set(state.server_ids.values()) - set(server_ids.values()))
        self._vip_filter.mark(vip, state.flags, -1)
        if (flags ^ state.flags) & _HASH_FLAGS:
            # the flows' slots changed: the previous ring's slots name nobody's real
            self._end_transition(state)
        state.flags = flags
        state.server_ids = server_ids

    @observed
    def remove_vip(self, vip: VipLike) -> None:
        """Remove a VIP: its traffic passes to the host stack from now on."""
        vip, state = self._lookup(vip)
        table, key = self._vip_entry(vip)
        table.delete(key)
        self._vip_filter.mark(vip, state.flags, -1)
        self._end_transition(state)
        self._quic.delete(state.vip_id, state.server_ids.values())
        self._slots.remove(state.vip_id)
        self._start_grace(self._retire(list(state.members.values())))
        self._count_address(vip, -1)
        del self._vips[vip]
        self._sync_lookup_flags()

    def _write_vip_meta(self, vip: Vip, state: _VipState, flags: VipFlags, ring_slot: int) -> None:
        meta = _abi.vip_meta(state.vip_id, flags, state.ring_size, ring_slot)
        table, key = self._vip_entry(vip)
        table.update(key, meta)

    def _lookup(self, vip: VipLike) -> tuple[Vip, _VipState]:
        """The VIP a caller named (a Vip or its text) and its state."""
        checked = to_vip(vip)
        try:
            return checked, self._vips[checked]
        except KeyError:
            raise NotFoundError(f"no VIP {checked}") from None

    def _state(self, vip: VipLike) -> _VipState:
        return self._lookup(vip)[1]

    # -------------------------------------------------------------- reals

    def reals(self, vip: VipLike) -> list[Real]:
        """The VIP's reals (weight 0 = draining), sorted by address."""
        members = self._state(vip).members.values()
        return sorted((m.real for m in members), key=lambda r: _address_sort_key(r.address))

    @observed
    def add_real(self, vip: VipLike, real: RealLike) -> None:
        """Add one real to a VIP (an address: a real of weight 1, no MAC)."""
        vip, state = self._lookup(vip)
        real = to_real(real)
        if real.address in state.members:
            raise ExistsError(f"real {real.address} is already in VIP {vip}")
        self.set_reals(vip, [*(m.real for m in state.members.values()), real])

    @observed
    def remove_real(self, vip: VipLike, address: RealLike) -> None:
        """Remove a real (named by its address or a Real): its flows re-select
        among the others."""
        vip, state = self._lookup(vip)
        addr = _real_address(address)
        if addr not in state.members:
            raise NotFoundError(f"real {addr} is not in VIP {vip}")
        self.set_reals(vip, [m.real for m in state.members.values() if m.real.address != addr])

    @observed
    def set_weight(self, vip: VipLike, address: RealLike, weight: int) -> None:
        """Change one real's weight (0 drains it); the real is named by its
        address or a Real."""
        addr = _real_address(address)
        check_weight(weight, addr)
        vip, state = self._lookup(vip)
        if addr not in state.members:
            raise NotFoundError(f"real {addr} is not in VIP {vip}")
        reals = [m.real for m in state.members.values()]
        self.set_reals(vip, [r.with_weight(weight) if r.address == addr else r for r in reals])

    @observed
    def set_reals(self, vip: VipLike, reals: Iterable[RealLike]) -> None:
        """Replace the VIP's reals in one transaction (see the module docstring).
        An address in `reals` is a real of weight 1 with no MAC."""
        vip, state = self._lookup(vip)
        wanted = _check_reals(vip, reals)
        members = _new_members(vip, wanted)
        serving = sum(1 for r in wanted if r.weight > 0)
        if serving > state.ring_size:
            raise CapacityError(
                f"VIP {vip} has {serving} reals with weight > 0 but a ring of {state.ring_size}"
            )
        if self._same_reals(state, wanted):
            return  # nothing changes: no ring swap (and no RCU wait) for a no-op
        server_ids = self._server_ids_for(state.flags, state, wanted)
        _warn_moved_ids(vip, state.server_ids, server_ids)
        added = self._plan_members(state, members)
        ring = build_ring(state.ring_size, {m.real_id: m.real for m in members.values()})
        staying = {m.real_id for m in members.values()}  # ids hash faster than addresses
        removed = [m for m in state.members.values() if m.real_id not in staying]
        previous = state.transition
        change: Transition | None = previous
        opened = not (previous is not None and previous.is_open() and _same_ring(state.ring, ring))
        if opened:  # else the ring stays, and so does its previous ring
            change = self._open_transition(state, ring)
        slot = self._apply(vip, state, members, added, ring, server_ids, change, opened)
        retired = self._retire(removed, alternate=change is not None)
        ticket = self._start_grace(retired)
        self._quic.delete(state.vip_id, set(state.server_ids.values()) - set(server_ids.values()))
        until = change.until_ns if change is not None else 0
        self._slots.flipped(state.rings, slot, ticket, until if opened else None)
        if change is not None:
            change.departed.update(zip(retired, [m.real.address for m in removed], strict=True))
            self._real_ids.hold(retired, until)
        if opened and previous is not None:  # no ring names its departed any more
            departed = np.fromiter(previous.departed, dtype=np.int64, count=len(previous.departed))
            self._real_ids.hold(departed, 0)
            self._real_ids.reusable_after(departed, ticket)
        state.members, state.ring, state.transition = members, ring, change
        state.server_ids = server_ids

    def _open_transition(
        self, state: _VipState, ring: npt.NDArray[np.uint32] | None
    ) -> Transition | None:
        """The transition a change to `ring` opens: none with the window
        off, from no ring, or to none (the VIP then drops its packets)."""
        if not state.window_ns or state.ring is None or ring is None:
            return None
        now = time.monotonic_ns()
        return Transition(state.ring, now, window_end(now, state.window_ns))

    @staticmethod
    def _same_reals(state: _VipState, wanted: list[Real]) -> bool:
        """Whether `wanted` (addresses unique) is exactly the VIP's reals."""
        if len(wanted) != len(state.members):
            return False
        current = state.members
        return all((m := current.get(r.address)) is not None and m.real == r for r in wanted)

    def _plan_members(self, state: _VipState, members: dict[IPAddress, _Member]) -> list[_Member]:
        """Give `members` their ids: reals that stay keep theirs, new ones
        get free ids reserved. Returns the new ones.

        An address hashes slowly (~0.3 us), so a VIP whose reals are all
        replaced looks none up: sets made from dicts reuse the hashes the
        dicts stored."""
        old = state.members
        if set(members).isdisjoint(set(old)):  # set() of a dict, not the dict: no rehash
            added = list(members.values())
        else:
            added = []
            for address, member in members.items():
                before = old.get(address)
                if before is None:
                    added.append(member)
                else:
                    member.real_id, member.gen = before.real_id, before.gen
        ids, gens = self._real_ids.reserve(len(added))
        for member, real_id, gen in zip(added, ids, gens, strict=True):
            member.real_id, member.gen = real_id, gen
        return added

    def _apply(
        self,
        vip: Vip,
        state: _VipState,
        members: dict[IPAddress, _Member],
        added: list[_Member],
        ring: npt.NDArray[np.uint32] | None,
        server_ids: dict[IPAddress, int],
        change: Transition | None,
        opened: bool,
    ) -> int:
        """Write reals and their QUIC server ids, then the ring, then
        (`opened`) the previous ring's entry (`change`: the live slot stays
        readable; None: no previous ring), then flip; undo the writes if
        anything fails. Returns the ring slot the VIP now names."""
        added_ids = {m.real_id for m in added}
        changed = [
            m
            for m in members.values()
            if m.real_id in added_ids or m.real != state.members[m.real.address].real
        ]
        # Stats of an id never handed out are zeros already: reset reused ones only.
        reused = self._real_ids.handed_out_before(added_ids)
        old_stats = self._stats.zero_reals(reused)
        reals_undo = self._write_reals(changed, state.vip_id, active=True, vip_flags=state.flags)
        prev_undo: bytes | None = None
        sid_undo: Undo | None = None
        try:
            sid_undo = self._write_server_ids(state, members, server_ids)
            slot = NO_RING if ring is None else self._slots.write(state.vip_id, state.rings, ring)
            if slot != state.rings.live and opened:
                if change is not None:
                    until, live = change.until_ns, state.rings.live
                    prev_undo = self._prev.write(state.vip_id, live, until, state.window_ns)
                else:
                    prev_undo = self._prev.closed(state.vip_id, state.window_ns)
            if slot != state.rings.live:
                self._write_vip_meta(vip, state, state.flags, slot)  # the flip
        except BaseException:
            if prev_undo is not None:
                self._prev.restore(state.vip_id, prev_undo)
            if sid_undo is not None:
                self._quic.restore(sid_undo)
            self._put_reals(*reals_undo)
            self._stats.restore_reals(reused, old_stats)
            raise
        if ring is not None or state.ring is not None:
            self.ring_swaps += 1
        self._real_ids.take([m.real_id for m in added], [m.gen for m in added])
        return slot

    @staticmethod
    def _server_ids_for(
        flags: VipFlags, state: _VipState, reals: list[Real]
    ) -> dict[IPAddress, int]:
        """The server ids of a QUIC VIP's `reals` (those they hold stay), {} for
        another VIP; ConfigError for two reals pinned to one id."""
        if VipFlags.QUIC not in flags:
            return {}
        return assign_server_ids(reals, state.server_ids)

    def _write_server_ids(
        self, state: _VipState, members: dict[IPAddress, _Member], server_ids: dict[IPAddress, int]
    ) -> Undo:
        """Write the entries of `server_ids` that `quic_servers` lacks; the undo."""
        wanted = _server_entries(server_ids, members)
        return self._quic.write(
            state.vip_id, wanted, _server_entries(state.server_ids, state.members)
        )

    def _write_reals(
        self, members: list[_Member], vip_id: int, active: bool, vip_flags: int = 0
    ) -> tuple[list[int], npt.NDArray[np.uint8]]:
        """Write these members' `reals` entries in one copy; returns the undo."""
        ids = [m.real_id for m in members]
        old = self._reals.rows[ids].copy()
        rows = _abi.real_entries(
            [m.real.address for m in members],
            [m.real.mac for m in members],
            [m.gen for m in members],
            vip_id,
            [m.real.weight if active else 0 for m in members],
            active,
            vip_flags,
        )
        self._put_reals(ids, rows)
        return ids, old

    def _put_reals(self, ids: list[int], rows: npt.NDArray[np.uint8]) -> None:
        """Write `reals` entries, through the map's shared mapping."""
        if ids:
            self._reals.rows[ids] = rows

    def _retire(self, members: list[_Member], alternate: bool = False) -> list[int]:
        """Mark ids unused (one copy): connection-table entries pointing at
        them become misses, so their flows re-select. A packet that read the
        old ring just before the flip and picks one of them is dropped; the
        id is handed out again only after a grace period (_start_grace).
        `alternate`: the previous ring still names them (second chance)."""
        ids = [m.real_id for m in members]
        self._put_reals(ids, _abi.retired_real_entries(self._reals.rows[ids], alternate))
        self._real_ids.retire(ids)
        return ids

    def departed_alternates(self, vip: VipLike) -> list[IPAddress]:
        """Reals that left the VIP at its last ring change and that its
        previous ring still names while the window is open: second chance
        hands them the packets of their connections. Sorted."""
        change = self._state(vip).transition
        if change is None or not change.is_open():
            return []
        return sorted(set(change.departed.values()), key=_address_sort_key)

    @observed
    def drop_alternate(self, vip: VipLike, address: RealLike) -> bool:
        """A real that left the VIP at its last change is known to be dead:
        stop handing it the packets of flows the change moved (the real
        the ring now gives them resets them at once instead). Returns
        whether the previous ring still named it."""
        vip, state = self._lookup(vip)
        addr = _real_address(address)
        change = state.transition
        if change is None:
            return False
        dropped = [real_id for real_id, left in change.departed.items() if left == addr]
        if not dropped:
            return False
        for real_id in dropped:
            del change.departed[real_id]
        self._put_reals(dropped, _abi.retired_real_entries(self._reals.rows[dropped]))
        self._real_ids.hold(dropped, 0)
        return True

    def _start_grace(self, retired_ids: list[int]) -> int:
        """One grace ticket for all a change took out of use, issued after
        its flip and its retirements so that it covers both: the ring slot
        that was live and the retired ids are reused once it has passed."""
        ticket = self._slots.grace.ticket()
        self._real_ids.reusable_after(retired_ids, ticket)
        return ticket

    # ------------------------------------------------------------ packets

    def run(self, packet: bytes) -> RunResult:
        """Run one packet through the program (BPF_PROG_TEST_RUN)."""
        return run_packet(self._prog, packet)

    def predict(self, flow: Flow) -> IPAddress | None:
        """The real the ring gives a new flow (ignores the connection table).

        Pure Python, from the same hash the data plane uses: tests check it
        against `run()`, operators use it to answer "where would X go?".
        None if no VIP matches or the VIP has no usable real. A QUIC VIP
        routes by connection ID (`predict_quic`); this is where it sends a
        datagram too short to carry one.
        """
        if not isinstance(flow, Flow):
            raise ConfigError(f"expected a Flow, got {flow!r}")
        vip = self.lookup_vip(flow.dst, flow.dport, flow.proto)
        if vip is None:
            return None
        state = self._vips[vip]
        if state.ring is None:
            return None
        real_id = int(state.ring[self._flow_hash(flow, state) % state.ring_size])
        for m in state.members.values():
            if m.real_id == real_id:
                return m.real.address
        return None

    def alternate(self, flow: Flow) -> IPAddress | None:
        """The real a packet of `flow` that the ring (not the connection
        table) forwards carries as its alternate (second chance), as the
        data plane decides it (bpf/prev_ring.h): a TCP flow whose VIP's
        last ring change, within its window, moved it from that real to
        another of the same family. None otherwise. A SYN never carries
        one."""
        if not isinstance(flow, Flow):
            raise ConfigError(f"expected a Flow, got {flow!r}")
        vip = self.lookup_vip(flow.dst, flow.dport, flow.proto)
        if vip is None or flow.proto != "tcp":
            return None
        state = self._vips[vip]
        change = state.transition
        if state.ring is None or change is None or not change.is_open():
            return None
        slot = self._flow_hash(flow, state) % state.ring_size
        now_id, prev_id = int(state.ring[slot]), int(change.ring[slot])
        owners = {m.real_id: m.real.address for m in state.members.values()}
        owners.update(change.departed)
        now, prev = owners.get(now_id), owners.get(prev_id)
        if prev is None or now is None or prev == now or prev.version != now.version:
            return None
        return prev

    def _flow_hash(self, flow: Flow, state: _VipState) -> int:
        return flow_hash(
            flow.src.packed,
            flow.dst.packed,
            flow.sport,
            flow.dport,
            IPPROTO[flow.proto],
            self._config.hash_seed,
            int(state.flags),
        )

    def predict_quic(self, vip: VipLike, datagram: bytes) -> IPAddress | None:
        """The real a QUIC VIP sends a datagram (UDP payload) to, by its
        destination connection ID as bpf/quic.h reads it: the real whose
        server id it names, else the ring at the CID's hash. None for a
        datagram routed by its 5-tuple (use `predict`), or no usable real."""
        if not isinstance(datagram, bytes):
            raise TypeError(f"a datagram is bytes, not {type(datagram).__name__}")
        vip, state = self._lookup(vip)
        if VipFlags.QUIC not in state.flags:
            raise ConfigError(f"VIP {vip} does not route QUIC (no quic flag)")
        cid = destination_cid(datagram)
        if cid is None:
            return None
        server_id = server_id_of(cid)
        for address, sid in state.server_ids.items():
            if sid == server_id:
                return address
        if state.ring is None:
            return None
        real_id = int(state.ring[quic_cid_hash(cid, self._config.hash_seed) % state.ring_size])
        return next((m.real.address for m in state.members.values() if m.real_id == real_id), None)

    def lookup_vip(self, address: AddressLike, port: int, proto: str) -> Vip | None:
        """The VIP a packet to (address, port, proto) matches, as the data
        plane looks: the address with the port, then with port 0, then the
        longest prefix VIP holding the address with the port, then with
        port 0.

        Any destination may be asked about: one no VIP can have matches none."""
        addr = parse_address(address)
        for candidate_port in (port, 0):
            vip = Vip.from_data_plane(addr, candidate_port, proto)
            if vip in self._vips:
                return vip
        for candidate_port in (port, 0):
            holding = [
                v
                for v in self._vips
                if v.is_prefix and (v.port, v.proto) == (candidate_port, proto) and v.holds(addr)
            ]
            if holding:
                return max(holding, key=lambda v: v.prefixlen)
        return None

    def ring(self, vip: VipLike) -> list[IPAddress | None]:
        """The VIP's ring as addresses per slot (for inspection and tests)."""
        state = self._state(vip)
        owners = {m.real_id: m.real.address for m in state.members.values()}
        return ring_addresses(state.ring, state.ring_size, owners)

    def ring_shares(self, vip: VipLike) -> dict[IPAddress, float]:
        """Fraction of ring slots each real owns."""
        state = self._state(vip)
        ids = {addr: m.real_id for addr, m in state.members.items()}
        return ring_fractions(state.ring, state.ring_size, ids)

    # ------------------------------------------------------------ counters

    def stats(self, vip: VipLike) -> Counter:
        """Packets and bytes forwarded for a VIP (all CPUs)."""
        return self._stats.vip(self._state(vip).vip_id)

    def real_stats(self, vip: VipLike) -> dict[IPAddress, Counter]:
        """Packets and bytes forwarded to each real of a VIP."""
        members = self._state(vip).members
        return {addr: self._stats.real(m.real_id) for addr, m in members.items()}

    def counters(self) -> dict[str, int]:
        """Global counters by name: XDP actions, reasons, connection table,
        SYN-flood guard."""
        return self._stats.counters()

    def syn_flood(self) -> list[CpuFloodWindow]:
        """Each CPU's SYN-flood guard window: its SYNs, and whether it is
        under a flood (config.syn_flood_threshold; xlb/synflood.py)."""
        return flood_windows(self._map["syn_flood"], self._config.syn_flood_threshold)

    # ---------------------------------------------------- connection table

    def flows(self, limit: int = 1000) -> Iterator[tuple[Flow, IPAddress | None]]:
        """A sample of the connection table: (flow, real or None if stale),
        at most `limit` entries."""
        return self._sample_flows(check_sample_limit(limit))

    def conn_snapshot(self) -> ConnSnapshot:
        """Both connection tables read at once (batch lookups): entry counts
        per real (`counts`), entries new since an earlier snapshot
        (`new_since`), every entry as a flow (`entries`). Entries point at
        (real id, generation): `real_id_owners()` says whose those are."""
        return ConnSnapshot.read(self._map)

    def real_id_owners(self) -> dict[tuple[int, int], tuple[Vip, IPAddress]]:
        """(real id, generation) -> (VIP, real address) for every real in
        use: what a connection-table entry that is not stale points at."""
        return {
            (m.real_id, m.gen): (vip, m.real.address)
            for vip, s in self._vips.items()
            for m in s.members.values()
        }

    def _sample_flows(self, limit: int) -> Iterator[tuple[Flow, IPAddress | None]]:
        yield from sample_flows(self._map, self._real_owners(), limit)

    def _real_owners(self) -> dict[tuple[int, int], IPAddress]:
        return {
            (m.real_id, m.gen): m.real.address
            for s in self._vips.values()
            for m in s.members.values()
        }

    def flow_real(self, flow: Flow) -> IPAddress | None:
        """The real `flow`'s connection-table entry names; None if the flow
        has no entry, or one whose real was retired (its next packet then
        follows the ring)."""
        if not isinstance(flow, Flow):
            raise ConfigError(f"expected a Flow, got {flow!r}")
        return lookup_flow(self._map, self._real_owners(), flow)

    def flow_owners(self, limit: int) -> dict[bytes, tuple[Vip, IPAddress]] | None:
        """Every connection-table entry, as its raw key -> the VIP and real
        it sends to (stale entries left out); None when the tables hold
        more than `limit` entries. For counting flows per real between two
        readings (`xlb top`): keys compare, nothing is parsed."""
        return owners_by_key(self._map, self.real_id_owners(), check_sample_limit(limit))

    def conn_table_fill(self) -> dict[int, TableFill]:
        """Entries and capacity of the connection tables, by IP version
        (4, 6): how close the LRU is to evicting established flows."""
        return table_fill(self._map)

    def clear_flows(self) -> int:
        """Empty the connection table; returns how many entries went.

        Established flows then follow the ring again, as if they had just
        arrived from another balancer node: with an unchanged ring that is
        the real they already have."""
        return clear_conn_tables(self._map)


# ------------------------------------------------------------------ checks


def _check_flags(flags: Any) -> VipFlags:
    if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~_limits.XLB_VIP_F_ALL:
        raise ConfigError(f"invalid VIP flags {flags!r}")
    checked = VipFlags(flags)
    if VipFlags.NO_SPORT in checked and VipFlags.DPORT_ONLY in checked:
        raise ConfigError("VIP flags no_sport and dport_only exclude each other")
    return checked


def _check_vip_flags(vip: Vip, flags: Any) -> VipFlags:
    """Flags valid on their own and for this VIP: QUIC routing is for UDP."""
    checked = _check_flags(flags)
    if VipFlags.QUIC in checked and vip.proto != "udp":
        raise ConfigError(f"VIP flag quic is for UDP VIPs: {vip} is {vip.proto}")
    return checked


def _warn_moved_ids(vip: Vip, old: dict[IPAddress, int], new: dict[IPAddress, int]) -> None:
    """Log each staying real whose server id changes (a pin took its id, or
    it was pinned to another): its QUIC connections end."""
    for address, sid in new.items():
        before = old.get(address)
        if before is not None and before != sid:
            log.warning(
                "VIP %s: real %s's QUIC server id moves from %d to %d: its connections end",
                vip, address, before, sid,
            )  # fmt: skip


def _server_entries(
    server_ids: dict[IPAddress, int], members: dict[IPAddress, _Member]
) -> dict[int, Entry]:
    """`quic_servers` entries (server id -> real id, pinned) of a VIP's members."""
    return {
        sid: (members[address].real_id, members[address].real.server_id is not None)
        for address, sid in server_ids.items()
    }


def _check_ring_size(size: Any) -> None:
    """add_vip's ring size: an int (the API's own check), then the rules
    of maglev.check_ring_size (their one home), told in the API's words."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"invalid ring size {size!r}: must be a prime number")
    try:
        maglev.check_ring_size(size)
    except ConfigError:
        rule = f"at most {RING_SIZE_MAX}" if size > RING_SIZE_MAX else "must be a prime number"
        raise ConfigError(f"invalid ring size {size!r}: {rule}") from None


#: Flags that change which fields the flow hash covers (hash.h).
_HASH_FLAGS = VipFlags.NO_SPORT | VipFlags.DPORT_ONLY


def _same_ring(a: npt.NDArray[np.uint32] | None, b: npt.NDArray[np.uint32] | None) -> bool:
    return a is not None and b is not None and np.array_equal(a, b)


def _real_address(value: RealLike) -> IPAddress:
    """The address that names a real: given as such, or a Real's."""
    return value.address if isinstance(value, Real) else parse_address(value, "real address")


def _check_reals(vip: Vip, reals: object) -> list[Real]:
    """The reals a caller gave (Reals or addresses) as a list of Reals, of
    a family the VIP can encapsulate (`_new_members` checks that each
    address is given once)."""
    if isinstance(reals, str | bytes | Real) or not isinstance(reals, Iterable):
        raise ConfigError(f"expected a list of reals for VIP {vip}, got {reals!r}")
    wanted = [to_real(real) for real in reals]
    if vip.family == 6 and any(real.address.version == 4 for real in wanted):
        _reject_reals(vip, [real.address for real in wanted])
    return wanted


def _new_members(vip: Vip, wanted: list[Real]) -> dict[IPAddress, _Member]:
    """The members `wanted` make, by address, ids not yet given; ConfigError
    for an address given twice. This dict is the one place a set_reals
    hashes each address (see _plan_members)."""
    members = {real.address: _Member(real, 0, 0) for real in wanted}
    if len(members) != len(wanted):
        _reject_reals(vip, [real.address for real in wanted])
    return members


def _checked_config(config: object) -> BalancerConfig:
    if not isinstance(config, BalancerConfig):
        raise ConfigError(f"expected a BalancerConfig, got {type(config).__name__}")
    return config


def _reject_reals(vip: Vip, addresses: list[IPAddress]) -> None:
    """Raise for the first address given twice or of a family the VIP
    cannot encapsulate."""
    seen: set[IPAddress] = set()
    for address in addresses:
        if address in seen:
            raise ConfigError(f"real {address} is given twice for VIP {vip}")
        if vip.family == 6 and address.version == 4:
            raise ConfigError(
                f"real {address} is IPv4 but VIP {vip} is IPv6 "
                "(there is no IPv6-in-IPv4 encapsulation)"
            )
        seen.add(address)


def _address_sort_key(address: IPAddress) -> tuple[int, bytes]:
    return address.version, address.packed


__all__ = ["Balancer", "RunResult", "UpdateEvent", "UpdateObserver", "counter_names"]
