"""Waiting on a condition with a deadline, never for a fixed time.

A busy machine (CI, a second suite, CPU hogs) stretches every interval, so
an end-to-end test waits until what it needs has happened, and fails only
when it has not happened within a deadline far beyond any normal run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from xlb.lab import Traffic

T = TypeVar("T")

DEADLINE_S = 20.0


def eventually(
    observe: Callable[[], T],
    ok: Callable[[T], bool],
    timeout: float = DEADLINE_S,
    every: float = 0.02,
) -> T:
    """Observe every `every` seconds until `ok(observation)` or the deadline;
    the last observation either way, so the caller's assertions print what
    was seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = observe()
        if ok(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(every)


def completed(traffic: Traffic, kind: str) -> int:
    """Requests of one kind ("new" or "held") the traffic has finished, ok or not."""
    report = traffic.report
    return report.ok[kind] + sum(1 for k, _ in list(report.failures) if k == kind)


def wait_for_traffic(traffic: Traffic, rounds: int = 5, timeout: float = DEADLINE_S) -> None:
    """Until the background traffic has finished `rounds` more requests of
    every kind it makes: each phase of a test then sees real load, however
    slow the machine, instead of whatever fitted in a sleep."""
    kinds = [kind for kind, made in (("new", traffic.targets), ("held", traffic.held)) if made]
    start = {kind: completed(traffic, kind) for kind in kinds}

    def progress() -> dict[str, int]:
        return {kind: completed(traffic, kind) - start[kind] for kind in kinds}

    made = eventually(progress, lambda p: min(p.values()) >= rounds, timeout)
    assert min(made.values()) >= rounds, (
        f"traffic stalled: {made} in {timeout} s ({traffic.report})"
    )
