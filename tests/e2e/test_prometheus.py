"""The Grafana dashboard and the alert rules against a real Prometheus
scraping `xlb serve` in the lab.

Grafana is not installable here, so the dashboard is tested where it can
fail: every panel's PromQL (contrib/grafana/xlb.json, its variables set as
Grafana would for "All") is evaluated through Prometheus' HTTP API after
known UDP traffic went through the lab's balancer; each must return data,
and the per-VIP packet rate must match what the test sent (loosely: the
scrape instants fall where they fall). The same Prometheus loads
contrib/prometheus/xlb-rules.yml: every rule must evaluate without error
on the live series, and a rejected reload must put XlbConfigNotApplied in
its pending state. With the daemon running, `xlb top` shows its health
and BGP state.

Prometheus (Debian's `prometheus`) runs in the balancer's namespace, where
`xlb serve` binds its metrics to 127.0.0.1, scraping every 0.5 s into a
temporary directory, and is stopped at the end (the lab's cleanup kills
whatever runs in its namespaces anyway). Every wait is on a condition with
a deadline.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import eventually

from xlb import control, netns
from xlb.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "xlb.json"
RULES = ROOT / "contrib" / "prometheus" / "xlb-rules.yml"
XLB = str(Path(sys.executable).with_name("xlb"))
PROMETHEUS_PORT = 9090  # in the balancer's namespace: nothing else listens there
SCRAPE_S = 0.5
SCRAPE = "500ms"  # Prometheus durations take no fractions
RATE_WINDOW = "4s"  # what `$__rate_interval` stands for here: 8 scrapes
SEND_PPS, SEND_S, FLOWS = 150, 8.0, 32  # 32 flows: each real gets some (1 in 10^5 not)
RATE_TOLERANCE = 0.3  # scrape instants and rate()'s extrapolation; the test sends steadily
DEADLINE_S = 30.0

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs Prometheus (Debian: apt-get install prometheus)",
)


# ------------------------------------------------------------------ daemon


class Serve:
    """`xlb serve` in the balancer's namespace, its JSON log read as it comes."""

    def __init__(self, lab: Lab, config: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = netns.popen(
            lab.balancers[0].netns,
            [XLB, "serve", str(config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                event = json.loads(raw)
            except ValueError:  # not the daemon's log: an error before logging started
                event = {"event": "text", "message": raw.decode(errors="replace").strip()}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for(self, event: str, after: int = 0) -> dict[str, Any]:
        """The first `event` logged after the first `after` lines."""
        deadline = time.monotonic() + DEADLINE_S
        with self._cond:
            while True:
                found = [e for e in self.events[after:] if e.get("event") == event]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {event} within {DEADLINE_S}s: {self.events[-20:]}")
                self._cond.wait(min(left, 0.2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def daemon_config(lab: Lab, tmp_path: Path, weight2: int = 1) -> str:
    node = lab.balancers[0]
    reals = "".join(
        f'\n[[vip.reals]]\naddress = "{real.ipv4}"\nweight = {weight2 if i == 1 else 1}\n'
        for i, real in enumerate(lab.reals)
    )
    return f"""
[balancer]
interface = "{node.interface}"
xdp_mode = "{lab.xdp_mode}"
gateway_mac = "{node.hub_mac}"
mtu = {lab.server_mtu}
pin_dir = "{node.pin_dir}"
lock_dir = "{tmp_path}"
metrics = "127.0.0.1:0"

[health]
interval = 0.3
timeout = 0.3
rise = 1
fall = 2

[bgp]
local_as = 65001
router_id = "{node.ipv4}"
next_hop_v4 = "{node.ipv4}"  # not "self": ExaBGP refuses that without a session
min_healthy = 2

[[bgp.neighbors]]
address = "192.0.2.254"
as = 65000
hold_time = 3

[[vip]]
address = "{lab.vip4}"
port = 80
{reals}
[vip.check]
type = "http"

[[vip]]
address = "{lab.vip4}"
port = 7
protocol = "udp"
{reals}
[vip.check]
type = "tcp"
port = 80
"""


# -------------------------------------------------------------- Prometheus


class Prometheus:
    """A Prometheus server in a namespace, and its HTTP API."""

    def __init__(self, ns: str, target: str, workdir: Path) -> None:
        self.ns = ns
        self.log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "xlb",
                            "scrape_interval": SCRAPE,
                            "scrape_timeout": "400ms",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.proc = netns.popen(
            ns,
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with netns.enter(self.ns), urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api/") else body

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            self.get("/-/ready")
        except OSError:
            return False
        return True

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr, time=f"{at:.3f}")
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------- traffic


def send_udp(lab: Lab, pps: int, seconds: float) -> list[float]:
    """Datagrams to the UDP VIP from FLOWS sockets, at a steady pace;
    returns when each was sent (wall clock, as Prometheus stamps samples)."""
    sent: list[float] = []
    with netns.enter(lab.client.netns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FLOWS)]
        try:
            start = time.monotonic()
            for i in range(int(pps * seconds)):
                due = start + i / pps
                with contextlib.suppress(ValueError):
                    time.sleep(max(0.0, due - time.monotonic()))
                socks[i % FLOWS].sendto(b"prometheus-test", (str(lab.vip4), 7))
                sent.append(time.time())
        finally:
            for sock in socks:
                sock.close()
    return sent


# ---------------------------------------------------------------- dashboard


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, with the
    variables as Grafana sets them for "All"."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"$__rate_interval": RATE_WINDOW, "$instance": ".*", "$vip": ".*"}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries


# -------------------------------------------------------------------- test


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.release_balancer()  # `xlb serve` adopts the pinned data plane
        yield lab


def test_dashboard_queries_and_alert_rules_through_a_real_prometheus(
    lab: Lab, tmp_path: Path
) -> None:
    config = tmp_path / "lb.toml"
    config.write_text(daemon_config(lab, tmp_path))
    serve = Serve(lab, config)
    prometheus: Prometheus | None = None
    try:
        serve.wait_for("started")
        metrics_url = serve.wait_for("metrics")["url"]
        target = urllib.parse.urlsplit(metrics_url).netloc
        prometheus = Prometheus(lab.balancers[0].netns, target, tmp_path)
        prom = prometheus
        assert eventually(prom.ready, bool), "Prometheus never became ready"
        up = eventually(lambda: prom.query('up{job="xlb"}', time.time()),
                        lambda r: bool(r) and r[0]["value"][1] == "1")  # fmt: skip
        assert up and up[0]["value"][1] == "1", up
        socket_path = control.socket_path(tmp_path, lab.balancers[0].interface)

        def states() -> set[str]:
            vips = control.request(socket_path, "health")["vips"]
            return {r["state"] for v in vips.values() for r in v["reals"].values()}

        assert eventually(states, lambda s: s == {"up"}) == {"up"}

        # Known traffic, and a reload that changes a ring while it flows.
        lines = len(serve.events)
        config.write_text(daemon_config(lab, tmp_path, weight2=2))
        serve.proc.send_signal(signal.SIGHUP)
        sent = send_udp(lab, SEND_PPS, SEND_S)
        serve.wait_for("reloaded", after=lines)
        end = sent[-1]
        eventually(lambda: prom.query("xlb_vips", end + 2 * SCRAPE_S), bool)

        # Every panel's query returns data at the end of the traffic.
        empty = [(title, expr) for title, expr in panel_queries() if not prom.query(expr, end)]
        assert not empty, f"panels without data: {empty}"

        # The per-VIP packet rate, in the middle of the traffic, is what was sent.
        at = sent[0] + SEND_S / 2 + 2
        window = float(RATE_WINDOW.removesuffix("s"))
        sent_rate = sum(1 for t in sent if at - window < t <= at) / window
        per_vip_expr = next(e for t, e in panel_queries() if t == "Packets/s per VIP")
        rates = {r["metric"]["vip"]: float(r["value"][1]) for r in prom.query(per_vip_expr, at)}
        udp_vip = f"{lab.vip4}:7/udp"
        print(f"per-VIP rate from Prometheus {rates[udp_vip]:.1f} pps, sent {sent_rate:.1f} pps")
        assert rates[udp_vip] == pytest.approx(sent_rate, rel=RATE_TOLERANCE), rates
        # Nothing was sent to the TCP VIP (health probes leave through tc, not XDP).
        assert rates[f"{lab.vip4}:80/tcp"] < 0.1 * sent_rate
        per_real_expr = next(e for t, e in panel_queries() if t == "Packets/s per real")
        reals = [float(r["value"][1]) for r in prom.query(per_real_expr, at)
                 if r["metric"]["vip"] == udp_vip]  # fmt: skip
        assert len(reals) == 3 and all(r > 0 for r in reals)
        assert sum(reals) == pytest.approx(rates[udp_vip], rel=0.05)

        # The alert rules load and evaluate on the live series.
        def rules() -> list[dict[str, Any]]:
            groups = prom.get("/api/v1/rules")["data"]["groups"]
            return [rule for group in groups for rule in group["rules"]]

        loaded = eventually(rules, lambda rs: len(rs) == 6 and all(r["health"] == "ok" for r in rs))
        assert [(r["name"], r["health"], r.get("lastError", "")) for r in loaded] == [
            (r["name"], "ok", "") for r in loaded
        ] and len(loaded) == 6

        # `xlb top` with the daemon: health from its control socket, BGP state.
        top = netns.run(
            lab.balancers[0].netns,
            [XLB, "top", "--once", "--json", "--interval", "0.5", "-i",
             lab.balancers[0].interface, "--pin-dir", str(lab.balancers[0].pin_dir),
             "--lock-dir", str(tmp_path)],
        )  # fmt: skip
        view = json.loads(top.stdout)
        row = next(v for v in view["vips"] if v["vip"] == udp_vip)
        assert row["health"] == "healthy" and row["reals_up"] == 3
        assert {r["health"] for r in row["reals"]} == {"up"}
        # 3 reals up, min_healthy 2: announced (queued by ExaBGP while no router answers)
        assert row["announced"] is True, [e for e in serve.events if "announ" in e["event"]]
        assert set(view["bgp"]["neighbors"]) == {"192.0.2.254"}

        # A broken file: the reload is rejected, Prometheus sees it, the alert is pending.
        lines = len(serve.events)
        config.write_text("[balancer\n")
        serve.wait_for("reload_rejected", after=lines)
        pending = eventually(
            lambda: prom.query('ALERTS{alertname="XlbConfigNotApplied"}', time.time()), bool
        )
        assert pending and pending[0]["metric"]["alertstate"] == "pending", pending
    finally:
        if prometheus is not None:
            prometheus.stop()
        serve.stop()
