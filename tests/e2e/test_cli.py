"""The `xlb` executable against a live data plane.

One balancer for the module, attached (generic XDP) to a veth in a
namespace of its own, pinned in a bpffs directory of its own. Each test runs
the real console script, `.venv/bin/xlb`, inside that namespace with
`nsenter --net` (not `ip netns exec`, which remounts /sys and hides the
pins), and checks its output, its JSON, its exit code and the data plane.
Packets reach the program through BPF_PROG_TEST_RUN on the same maps, so
counters and connection-table entries are exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xlb import Balancer, BalancerConfig, Flow, Real, Vip
from xlb.testing import GATEWAY_MAC, tcp_packet, udp_packet

XLB = str(Path(sys.executable).with_name("xlb"))
WEB = Vip("10.100.0.1", 80, "tcp")
DNS6 = Vip("fd00:100::1", 53, "udp")


class Plane:
    """The module's data plane and a runner for `xlb` next to it."""

    def __init__(self, ns: str, pin_dir: Path) -> None:
        self.ns, self.pin_dir = ns, pin_dir
        self._view: Balancer | None = None

    @property
    def lb(self) -> Balancer:
        """A handle on the pinned maps, reopened after each `xlb` run (a
        Balancer caches what it read; the CLI changes the maps behind it)."""
        if self._view is None:
            self._view = Balancer(pin_dir=self.pin_dir)
        return self._view

    def forget(self) -> None:
        if self._view is not None:
            self._view.close(detach=False)
            self._view = None

    def run(
        self, *args: str, target: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        where = ["-i", "eth0", "--pin-dir", str(self.pin_dir)] if target else []
        cmd = ["nsenter", f"--net=/run/netns/{self.ns}", XLB, *args, *where]
        self.forget()
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"xlb {' '.join(args)}: {result.stderr}"
        assert result.stderr == "", result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, code: int, *args: str, target: bool = True) -> str:
        result = self.run(*args, target=target)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xlb: error: "), result.stderr
        return lines[0]

    def reset(self) -> None:
        for vip in self.lb.vips():
            self.lb.remove_vip(vip)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    from xlb import netns

    ns = f"xlbtcli{os.getpid()}"
    pin_dir = Path(f"/sys/fs/bpf/xlbt-cli-{os.getpid()}")
    netns.create(ns)
    lb = None
    try:
        netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        for dev in ("eth0", "eth1"):
            netns.run(ns, ["ip", "link", "set", dev, "up"])
        netns.run(ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
        with netns.enter(ns):
            lb = Balancer(
                "eth0", "generic", pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC)
            )
        plane = Plane(ns, pin_dir)
        yield plane
        plane.forget()
    finally:
        if lb is not None:
            lb.close(detach=True)
        shutil.rmtree(pin_dir, ignore_errors=True)
        netns.delete(ns)


@pytest.fixture
def p(plane: Plane) -> Iterator[Plane]:
    plane.reset()
    yield plane
    plane.reset()


# ------------------------------------------------------------- changes


def test_vip_and_real_verbs_change_the_data_plane(p: Plane) -> None:
    assert p.ok("vip", "add", str(WEB)) == f"added VIP {WEB}\n"
    p.ok("vip", "add", "[fd00:100::1]:53/udp", "--flags", "no_sport,gue")
    p.ok("real", "add", str(WEB), "10.30.1.2")
    p.ok("real", "add", str(WEB), "10.30.2.2", "--weight", "3")
    p.ok("real", "add", str(DNS6), "fd00:30::2", "--mac", "02:00:00:03:00:01")
    assert p.lb.reals(WEB) == [Real("10.30.1.2", 1), Real("10.30.2.2", 3)]
    out = p.ok("real", "edit", str(WEB), "10.30.2.2", "--weight", "0")
    assert "draining" in out
    listed = p.json("list")
    assert listed["interface"] == "eth0" and listed["pin_dir"] == str(p.pin_dir)
    web, dns = listed["vips"]
    assert (web["vip"], web["protocol"], web["port"], web["flags"]) == (str(WEB), "tcp", 80, [])
    assert [(r["address"], r["weight"], r["share"]) for r in web["reals"]] == [
        ("10.30.1.2", 1, 1.0),
        ("10.30.2.2", 0, 0.0),
    ]
    assert dns["flags"] == ["no_sport", "gue"] and dns["forward"] == "GUE"
    assert dns["reals"][0]["mac"] == "02:00:00:03:00:01"
    p.ok("vip", "edit", str(DNS6), "--flags", "none")
    assert int(p.lb.vip_flags(DNS6)) == 0
    p.ok("vip", "edit", str(WEB), "--ring-size", "251")
    assert p.lb.ring_size(WEB) == 251 and len(p.lb.reals(WEB)) == 2  # reals kept
    p.ok("real", "del", str(WEB), "10.30.2.2")
    assert p.lb.reals(WEB) == [Real("10.30.1.2", 1)]
    p.ok("vip", "del", str(DNS6))
    assert p.lb.vips() == [WEB]


