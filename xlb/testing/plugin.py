"""pytest plugin: fixtures for testing a service's xlb configuration.

Installed as the `pytest11` entry point `xlb`, so a project that depends on
xlb gets these fixtures without any import. They need root and BPF (the
program is loaded into the real kernel and run with BPF_PROG_TEST_RUN).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..balancer import Balancer
from ..model import BalancerConfig
from .packets import GATEWAY_MAC


@pytest.fixture
def xlb_balancer() -> Iterator[Balancer]:
    """A test-run-only Balancer (no interface), routed via GATEWAY_MAC."""
    balancer = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        yield balancer
    finally:
        balancer.close()
