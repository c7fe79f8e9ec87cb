"""pytest plugin: fixtures for testing a service's xlb configuration.

Opt-in, never an entry point (installing xlb must not change another
project's test run): `pytest_plugins = ["xlb.testing.plugin"]` in a
conftest.py, or `pytest -p xlb.testing.plugin`. Needs the `testing` extra
(pytest, scapy). The fixtures need root and BPF: without root they skip.

xlb_balancer     a Balancer attached to nothing: configure VIPs with the API,
                 run frames through the real program (BPF_PROG_TEST_RUN).
xlb_lab          a started `xlb.lab.Lab` (namespaces, a balancer, reals with
                 HTTP/UDP servers), torn down after the test. Options come
                 from `@pytest.mark.xlb_lab(reals=2, topology="bridged")`
                 and/or an indirect parameter (an int: the number of reals;
                 a dict: Lab keyword arguments), the parameter winning.
xlb_lab_factory  `make(**lab_options) -> Lab` for tests that need several
                 labs or decide the options at run time; every lab it made
                 is torn down after the test.

See docs/testing.md for worked examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..balancer import Balancer
from ..model import BalancerConfig
from .packets import GATEWAY_MAC

if TYPE_CHECKING:
    from ..lab import Lab

#: Lab options the xlb_lab fixture uses unless a marker or parameter says otherwise.
LAB_DEFAULTS: dict[str, Any] = {"reals": 3}

LabFactory = Callable[..., "Lab"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the `xlb_lab` marker (projects may run with --strict-markers)."""
    config.addinivalue_line(
        "markers",
        "xlb_lab(**options): keyword arguments of the xlb_lab fixture's xlb.lab.Lab "
        "(reals=3, topology='routed'|'bridged', xdp_mode=..., decap_mode=..., ...)",
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("xlb fixtures need root (BPF and network namespaces)")


def lab_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Lab keyword arguments for `request`: defaults, the closest
    `xlb_lab` marker, then an indirect parameter (int: reals; dict: options)."""
    options = dict(LAB_DEFAULTS)
    marker = request.node.get_closest_marker("xlb_lab")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.xlb_lab takes keyword arguments only")
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, int) and not isinstance(param, bool):
        options["reals"] = param
    elif isinstance(param, dict):
        options.update(param)
    elif param is not None:
        raise pytest.UsageError(f"xlb_lab parameter {param!r}: an int (reals) or a dict")
    return options


@pytest.fixture
def xlb_balancer() -> Iterator[Balancer]:
    """A test-run-only Balancer (no interface), routed via GATEWAY_MAC."""
    _require_root()
    balancer = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        yield balancer
    finally:
        balancer.close()


@pytest.fixture
def xlb_lab_factory() -> Iterator[LabFactory]:
    """`make(**options)`: start a Lab (defaults: LAB_DEFAULTS); all are closed after the test."""
    _require_root()
    from ..lab import Lab

    labs: list[Lab] = []

    def make(**options: Any) -> Lab:
        lab = Lab(**{**LAB_DEFAULTS, **options})
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.close()


@pytest.fixture
def xlb_lab(request: pytest.FixtureRequest, xlb_lab_factory: LabFactory) -> Lab:
    """A started Lab with no services; options from the `xlb_lab` marker or parameter."""
    return xlb_lab_factory(**lab_options(request))