def test_list_is_laid_out_like_ipvsadm(p: Plane) -> None:
    p.lb.add_vip(WEB)
    p.lb.set_reals(WEB, [Real("10.30.1.2"), Real("10.30.2.2", 3)])
    lines = p.ok("list", "-n").splitlines()
    assert lines[0].startswith("xlb on eth0 (XDP generic, program xlb_balancer")
    assert lines[1].split() == ["Prot", "LocalAddress:Port", "Flags", "Ring", "Health"]
    assert lines[2].split() == ["->", "RemoteAddress", "Forward", "Weight", "Share", "Health"]
    assert lines[3].split() == ["TCP", "10.100.0.1:80", "-", "65537", "-"]
    assert lines[4].split() == ["->", "10.30.1.2", "Tunnel", "1", "25.0%", "-"]
    assert lines[5].split() == ["->", "10.30.2.2", "Tunnel", "3", "75.0%", "-"]
    stats = p.ok("list", "--stats").splitlines()
    assert stats[1].split() == ["Prot", "LocalAddress:Port", "InPkts", "InBytes"]
    assert stats[3].split() == ["TCP", "10.100.0.1:80", "0", "0"]
    rate = p.ok("list", "--rate", "--interval", "0.1").splitlines()
    assert rate[1].split() == ["Prot", "LocalAddress:Port", "InPPS", "InBPS"]


def test_quic_vips_show_and_pin_server_ids(p: Plane, tmp_path: Path) -> None:
    quic = Vip("10.100.0.3", 443, "udp")
    p.ok("vip", "add", str(quic), "--flags", "quic")
    out = p.ok("real", "add", str(quic), "10.30.1.2")
    assert out == f"added real 10.30.1.2 to {quic} (weight 1), QUIC server id 258 (0x0102)\n"
    p.ok("real", "add", str(quic), "10.30.2.2", "--server-id", "0x0a0b")
    assert p.lb.server_ids(quic) == {Real("10.30.1.2").address: 0x0102,
                                     Real("10.30.2.2").address: 0x0A0B}  # fmt: skip
    lines = p.ok("list", "-n").splitlines()
    assert lines[2].split()[-2:] == ["Health", "ServerId"]
    assert lines[3].split() == ["UDP", "10.100.0.3:443", "quic", "65537", "-"]
    assert lines[4].split()[-2:] == ["-", "0x0102"]
    assert lines[5].split()[-3:] == ["-", "0x0a0b", "(pinned)"]
    reals = p.json("list")["vips"][0]["reals"]
    assert [(r["server_id"], r["server_id_pinned"]) for r in reals] == [(258, False), (2571, True)]
    saved = p.ok("save")
    assert "quic = true" in saved and "server_id = 2571" in saved
    (tmp_path / "lb.toml").write_text(saved)
    assert p.ok("apply", str(tmp_path / "lb.toml")).startswith("no changes")
    assert "0-65535" in p.fails(2, "real", "add", str(quic), "10.30.3.2", "--server-id", "70000")
    dup = p.fails(1, "real", "add", str(quic), "10.30.3.2", "--server-id", "2571")
    assert "both given server_id 2571" in dup
    assert "for UDP VIPs" in p.fails(1, "vip", "add", "10.100.0.3:443/tcp", "--flags", "quic")
    p.ok("real", "edit", str(quic), "10.30.2.2", "--server-id", "auto")
    assert p.lb.server_ids(quic)[Real("10.30.2.2").address] == 0x0A0B  # kept, not pinned
    assert p.lb.reals(quic)[1].server_id is None
    # a pin wins over an id xlb gave (as on a node that starts from the file)
    stole = p.run("real", "add", str(quic), "10.30.3.2", "--server-id", "258")
    assert stole.returncode == 0
    assert "real 10.30.1.2's QUIC server id moves from 258 to 259" in stole.stderr  # warned
    ids = {str(a): sid for a, sid in p.lb.server_ids(quic).items()}
    assert ids == {"10.30.1.2": 259, "10.30.2.2": 0x0A0B, "10.30.3.2": 258}


