"""Reconcile: what the data plane should hold, what it holds, and the changes between.

- `desired_state(config)` and `state_of_balancer(balancer)` give the two
  `DataPlaneState`s to compare (what the balancer should hold, what it
  holds).
- `diff(running, wanted)` compares them and returns the ordered list of
  `Change`s that turn one into the other; `apply(balancer, changes)` runs
  them, transactionally per VIP.
- `refuse_removing_every_vip` stops an empty or truncated file from taking
  every service down.

Pure but for `apply` and `state_of_balancer`, which call the balancer they
are given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError, XlbError
from ..model import SECOND_CHANCE_DEFAULT_S, BalancerConfig, Real, Vip, VipFlags, vip_sort_key
from .schema import Config, VipConfig, balancer_config, effective_flags, sort_reals

if TYPE_CHECKING:
    from ..balancer import Balancer


# ========================================================== desired state


@dataclass(frozen=True, slots=True)
class VipState:
    """One VIP as the data plane holds it. `reals` is sorted by address."""

    flags: VipFlags
    ring_size: int
    reals: tuple[Real, ...]
    second_chance: float = SECOND_CHANCE_DEFAULT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "reals", sort_reals(self.reals))


@dataclass(frozen=True, slots=True)
class DataPlaneState:
    """Everything `diff` compares. `config` None: leave the global settings alone."""

    vips: Mapping[Vip, VipState] = field(default_factory=dict)
    config: BalancerConfig | None = None


def desired_state(
    config: Config, reals_of: Callable[[VipConfig], Iterable[Real]] | None = None
) -> DataPlaneState:
    """What the data plane should hold for `config`.

    `reals_of` lets the health checker substitute each VIP's reals (down
    ones removed or drained); by default every configured real serves.
    """
    pick = reals_of or (lambda entry: entry.reals)
    vips = {
        entry.vip: VipState(
            effective_flags(entry, config.settings),
            entry.ring_size,
            tuple(pick(entry)),
            entry.second_chance,
        )
        for entry in config.vips
    }
    return DataPlaneState(vips, balancer_config(config.settings))


def state_of_balancer(balancer: Balancer) -> DataPlaneState:
    """What a running balancer holds, in the form `diff` compares."""
    vips = {vip: _vip_state(balancer, vip) for vip in balancer.vips()}
    return DataPlaneState(vips, balancer.config)


def _vip_state(balancer: Balancer, vip: Vip) -> VipState:
    return VipState(
        balancer.vip_flags(vip),
        balancer.ring_size(vip),
        tuple(balancer.reals(vip)),
        balancer.second_chance(vip),
    )


# ================================================================ changes


@dataclass(frozen=True, slots=True)
class Configure:
    """Replace the global data-plane settings."""

    config: BalancerConfig
    vip: None = None

    def apply(self, balancer: Balancer) -> None:
        balancer.configure(self.config)

    def __str__(self) -> str:
        return "configure"


@dataclass(frozen=True, slots=True)
class AddVip:
    vip: Vip
    flags: VipFlags
    ring_size: int
    second_chance: float = SECOND_CHANCE_DEFAULT_S

    def apply(self, balancer: Balancer) -> None:
        balancer.add_vip(self.vip, self.flags, self.ring_size, self.second_chance)

    def __str__(self) -> str:
        flags = ",".join(self.flags.names()) or "none"
        return (
            f"add vip {self.vip} flags={flags} ring_size={self.ring_size} "
            f"second_chance={self.second_chance:g}"
        )


@dataclass(frozen=True, slots=True)
class SetSecondChance:
    vip: Vip
    seconds: float

    def apply(self, balancer: Balancer) -> None:
        balancer.set_second_chance(self.vip, self.seconds)

    def __str__(self) -> str:
        return f"set second_chance {self.vip} {self.seconds:g}"


@dataclass(frozen=True, slots=True)
class SetVipFlags:
    vip: Vip
    flags: VipFlags

    def apply(self, balancer: Balancer) -> None:
        balancer.set_vip_flags(self.vip, self.flags)

    def __str__(self) -> str:
        return f"set flags {self.vip} {','.join(self.flags.names()) or 'none'}"


@dataclass(frozen=True, slots=True)
class SetReals:
    vip: Vip
    reals: tuple[Real, ...]

    def apply(self, balancer: Balancer) -> None:
        balancer.set_reals(self.vip, self.reals)

    def __str__(self) -> str:
        reals = " ".join(map(_real_text, self.reals)) or "(none)"
        return f"set reals {self.vip} {reals}"


def _real_text(real: Real) -> str:
    """ADDRESS*WEIGHT, and #SERVER_ID when the id is pinned."""
    pinned = f"#{real.server_id}" if real.server_id is not None else ""
    return f"{real.address}*{real.weight}{pinned}"


@dataclass(frozen=True, slots=True)
class RemoveVip:
    vip: Vip

    def apply(self, balancer: Balancer) -> None:
        balancer.remove_vip(self.vip)

    def __str__(self) -> str:
        return f"remove vip {self.vip}"


Change = Configure | AddVip | SetVipFlags | SetSecondChance | SetReals | RemoveVip


