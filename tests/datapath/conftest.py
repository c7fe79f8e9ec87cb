"""Fixtures for packet tests through BPF_PROG_TEST_RUN on the real object."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pkt_defs import ProgramLb, Setup

    from xlb import Balancer

_pin_counter = itertools.count()


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A fresh bpffs directory for pinned maps, removed afterwards."""
    path = Path("/sys/fs/bpf") / f"xlbt-{os.getpid()}-{next(_pin_counter)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lb() -> Iterator[Balancer]:
    """A test-run-only Balancer with a gateway MAC set (routed mode), the
    SYN-flood guard off: tests send SYNs faster than clients (test_synflood.py)."""
    from xlb import Balancer, BalancerConfig
    from xlb.testing import GATEWAY_MAC

    balancer = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=0))
    yield balancer
    balancer.close()


@pytest.fixture(scope="session")
def shared_balancer() -> Iterator[Balancer]:
    """One test-run-only Balancer for the packet tables: loading the object
    costs ~0.8 s (the verifier), so the table cases share it and `packet_lb` resets it."""
    from xlb import Balancer

    balancer = Balancer()
    yield balancer
    balancer.close()


@pytest.fixture
def packet_lb(shared_balancer: Balancer) -> Iterator[ProgramLb]:
    """`packet_lb(setup)`: the shared Balancer programmed with exactly a
    pkt_defs.Setup's services and config, connection tables emptied."""
    from pkt_defs import apply

    def program(setup: Setup) -> Balancer:
        return apply(shared_balancer, setup)

    yield program
