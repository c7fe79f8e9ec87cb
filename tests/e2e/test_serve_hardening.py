"""`Service` (xlb serve) on a real data plane in a namespace of its own:
applies off the event loop, the file watcher, refusing to empty the data
plane, metrics from the first change, command checks as another user.

Each test makes a namespace with a veth (generic XDP on eth0, pinned in a
bpffs directory of its own) and runs the service's event loop in that
namespace. Checks probe a TCP server of the test on eth0's own address
(`via_vip = false`): the probe path is tested by test_health_probe.py, here
only what the daemon does with the results matters. Every wait is for a
condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xlb import Balancer, Real, Vip, netns
from xlb import config as cfg
from xlb.config import Check, CheckTiming, Config, Settings, VipConfig
from xlb.health import ProbeResult, Target, probe
from xlb.service import Service

GATEWAY_MAC = "02:00:00:00:00:01"
LOCAL = "10.0.0.1"  # eth0's address: the checked real, served by the test's TCP server
DEADLINE_S = 30.0
T = TypeVar("T")  # what a scenario returns


@dataclass
class Plane:
    ns: str
    pin_dir: Path
    lock_dir: Path

    def settings(self) -> Settings:
        return Settings(
            interface="eth0",
            xdp_mode="generic",
            gateway_mac=GATEWAY_MAC,
            pin_dir=self.pin_dir,
            lock_dir=self.lock_dir,
            metrics=None,
        )

    def settings_toml(self, metrics: str | None = "false") -> str:
        """The [balancer] table; `metrics` None: no metrics key (the default)."""
        return (
            "[balancer]\n"
            'interface = "eth0"\n'
            'xdp_mode = "generic"\n'
            f'gateway_mac = "{GATEWAY_MAC}"\n'
            f'pin_dir = "{self.pin_dir}"\n'
            f'lock_dir = "{self.lock_dir}"\n'
        ) + (f"metrics = {metrics}\n" if metrics is not None else "")

    def run(self, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `scenario()` on an event loop in the namespace (as `xlb serve` runs)."""
        with netns.enter(self.ns):
            return asyncio.run(scenario())


@pytest.fixture
def plane(make_netns: Any, tmp_path: Path) -> Iterator[Plane]:
    ns = make_netns()
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    for dev in ("eth0", "eth1"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])
    netns.run(ns, ["ip", "addr", "add", f"{LOCAL}/24", "dev", "eth0"])
    pin_dir = Path(f"/sys/fs/bpf/xlbt-hard-{os.getpid()}-{ns}")
    try:
        yield Plane(ns, pin_dir, tmp_path)
    finally:
        if pin_dir.exists():  # a test that left its data plane pinned
            with netns.enter(ns):
                Balancer(pin_dir=pin_dir).close(detach=True)
        shutil.rmtree(pin_dir, ignore_errors=True)


async def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


class SlowHttpServer:
    """Answers every GET with 200 after `delay` seconds; `arrived` is set
    when a request comes in (a probe is then in flight)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> SlowHttpServer:
        self.server = await asyncio.start_server(self._answer, LOCAL, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.arrived.set()
            await asyncio.sleep(self.delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()


def web_vip(port: int, interval: float, timeout: float) -> VipConfig:
    check = Check(
        "http",
        timing=CheckTiming(interval=interval, timeout=timeout, rise=1, fall=1),
        via_vip=False,
        port=port,
    )
    return VipConfig(Vip("10.100.0.1", 80), (Real(LOCAL),), check=check)


def vips_to_outlast(seconds: float, reals: int) -> int:
    """How many VIPs of `reals` reals this machine takes about `seconds` to
    program (at least 50): timed on a scratch data plane, so the apply lasts
    as long on a fast machine as on a slow one."""
    sample = bulk_vips(10, reals)
    with Balancer() as lb:
        started = time.monotonic()
        for vip in sample:
            lb.add_vip(vip.vip)
            lb.set_reals(vip.vip, list(vip.reals))
        per_vip = (time.monotonic() - started) / len(sample)
    return min(max(50, int(seconds / per_vip) + 1), 250)


def bulk_vips(count: int, reals: int) -> tuple[VipConfig, ...]:
    members = tuple(Real(f"10.50.{r // 250}.{r % 250 + 1}") for r in range(reals))
    return tuple(VipConfig(Vip(f"10.101.0.{i + 1}", 80), members) for i in range(count))


def vip_toml(last_octet: int, with_real: bool = True) -> str:
    text = f'\n[[vip]]\naddress = "10.100.0.{last_octet}"\nport = 80\n'
    return text + ('[[vip.reals]]\naddress = "10.30.0.1"\n' if with_real else "")


class LoopLag:
    """The longest the event loop went without running a 10 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self, last: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            self.worst = max(self.worst, now - last - 0.01)
            last = now

    def __enter__(self) -> LoopLag:
        loop = asyncio.get_running_loop()  # measured from now, not from the task's first run
        self._task = loop.create_task(self._tick(loop.time()))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# ------------------------------------------------------------ apply thread


