"""`xlb doctor` finds each trap planted on purpose, and says nothing once fixed.

Each test builds namespaces with one or more known problems, runs the real
`xlb doctor` inside the namespace (nsenter --net, so bpffs pins stay
visible), and checks which checks fail; then it fixes the setup the way
the doctor's own advice says and checks that the failures are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xlb import Balancer, BalancerConfig, Real, Vip, netns
from xlb._bpf import BpfObject, XdpLink
from xlb.host import disable_tx_checksum as _tx_checksum_off
from xlb.host import write_sysctls as _sysctl
from xlb.lab import PASS_OBJECT, PASS_PROGRAM

XLB = str(Path(sys.executable).with_name("xlb"))
VIP = Vip("10.100.0.1", 80, "tcp")


def doctor(ns: str, *args: str) -> tuple[int, dict[str, Any]]:
    cmd = ["nsenter", f"--net=/run/netns/{ns}", XLB, "doctor", "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def failed(report: dict[str, Any]) -> dict[str, str]:
    return {f["check"]: f["message"] for f in report["findings"] if f["status"] == "fail"}


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    netns.run(
        ns_a, ["ip", "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b]
    )
    netns.run(ns_a, ["ip", "link", "set", name_a, "up"])
    netns.run(ns_b, ["ip", "link", "set", name_b, "up"])


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/xlbt-doctor-{os.getpid()}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_data_plane_and_no_xdp_program(make_netns: Any, pin_dir: Path) -> None:
    ns, peer = make_netns(), make_netns()
    veth(ns, "eth0", peer, "eth1")
    code, report = doctor(ns, "--role", "balancer", "-i", "eth0", "--pin-dir", str(pin_dir))
    assert code == 1
    problems = failed(report)
    assert set(problems) == {"pinned", "xdp"}
    assert "no XDP program is attached to eth0" in problems["xdp"]
    text = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            XLB,
            "doctor",
            "--role",
            "balancer",
            "-i",
            "eth0",
            "--pin-dir",
            str(pin_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 1
    assert text.stdout.splitlines()[0] == "xlb doctor: balancer on eth0"
    assert "  FAIL  no XDP program is attached to eth0" in text.stdout
    assert "        fix: start the balancer on it: xlb serve CONFIG" in text.stdout
    assert text.stdout.splitlines()[-1] == "2 problem(s), 0 warning(s)"


def test_balancer_traps_are_found_then_cleared(make_netns: Any, pin_dir: Path) -> None:
    lb_ns, router = make_netns(), make_netns()
    veth(lb_ns, "eth0", router, "eth1")
    netns.run(lb_ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    netns.run(router, ["ip", "addr", "add", "10.0.0.2/24", "dev", "eth1"])
    with netns.enter(lb_ns):
        # Strict reverse-path filtering and no route to the VIPs: replies from a VIP drop.
        _sysctl({"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.eth0.rp_filter": 1})
        # Native XDP on a veth whose peer runs no XDP and keeps TX checksum offload on;
        # an mtu setting of 1600 on a 1500 link; FIB lookups for a real with no route.
        lb = Balancer(
            "eth0", "native", pin_dir=pin_dir, config=BalancerConfig(fib_lookup=True, mtu=1600)
        )
    pass_obj: BpfObject | None = None
    link: XdpLink | None = None
    try:
        lb.add_vip(VIP)
        lb.set_reals(VIP, [Real("10.30.1.2")])
        code, report = doctor(lb_ns, "-i", "eth0", "--pin-dir", str(pin_dir))
        assert report["role"] == "balancer" and code == 1
        problems = failed(report)
        assert set(problems) == {"mode", "checksum", "mtu", "route", "rp_filter", "forwarding"}, (
            problems
        )
        assert "peer eth1" in problems["mode"] and "runs no XDP program" in problems["mode"]
        assert "checksum offload trap" in problems["checksum"] and "eth1" in problems["checksum"]
        assert "MTU too small" in problems["mtu"] and "1600" in problems["mtu"]
        assert "no route to real 10.30.1.2" in problems["route"]
        assert "forwarding is off on eth0" in problems["forwarding"]
        assert "drops replies from 10.100.0.1" in problems["rp_filter"]

        # The fixes the doctor suggests.
        with netns.enter(router):
            _tx_checksum_off("eth1")
            pass_obj = BpfObject(PASS_OBJECT)
            link = XdpLink.attach(pass_obj.program(PASS_PROGRAM), "eth1", "native")
        for ns, dev in ((lb_ns, "eth0"), (router, "eth1")):
            netns.run(ns, ["ip", "link", "set", dev, "mtu", "1600"])
        netns.run(lb_ns, ["ip", "route", "add", "10.30.0.0/16", "via", "10.0.0.2"])
        netns.run(lb_ns, ["ip", "route", "add", "10.100.0.0/24", "via", "10.0.0.2"])
        with netns.enter(lb_ns):  # the kernel's FIB lookup answers only where it forwards
            _sysctl({"net.ipv4.conf.eth0.forwarding": 1})
        code, report = doctor(lb_ns, "-i", "eth0", "--pin-dir", str(pin_dir))
        assert failed(report) == {} and code == 0, report
        ok = {f["check"] for f in report["findings"] if f["status"] == "ok"}
        assert {"xdp", "mode", "checksum", "mtu", "route", "rp_filter"} <= ok
    finally:
        if link is not None:
            link.detach()
        if pass_obj is not None:
            pass_obj.close()
        lb.close(detach=True)


def test_route_out_of_another_interface_is_a_problem(make_netns: Any, pin_dir: Path) -> None:
    lb_ns, peer, other = make_netns(), make_netns(), make_netns()
    veth(lb_ns, "eth0", peer, "eth1")
    veth(lb_ns, "eth9", other, "eth1")
    netns.run(lb_ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    netns.run(lb_ns, ["ip", "addr", "add", "10.9.0.1/24", "dev", "eth9"])
    netns.run(lb_ns, ["ip", "route", "add", "10.30.0.0/16", "via", "10.9.0.2"])
    with netns.enter(lb_ns):
        lb = Balancer("eth0", "generic", pin_dir=pin_dir, config=BalancerConfig(fib_lookup=True))
    try:
        lb.add_vip(VIP)
        lb.set_reals(VIP, [Real("10.30.1.2")])
        _, report = doctor(lb_ns, "-i", "eth0", "--pin-dir", str(pin_dir))
        problems = failed(report)
        assert "leaves through eth9" in problems["route"]
        assert "mode" not in problems  # generic: a warning, not a failure
        assert any(f["check"] == "mode" and f["status"] == "warn" for f in report["findings"])
    finally:
        lb.close(detach=True)


def test_real_traps_are_found_then_fixed_by_real_setup(make_netns: Any) -> None:
    real, router = make_netns(), make_netns()
    veth(real, "eth0", router, "r1")
    netns.run(real, ["ip", "addr", "add", "10.30.1.2/24", "dev", "eth0"])
    netns.run(router, ["ip", "addr", "add", "10.30.1.1/24", "dev", "r1"])
    for ns, dev in ((real, "eth0"), (router, "r1")):
        netns.run(ns, ["ip", "link", "set", dev, "mtu", "1600"])
    with netns.enter(real):
        _sysctl({"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.eth0.rp_filter": 1})
    decap_pins = Path(f"/sys/fs/bpf/xlbt-doctor-decap-{os.getpid()}")
    args = ["--role", "real", "-i", "eth0", "--vip", "10.100.0.1", "--pin-dir", str(decap_pins)]
    try:
        code, report = doctor(real, *args)
        problems = failed(report)
        assert code == 1 and set(problems) == {"decap", "vip", "rp_filter"}, problems
        assert "missing decap" in problems["decap"]
        assert "VIP 10.100.0.1 is not on lo" in problems["vip"]
        assert "drops decapsulated packets from client" in problems["rp_filter"]

        setup = subprocess.run(
            ["nsenter", f"--net=/run/netns/{real}", XLB, "real-setup", "-i", "eth0",
             "--vip", "10.100.0.1", "--mode", "generic", "--pin-dir", str(decap_pins)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert setup.returncode == 0, setup.stderr
        assert "decap attached on eth0 (generic XDP)" in setup.stdout
        assert "sysctl net.ipv4.conf.all.rp_filter=2 (was 1)" in setup.stdout
        netns.run(real, ["ip", "route", "add", "default", "via", "10.30.1.1"])
        code, report = doctor(real, *args)
        assert failed(report) == {} and code == 0, report
        messages = [f["message"] for f in report["findings"]]
        assert "decap strips packets addressed to 10.30.1.2" in messages
        with netns.enter(real):
            assert Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text().strip() == "1"
    finally:
        subprocess.run(
            ["nsenter", f"--net=/run/netns/{real}", XLB, "real-setup", "-i", "eth0", "--remove",
             "--vip", "10.100.0.1", "--pin-dir", str(decap_pins)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(decap_pins, ignore_errors=True)


def test_real_on_an_interface_whose_name_has_a_dot(make_netns: Any) -> None:
    """Settings of `veth0.100` live in conf/veth0.100/, not conf/veth0/100/."""
    real, router, uplink = make_netns(), make_netns(), make_netns()
    veth(real, "veth0.100", router, "r1")
    veth(real, "eth1", uplink, "u1")
    netns.run(real, ["ip", "addr", "add", "10.30.1.2/24", "dev", "veth0.100"])
    netns.run(real, ["ip", "addr", "add", "10.40.1.2/24", "dev", "eth1"])
    netns.run(real, ["ip", "addr", "add", "10.100.0.1/32", "dev", "lo"])
    # Clients are reached through eth1, so a strict rp_filter on veth0.100
    # drops the decapsulated packets arriving there.
    netns.run(real, ["ip", "route", "add", "default", "via", "10.40.1.1"])
    with netns.enter(real):
        _sysctl({"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.all.arp_ignore": 0,
                 "net.ipv4.conf.all.arp_announce": 0})  # fmt: skip
        for setting, value in (("rp_filter", 1), ("arp_ignore", 1), ("arp_announce", 2)):
            Path("/proc/sys/net/ipv4/conf/veth0.100", setting).write_text(f"{value}\n")
    args = ["--role", "real", "-i", "veth0.100", "--vip", "10.100.0.1"]
    _, report = doctor(real, *args)
    findings = {f["check"]: f for f in report["findings"]}
    # ARP is set on the interface itself: that counts (the kernel takes the larger value)
    assert findings["arp"]["status"] == "ok", findings["arp"]
    rp_filter = findings["rp_filter"]
    assert rp_filter["status"] == "fail"
    assert rp_filter["message"].startswith("rp_filter (mode 1) drops decapsulated packets")
    # The fix the doctor gives works as written (sysctl(8) spells the dot as a slash).
    command = rp_filter["fix"].split(" (")[0]
    assert command == (
        "sysctl -w net.ipv4.conf.veth0/100.rp_filter=2 net.ipv4.conf.all.rp_filter=2"
    )
    netns.run(real, command.split())
    _, report = doctor(real, *args)
    assert "rp_filter" not in failed(report), report
    with netns.enter(real):
        assert Path("/proc/sys/net/ipv4/conf/veth0.100/rp_filter").read_text().strip() == "2"
