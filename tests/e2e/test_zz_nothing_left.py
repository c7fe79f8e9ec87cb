"""Runs last (file order): the e2e tests left nothing behind."""

from __future__ import annotations

from xlb.lab import leftovers, running_labs


def test_nothing_is_left() -> None:
    # Labs another process is running right now (a demo, a parallel run) are not ours.
    others = [lab["name"] for lab in running_labs()]
    left = [item for item in leftovers() if not any(name in item for name in others)]
    assert left == [], f"left behind: {left}"