def diff(running: DataPlaneState | Config, wanted: DataPlaneState | Config) -> list[Change]:
    """The changes that turn `running` into `wanted`, in the order to apply them.

    Order: the global settings, then each added or changed VIP in address
    order (add, flags, second-chance window, reals), then the removed VIPs. Adding before removing
    means a failure half-way leaves old services up rather than new ones
    missing. A VIP whose ring size changes is removed and added again (the
    data plane cannot resize a ring in place; its flows re-select).
    Equal states give an empty list.
    """
    old, new = _as_state(running), _as_state(wanted)
    changes: list[Change] = []
    if new.config is not None and new.config != old.config:
        changes.append(Configure(new.config))
    for vip in sorted(new.vips, key=vip_sort_key):
        changes += _vip_changes(vip, old.vips.get(vip), new.vips[vip])
    for vip in sorted(old.vips.keys() - new.vips.keys(), key=vip_sort_key):
        changes.append(RemoveVip(vip))
    return changes


class EmptyConfigError(ConfigError):
    """A configuration without VIPs would remove every running VIP, and does
    not say that it means to (`vips = []`)."""


def refuse_removing_every_vip(
    running: Iterable[Vip], wanted: Config, *, allowed: bool = False, how_to_allow: str = ""
) -> None:
    """Raise EmptyConfigError if `wanted` has no VIPs while some run, unless
    the file says `vips = []` or the caller `allowed` it: an empty or
    truncated file (an editor's crash, a full disk) must not take every
    service down."""
    count = len(set(running))
    if wanted.vips or not count or wanted.empty_on_purpose or allowed:
        return
    allow = "write `vips = []` in it" + (f" or {how_to_allow}" if how_to_allow else "")
    raise EmptyConfigError(
        f"{wanted.source} has no VIPs: it would remove all {count} running VIP(s); "
        f"an empty or truncated file? To mean it, {allow}"
    )


def _as_state(value: DataPlaneState | Config) -> DataPlaneState:
    return desired_state(value) if isinstance(value, Config) else value


def _vip_changes(vip: Vip, old: VipState | None, new: VipState) -> list[Change]:
    out: list[Change] = []
    if old is not None and old.ring_size != new.ring_size:
        out.append(RemoveVip(vip))
        old = None
    if old is None:
        out.append(AddVip(vip, new.flags, new.ring_size, new.second_chance))
        if new.reals:
            out.append(SetReals(vip, new.reals))
        return out
    if old.flags != new.flags:
        out.append(SetVipFlags(vip, new.flags))
    if old.second_chance != new.second_chance:
        out.append(SetSecondChance(vip, new.second_chance))
    if old.reals != new.reals:
        out.append(SetReals(vip, new.reals))
    return out


@dataclass(frozen=True, slots=True)
class ApplyFailure:
    """A group of changes (one VIP's, or the global settings) that was undone."""

    vip: Vip | None
    changes: tuple[Change, ...]
    error: Exception
    undo_error: Exception | None = None  # the rollback failed too (state unknown)

    def __str__(self) -> str:
        what = f"VIP {self.vip}" if self.vip else "global settings"
        changes = "; ".join(map(str, self.changes))
        if self.undo_error is not None:
            return f"{what}: {self.error} (undo of [{changes}] failed: {self.undo_error})"
        return f"{what}: {self.error} (undone: {changes})"


def apply(balancer: Balancer, changes: Sequence[Change]) -> list[ApplyFailure]:
    """Apply changes; each VIP's group is all-or-nothing.

    A group that fails is rolled back to the VIP's state before the group
    and reported; the other groups still go ahead (one bad VIP does not
    keep the rest of a reload from taking effect).
    """
    failures: list[ApplyFailure] = []
    for vip, group in _groups(changes):
        snapshot = _snapshot(balancer, vip)
        try:
            for change in group:
                change.apply(balancer)
        except XlbError as exc:
            failures.append(ApplyFailure(vip, tuple(group), exc, _undo(balancer, vip, snapshot)))
    return failures


def _undo(balancer: Balancer, vip: Vip | None, snapshot: _Snapshot) -> XlbError | None:
    try:
        _restore(balancer, vip, snapshot)
    except XlbError as exc:  # reported with the failure; nothing more to try
        return exc
    return None


def _groups(changes: Sequence[Change]) -> list[tuple[Vip | None, list[Change]]]:
    """Consecutive changes of the same VIP form one group."""
    groups: list[tuple[Vip | None, list[Change]]] = []
    for change in changes:
        if groups and groups[-1][0] == change.vip and change.vip is not None:
            groups[-1][1].append(change)
        else:
            groups.append((change.vip, [change]))
    return groups


_Snapshot = VipState | BalancerConfig | None


def _snapshot(balancer: Balancer, vip: Vip | None) -> _Snapshot:
    if vip is None:
        return balancer.config
    if vip not in balancer.vips():
        return None
    return _vip_state(balancer, vip)


def _restore(balancer: Balancer, vip: Vip | None, snapshot: _Snapshot) -> None:
    """Put one VIP (or the global settings) back as `_snapshot` saw it."""
    if isinstance(snapshot, BalancerConfig):
        balancer.configure(snapshot)
        return
    if vip is None:
        return
    present = vip in balancer.vips()
    if snapshot is None:
        if present:
            balancer.remove_vip(vip)
        return
    if present and balancer.ring_size(vip) != snapshot.ring_size:
        balancer.remove_vip(vip)
        present = False
    if not present:
        balancer.add_vip(vip, snapshot.flags, snapshot.ring_size, snapshot.second_chance)
    balancer.set_vip_flags(vip, snapshot.flags)
    if balancer.second_chance(vip) != snapshot.second_chance:
        balancer.set_second_chance(vip, snapshot.second_chance)
    balancer.set_reals(vip, snapshot.reals)
