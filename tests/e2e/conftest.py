"""Fixtures of the end-to-end tests: labs of network namespaces (xlb.lab).

Every lab is torn down by its context manager, also when a test fails; at
the start of the session, what crashed earlier runs left is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# (topology, balancer XDP mode, reals' decap mode): every combination the
# module-scoped lab runs the behaviour tests on.
LAB_CONFIGS = [
    ("routed", "native", "native"),
    ("bridged", "native", "native"),
    ("routed", "generic", "generic"),
    ("bridged", "generic", "tc"),
]


@pytest.fixture(scope="session", autouse=True)
def _clean_leftovers_of_crashed_runs() -> None:
    from xlb.lab import cleanup_all

    cleanup_all()


@pytest.fixture(scope="module", params=LAB_CONFIGS, ids=["-".join(c) for c in LAB_CONFIGS])
def lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A lab with 3 reals and the default services (TCP 80, UDP 7, v4 and v6)."""
    from xlb.lab import Lab

    topology, xdp_mode, decap_mode = request.param
    with Lab(reals=3, topology=topology, xdp_mode=xdp_mode, decap_mode=decap_mode) as lab:
        lab.add_default_services()
        yield lab


@pytest.fixture
def fresh_lab() -> Iterator[Any]:
    """A routed, native lab of its own for a test that disturbs the balancer."""
    from xlb.lab import Lab

    with Lab(reals=3) as lab:
        lab.add_default_services()
        yield lab