def test_a_long_reload_does_not_stall_the_probes(plane: Plane) -> None:
    """VIPs of 300 reals, as many as this machine takes 2.5 s to apply
    (Maglev builds, map writes; 50 at least); the reload starts while an
    HTTP probe (1 s timeout, fall 1;
    the server answers in 0.1 s) is in flight. Applied on the event loop,
    that probe times out and the real goes down; applied in the apply
    thread, nothing is late. (The loop still waits for the GIL now and then,
    ~0.15 s at worst on an idle machine: the timeout leaves room for a busy
    one, and stays well under the ~2.5 s an apply takes.)"""
    interval, timeout, delay = 1.2, 1.0, 0.1
    vip_count = vips_to_outlast(2.5 * timeout, reals=300)

    async def scenario() -> dict[str, Any]:
        async with SlowHttpServer(delay) as web:
            small = Config(plane.settings(), vips=(web_vip(web.port, interval, timeout),))
            big = replace(small, vips=(*small.vips, *bulk_vips(vip_count, 300)))
            async with Service(small, teardown=True) as svc:
                return await reload_during_a_probe(svc, web, big)

    async def reload_during_a_probe(
        svc: Service, web: SlowHttpServer, big: Config
    ) -> dict[str, Any]:
        await until(lambda: probes_ok(svc) >= 2, "the first probes pass")
        loop = asyncio.get_running_loop()
        with LoopLag() as lag:
            web.arrived.clear()
            await web.arrived.wait()  # a probe waits for its answer now
            started = loop.time()
            assert await svc.reload(big)
            took = loop.time() - started
            after = probes_ok(svc)
            await until(lambda: probes_ok(svc) >= after + 3, "probes after the reload")
        assert svc.balancer is not None
        return {
            "took": took,
            "lag": lag.worst,
            "downs": svc.counters["real_down"],
            "vips": len(svc.balancer.vips()),
            "failed": svc.health()["10.100.0.1:80/tcp"]["reals"][LOCAL]["probes_failed"],
        }

    def probes_ok(svc: Service) -> int:
        return int(svc.health()["10.100.0.1:80/tcp"]["reals"][LOCAL]["probes_ok"])

    seen = plane.run(scenario)
    assert seen["vips"] == 1 + vip_count
    # The test means something only if the apply outlasts a probe timeout.
    assert seen["took"] > timeout, seen
    # The loop may wait for the GIL (numpy in the apply thread), never for the apply.
    assert seen["lag"] < timeout - delay, seen
    assert seen["downs"] == 0 and seen["failed"] == 0, seen


# -------------------------------------------------------------- watcher


def test_one_edit_reloads_once_and_startup_changes_are_counted(plane: Plane) -> None:
    """SIGHUP's reload tells the watcher what it read: the watcher's next
    poll does not read the same file again (nor a broken one twice). The
    changes made at start-up show in xlb_updates_total."""
    path = plane.lock_dir / "lb.toml"
    base = plane.settings_toml(metrics='"127.0.0.1:0"')
    one_vip = vip_toml(1)
    two_vips = vip_toml(1) + vip_toml(2, with_real=False)
    path.write_text(base + vip_toml(1) + vip_toml(2, with_real=False) + vip_toml(3))

    async def scenario() -> dict[str, Any]:
        async with Service(path, watch=False, teardown=True) as svc:
            assert svc.metrics_url is not None
            at_start = await asyncio.to_thread(scrape, svc.metrics_url)
            events: dict[str, Any] = {"at_start": at_start}

            path.write_text(base + two_vips)  # one edit ...
            assert await svc.reload()  # ... and its SIGHUP
            events["poll_after_sighup"] = await svc.poll_config_file()
            events["reloads_after_sighup"] = svc.counters["reloads"]

            os.utime(path)  # touched, not changed
            events["poll_after_touch"] = await svc.poll_config_file()

            path.write_text(base + one_vip)  # an edit without SIGHUP: the watcher's
            events["poll_after_edit"] = await svc.poll_config_file()
            events["poll_again"] = await svc.poll_config_file()

            path.write_text(base + one_vip + "[[vip]\n")  # broken, then SIGHUP
            events["sighup_broken"] = await svc.reload()
            events["poll_after_broken"] = await svc.poll_config_file()
            events["counters"] = dict(svc.counters)
            assert svc.balancer is not None
            events["vips"] = sorted(map(str, svc.balancer.vips()))
            return events

    seen = plane.run(scenario)
    added = seen["at_start"][("xlb_updates_total", (("op", "add_vip"), ("result", "ok")))]
    reals_set = seen["at_start"][("xlb_updates_total", (("op", "set_reals"), ("result", "ok")))]
    assert (added, reals_set) == (3, 2), seen["at_start"]
    assert seen["poll_after_sighup"] is False and seen["reloads_after_sighup"] == 1
    assert seen["poll_after_touch"] is False
    assert seen["poll_after_edit"] is True and seen["poll_again"] is False
    assert seen["sighup_broken"] is False and seen["poll_after_broken"] is False
    assert seen["counters"]["reloads"] == 3, seen["counters"]
    assert seen["counters"]["reloads_rejected"] == 1, seen["counters"]
    assert seen["vips"] == ["10.100.0.1:80/tcp"]


