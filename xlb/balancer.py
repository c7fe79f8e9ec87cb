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

The Balancer keeps the VIP table and runs each change in that order; the
parts it delegates live beside it: ids.py (free VIP ids, real ids and
when a retired one may be reused), rings.py (Maglev rings, ring slots,
grace periods), vipaddrs.py (vip_filter bits, vip_addrs counts),
stats.py (counters), flows.py (the connection table), events.py (what
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
from .flowhash import flow_hash
from .flows import check_sample_limit, clear_conn_tables, sample_flows
from .ids import MAX_REALS as MAX_REALS  # re-exported: xlb.balancer.MAX_REALS
from .ids import MAX_VIPS as MAX_VIPS
from .ids import RealIds, free_vip_id
from .model import (
    IPPROTO,
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
    check_weight,
    parse_address,
    to_real,
    to_vip,
    vip_sort_key,
)
from .pins import DEFAULT_PIN_ROOT
from .rings import (
    NO_RING,
    GraceSource,
    RingSlots,
    VipRings,
    build_ring,
    ring_addresses,
    ring_fractions,
)
from .stats import counter_names, read_counters, read_traffic, zero_stats, zero_stats_undoably
from .testrun import RunResult, run_packet
from .vipaddrs import VipFilter, count_vip_address

log = logging.getLogger("xlb.balancer")

OBJECT_DIR = Path(__file__).resolve().parent / "_bpf_objects"
BALANCER_OBJECT = OBJECT_DIR / "xlb.bpf.o"
PROGRAM_NAME = "xlb_balancer"
LINK_PIN_NAME = "link"
RING_SIZE_DEFAULT = _limits.XLB_RING_SIZE_DEFAULT
RING_SIZE_MAX = _limits.XLB_RING_SIZE_MAX


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
        self._obj = BpfObject(
            object_path or BALANCER_OBJECT, pin_dir=self.pin_dir, only=[PROGRAM_NAME]
        )
        self._prog: Program = self._obj.program(PROGRAM_NAME)
        self._map: dict[str, Map] = self._obj.maps
        self._link: XdpLink | None = None
        self._attached_here = False
        self._closed = False
        self._slots = RingSlots(self._map["rings"], grace_periods)
        try:
            self._reals_raw = self._read_reals()
            self._vips = self._read_vips()
            self._real_ids = self._adopt_real_ids()
            self._vip_filter = VipFilter(
                self._map["vip_filter"], ((vip, s.flags) for vip, s in self._vips.items())
            )
            self._adopt_config(config)
            if interface is not None:
                self._attach(interface, mode)
        except BaseException:
            self._slots.close()
            self._obj.close()
            raise

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _pin_dir(interface: str | None, pin_dir: str | Path | None) -> Path | None:
        if pin_dir is None and interface is None:
            return None
        path = Path(pin_dir) if pin_dir is not None else DEFAULT_PIN_ROOT / str(interface)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

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
        self._slots.close()
        self._obj.close()
        if detach and self.pin_dir is not None:
            shutil.rmtree(self.pin_dir, ignore_errors=True)

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
        new = BpfObject(object_path, pin_dir=self.pin_dir, only=[PROGRAM_NAME])
        if self._link is not None:
            self._link.update(new.program(PROGRAM_NAME))
        old, self._obj = self._obj, new
        self._prog = new.program(PROGRAM_NAME)
        self._map = new.maps
        self._slots.outer = new.maps["rings"]
        self._vip_filter.map = new.maps["vip_filter"]
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
        for key, value in self._map["vips"].items():
            vip_id, flags, ring_size, ring_slot = _abi.parse_vip_meta(value)
            state = _VipState(vip_id, VipFlags(flags), ring_size)
            state.rings, state.ring = self._slots.adopt(vip_id, ring_slot, ring_size)
            vips[_abi.parse_vip_key(key)] = state
        by_id = {s.vip_id: s for s in vips.values()}
        active = _abi.real_field(self._reals_raw, "flags", np.uint8) & _limits.XLB_REAL_F_ACTIVE
        for real_id in np.flatnonzero(active).tolist():
            entry = _abi.parse_real_entry(self._reals_raw[real_id].tobytes())
            owner = by_id.get(entry["vip_id"])
            if owner is not None:
                real = Real.from_data_plane(entry["address"], entry["weight"], entry["mac"])
                owner.members[real.address] = _Member(real, real_id, entry["gen"])
        return vips

    def _read_reals(self) -> npt.NDArray[np.uint8]:
        """Mirror the `reals` map (we are its only writer): the mirror gives a
        failed change its undo, and adoption its members, without more reads."""
        _, values, count = self._map["reals"].lookup_batch(chunk=8192)
        size = self._map["reals"].value_size
        return np.frombuffer(values, dtype=np.uint8).reshape(count, size).copy()

    def _adopt_real_ids(self) -> RealIds:
        """The real ids the adopted VIPs hold are in use; the others are
        free, retired ones after a grace period."""
        gens = _abi.real_field(self._reals_raw, "gen", np.uint32)
        in_use = (m.real_id for s in self._vips.values() for m in s.members.values())
        return RealIds(gens, in_use, self._slots.grace)

    def _adopt_config(self, config: BalancerConfig | None) -> None:
        raw = self._map["config"].lookup(_abi.u32(0))
        self._no_any_port_vip = False  # what the map says until written below
        if config is None and raw is not None and raw != bytes(len(raw)):
            self._config = _abi.parse_config(raw)
            self._no_any_port_vip = _abi.config_no_any_port_vip(raw)
            self._sync_any_port_flag()
            return
        self.configure(config or BalancerConfig())

    # ------------------------------------------------------------- config

    @property
    def config(self) -> BalancerConfig:
        """The data-plane settings in force (the `config` map)."""
        return self._config

    @observed
    def configure(self, config: BalancerConfig) -> None:
        """Replace the global data-plane settings (one map update)."""
        if not isinstance(config, BalancerConfig):
            raise ConfigError(f"expected a BalancerConfig, got {type(config).__name__}")
        self._no_any_port_vip = not self._has_any_port_vip()
        self._write_config(config)
        self._config = config

    def _write_config(self, config: BalancerConfig) -> None:
        value = _abi.config_value(config, no_any_port_vip=self._no_any_port_vip)
        self._map["config"].update(_abi.u32(0), value)

    def _has_any_port_vip(self) -> bool:
        return any(vip.port == 0 for vip in self._vips)

    def _sync_any_port_flag(self, adding_any_port: bool = False) -> None:
        """Keep XLB_CFG_F_NO_ANY_PORT_VIP true to `vips`: the data plane
        skips its port-0 lookup while the flag is set, so the flag is
        cleared before an any-port VIP is inserted (`adding_any_port`) and
        set only after the last one was deleted."""
        no_any_port = not adding_any_port and not self._has_any_port_vip()
        if no_any_port != self._no_any_port_vip:
            self._no_any_port_vip = no_any_port
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

    @observed
    def add_vip(
        self, vip: VipLike, flags: VipFlags = VipFlags.NONE, ring_size: int = RING_SIZE_DEFAULT
    ) -> None:
        """Add a VIP with no reals yet (its packets are dropped until it has some)."""
        vip = to_vip(vip)
        flags = _check_flags(flags)
        _check_ring_size(ring_size)
        if vip in self._vips:
            raise ExistsError(f"VIP {vip} already exists")
        vip_id = free_vip_id({s.vip_id for s in self._vips.values()})
        zero_stats(self._map["vip_stats"], vip_id)
        count_vip_address(self._map["vip_addrs"], vip, +1)
        self._vip_filter.mark(vip, flags, +1)
        try:
            if vip.port == 0:
                self._sync_any_port_flag(adding_any_port=True)
            self._map["vips"].update(
                _abi.vip_key(vip), _abi.vip_meta(vip_id, flags, ring_size, NO_RING), lib.BPF_NOEXIST
            )
        except BaseException:
            count_vip_address(self._map["vip_addrs"], vip, -1)
            self._vip_filter.mark(vip, flags, -1)
            self._sync_any_port_flag()
            raise
        self._vips[vip] = _VipState(vip_id, flags, ring_size)

    @observed
    def set_vip_flags(self, vip: VipLike, flags: VipFlags) -> None:
        """Change a VIP's flags in place: its entry, and the copy its reals
        carry for the data plane's fast path (one batch)."""
        vip, state = self._lookup(vip)
        flags = _check_flags(flags)
        self._vip_filter.mark(vip, flags, +1)
        members = list(state.members.values())
        reals_undo = self._write_reals(members, state.vip_id, active=True, vip_flags=flags)
        try:
            self._write_vip_meta(vip, state, flags, state.rings.live)
        except BaseException:
            self._put_reals(*reals_undo)
            self._vip_filter.mark(vip, flags, -1)
            raise
        self._vip_filter.mark(vip, state.flags, -1)
        state.flags = flags

    @observed
    def remove_vip(self, vip: VipLike) -> None:
        """Remove a VIP: its traffic passes to the host stack from now on."""
        vip, state = self._lookup(vip)
        self._map["vips"].delete(_abi.vip_key(vip))
        self._vip_filter.mark(vip, state.flags, -1)
        self._slots.remove(state.vip_id)
        self._start_grace(self._retire(list(state.members.values())))
        count_vip_address(self._map["vip_addrs"], vip, -1)
        del self._vips[vip]
        self._sync_any_port_flag()

    def _write_vip_meta(self, vip: Vip, state: _VipState, flags: VipFlags, ring_slot: int) -> None:
        meta = _abi.vip_meta(state.vip_id, flags, state.ring_size, ring_slot)
        self._map["vips"].update(_abi.vip_key(vip), meta)

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
        serving = sum(1 for r in wanted if r.weight > 0)
        if serving > state.ring_size:
            raise CapacityError(
                f"VIP {vip} has {serving} reals with weight > 0 but a ring of {state.ring_size}"
            )
        if self._same_reals(state, wanted):
            return  # nothing changes: no ring swap (and no RCU wait) for a no-op
        members, added = self._plan_members(state, wanted)
        ring = build_ring(state.ring_size, {m.real_id: m.real for m in members.values()})
        staying = {m.real_id for m in members.values()}  # ids hash faster than addresses
        removed = [m for m in state.members.values() if m.real_id not in staying]
        slot = self._apply(vip, state, members, added, ring)
        ticket = self._start_grace(self._retire(removed))
        self._slots.flipped(state.rings, slot, ticket)
        state.members, state.ring = members, ring

    @staticmethod
    def _same_reals(state: _VipState, wanted: list[Real]) -> bool:
        """Whether `wanted` (addresses unique) is exactly the VIP's reals."""
        if len(wanted) != len(state.members):
            return False
        current = state.members
        return all((m := current.get(r.address)) is not None and m.real == r for r in wanted)

    def _plan_members(
        self, state: _VipState, wanted: list[Real]
    ) -> tuple[dict[IPAddress, _Member], list[_Member]]:
        """Keep the ids of reals that stay; reserve free ids for new ones."""
        members: dict[IPAddress, _Member] = {}
        new: list[Real] = []
        for real in wanted:
            old = state.members.get(real.address)
            if old is None:
                new.append(real)
            else:
                members[real.address] = _Member(real, old.real_id, old.gen)
        reserved = self._real_ids.reserve(len(new))
        added = [_Member(r, i, g) for r, (i, g) in zip(new, reserved, strict=True)]
        members.update((m.real.address, m) for m in added)
        return members, added

    def _apply(
        self,
        vip: Vip,
        state: _VipState,
        members: dict[IPAddress, _Member],
        added: list[_Member],
        ring: npt.NDArray[np.uint32] | None,
    ) -> int:
        """Write reals, then the ring, then flip; undo the writes if anything
        fails. Returns the ring slot the VIP now names."""
        added_ids = {m.real_id for m in added}
        changed = [
            m
            for m in members.values()
            if m.real_id in added_ids or m.real != state.members[m.real.address].real
        ]
        # Stats of an id never handed out are zeros already: reset reused ones only.
        reused = self._real_ids.handed_out_before(added_ids)
        stats_undo = zero_stats_undoably(self._map["real_stats"], reused)
        reals_undo = self._write_reals(changed, state.vip_id, active=True, vip_flags=state.flags)
        try:
            slot = NO_RING if ring is None else self._slots.write(state.vip_id, state.rings, ring)
            if slot != state.rings.live:
                self._write_vip_meta(vip, state, state.flags, slot)  # the flip
        except BaseException:
            self._put_reals(*reals_undo)
            self._map["real_stats"].update_batch(*stats_undo)
            raise
        if ring is not None or state.ring is not None:
            self.ring_swaps += 1
        self._real_ids.take((m.real_id, m.gen) for m in added)
        return slot

    def _write_reals(
        self, members: list[_Member], vip_id: int, active: bool, vip_flags: int = 0
    ) -> tuple[list[int], npt.NDArray[np.uint8]]:
        """Write these members' `reals` entries in one batch; returns the undo."""
        ids = [m.real_id for m in members]
        old = self._reals_raw[ids].copy()
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
        if ids:
            self._map["reals"].update_batch(_abi.u32_keys(ids), rows.tobytes(), len(ids))
            self._reals_raw[ids] = rows

    def _retire(self, members: list[_Member]) -> list[int]:
        """Mark ids unused (one batch): connection-table entries pointing at
        them become misses, so their flows re-select. A packet that read the
        old ring just before the flip and picks one of them is dropped; the
        id is handed out again only after a grace period (_start_grace)."""
        ids = [m.real_id for m in members]
        self._put_reals(ids, _abi.retired_real_entries(self._reals_raw[ids]))
        self._real_ids.retire(ids)
        return ids

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
        None if no VIP matches or the VIP has no usable real.
        """
        if not isinstance(flow, Flow):
            raise ConfigError(f"expected a Flow, got {flow!r}")
        vip = self.lookup_vip(flow.dst, flow.dport, flow.proto)
        if vip is None:
            return None
        state = self._vips[vip]
        if state.ring is None:
            return None
        h = flow_hash(
            flow.src.packed,
            flow.dst.packed,
            flow.sport,
            flow.dport,
            IPPROTO[flow.proto],
            self._config.hash_seed,
            int(state.flags),
        )
        real_id = int(state.ring[h % state.ring_size])
        for m in state.members.values():
            if m.real_id == real_id:
                return m.real.address
        return None

    def lookup_vip(self, address: AddressLike, port: int, proto: str) -> Vip | None:
        """The VIP a packet to (address, port, proto) matches: exact port, then port 0.

        Any destination may be asked about: one no VIP can have matches none."""
        addr = parse_address(address)
        for candidate_port in (port, 0):
            vip = Vip.from_data_plane(addr, candidate_port, proto)
            if vip in self._vips:
                return vip
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
        return read_traffic(self._map["vip_stats"], self._state(vip).vip_id)

    def real_stats(self, vip: VipLike) -> dict[IPAddress, Counter]:
        """Packets and bytes forwarded to each real of a VIP."""
        members = self._state(vip).members
        stats = self._map["real_stats"]
        return {addr: read_traffic(stats, m.real_id) for addr, m in members.items()}

    def counters(self) -> dict[str, int]:
        """Global counters by name: XDP actions, reasons, connection table."""
        return read_counters(self._map["counters"])

    # ---------------------------------------------------- connection table

    def flows(self, limit: int = 1000) -> Iterator[tuple[Flow, IPAddress | None]]:
        """A sample of the connection table: (flow, real or None if stale),
        at most `limit` entries."""
        return self._sample_flows(check_sample_limit(limit))

    def _sample_flows(self, limit: int) -> Iterator[tuple[Flow, IPAddress | None]]:
        owners = {
            (m.real_id, m.gen): m.real.address
            for s in self._vips.values()
            for m in s.members.values()
        }
        yield from sample_flows(self._map, owners, limit)

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


def _real_address(value: RealLike) -> IPAddress:
    """The address that names a real: given as such, or a Real's."""
    return value.address if isinstance(value, Real) else parse_address(value, "real address")


def _check_reals(vip: Vip, reals: object) -> list[Real]:
    """The reals a caller gave (Reals or addresses) as a list of Reals,
    addresses unique and of a family the VIP can encapsulate."""
    if isinstance(reals, str | bytes | Real) or not isinstance(reals, Iterable):
        raise ConfigError(f"expected a list of reals for VIP {vip}, got {reals!r}")
    wanted = [to_real(real) for real in reals]
    addresses = [real.address for real in wanted]
    # Whole-list checks first (an address hashes slowly: once each), the
    # walk that names the culprit only when one fails.
    if len(set(addresses)) != len(addresses) or (
        vip.family == 6 and any(address.version == 4 for address in addresses)
    ):
        _reject_reals(vip, addresses)
    return wanted


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
