"""webfront's own tests, run against an installed xlb."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from webfront import VIP, WebFront

import xlb
from xlb import Balancer
from xlb.testing import outer_destination, tcp_packet

BACKENDS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_xlb_comes_from_site_packages() -> None:
    assert "site-packages" in Path(xlb.__file__).parts
    source = os.environ.get("XLB_SOURCE_TREE")
    if source:
        assert not Path(xlb.__file__).resolve().is_relative_to(Path(source).resolve())
    assert xlb.__version__


def test_a_syn_to_the_vip_goes_to_a_backend(xlb_balancer: Balancer) -> None:
    WebFront(BACKENDS).publish(xlb_balancer)
    syn = tcp_packet("198.51.100.7", str(VIP.address), 40000, VIP.port, flags="S")
    result = xlb_balancer.run(syn)
    assert result.action == "XDP_TX"
    assert str(outer_destination(result.packet)) in BACKENDS


def test_a_drained_backend_gets_no_new_flows(xlb_balancer: Balancer) -> None:
    web = WebFront(BACKENDS)
    web.publish(xlb_balancer)
    web.drain(xlb_balancer, "10.0.0.2")
    for sport in range(40000, 40200):
        syn = tcp_packet("198.51.100.7", str(VIP.address), sport, VIP.port, flags="S")
        assert str(outer_destination(xlb_balancer.run(syn).packet)) != "10.0.0.2"


def test_the_xlb_command_works() -> None:
    xlb_command = Path(sys.executable).parent / "xlb"
    shown = subprocess.run([xlb_command, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "usage" in shown.stdout.lower()
    version = subprocess.run([xlb_command, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and xlb.__version__ in version.stdout