def test_save_then_apply_is_a_no_op_and_apply_applies_a_diff(p: Plane, tmp_path: Path) -> None:
    p.lb.add_vip(WEB)
    p.lb.set_reals(WEB, [Real("10.30.1.2"), Real("10.30.2.2", 3)])
    p.lb.add_vip(DNS6)
    p.lb.set_reals(DNS6, [Real("fd00:30::2")])
    saved = tmp_path / "lb.toml"
    saved.write_text(p.ok("save"))
    assert 'interface = "eth0"' in saved.read_text()
    out = p.ok("apply", str(saved), "--dry-run")
    assert out.startswith("no changes")
    assert p.ok("apply", str(saved)).startswith("no changes")

    edited = tmp_path / "edited.toml"
    edited.write_text(
        saved.read_text().replace(
            'address = "10.30.2.2"\nweight = 3', 'address = "10.30.3.2"\nweight = 1'
        )
    )
    dry = p.ok("apply", str(edited), "--dry-run")
    assert "~ set reals 10.100.0.1:80/tcp 10.30.1.2*1 10.30.3.2*1" in dry
    assert "dry run, nothing applied" in dry
    assert [str(r.address) for r in p.lb.reals(WEB)] == ["10.30.1.2", "10.30.2.2"]
    assert "applied 1 change(s)" in p.ok("apply", str(edited))
    assert [str(r.address) for r in p.lb.reals(WEB)] == ["10.30.1.2", "10.30.3.2"]
    assert p.ok("save") == edited.read_text()
    # Removing a VIP from the file removes it from the data plane.
    without_dns = edited.read_text().split("[[vip]]")
    (tmp_path / "one.toml").write_text("[[vip]]".join(without_dns[:2]))
    out = p.ok("apply", str(tmp_path / "one.toml"))
    assert f"- remove vip {DNS6}" in out
    assert p.lb.vips() == [WEB]


def test_apply_refuses_a_file_that_would_remove_every_vip(p: Plane, tmp_path: Path) -> None:
    """An empty or truncated file is refused (dry run too); --allow-empty or
    `vips = []` in the file say it is meant."""
    p.lb.add_vip(WEB)
    p.lb.add_vip(DNS6)
    saved = p.ok("save")
    truncated = tmp_path / "truncated.toml"
    truncated.write_text(saved.split("[[vip]]")[0])  # cut before the first VIP
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for args in (["apply", str(truncated)], ["apply", str(truncated), "--dry-run"]):
        message = p.fails(1, *args)
        assert "has no VIPs: it would remove all 2 running VIP(s)" in message, message
        assert "write `vips = []` in it or pass --allow-empty" in message
    p.fails(1, "apply", str(empty))
    assert len(p.lb.vips()) == 2
    out = p.ok("apply", str(truncated), "--allow-empty")
    assert "applied 2 change(s)" in out and p.lb.vips() == []

    p.lb.add_vip(WEB)
    on_purpose = tmp_path / "none.toml"
    on_purpose.write_text("vips = []\n" + truncated.read_text())
    assert p.ok("apply", str(on_purpose)).endswith("applied 1 change(s)\n")
    assert p.lb.vips() == []


# ------------------------------------------------------- counters, flows


