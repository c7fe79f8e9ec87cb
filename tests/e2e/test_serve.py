"""`xlb serve` in the namespace lab: real servers, real probes, real signals.

One lab for the module; each test runs its own `xlb serve` process (in the
balancer's namespace, adopting the lab's pinned data plane) and its own lab
servers on ports of its own, so it can kill and restart them. Checks run
every 0.2 s (rise 2, fall 2) so the whole module takes well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import eventually, wait_for_traffic

import xlb.config
from xlb import Service, Vip, netns
from xlb._bpf import xdp_attached_id
from xlb.decap import Decap
from xlb.lab import LABSERVER, HeldConnection, Lab, RealNode

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.2, 2, 2
# What a detection may take beyond its design time (fall x interval +
# timeout): scheduling on 2 cores that a second suite or CPU hogs keep busy,
# the first probe's jitter, one ring build. Loose on purpose: the figure
# itself is measured in bench/, this only catches a detection gone wrong.
SLACK = 3.0

# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.release_balancer()  # `xlb serve` adopts the pinned data plane
        yield lab


class Servers:
    """Lab HTTP/UDP servers on test-chosen ports, killable and restartable."""

    def __init__(self) -> None:
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def start(self, real: RealNode, tcp: int) -> None:
        proc = netns.popen(
            real.netns,
            [sys.executable, str(LABSERVER), "--name", real.role, "--tcp", str(tcp),
             "--parent", str(os.getpid())],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self.procs[(real.role, tcp)] = proc

    def kill(self, real: RealNode, tcp: int) -> None:
        proc = self.procs.pop((real.role, tcp))
        proc.kill()
        proc.wait()

    def close(self) -> None:
        for key in list(self.procs):
            proc = self.procs.pop(key)
            proc.kill()
            proc.wait()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()


class Serve:
    """An `xlb serve` process with JSON logs, read as they come."""

    def __init__(self, lab: Lab, config: Path, *args: str) -> None:
        self.config = config
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        node = lab.balancers[0]
        code = "import sys, xlb.serve; sys.exit(xlb.serve.main(sys.argv[1:]))"
        self.proc = netns.popen(
            node.netns,
            [sys.executable, "-c", code, str(config), "--log-format", "json", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "message": line, "time": time.time()}
            with self._lock:
                self.events.append(event)
                self._lock.notify_all()

    def find(self, event: str, since: float = 0.0, **fields: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == event
                and e.get("time", 0) >= since
                and all(str(e.get(k)) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, timeout: float = 5.0, since: float = 0.0, **fields: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = self.find(event, since, **fields)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no {event} {fields} within {timeout}s; log:\n" + self.dump()
                    )
                self._lock.wait(min(left, 0.1))

    def dump(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-40:])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (if still running), then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.exit_status(timeout)

    def exit_status(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)  # every line logged is read
        return code


@pytest.fixture
def serve(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """serve(text, *args) starts `xlb serve` on a config; stopped after the test."""
    started: list[Serve] = []

    def start(text: str, *args: str, wait: bool = True) -> Serve:
        config = tmp_path / "lb.toml"
        config.write_text(text)
        process = Serve(lab, config, *args)
        started.append(process)
        if wait:
            process.wait_for("started", timeout=15)
        return process

    yield start
    for process in started:
        with contextlib.suppress(Exception):
            process.stop()
        if process.proc.poll() is None:
            process.proc.kill()


# ------------------------------------------------------------- config text


def settings(lab: Lab, lock_dir: Path, metrics: bool = False, **health: float) -> str:
    node = lab.balancers[0]
    timing = {"interval": INTERVAL, "timeout": TIMEOUT, "rise": RISE, "fall": FALL, **health}
    return (
        "[balancer]\n"
        + ('metrics = "127.0.0.1:0"\n' if metrics else "")
        + f'interface = "{node.interface}"\n'
        f'xdp_mode = "{lab.xdp_mode}"\n'
        f'gateway_mac = "{node.hub_mac}"\n'
        f"mtu = {lab.server_mtu}\n"
        f'pin_dir = "{node.pin_dir}"\n'
        f'lock_dir = "{lock_dir}"\n\n'
        "[health]\n" + "".join(f"{k} = {v}\n" for k, v in timing.items())
    )


def vip(
    lab: Lab,
    port: int,
    reals: list[RealNode],
    check: str = 'type = "http"',
    weights: dict[str, int] | None = None,
    **keys: str,
) -> str:
    text = f'\n[[vip]]\naddress = "{lab.vip4}"\nport = {port}\n'
    text += "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    for real in reals:
        weight = (weights or {}).get(real.role, 1)
        text += f'\n[[vip.reals]]\naddress = "{real.ipv4}"\nweight = {weight}\n'
    return text + (f"\n[vip.check]\n{check}\n" if check else "")


def get(lab: Lab, port: int, count: int = 40) -> Any:
    return lab.client.http_get(lab.vip4, port, count=count, timeout=2.0)


def probes_ok(lab: Lab, svc: Serve, vip: str, real: str) -> int:
    """Successful health probes of `real` for `vip` so far, from the daemon's
    metrics page (served in the balancer's namespace)."""
    url = svc.wait_for("metrics")["url"]
    with netns.enter(lab.balancers[0].netns), urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    wanted = {"vip": vip, "real": real, "result": "ok"}
    for line in text.splitlines():
        if line.startswith("xlb_real_health_probes_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels == wanted:
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def wait_serving(lab: Lab, port: int, names: set[str], timeout: float = 5.0) -> None:
    """Until new connections reach exactly `names` without failures."""
    deadline = time.monotonic() + timeout
    while True:
        replies = get(lab, port, 30)
        if not replies.failures and set(replies.by_real()) == names:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"serving {replies.by_real()}, failures {replies.failures[:3]}")
        time.sleep(0.1)


def hold_reaching(lab: Lab, port: int, names: set[str], batch: int = 12) -> list[HeldConnection]:
    """Kept-alive connections to the VIP until every real in `names` holds
    one: the ring's pick for a random source port is random, so a single
    batch of 12 misses one real of three in about 1 run of 130."""
    held: list[HeldConnection] = []
    for _ in range(8):
        held += lab.client.hold(lab.vip4, port, count=batch)
        if names <= {c.real for c in held}:
            return held
    raise AssertionError(f"{len(held)} connections, none on {names - {c.real for c in held}}")


# -------------------------------------------------------------------- tests


def test_dead_real_leaves_the_ring_and_comes_back(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    port = 8081
    _real1, real2, _real3 = lab.reals
    for real in lab.reals:
        servers.start(real, port)
    svc = serve(settings(lab, tmp_path) + vip(lab, port, lab.reals))
    wait_serving(lab, port, {"real1", "real2", "real3"})
    held = hold_reaching(lab, port, {"real1", "real2", "real3"})
    on_others = [c for c in held if c.real != "real2"]
    assert on_others and len(on_others) < len(held), [c.real for c in held]

    killed = time.time()
    servers.kill(real2, port)
    down = svc.wait_for("real_down", since=killed, real=str(real2.ipv4))
    assert down["time"] - killed <= FALL * INTERVAL + TIMEOUT + SLACK
    changed = svc.wait_for("change", since=killed)
    assert str(real2.ipv4) not in changed["change"]

    replies = get(lab, port, 60)
    assert not replies.failures and "real2" not in replies.by_real()
    for conn in on_others:  # connections to the other reals are untouched
        assert conn.request() == conn.real

    restarted = time.time()
    servers.start(real2, port)
    up = svc.wait_for("real_up", since=restarted, real=str(real2.ipv4))
    assert up["time"] - restarted <= RISE * INTERVAL + TIMEOUT + SLACK
    wait_serving(lab, port, {"real1", "real2", "real3"})
    for conn in on_others:
        assert conn.request() == conn.real
    assert svc.stop() == 0


@pytest.mark.parametrize("on_failure", ["remove", "drain"])
def test_on_failure_remove_reselects_drain_keeps_established(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path, on_failure: str
) -> None:
    """The check fails (its own port) while the service still serves: with
    "drain" a connection held on that real goes on, with "remove" it is
    re-selected to another real (whose stack resets it)."""
    port, check_port = 8082, 8092
    _real1, real2, _real3 = lab.reals
    for real in lab.reals:
        servers.start(real, port)
        servers.start(real, check_port)
    check = f'type = "http"\nport = {check_port}'
    svc = serve(settings(lab, tmp_path) + vip(lab, port, lab.reals, check, on_failure=on_failure))
    wait_serving(lab, port, {"real1", "real2", "real3"})
    held = [c for c in hold_reaching(lab, port, {"real2"}) if c.real == "real2"]
    assert held

    killed = time.time()
    servers.kill(real2, check_port)
    svc.wait_for("real_down", since=killed, real=str(real2.ipv4))
    change = svc.wait_for("change", since=killed)["change"]
    wait_serving(lab, port, {"real1", "real3"})  # no new connection goes to real2

    if on_failure == "drain":
        assert f"{real2.ipv4}*0" in change
        assert all(c.request() == "real2" for c in held)
    else:
        assert str(real2.ipv4) not in change
        assert not any(c.try_request(timeout=1.0).ok for c in held)
    assert svc.stop() == 0


def test_breaking_only_the_vip_path_is_noticed(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    """real3 loses its decap program: its own address still answers (a
    direct check stays up), the tunnelled check takes it out."""
    port, direct_port = 8083, 8093
    real3 = lab.reals[2]
    for real in lab.reals:
        servers.start(real, port)
    direct = f'type = "http"\nvia_vip = false\nport = {port}'
    text = settings(lab, tmp_path, metrics=True) + vip(lab, port, lab.reals)
    text += vip(lab, direct_port, lab.reals, direct)
    svc = serve(text)
    wait_serving(lab, port, {"real1", "real2", "real3"})

    assert real3.decap is not None
    broken = time.time()
    real3.decap.close(detach=True)
    real3.decap = None
    try:
        down = svc.wait_for("real_down", since=broken, real=str(real3.ipv4))
        assert down["vips"] == f"{lab.vip4}:{port}/tcp"  # not the direct-checked VIP
        assert "timeout" in down["reason"]
        # The direct check goes on probing real3 with success: after more
        # than `fall` of its probes since the break, a false down would show.
        direct_vip = f"{lab.vip4}:{direct_port}/tcp"
        ok_at_down = probes_ok(lab, svc, direct_vip, str(real3.ipv4))
        ok_now = eventually(
            lambda: probes_ok(lab, svc, direct_vip, str(real3.ipv4)),
            lambda n: n >= ok_at_down + FALL + 1,
        )
        assert ok_now >= ok_at_down + FALL + 1, "the direct check stopped probing real3"
        assert not svc.find("real_down", since=broken, vips=direct_vip)
    finally:
        with netns.enter(real3.netns):
            real3.decap = Decap(
                real3.interface, addresses=[real3.ipv4, real3.ipv6], mode=lab.decap_mode
            )
    svc.wait_for("real_up", since=broken, real=str(real3.ipv4))
    wait_serving(lab, port, {"real1", "real2", "real3"})


def test_reload_under_traffic_keeps_established_connections(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    port, other = 8084, 8094
    real1, real2, real3 = lab.reals
    for real in lab.reals:
        servers.start(real, port)
        servers.start(real, other)
    base = settings(lab, tmp_path)
    svc = serve(base + vip(lab, port, [real1, real2]))
    wait_serving(lab, port, {"real1", "real2"})
    held = hold_reaching(lab, port, {"real1", "real2"}, batch=8)
    for conn in [c for c in held if c.real == "real2"]:
        conn.close()  # real2 is removed below: its connections end by design
    held = [c for c in held if c.real != "real2"]
    assert held

    steps = [
        vip(lab, port, [real1, real2, real3]),  # add a real
        vip(lab, port, [real1, real2, real3], weights={"real1": 3}),  # reweight
        vip(lab, port, [real1, real2, real3], weights={"real1": 3}) + vip(lab, other, [real3]),
        vip(lab, port, [real1, real3], weights={"real1": 3}) + vip(lab, other, [real3]),
        vip(lab, port, [real1, real3]),  # remove a VIP, reweight back
    ]
    with lab.client.traffic([(lab.vip4, port, "tcp")], held, pause=0.01) as traffic:
        for i, step in enumerate(steps):
            mark = time.time()
            svc.config.write_text(base + step)
            if i % 2:
                svc.signal(signal.SIGHUP)  # else the file watcher notices the edit
            svc.wait_for("reloaded", since=mark, timeout=5)
            if "8094" in step:
                assert get(lab, other, 10).by_real() == {"real3": 10}
            wait_for_traffic(traffic)  # held and new connections go on after each reload
    report = traffic.report
    held_failures = [reply for kind, reply in report.failures if kind == "held"]
    assert not held_failures, held_failures[:5]
    # A new connection whose SYN reached real2 just before real2 left can be
    # reset by the real it re-selects: a race of removal, not of the reload.
    assert report.failed <= 2, report.failures[:5]
    assert set(report.by_real) >= {"real1", "real3"}
    wait_serving(lab, port, {"real1", "real3"})
    assert get(lab, other, 5).failures  # the VIP is gone


def test_invalid_reload_is_rejected_with_every_error(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    port = 8085
    for real in lab.reals:
        servers.start(real, port)
    base = settings(lab, tmp_path)
    good = base + vip(lab, port, lab.reals)
    svc = serve(good)
    wait_serving(lab, port, {"real1", "real2", "real3"})
    bad = good.replace("weight = 1", "weight = -1", 1).replace("rise = 2", "rise = 0")
    bad += '\n[[vip]]\naddress = "10.100.0.1"\nport = 99999\n'
    mark = time.time()
    svc.config.write_text(bad)
    svc.signal(signal.SIGHUP)
    rejected = svc.wait_for("reload_rejected", since=mark)
    errors = {e["where"]: e["error"] for e in svc.find("config_error", since=mark)}
    assert rejected["errors"] == 3 and set(errors) == {
        "health.rise",
        "vip[0].reals[0].weight",
        "vip[1].port",
    }, errors
    wait_serving(lab, port, {"real1", "real2", "real3"})  # the old config still serves
    assert svc.proc.poll() is None


def test_flapping_real_does_not_flap_the_ring(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    """real1's check port is blocked and unblocked every interval; with rise
    and fall 3 the real may change state at most once per 3 intervals."""
    port = 8086
    rise = fall = 3
    real1 = lab.reals[0]
    for real in lab.reals:
        servers.start(real, port)
    svc = serve(settings(lab, tmp_path, rise=rise, fall=fall) + vip(lab, port, lab.reals))
    wait_serving(lab, port, {"real1", "real2", "real3"})
    table = "inet xlbflap"
    rule = f"add rule {table} input tcp dport {port} reject with tcp reset"
    real1.run(["nft", f"add table {table}"])
    real1.run(["nft", f"add chain {table} input {{ type filter hook input priority 0 ; }}"])
    started = time.time()
    phases = []  # how long each blocked or open phase lasted
    try:
        for i in range(20):
            began = time.monotonic()
            real1.run(["nft", rule if i % 2 == 0 else f"flush chain {table} input"])
            time.sleep(INTERVAL)  # the stimulus: the check port flips every interval
            phases.append(time.monotonic() - began)
        flapped = time.time()
        real1.run(["nft", rule])  # blocked for good: the check does see the rule
        svc.wait_for("real_down", since=flapped, real=str(real1.ipv4))
    finally:
        real1.run(["nft", f"delete table {table}"], check=False)
    flips = sorted(
        e["time"]
        for name in ("real_up", "real_down")
        for e in svc.find(name, real=str(real1.ipv4))
        if started <= e["time"] < flapped
    )
    gaps = [b - a for a, b in itertools.pairwise(flips)]
    # A change of state needs min(rise, fall) equal results in a row, and
    # probes start at least an interval apart (a probe after a logged change
    # starts after the log line): so a phase shorter than (n - 1) intervals
    # cannot flip the real, and two changes are (n - 1) intervals apart.
    # A busy machine stretches the phases (nft takes longer): count them.
    least = (min(rise, fall) - 1) * INTERVAL
    long_phases = sum(1 for d in phases if d >= least * 0.75)
    assert len(flips) <= long_phases + 1, (flips, phases)
    assert all(gap >= least * 0.95 for gap in gaps), gaps
    ring_changes = [e for e in svc.find("change", since=started) if e["time"] < flapped]
    assert len(ring_changes) <= len(flips)
    svc.wait_for("real_up", since=flapped, real=str(real1.ipv4))


@pytest.mark.parametrize("all_down", ["keep", "drop"])
def test_all_reals_down_keeps_or_drops_and_reports_the_vip(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path, all_down: str
) -> None:
    """Every check fails (their own port) while the service still answers:
    "keep" goes on serving with the last ring, "drop" stops; both report
    the VIP unhealthy, and healthy again when a real recovers."""
    port, check_port = 8089, 8099
    real1, real2 = lab.reals[:2]
    for real in (real1, real2):
        servers.start(real, port)
        servers.start(real, check_port)
    check = f'type = "http"\nport = {check_port}'
    svc = serve(settings(lab, tmp_path) + vip(lab, port, [real1, real2], check, all_down=all_down))
    wait_serving(lab, port, {"real1", "real2"})

    killed = time.time()
    servers.kill(real1, check_port)
    svc.wait_for("real_down", since=killed, real=str(real1.ipv4))
    wait_serving(lab, port, {"real2"})
    servers.kill(real2, check_port)
    svc.wait_for("real_down", since=killed, real=str(real2.ipv4))
    unhealthy = svc.wait_for("vip_unhealthy", since=killed)
    assert unhealthy["vip"] == f"{lab.vip4}:{port}/tcp"
    replies = get(lab, port, 20)
    if all_down == "keep":
        assert not replies.failures and set(replies.by_real()) == {"real2"}  # the last ring
    else:
        assert len(replies.failures) == 20

    recovered = time.time()
    servers.start(real1, check_port)
    svc.wait_for("vip_healthy", since=recovered)
    wait_serving(lab, port, {"real1"})


def all_probed_up(health: dict[str, Any]) -> bool:
    """Every real of every VIP up, with at least one probe answered."""
    reals = [r for v in health.values() if isinstance(v, dict) for r in v.get("reals", {}).values()]
    return bool(reals) and all(r["state"] == "up" and r.get("probes_ok", 0) for r in reals)


def test_library_service_in_an_event_loop(lab: Lab, servers: Servers, tmp_path: Path) -> None:
    """`async with Service(config)` in a thread that entered the namespace."""
    port = 8090
    for real in lab.reals:
        servers.start(real, port)
    text = settings(lab, tmp_path).replace("[health]", 'metrics = "127.0.0.1:0"\n\n[health]')
    config = xlb.config.loads(text + vip(lab, port, lab.reals))

    async def embedded() -> dict[str, Any]:
        async with Service(config) as svc:
            assert svc.balancer is not None
            assert svc.balancer.reals(Vip(lab.vip4, port)) == lab.backends(4)
            deadline = time.monotonic() + 20
            while not all_probed_up(svc.health()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert svc.metrics_url is not None
            with urllib.request.urlopen(svc.metrics_url, timeout=5) as response:
                scraped = response.read().decode()  # from this thread: in the namespace
            return {"health": svc.health(), "metrics": svc.metrics(), "scraped": scraped}

    with netns.enter(lab.balancers[0].netns):
        report = asyncio.run(embedded())
    reals = report["health"][f"{lab.vip4}:{port}/tcp"]["reals"]
    assert {r["state"] for r in reals.values()} == {"up"}
    assert all(r["probes_ok"] >= 1 for r in reals.values())
    assert report["metrics"]["probe_path"]["encap_v4"] > 0
    up_line = f'xlb_real_up{{real="{lab.reals[0].ipv4}",vip="{lab.vip4}:{port}/tcp"}} 1.0'
    assert up_line in report["scraped"]
    assert not get(lab, port, 10).failures  # still forwarding after the service stopped


def test_second_serve_on_the_same_interface_refuses(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    text = settings(lab, tmp_path) + vip(lab, 8087, lab.reals[:1], check="")
    first = serve(text)
    second = serve(text, wait=False)
    assert second.exit_status(timeout=15) == 2
    refused = second.wait_for("refused")
    assert f"pid {first.proc.pid}" in refused["error"]
    assert "already runs on eth0" in refused["error"]
    assert first.proc.poll() is None


def test_sigterm_leaves_forwarding_teardown_detaches(
    lab: Lab, servers: Servers, serve: Any, tmp_path: Path
) -> None:
    """Kept last in the module: it detaches the lab's data plane."""
    port = 8088
    for real in lab.reals:
        servers.start(real, port)
    text = settings(lab, tmp_path) + vip(lab, port, lab.reals)
    svc = serve(text)
    wait_serving(lab, port, {"real1", "real2", "real3"})
    assert svc.stop() == 0
    assert not get(lab, port, 20).failures  # still forwarding without a daemon
    node = lab.balancers[0]
    with netns.enter(node.netns):
        assert xdp_attached_id(node.interface) != 0

    svc = serve(text, "--teardown")  # adopts, then tears down on SIGTERM
    wait_serving(lab, port, {"real1", "real2", "real3"})
    assert svc.stop() == 0
    with netns.enter(node.netns):
        assert xdp_attached_id(node.interface) == 0
    assert node.pin_dir is not None and not node.pin_dir.exists()


def test_check_flag_validates_without_touching_anything(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[balancer]\nmtu = 1\n[[vip]]\naddress = "x"\nport = 1\n')
    code = "import sys, xlb.serve; sys.exit(xlb.serve.main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--check", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "balancer.mtu" in result.stderr and "vip[0].address" in result.stderr
