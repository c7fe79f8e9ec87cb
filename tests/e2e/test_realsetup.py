"""`xlb real-setup` on real namespaces: dotted interface names, all-or-nothing.

Every test builds its own namespaces (make_netns), runs the real `xlb
real-setup` inside one (nsenter --net, so bpffs pins stay visible) and
looks at the namespace afterwards: addresses, sysctls, XDP and tc
attachments, pins. Failures are real ones: a sysctl made read-only by a
bind mount in a mount namespace of the command's own (unshare -m: the test
host never sees it), IPv6 disabled on lo, an interface without native XDP.

The lab's state files (xlb.lab) are checked here too: they describe the
host's namespaces and processes, so only root may read them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xlb import netns
from xlb._bpf import Map
from xlb.host import write_sysctls as _sysctl
from xlb.lab import STATE_DIR, Lab

XLB = str(Path(sys.executable).with_name("xlb"))
VIP4, VIP6 = "10.100.0.1", "fd00:100::1"
DOTTED = "veth0.100"  # a name with a dot, as a VLAN (bond0.100) has


def real_setup(
    ns: str, *args: str, read_only: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`xlb real-setup ARGS` in namespace `ns`; files in `read_only` are
    bind-mounted read-only over themselves for this command only."""
    cmd = [XLB, "real-setup", *args]
    if read_only:
        mounts = " && ".join(
            f"mount --bind {shlex.quote(f)} {shlex.quote(f)} && "
            f"mount -o remount,bind,ro {shlex.quote(f)}"
            for f in read_only
        )
        cmd = ["unshare", "-m", "sh", "-c", f"{mounts} && exec {shlex.join(cmd)}"]
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", *cmd], capture_output=True, text=True, timeout=60
    )


def real_with_veth(make_netns: Callable[[], str], interface: str = "eth0") -> str:
    """A namespace whose `interface` (a veth to another namespace) has 10.30.1.2/24."""
    real, router = make_netns(), make_netns()
    netns.run(
        real,
        ["ip", "link", "add", interface, "type", "veth", "peer", "name", "r1", "netns", router],
    )
    netns.run(real, ["ip", "link", "set", interface, "up"])
    netns.run(router, ["ip", "link", "set", "r1", "up"])
    netns.run(real, ["ip", "addr", "add", "10.30.1.2/24", "dev", interface])
    return real


def conf(interface: str, setting: str) -> Path:
    """The /proc/sys file of an IPv4 per-interface setting, spelled out by hand."""
    return Path("/proc/sys/net/ipv4/conf") / interface / setting


def read_conf(ns: str, interface: str, setting: str) -> str:
    with netns.enter(ns):
        return conf(interface, setting).read_text().strip()


