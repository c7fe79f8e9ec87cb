"""`xlb serve` as systemd runs it: contrib/xlb.service, the notifications on
a real datagram socket, the control socket, and `xlb list` asking it.

The daemon runs in a namespace of the test's own (a veth, generic XDP),
with exactly the unit's capability bounding set (setpriv), so the unit's
capability list is tested by the daemon working with it. Its checks are
command checks the test controls: one passes only once the test creates a
gate file, so "READY=1 only after the first health results" is tested by
probes that have run and failed while no READY came, then READY once the
gate opens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from xlb import Balancer, netns
from xlb.control import ControlError, request, socket_path
from xlb.testing import GATEWAY_MAC

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "xlb.service"
XLB = str(Path(sys.executable).with_name("xlb"))
DEADLINE = 30.0  # loose on purpose: a busy 2-core machine, never a measured figure


# ---------------------------------------------------------------- the unit


def unit_value(key: str) -> str:
    (line,) = [line for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]
    return line.split("=", 1)[1]


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as installed, but with ExecStart naming the venv's `xlb`
    (verify wants the binary to exist). Verify exits 0 on a mistyped key,
    only warning: the test also wants no warning at all."""
    assert unit_value("ExecStart") == "/usr/local/bin/xlb serve /etc/xlb/lb.toml"
    assert unit_value("Type") == "notify"
    assert unit_value("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert unit_value("Restart") == "on-failure"
    text = UNIT.read_text().replace("/usr/local/bin/xlb", XLB)
    copy = tmp_path / "xlb.service"
    copy.write_text(text)
    result = verify(copy)
    assert result.returncode == 0 and result.stderr == "", result.stderr

    copy.write_text(text.replace("Type=notify", "Type=notfy"))  # the check can fail
    assert "notfy" in verify(copy).stderr


# ---------------------------------------------------------------- notifications


class NotifySocket:
    """What systemd binds for a Type=notify service: a datagram socket,
    read as messages come (as systemd does: the daemon drops a message
    rather than wait on a full queue)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[dict[str, str]] = []
        self._seen = 0  # messages wait_for has gone past
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while datagram := self.sock.recv(4096):
                with self._changed:
                    self.received.append(_fields(datagram))
                    self._changed.notify_all()

    def pending(self) -> list[dict[str, str]]:
        """Every message received so far."""
        with self._changed:
            return list(self.received)

    def wait_for(self, key: str, proc: subprocess.Popen[str]) -> dict[str, str]:
        """The next message carrying `key` after the last one waited for."""
        deadline = time.monotonic() + DEADLINE
        with self._changed:
            while True:
                for index in range(self._seen, len(self.received)):
                    if key in self.received[index]:
                        self._seen = index + 1
                        return self.received[index]
                assert time.monotonic() < deadline, f"no {key} in {DEADLINE}s: {self.received}"
                assert proc.poll() is None or key == "STOPPING", _output(proc)
                self._changed.wait(0.2)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def _output(proc: subprocess.Popen[str]) -> str:
    """The daemon's log (its stderr goes to a file: a pipe nobody reads
    would block it once full)."""
    assert isinstance(proc.args, list)  # [..., "serve", CONFIG]: the log is beside CONFIG
    log = Path(proc.args[-1]).with_name("serve.log")
    state = "running" if proc.poll() is None else f"exited {proc.returncode}"
    return f"xlb serve ({state}):\n{log.read_text()}"


# ------------------------------------------------------------------- daemon


def unit_capabilities() -> list[str]:
    """The unit's CapabilityBoundingSet, spelt for setpriv (+bpf,+net_admin...)."""
    caps = unit_value("CapabilityBoundingSet").split()
    assert caps and all(c.startswith("CAP_") for c in caps), caps
    return [f"+{c.removeprefix('CAP_').lower()}" for c in caps]


