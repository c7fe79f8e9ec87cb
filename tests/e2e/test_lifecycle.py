"""End to end: the control plane restarts, the program is upgraded, labs
are torn down by signals and cleaned up after a crash — under live traffic
where traffic is involved, with zero failed requests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waits import wait_for_traffic

from xlb.balancer import BALANCER_OBJECT
from xlb.lab import Lab, leftovers
from xlb.model import IPAddress

ROOT = Path(__file__).resolve().parents[2]

# A control plane of its own: adopts the pinned data plane, changes one
# weight, reports, and dies by SIGKILL (no cleanup of any kind).
ADOPT_AND_DIE = """
import json, os, signal, sys
from xlb import Balancer, Vip, netns
ns, pin_dir, vip, real = sys.argv[1:5]
with netns.enter(ns):
    lb = Balancer("eth0", pin_dir=pin_dir)
vip = Vip.parse(vip)
before = [str(r.address) for r in lb.reals(vip)]
lb.set_weight(vip, real, 2)
print(json.dumps({"vips": [str(v) for v in lb.vips()], "reals": before}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

# A lab in a process of its own that waits to be signalled or killed.
LAB_PROCESS = """
import signal, sys, time
from xlb.lab import Lab
# A shell's background job inherits SIGINT ignored, and Python then leaves
# it so: give this process the usual Ctrl-C, as a terminal would.
signal.signal(signal.SIGINT, signal.default_int_handler)
with Lab(reals=2) as lab:
    lab.add_default_services()
    print(lab.name, flush=True)
    time.sleep(3600)  # until the test signals or kills this process
"""


def targets(lab: Lab) -> list[tuple[IPAddress | str, int, str]]:
    return [
        (lab.vip4, lab.tcp_port, "tcp"),
        (lab.vip6, lab.tcp_port, "tcp"),
        (lab.vip4, lab.udp_port, "udp"),
        (lab.vip6, lab.udp_port, "udp"),
    ]


def test_control_plane_restart_mid_traffic(fresh_lab: Lab) -> None:
    lab = fresh_lab
    vips = lab.balancer.vips()
    shares = {v: lab.balancer.ring_shares(v) for v in vips}
    held = lab.client.hold(lab.vip4, lab.tcp_port, 4) + lab.client.hold(lab.vip6, lab.tcp_port, 4)
    node = lab.balancers[0]
    with lab.client.traffic(targets(lab), held) as traffic:
        wait_for_traffic(traffic)
        lab.release_balancer()  # our process lets go: the pinned data plane keeps forwarding
        wait_for_traffic(traffic)
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                ADOPT_AND_DIE,
                node.netns,
                str(node.pin_dir),
                str(lab.vip(4, "tcp")),
                str(lab.real("real2").ipv4),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert other.returncode == -signal.SIGKILL, other.stderr
        seen = json.loads(other.stdout)
        wait_for_traffic(traffic)
        lb = lab.reopen_balancer()  # and a third control plane adopts what the second left
        wait_for_traffic(traffic)
    report = traffic.report
    assert report.failed == 0, report.failures[:5]
    assert seen["vips"] == [str(v) for v in vips]
    assert len(seen["reals"]) == 3
    assert lb.vips() == vips
    tcp4 = lab.vip(4, "tcp")
    assert {str(r.address): r.weight for r in lb.reals(tcp4)}[str(lab.real("real2").ipv4)] == 2
    for vip in vips:
        if vip != tcp4:
            assert lb.ring_shares(vip) == shares[vip]
    assert all(h.try_request().real == h.real for h in held)


def test_program_upgrade_mid_traffic(fresh_lab: Lab) -> None:
    lab = fresh_lab
    held = lab.client.hold(lab.vip4, lab.tcp_port, 4) + lab.client.hold(lab.vip6, lab.tcp_port, 4)
    prog_ids = {lab.balancer.program.info()["id"]}
    with lab.client.traffic(targets(lab), held) as traffic:
        for _ in range(3):
            wait_for_traffic(traffic)
            lab.balancer.upgrade(BALANCER_OBJECT)
            prog_ids.add(lab.balancer.program.info()["id"])
        wait_for_traffic(traffic)
    report = traffic.report
    assert report.failed == 0, report.failures[:5]
    assert len(prog_ids) == 4, "each upgrade swaps in a newly loaded program"
    conn_hits = lab.balancer.counters()["conn_hit"]
    assert conn_hits > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_tears_the_lab_down(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAB_PROCESS], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith("xlbl-")
        assert any(name in item for item in leftovers())
        proc.send_signal(signum)
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [item for item in leftovers() if name in item] == []


def test_cleanup_after_a_crashed_lab(fresh_lab: Lab) -> None:
    """`cleanup NAME` removes that crashed lab, and `--all` with a name
    leaves every other lab alone (here `fresh_lab`, running): one test run
    never takes down what another run on the same machine is using."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAB_PROCESS], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    left = [item for item in leftovers() if name in item]
    assert any(item.startswith("netns") for item in left)
    assert any(item.startswith("pins") for item in left)
    cleanup = subprocess.run(
        [sys.executable, "-m", "xlb.lab", "cleanup", "--all", name],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert cleanup.returncode == 0, cleanup.stderr
    assert name in cleanup.stdout
    assert [item for item in leftovers() if name in item] == []
    assert fresh_lab.name not in cleanup.stdout
    assert any(fresh_lab.name in item for item in leftovers())  # still there, still serving
    assert fresh_lab.client.http_get(fresh_lab.vip4, fresh_lab.tcp_port, 5).ok
    # The lab servers noticed their parent died, or cleanup killed them.
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            assert not (b"xlb/lab/server.py" in cmdline and name.encode() in cmdline), cmdline