def test_counters_stats_and_flows_match_the_packets_sent(p: Plane) -> None:
    p.lb.add_vip(WEB)
    p.lb.set_reals(WEB, [Real("10.30.1.2"), Real("10.30.2.2")])
    p.lb.add_vip(DNS6)
    p.lb.set_reals(DNS6, [Real("fd00:30::2")])
    flows = [Flow(f"198.51.100.{i}", WEB.address, 40000 + i, 80, "tcp") for i in range(1, 11)]
    for flow in flows:
        for _ in range(3):
            assert (
                p.lb.run(tcp_packet(flow.src, flow.dst, flow.sport, flow.dport)).action == "XDP_TX"
            )
    v6 = Flow("2001:db8::7", DNS6.address, 5353, 53, "udp")
    assert p.lb.run(udp_packet(v6.src, v6.dst, v6.sport, v6.dport)).action == "XDP_TX"

    # The interface is attached: a packet of the namespace's own (IPv6
    # neighbour discovery, say) may pass the program while the CLI reads,
    # so its figures lie between two reads of ours.
    before = p.lb.counters()
    counters = p.json("counters")
    after = p.lb.counters()
    assert counters.keys() == before.keys()
    assert all(before[k] <= counters[k] <= after[k] for k in counters), (before, counters, after)
    assert counters["forward"] >= 31 and counters["xdp_tx"] >= 31
    nonzero = p.ok("counters", "--nonzero")
    assert all(int(line.split()[1]) > 0 for line in nonzero.splitlines())

    web, dns = p.json("list", "--stats")["vips"]
    assert web["packets"] == 30 and dns["packets"] == 1
    by_real = {r["address"]: r["packets"] for r in web["reals"]}
    expected: dict[str, int] = {"10.30.1.2": 0, "10.30.2.2": 0}
    for flow in flows:
        expected[str(p.lb.predict(flow))] += 3
    assert by_real == expected

    rows = p.json("flows", str(WEB))
    assert len(rows) == 10
    for row in rows:
        flow = Flow(row["client"], row["vip"], row["sport"], row["dport"], row["protocol"])
        assert row["real"] == str(p.lb.predict(flow))
    assert [r["real"] for r in p.json("flows", str(DNS6))] == ["fd00:30::2"]
    assert len(p.json("flows", "--limit", "3")) == 3
    text = p.ok("flows", str(DNS6)).splitlines()
    assert text[0].split() == ["Prot", "Client", "VIP", "Real"]
    assert text[1].split() == ["UDP", "[2001:db8::7]:5353", "[fd00:100::1]:53", "fd00:30::2"]

    sample = [
        json.loads(line)
        for line in p.ok("stats", "--json", "--interval", "0.2", "--count", "2").splitlines()
    ]
    assert len(sample) == 2 and sample[0]["vips"][0]["packets"] == 30
    assert "pps" in sample[1]["vips"][0]["reals"][0]
    text_stats = p.ok("stats", "--interval", "0.1")
    assert "10.100.0.1:80/tcp" in text_stats and "pkt/s" in text_stats


