"""Fixtures for packet tests through BPF_PROG_TEST_RUN on the real object."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

_pin_counter = itertools.count()


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A fresh bpffs directory for pinned maps, removed afterwards."""
    path = Path("/sys/fs/bpf") / f"xlbt-{os.getpid()}-{next(_pin_counter)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lb():  # type: ignore[no-untyped-def]
    """A test-run-only Balancer with a gateway MAC set (routed mode)."""
    from xlb import Balancer, BalancerConfig
    from xlb.testing import GATEWAY_MAC

    balancer = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    yield balancer
    balancer.close()


@pytest.fixture(scope="session")
def shared_balancer():  # type: ignore[no-untyped-def]
    """One test-run-only Balancer for the packet tables: loading the object
    costs ~0.3 s, so the table cases share it and `packet_lb` resets it."""
    from xlb import Balancer

    balancer = Balancer()
    yield balancer
    balancer.close()


@pytest.fixture
def packet_lb(shared_balancer):  # type: ignore[no-untyped-def]
    """`packet_lb(setup)`: the shared Balancer programmed with exactly a
    pkt_defs.Setup's services and config, connection tables emptied."""
    from pkt_defs import apply

    def program(setup):  # type: ignore[no-untyped-def]
        return apply(shared_balancer, setup)

    yield program