def test_metrics_are_served_on_the_documented_default(plane: Plane) -> None:
    """No `metrics` key: http://127.0.0.1:9077/metrics (in the test's namespace)."""
    path = plane.lock_dir / "lb.toml"
    path.write_text(plane.settings_toml(metrics=None) + vip_toml(1))

    async def scenario() -> tuple[str | None, float]:
        async with Service(path, watch=False, teardown=True) as svc:
            url = svc.metrics_url
            samples = await asyncio.to_thread(scrape, "http://127.0.0.1:9077/metrics")
            return url, samples[("xlb_vips", ())]

    assert plane.run(scenario) == ("http://127.0.0.1:9077/metrics", 1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ------------------------------------------------------ emptying refused


def test_an_empty_or_truncated_file_never_removes_every_vip(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    path = plane.lock_dir / "lb.toml"
    base = plane.settings_toml()
    vips = vip_toml(1) + vip_toml(2)
    path.write_text(base + vips)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Service(path, watch=False) as svc:
            assert svc.balancer is not None
            for name, text in [("empty", ""), ("truncated", base)]:
                path.write_text(text)
                with caplog.at_level("INFO", logger="xlb.service"):
                    caplog.clear()
                    seen[name] = await svc.reload()
                seen[f"{name}_vips"] = len(svc.balancer.vips())
                rejected = [r for r in caplog.messages if r.startswith("event=reload_rejected")]
                seen[f"{name}_errors"] = int(rejected[0].split("errors=")[1].split()[0])
            seen["rejected"] = svc.counters["reloads_rejected"]
            path.write_text(base + vips)
            assert await svc.reload()
        # A new daemon, started on a file without VIPs, refuses too (the data
        # plane left forwarding above still has its VIPs).
        path.write_text(base)
        with pytest.raises(cfg.EmptyConfigError, match="would remove all 2 running VIP"):
            await Service(path).start()
        path.write_text("vips = []\n" + base)  # said on purpose: applied
        async with Service(path, watch=False, teardown=True) as svc:
            assert svc.balancer is not None
            seen["on_purpose_vips"] = len(svc.balancer.vips())
        return seen

    seen = plane.run(scenario)
    assert seen == {
        "empty": False,
        "empty_vips": 2,
        "truncated": False,
        "truncated_vips": 2,
        "empty_errors": 5,  # the settings it would change (interface, ...) and the VIPs
        "truncated_errors": 1,
        "rejected": 2,
        "on_purpose_vips": 0,
    }


def test_the_refusal_is_logged_with_its_reason(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    path = plane.lock_dir / "lb.toml"
    path.write_text(plane.settings_toml() + vip_toml(1))

    async def scenario() -> bool:
        async with Service(path, watch=False, teardown=True) as svc:
            path.write_text(plane.settings_toml())  # cut after [balancer]
            return await svc.reload()

    with caplog.at_level("INFO", logger="xlb.service"):
        assert plane.run(scenario) is False
    errors = [m for m in caplog.messages if m.startswith("event=config_error")]
    assert len(errors) == 1 and "has no VIPs: it would remove all 1 running VIP(s)" in errors[0]
    assert "vips = []" in errors[0]
    assert any(m.startswith("event=reload_rejected") for m in caplog.messages)


# ---------------------------------------------------- command checks' user


def test_a_command_check_runs_as_its_user() -> None:
    """uid, gid and supplementary groups of `user`, not root's."""
    nobody = pwd.getpwnam("nobody")
    out_dir = Path(tempfile.mkdtemp(prefix="xlbt-user-"))
    try:
        out_dir.chmod(0o777)
        out = out_dir / "ids"
        script = 'echo "$(id -u) $(id -g) $HOME $(id -G)" > "$1"'  # /root's python: not for nobody
        check = Check(
            "command",
            timing=CheckTiming(5, 5),
            via_vip=False,
            command=("/bin/sh", "-c", script, "-", str(out)),
            user="nobody",
        )
        address = ipaddress.ip_address("10.0.0.2")
        assert asyncio.run(probe(Target(address, address, 80, check), 0)) == ProbeResult(True)
        uid, gid, home, *groups = out.read_text().split()
        assert (int(uid), int(gid), home) == (nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
        assert sorted(map(int, groups)) == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
        assert nobody.pw_uid != os.getuid()  # the test runs as root: the drop is real
    finally:
        shutil.rmtree(out_dir)