# --------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["vip", "add", "10.0.0.300:80/tcp"], "not an IPv4 or IPv6 address"),
        (["vip", "add", "10.0.0.1:70000/tcp"], "invalid VIP port 70000"),
        (["vip", "add", "10.0.0.1:80/sctp"], "invalid VIP protocol"),
        (["vip", "add", "10.0.0.1"], "expected ADDR:PORT/PROTO"),
        (["vip", "add", str(WEB), "--flags", "fast"], "unknown VIP flag"),
        (["real", "add", str(WEB), "10.30.1.999"], "invalid real address"),
        (["real", "add", str(WEB), "10.30.1.2", "--weight", "-1"], "invalid weight"),
        (["real", "add", str(WEB), "10.30.1.2", "--weight", "70000"], "invalid weight"),
        (["vip", "frobnicate", str(WEB)], "invalid choice"),
        (["list", "--stats", "--rate"], "not allowed with argument"),
        (["vip", "edit", str(WEB)], "needs --flags, --ring-size and/or --second-chance"),
        (["nosuchverb"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(p: Plane, args: list[str], needle: str) -> None:
    if args[:2] == ["vip", "edit"]:
        p.lb.add_vip(WEB)
    assert needle in p.fails(2, *args)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["vip", "del", "10.9.9.9:80/tcp"], "no VIP 10.9.9.9:80/tcp"),
        (["real", "add", "10.9.9.9:80/tcp", "10.30.1.2"], "no VIP 10.9.9.9:80/tcp"),
        (["real", "del", str(WEB), "10.30.9.9"], "real 10.30.9.9 is not in VIP"),
        (["real", "edit", str(WEB), "10.30.9.9", "--weight", "2"], "is not in VIP"),
        (["vip", "add", str(WEB)], "already exists"),
        (["real", "add", str(WEB), "10.30.1.2"], "already in VIP"),
        (["flows", "10.9.9.9:80/tcp"], "no VIP"),
        (["vip", "edit", str(WEB), "--ring-size", "100"], "must be a prime"),
        (["real", "add", str(DNS6), "10.30.1.2"], "no IPv6-in-IPv4"),
    ],
)
def test_runtime_errors_are_one_line_and_exit_1(p: Plane, args: list[str], needle: str) -> None:
    p.lb.add_vip(WEB)
    p.lb.add_vip(DNS6)
    p.lb.set_reals(WEB, [Real("10.30.1.2")])
    assert needle in p.fails(1, *args)
    assert p.lb.reals(WEB) == [Real("10.30.1.2")]  # nothing changed


def test_a_missing_data_plane_is_reported_not_created(plane: Plane, tmp_path: Path) -> None:
    missing = Path(f"/sys/fs/bpf/xlbt-cli-missing-{os.getpid()}")
    for verb in (["list"], ["vip", "add", str(WEB)], ["counters"], ["save"]):
        message = plane.fails(1, *verb, "--pin-dir", str(missing), target=False)
        assert f"nothing pinned at {missing}" in message and "xlb serve" in message
    assert not missing.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[balancer]\nmtu = 100\n")
    result = plane.run("apply", str(bad))
    assert result.returncode == 1 and "balancer.mtu" in result.stderr


def test_changes_are_refused_while_a_daemon_holds_the_interface(p: Plane, tmp_path: Path) -> None:
    p.lb.add_vip(WEB)
    lock = tmp_path / "eth0.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        lock_dir = ["--lock-dir", str(tmp_path)]
        message = p.fails(1, "real", "add", str(WEB), "10.30.1.2", *lock_dir)
        assert f"`xlb serve` (pid {os.getpid()}) manages eth0" in message
        assert "kill -HUP" in message
        assert "xlb serve" in p.fails(1, "vip", "del", str(WEB), *lock_dir)
        saved = tmp_path / "lb.toml"
        saved.write_text(p.ok("save"))
        assert "xlb serve" in p.fails(1, "apply", str(saved), *lock_dir)
        assert p.ok("apply", str(saved), "--dry-run", *lock_dir).startswith("no changes")
        listed = p.json("list", *lock_dir)
        assert listed["daemon_pid"] == os.getpid()
        assert f"managed by xlb serve pid {os.getpid()}" in p.ok("list", *lock_dir)
    finally:
        os.close(fd)
    assert p.lb.reals(WEB) == [] and p.lb.vips() == [WEB]
    p.ok("real", "add", str(WEB), "10.30.1.2", "--lock-dir", str(tmp_path))  # lock released


# ------------------------------------------------------- help, delegates


VERBS = [
    "list",
    "vip",
    "real",
    "save",
    "apply",
    "stats",
    "counters",
    "flows",
    "real-setup",
    "doctor",
]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(plane: Plane, verb: str) -> None:
    result = plane.run(verb, "--help", target=False)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and "--interface" in result.stdout
    assert "--pin-dir" in result.stdout


def test_serve_and_lab_delegate(plane: Plane, tmp_path: Path) -> None:
    top = plane.run("--help", target=False)
    assert top.returncode == 0 and all(v in top.stdout for v in [*VERBS, "serve", "lab"])
    config = tmp_path / "lb.toml"
    config.write_text(
        '[balancer]\ninterface = "eth0"\n\n[[vip]]\naddress = "10.100.0.1"\nport = 80\n'
    )
    result = plane.run("serve", "--check", str(config), target=False)
    assert result.returncode == 0, result.stderr
    assert "ok (1 VIPs)" in result.stdout
    result = plane.run("lab", "list", target=False)
    assert result.returncode == 0, result.stderr