def host_state(ns: str, pin_dir: Path) -> dict[str, Any]:
    """Everything real-setup may touch in `ns`, in comparable form."""
    links = json.loads(netns.run(ns, ["ip", "-j", "-d", "link", "show"]).stdout)
    addrs = json.loads(netns.run(ns, ["ip", "-j", "addr", "show"]).stdout)
    names = [link["ifname"] for link in links]
    state: dict[str, Any] = {
        "addresses": {
            a["ifname"]: sorted(f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", []))
            for a in addrs
        },
        "xdp": {link["ifname"]: link.get("xdp") for link in links},
        "qdiscs": {n: netns.run(ns, ["tc", "-j", "qdisc", "show", "dev", n]).stdout for n in names},
        "tc_ingress": {
            n: netns.run(ns, ["tc", "-j", "filter", "show", "dev", n, "ingress"]).stdout
            for n in names
        },
        "sysctls": {},
        "pins": {},
    }
    with netns.enter(ns):
        for root in (Path("/proc/sys/net/ipv4/conf"), Path("/proc/sys/net/ipv6/conf")):
            for path in sorted(root.glob("*/*")):
                try:
                    state["sysctls"][str(path)] = path.read_text()
                except OSError as exc:  # e.g. stable_secret while unset
                    state["sysctls"][str(path)] = f"error {exc.errno}"
    if pin_dir.is_dir():
        for path in sorted(pin_dir.iterdir()):
            state["pins"][path.name] = None
            if path.name in ("decap_addrs", "decap_config"):
                pinned = Map.from_pin(path)
                state["pins"][path.name] = sorted(pinned.items())
                pinned.close()
    return state


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/xlbt-realsetup-{os.getpid()}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def remove(ns: str, pin_dir: Path, interface: str = "eth0") -> None:
    """Detach what a test's real-setup left running (namespaces go with make_netns)."""
    real_setup(ns, "-i", interface, "--remove", "--pin-dir", str(pin_dir))


# --------------------------------------------------- dotted interface names


def test_real_setup_on_an_interface_whose_name_has_a_dot(make_netns: Any, pin_dir: Path) -> None:
    real = real_with_veth(make_netns, DOTTED)
    with netns.enter(real):
        _sysctl({"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.all.arp_ignore": 0})
        conf(DOTTED, "rp_filter").write_text("1\n")  # strict on the interface only
    try:
        out = real_setup(real, "-i", DOTTED, "--vip", VIP4, "--mode", "generic",
                         "--pin-dir", str(pin_dir))  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"decap attached on {DOTTED} (generic XDP)" in out.stdout
        # sysctl(8)'s spelling: a slash for the dot inside the interface name
        assert "sysctl net.ipv4.conf.veth0/100.rp_filter=2 (was 1)" in out.stdout
        assert "sysctl net.ipv4.conf.veth0/100.arp_ignore=1 (was 0)" in out.stdout
        assert read_conf(real, DOTTED, "rp_filter") == "2"
        assert read_conf(real, DOTTED, "arp_ignore") == "1"
        assert read_conf(real, DOTTED, "arp_announce") == "2"
        # ... and sysctl(8) reads back the name real-setup printed
        shown = netns.run(real, ["sysctl", "-n", "net.ipv4.conf.veth0/100.rp_filter"])
        assert shown.stdout.strip() == "2"
    finally:
        remove(real, pin_dir, DOTTED)


# ------------------------------------------------------- all or nothing


@pytest.mark.parametrize("mode", ["generic", "tc"])
def test_a_failing_last_step_leaves_the_host_as_it_was(
    make_netns: Any, pin_dir: Path, mode: str
) -> None:
    real = real_with_veth(make_netns)
    with netns.enter(real):  # every kind of step has work to do: strict rp_filter, ARP off
        _sysctl({"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.eth0.rp_filter": 1})
    before = host_state(real, pin_dir)
    try:
        # The very last change, rp_filter on eth0, cannot be written.
        out = real_setup(real, "-i", "eth0", "--vip", VIP4, "--vip", VIP6, "--mode", mode,
                         "--pin-dir", str(pin_dir),
                         read_only=(str(conf("eth0", "rp_filter")),))  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr
        assert (
            "xlb: error: real-setup failed to set sysctl net.ipv4.conf.eth0.rp_filter=2: "
            "Read-only file system; what it had changed is undone"
        ) in out.stderr
        # the steps before it had been made, and were undone newest first
        undone = [line for line in out.stderr.splitlines() if line.startswith("undone: ")]
        assert undone[0] == "undone: sysctl net.ipv4.conf.all.rp_filter=1 again"
        assert f"undone: VIP {VIP6} off lo" in undone and f"undone: VIP {VIP4} off lo" in undone
        tc_only = ["undone: clsact qdisc of eth0 removed"] if mode == "tc" else []
        assert undone[-2 - len(tc_only) :] == [
            "undone: decap detached on eth0",
            *tc_only,
            f"undone: pins at {pin_dir} removed",
        ]
        assert out.stdout == ""  # nothing reported as done
        assert host_state(real, pin_dir) == before
        assert not pin_dir.exists()
    finally:
        remove(real, pin_dir)


def test_a_failing_rerun_keeps_the_running_decap_as_it_was(make_netns: Any, pin_dir: Path) -> None:
    real = real_with_veth(make_netns)
    netns.run(real, ["ip", "addr", "add", "10.30.9.2/24", "dev", "eth0"])
    try:
        first = real_setup(real, "-i", "eth0", "--vip", VIP4, "--mode", "generic",
                           "--decap-addr", "10.30.1.2", "--pin-dir", str(pin_dir))  # fmt: skip
        assert first.returncode == 0, first.stderr
        with netns.enter(real):
            _sysctl({"net.ipv4.conf.eth0.rp_filter": 1})
        before = host_state(real, pin_dir)
        # A second VIP and another decap address: the pinned link is adopted
        # (a new program swapped in, the addresses rewritten), then the last step fails.
        out = real_setup(real, "-i", "eth0", "--vip", VIP4, "--vip", "10.100.0.2",
                         "--mode", "generic", "--decap-addr", "10.30.9.2",
                         "--pin-dir", str(pin_dir),
                         read_only=(str(conf("eth0", "rp_filter")),))  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr
        assert "undone: decap put back as it was on eth0" in out.stderr
        after = host_state(real, pin_dir)
        assert after["xdp"]["eth0"]["prog"]["id"] == before["xdp"]["eth0"]["prog"]["id"]
        assert after == before
    finally:
        remove(real, pin_dir)


def test_a_vip_lo_refuses_is_undone_with_the_rest(make_netns: Any, pin_dir: Path) -> None:
    real = real_with_veth(make_netns)
    with netns.enter(real):
        _sysctl({"net.ipv6.conf.lo.disable_ipv6": 1})
    before = host_state(real, pin_dir)
    try:
        out = real_setup(real, "-i", "eth0", "--vip", VIP4, "--vip", VIP6, "--mode", "generic",
                         "--pin-dir", str(pin_dir))  # fmt: skip
        assert out.returncode == 1
        assert f"real-setup failed to put VIP {VIP6} on lo: " in out.stderr
        assert "IPv6 is disabled on this device" in out.stderr
        assert f"undone: VIP {VIP4} off lo" in out.stderr
        assert host_state(real, pin_dir) == before
    finally:
        remove(real, pin_dir)


def test_an_attach_that_fails_leaves_no_pins(make_netns: Any, pin_dir: Path) -> None:
    real = real_with_veth(make_netns)
    before = host_state(real, pin_dir)
    # lo has no native XDP: the maps are pinned by then, the attach fails
    out = real_setup(real, "-i", "lo", "--vip", VIP4, "--decap-addr", "10.30.1.2",
                     "--pin-dir", str(pin_dir))  # fmt: skip
    assert out.returncode == 1
    assert "real-setup failed to attach the decap program to lo" in out.stderr
    assert "Operation not supported" in out.stderr
    assert not pin_dir.exists()
    assert host_state(real, pin_dir) == before


# ------------------------------------------------------- lab state files


def test_lab_state_file_and_run_dir_are_private() -> None:
    umask = os.umask(0)  # the most permissive umask: the modes must not depend on it
    try:
        lab = Lab(reals=1).start()
    finally:
        os.umask(umask)
    with lab:
        assert stat.S_IMODE(STATE_DIR.stat().st_mode) == 0o700
        assert stat.S_IMODE(lab.state_file.stat().st_mode) == 0o600
        assert json.loads(lab.state_file.read_text())["name"] == lab.name
        assert stat.S_IMODE(lab.run_dir.stat().st_mode) == 0o700
        files = [p for p in lab.run_dir.iterdir() if p.is_file()]
        assert files  # the lab servers' logs
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files
        }
    assert not lab.state_file.exists()