class Node:
    """A namespace with a veth for the data plane, and the daemon's files."""

    def __init__(self, ns: str, tmp_path: Path) -> None:
        self.ns = ns
        self.dir = tmp_path
        self.pin_dir = Path(f"/sys/fs/bpf/xlbt-systemd-{os.getpid()}")
        self.gate = tmp_path / "gate"
        self.config = tmp_path / "lb.toml"
        self.control = socket_path(tmp_path, "eth0")
        self.log = tmp_path / "serve.log"
        netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        for dev in ("eth0", "eth1"):
            netns.run(ns, ["ip", "link", "set", dev, "up"])
        netns.run(ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])

    def write_config(self, extra_vip: bool = False) -> None:
        """Two VIPs: 10.100.0.1 has a real whose check passes once the gate
        exists (and never counts as down: fall 1000); 10.100.0.2 has one
        whose check always fails (down after 2)."""
        text = f"""
[balancer]
interface = "eth0"
xdp_mode = "generic"
gateway_mac = "{GATEWAY_MAC}"
pin_dir = "{self.pin_dir}"
lock_dir = "{self.dir}"
metrics = false

[health]
interval = 0.25
timeout = 0.25
rise = 1
fall = 2

[[vip]]
address = "10.100.0.1"
port = 80

[[vip.reals]]
address = "10.30.1.2"
weight = 2

[vip.check]
type = "command"
command = ["test", "-e", "{self.gate}"]
fall = 1000

[[vip]]
address = "10.100.0.2"
port = 80

[[vip.reals]]
address = "10.30.2.2"

[vip.check]
type = "command"
command = ["false"]
"""
        if extra_vip:
            text += '\n[[vip]]\naddress = "10.100.0.3"\nport = 53\nprotocol = "udp"\n'
            text += '\n[[vip.reals]]\naddress = "10.30.3.2"\n'
        self.config.write_text(text)

    def start(self, notify: NotifySocket, journal: bool = False) -> subprocess.Popen[str]:
        """`xlb serve` as the unit runs it: its capabilities, NOTIFY_SOCKET;
        `journal`: JOURNAL_STREAM names its stderr (the log file), as when
        systemd connects stderr to the journal."""
        caps = ",".join(["-all", *unit_capabilities()])
        with open(self.log, "a") as log:
            return subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}",
             "setpriv", f"--bounding-set={caps}", "--inh-caps=-all",
             XLB, "serve", str(self.config)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify.path), **self._journal(log, journal)},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )  # fmt: skip

    @staticmethod
    def _journal(log: IO[str], journal: bool) -> dict[str, str]:
        st = os.fstat(log.fileno())
        return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}" if journal else "0:0"}

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        return request(self.control, op, timeout=10, **fields)

    def xlb(self, *args: str) -> subprocess.CompletedProcess[str]:
        where = ["-i", "eth0", "--pin-dir", str(self.pin_dir), "--lock-dir", str(self.dir)]
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns}", XLB, *args, *where],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cleanup(self) -> None:
        with netns.enter(self.ns), contextlib.suppress(Exception):
            Balancer(pin_dir=self.pin_dir).close(detach=True)
        shutil.rmtree(self.pin_dir, ignore_errors=True)


@pytest.fixture
def node(make_netns: Callable[[], str], tmp_path: Path) -> Iterator[Node]:
    n = Node(make_netns(), tmp_path)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    try:
        yield s
    finally:
        s.close()


@contextlib.contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The daemon, stopped (SIGTERM, then SIGKILL) whatever the test does."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, condition: Callable[[], Any], proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        with contextlib.suppress(ControlError):
            value = condition()
            if value:
                return value
        assert proc.poll() is None, _output(proc)
        assert time.monotonic() < deadline, f"not {what} within {DEADLINE}s"
        time.sleep(0.05)


def real_health(node: Node, vip: str, real: str) -> dict[str, Any]:
    return dict(node.ask("health")["vips"][vip]["reals"][real])


# -------------------------------------------------------------------- tests