def test_list_shows_the_daemons_health_and_changes_are_refused(
    make_netns: Any, tmp_path: Path
) -> None:
    """A real `xlb serve` (through `xlb serve`): command checks keep one real
    up and take the other down, drained in one VIP, removed from the other;
    `xlb list` shows both down reals with their configured weight and a
    share of 0, and `xlb real` refuses."""
    from xlb import netns

    ns = make_netns()
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    for dev in ("eth0", "eth1"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])
    netns.run(ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    pin_dir = Path(f"/sys/fs/bpf/xlbt-cli-serve-{os.getpid()}")
    config = tmp_path / "lb.toml"
    config.write_text(
        f"""
[balancer]
interface = "eth0"
xdp_mode = "generic"
gateway_mac = "{GATEWAY_MAC}"
pin_dir = "{pin_dir}"
lock_dir = "{tmp_path}"
metrics = "127.0.0.1:0"

[health]
interval = 0.2
timeout = 0.2
rise = 1
fall = 1

[[vip]]
address = "10.100.0.1"
port = 80
on_failure = "drain"

[[vip.reals]]
address = "10.30.1.2"

[[vip.reals]]
address = "10.30.2.2"

[vip.check]
type = "command"
command = ["sh", "-c", "test {{real}} = 10.30.1.2"]

[[vip]]
address = "10.100.0.2"
port = 80
on_failure = "remove"

[[vip.reals]]
address = "10.30.1.2"

[[vip.reals]]
address = "10.30.2.2"
weight = 3

[vip.check]
type = "command"
command = ["sh", "-c", "test {{real}} = 10.30.1.2"]
"""
    )
    daemon = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", XLB, "serve", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cmd = ["nsenter", f"--net=/run/netns/{ns}", XLB]
    where = ["-i", "eth0", "--pin-dir", str(pin_dir), "--lock-dir", str(tmp_path)]
    try:
        listed: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = subprocess.run([*cmd, "list", "--json", *where], capture_output=True, text=True)
            if out.returncode == 0:
                listed = json.loads(out.stdout)
                health = [r["health"] for v in listed["vips"] for r in v["reals"]]
                # a VIP's health follows its reals' once the daemon has applied
                # their results (the apply thread): wait for both
                vip_health = [v["health"] for v in listed["vips"]]
                if health == ["up", "down", "up", "down"] and vip_health == ["healthy"] * 2:
                    break
            assert daemon.poll() is None, daemon.communicate()
            time.sleep(0.2)
        assert listed["daemon_pid"] is not None
        drained, removed = listed["vips"]
        assert drained["health"] == removed["health"] == "healthy"
        rows = [
            (r["address"], r["weight"], r["serving_weight"], r["share"], r["health"])
            for vip in (drained, removed)
            for r in vip["reals"]
        ]
        assert rows == [
            ("10.30.1.2", 1, 1, 1.0, "up"),
            ("10.30.2.2", 1, 0, 0.0, "down"),  # drained by the daemon: weight 0 in the ring
            ("10.30.1.2", 1, 1, 1.0, "up"),
            ("10.30.2.2", 3, None, 0.0, "down"),  # removed by the daemon, still listed
        ]
        text = subprocess.run([*cmd, "list", *where], capture_output=True, text=True).stdout
        assert "managed by xlb serve pid" in text
        lines = text.splitlines()
        assert lines[5].split() == ["->", "10.30.2.2", "Tunnel", "1", "0.0%", "down"]
        assert lines[8].split() == ["->", "10.30.2.2", "Tunnel", "3", "0.0%", "down"]
        refused = subprocess.run(
            [*cmd, "real", "edit", "10.100.0.1:80/tcp", "10.30.2.2", "--weight", "1", *where],
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 1 and "manages eth0" in refused.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        with netns.enter(ns), contextlib.suppress(Exception):
            Balancer(pin_dir=pin_dir).close(detach=True)
        shutil.rmtree(pin_dir, ignore_errors=True)
