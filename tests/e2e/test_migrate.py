"""From keepalived to xlb in the lab: import its configuration, serve it.

A keepalived.conf of the shape operators run (global_defs, a VRRP
instance, DR and TUN virtual servers with HTTP_GET, TCP_CHECK and
UDP_CHECK checkers, on the lab's IPv4 and IPv6 VIPs and reals) is turned
into lb.toml by the `xlb import keepalived` console script, with the lab's
balancer settings as `--base`. `xlb serve` runs that file, adopting the
lab's data plane; the imported checks probe every real through the tunnel
and pass, and the lab's client reaches every VIP, over TCP and UDP, on
every real.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import eventually

import xlb.config
from xlb import netns
from xlb.lab import Lab

XLB = str(Path(sys.executable).with_name("xlb"))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.release_balancer()  # `xlb serve` adopts the pinned data plane
        yield lab


class Serve:
    """`xlb serve FILE --log-format json` in the balancer's namespace, its log read as it comes."""

    def __init__(self, lab: Lab, config: Path) -> None:
        self.lab = lab
        self.events: list[dict[str, Any]] = []
        self.proc = netns.popen(
            lab.balancers[0].netns,
            [XLB, "serve", str(config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.events.append(json.loads(raw))
            except ValueError:
                self.events.append({"event": "text", "message": raw.decode(errors="replace")})

    def find(self, event: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == event]

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        eventually(lambda: bool(self.find(event)) or self.proc.poll() is not None, bool, timeout)
        found = self.find(event)
        assert found, f"no {event} in {timeout} s:\n{self.dump()}"
        return found[0]

    def probes_ok(self, vip: str, real: str) -> int:
        """Passed health probes of `real` for `vip`, from the daemon's metrics."""
        url = self.wait_for("metrics", 10)["url"]
        with (
            netns.enter(self.lab.balancers[0].netns),
            urllib.request.urlopen(url, timeout=5) as page,
        ):
            text = page.read().decode()
        for line in text.splitlines():
            if line.startswith("xlb_real_health_probes_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                if labels == {"vip": vip, "real": real, "result": "ok"}:
                    return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def dump(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-40:])

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(30)
        self._reader.join(5)
        return code


def keepalived_conf(lab: Lab) -> str:
    """The lab's services as keepalived would have run them with IPVS."""
    reals4 = [str(r.ipv4) for r in lab.reals]
    reals6 = [str(r.address(6)) for r in lab.reals]
    tcp, udp = lab.tcp_port, lab.udp_port

    def reals(addresses: list[str], port: int, checker: str) -> str:
        return "".join(
            f"    real_server {address} {port} {{\n        weight {1 + i % 2}\n{checker}    }}\n"
            for i, address in enumerate(addresses)
        )

    http = "        HTTP_GET {\n            url {\n              path /\n              status_code 200\n            }\n            connect_timeout 1\n        }\n"  # noqa: E501
    tcp_check = "        TCP_CHECK {\n            connect_timeout 1\n        }\n"
    udp_check = (
        "        UDP_CHECK {\n            payload 70696e67\n            require_reply 7c70696e67\n"
        "            connect_timeout 1\n        }\n"
    )
    return f"""! keepalived.conf of the lab's balancer, IPVS era
global_defs {{
    router_id LAB_LB1
}}

vrrp_instance VI_1 {{
    state MASTER
    interface {lab.balancers[0].interface}
    virtual_router_id 77
    priority 150
    virtual_ipaddress {{
        10.20.0.100/24      # the floating next hop the router routes the VIPs to
    }}
}}

virtual_server {lab.vip4} {tcp} {{
    delay_loop 1
    lb_algo wlc
    lb_kind DR
    protocol TCP
{reals(reals4, tcp, http)}}}

virtual_server {lab.vip6} {tcp} {{
    delay_loop 1
    lb_algo mh
    mh-port
    lb_kind TUN
    protocol TCP
{reals(reals6, tcp, tcp_check)}}}

virtual_server {lab.vip4} {udp} {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol UDP
{reals(reals4, udp, udp_check)}}}

virtual_server {lab.vip6} {udp} {{
    delay_loop 1
    lb_algo rr
    lb_kind TUN
    protocol UDP
{reals(reals6, udp, udp_check)}}}
"""


def base_settings(lab: Lab, lock_dir: Path) -> str:
    """What keepalived.conf cannot say: where this balancer runs."""
    node = lab.balancers[0]
    return (
        "[balancer]\n"
        'metrics = "127.0.0.1:0"\n'
        f'xdp_mode = "{lab.xdp_mode}"\n'
        f'gateway_mac = "{node.hub_mac}"\n'
        f"mtu = {lab.server_mtu}\n"
        f'pin_dir = "{node.pin_dir}"\n'
        f'lock_dir = "{lock_dir}"\n'
    )


def test_an_imported_keepalived_conf_serves_every_vip(lab: Lab, tmp_path: Path) -> None:
    source, base, output = (
        tmp_path / "keepalived.conf",
        tmp_path / "base.toml",
        tmp_path / "lb.toml",
    )
    source.write_text(keepalived_conf(lab))
    base.write_text(base_settings(lab, tmp_path))
    imported = subprocess.run(
        [XLB, "import", "keepalived", str(source), "--base", str(base), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    assert ": warning: " not in imported.stderr, imported.stderr  # all of it carries over
    config = xlb.config.load(output)
    node = lab.balancers[0]
    assert config.settings.interface == node.interface  # from the VRRP instance
    assert len(config.vips) == 4 and all(len(v.reals) == 3 for v in config.vips)
    assert {v.check.type for v in config.vips if v.check} == {"http", "tcp", "udp"}

    svc = Serve(lab, output)
    try:
        svc.wait_for("started", timeout=30)
        _every_real_passes_its_check(svc, config)
        everyone = {r.role for r in lab.reals}
        for family in (4, 6):
            vip = lab.vip_address(family)
            web = lab.client.http_get(vip, lab.tcp_port, count=60, timeout=2.0)
            assert not web.failures and set(web.by_real()) == everyone, (vip, web.by_real())
            echo = lab.client.udp_exchange(vip, lab.udp_port, count=60)
            assert not echo.failures and set(echo.by_real()) == everyone, (vip, echo.by_real())
        assert not svc.find("real_down"), svc.dump()
        assert svc.stop() == 0
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()


def _every_real_passes_its_check(svc: Serve, config: xlb.config.Config) -> None:
    """The imported checks probe each real through the tunnel, and pass."""
    for entry in config.vips:
        for real in entry.reals:
            vip, address = str(entry.vip), str(real.address)
            ok = eventually(
                functools.partial(svc.probes_ok, vip, address),
                lambda n: n >= 2,
                timeout=30,
                every=0.2,
            )
            assert ok >= 2, f"{vip} {address}: {ok} probes passed\n{svc.dump()}"