def test_ready_after_the_first_health_results_reloading_and_stopping(
    node: Node, notify: NotifySocket
) -> None:
    node.write_config()
    with running(node.start(notify)) as proc:
        # Probes of the gated real run and fail; they settle nothing, so no READY.
        wait_until(
            "three failed probes",
            lambda: real_health(node, "10.100.0.1:80/tcp", "10.30.1.2")["probes_failed"] >= 3,
            proc,
        )
        assert not any("READY" in m for m in notify.pending()), notify.received
        assert any(m.get("STATUS", "").startswith("waiting for the first") for m in notify.received)
        assert node.ask("status")["ready"] is False

        node.gate.touch()
        ready = notify.wait_for("READY", proc)
        assert ready["READY"] == "1"
        # Both reals had their result: the gated one passed, the other was judged down.
        assert ready["STATUS"] == "serving 2 VIPs on eth0 (1 healthy), 1 of 2 checked reals up"
        assert real_health(node, "10.100.0.1:80/tcp", "10.30.1.2")["probes_ok"] >= 1
        assert real_health(node, "10.100.0.2:80/tcp", "10.30.2.2")["state"] == "down"
        assert node.ask("status")["ready"] is True

        node.write_config(extra_vip=True)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", proc)
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) >= before
        reloaded = notify.wait_for("READY", proc)
        assert reloaded["STATUS"].startswith("serving 3 VIPs on eth0"), reloaded
        assert node.ask("status")["last_reload"]["result"] == "applied"

        proc.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING", proc)
        assert stopping == {"STOPPING": "1", "STATUS": "stopping (the data plane keeps forwarding)"}
        assert proc.wait(timeout=DEADLINE) == 0, _output(proc)
    assert not node.control.exists()  # removed on exit

    # A restart adopts the pinned data plane, with the same capabilities.
    with running(node.start(notify)) as proc:
        assert notify.wait_for("READY", proc)["READY"] == "1"


def test_control_socket_health_status_errors_and_xlb_list(node: Node, notify: NotifySocket) -> None:
    node.gate.touch()
    node.write_config()
    with running(node.start(notify)) as proc:
        notify.wait_for("READY", proc)
        st = os.lstat(node.control)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == 0

        status = node.ask("status")
        assert status["pid"] == proc.pid
        assert status["config"] == str(node.config)
        assert status["interface"] == "eth0" and status["metrics_url"] is None
        assert status["vips"] == 2 and status["reals_up"] == 1 and status["reals_checked"] == 2
        assert status["last_reload"] is None
        assert status["counters"]["real_down"] == 1

        health = node.ask("health")["vips"]
        gated = health["10.100.0.1:80/tcp"]["reals"]["10.30.1.2"]
        assert health["10.100.0.1:80/tcp"]["healthy"] is True
        assert gated["state"] == "up" and gated["weight"] == 2 and gated["probes_ok"] >= 1
        assert health["10.100.0.2:80/tcp"]["healthy"] is False

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(DEADLINE)
            raw.connect(str(node.control))
            raw.sendall(b'{"op": \n{"op": "drain"}\n{"op": "status"}\n')
            answers = raw.makefile("rb")
            bad, drain, after = (json.loads(answers.readline()) for _ in range(3))
        assert bad["ok"] is False and bad["error"].startswith("bad request: not JSON")
        assert drain["ok"] is False and "announces nothing" in drain["error"]
        assert after["ok"] is True and after["pid"] == proc.pid
        assert proc.poll() is None

        # `xlb list` gets health from the socket: there is no metrics page.
        listed = node.xlb("list", "--json")
        assert listed.returncode == 0, listed.stderr
        data = json.loads(listed.stdout)
        assert data["daemon_pid"] == proc.pid
        rows = {(v["vip"], r["address"]): (r["health"], r["weight"]) for v in data["vips"]
                for r in v["reals"]}  # fmt: skip
        assert rows == {
            ("10.100.0.1:80/tcp", "10.30.1.2"): ("up", 2),
            ("10.100.0.2:80/tcp", "10.30.2.2"): ("down", 1),
        }
        assert [v["health"] for v in data["vips"]] == ["healthy", "UNHEALTHY"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, _output(proc)
    assert not node.control.exists()

    # No daemon: `xlb list` still lists, without health.
    listed = node.xlb("list", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["daemon_pid"] is None
    assert {r["health"] for v in data["vips"] for r in v["reals"]} == {"-"}


def test_a_symlink_at_the_socket_path_stops_the_start(node: Node, notify: NotifySocket) -> None:
    node.write_config()
    victim = node.dir / "victim"
    victim.write_text("keep")
    node.control.symlink_to(victim)
    with running(node.start(notify, journal=True)) as proc:
        assert proc.wait(timeout=DEADLINE) == 1
    # Its stderr is "the journal": a priority, no timestamp of its own.
    (line,) = [line for line in node.log.read_text().splitlines() if "event=failed" in line]
    assert line.startswith("<3>ERROR xlb.service event=failed error="), line
    assert re.search(r"eth0\.sock is a symbolic link", line)
    assert victim.read_text() == "keep" and node.control.is_symlink()
    assert not any("READY" in m for m in notify.pending())
