"""Update events: what a Balancer tells its observers after each change.

Metrics and logs observe the data plane's changes through a Balancer
(`add_observer`); each public change is timed and reported once, as an
`UpdateEvent`, whether it succeeded or raised. An observer that fails is
logged and never breaks the change it hears of.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from .errors import ConfigError
from .model import Vip, to_vip

log = logging.getLogger("xlb.balancer")  # observer failures log as the balancer's, as before


@dataclass(frozen=True, slots=True)
class UpdateEvent:
    """One finished change of the data plane, handed to observers (metrics, logs).

    op: the Balancer method called (add_vip, set_reals, configure, ...);
    vip: the VIP it changed (None for configure); seconds: how long the
    change took, validation and map writes included; ok: False if it raised
    (the data plane was left as it was); ring_swaps: rings switched (0 when
    only flags, or nothing the ring depends on, changed).
    """

    op: str
    vip: Vip | None
    seconds: float
    ok: bool
    ring_swaps: int


UpdateObserver = Callable[[UpdateEvent], None]


class Observers:
    """The observers of one handle, and how deep in a change it is (a change
    that calls another, as add_real calls set_reals, is one event)."""

    def __init__(self) -> None:
        self._observers: list[UpdateObserver] = []
        self.depth = 0

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: UpdateObserver) -> None:
        if not callable(observer):
            raise TypeError(f"an observer must be callable, got {observer!r}")
        self._observers.append(observer)

    def remove(self, observer: UpdateObserver) -> None:
        """Forget an observer (no error if absent)."""
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def tell(self, event: UpdateEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:  # an observer must never break a change
                log.exception("update observer %r failed", observer)


class Observed(Protocol):
    """What `observed` needs of the handle whose methods it wraps: its
    observers, and its count of ring switches (for each event's share)."""

    ring_swaps: int
    _observers: Observers


_S = TypeVar("_S", bound=Observed)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def observed(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Time a public change and tell the observers; nested calls (add_real ->
    set_reals) are one event, named after the outermost method."""

    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        observers = self._observers
        if observers.depth or not observers:
            return method(self, *args, **kwargs)
        vip = named_vip(args[0] if args else kwargs.get("vip"))
        swaps_before, started, ok = self.ring_swaps, time.perf_counter(), False
        observers.depth += 1
        try:
            result = method(self, *args, **kwargs)
            ok = True
            return result
        finally:
            observers.depth -= 1
            seconds = time.perf_counter() - started
            swaps = self.ring_swaps - swaps_before
            observers.tell(UpdateEvent(method.__name__, vip, seconds, ok, swaps))

    functools.update_wrapper(wrapper, method)
    return wrapper


def named_vip(value: object) -> Vip | None:
    """The VIP a change names, for its UpdateEvent (None: it names none or
    names it wrongly, which the change itself reports)."""
    if isinstance(value, Vip | str):
        with contextlib.suppress(ConfigError):
            return to_vip(value)
    return None


__all__ = ["Observed", "Observers", "UpdateEvent", "UpdateObserver", "named_vip", "observed"]
