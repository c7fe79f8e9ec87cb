"""Prometheus metrics of a running balancer.

    from xlb.metrics import start_metrics_server

    server = start_metrics_server(balancer, "127.0.0.1:9077", health_source=svc.health)
    ...
    server.close()

Data-plane counters are read at scrape time, straight from the per-CPU maps
and summed over CPUs (`BalancerCollector`): nothing is cached, so a scrape
shows what the kernel counted up to that moment, and a restarted daemon
reports the same totals (they live in the pinned maps, not in this process).
Control-plane events (ring swaps, update latency) come from a Balancer
observer and count what this process did since it started.

Every metric is documented in docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .balancer import Balancer, UpdateEvent, counter_names
from .config import DEFAULT_METRICS_ADDRESS, parse_listen_address
from .errors import ConfigError, XlbError
from .model import Vip
from .xdp import ACTION_COUNTERS

log = logging.getLogger("xlb.metrics")

#: 127.0.0.1:9077 (why that port: xlb.config.DEFAULT_METRICS_ADDRESS, docs/metrics.md).
DEFAULT_ADDRESS = DEFAULT_METRICS_ADDRESS
#: Where a client on this host reaches a server bound to every address.
_LOOPBACK_OF_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1"}
#: Where a running metrics server says where it listens (for `xlb list`).
DISCOVERY_DIR = Path("/run/xlb/metrics")

#: What `health_source()` returns (see `_health_metrics`); usually Service.health.
HealthSource = Callable[[], Mapping[str, Any]]

# Buckets of the update-latency histogram: map writes take tens of
# microseconds, a ring of 655373 slots with many reals tens of milliseconds.
UPDATE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

_EVENT_COUNTERS = {
    "conn_hit": ("xlb_conn_table_hits", "Packets whose flow was found in the connection table."),
    "conn_miss": (
        "xlb_conn_table_misses",
        "Packets with no valid connection-table entry (new flow, or its real was retired).",
    ),
    "conn_expired": (
        "xlb_conn_table_expired",
        "UDP connection-table entries found older than udp_ttl (the flow re-selected).",
    ),
    "conn_syn_reset": (
        "xlb_conn_table_syn_resets",
        "TCP SYNs for a 5-tuple already in the table (the flow re-selected).",
    ),
    "syn_flood_skip": (
        "xlb_syn_flood_skipped_syns",
        "TCP SYNs routed by the ring without a connection-table entry: their CPU was "
        "under a SYN flood (syn_flood_threshold).",
    ),
    "syn_flood_windows": (
        "xlb_syn_flood_windows",
        "One-second windows in which a CPU's TCP SYNs crossed syn_flood_threshold.",
    ),
    "frag_first": (
        "xlb_fragments_first",
        "First fragments of TCP/UDP datagrams: balanced, their ports kept for the later ones.",
    ),
    "frag_later": (
        "xlb_fragments_later",
        "Later fragments balanced with the ports their datagram's first fragment had.",
    ),
}

_SECOND_CHANCE_COUNTERS = {
    "sc_carried": (
        "xlb_second_chance_carried",
        "Packets sent with the previous ring's real (second chance: a flow a ring change moved).",
    ),
    "sc_other_family": (
        "xlb_second_chance_other_family",
        "Packets whose previous ring's real has another address family: not carried.",
    ),
}
_NAMED_COUNTERS = {**_EVENT_COUNTERS, **_SECOND_CHANCE_COUNTERS}

# How a QUIC VIP's datagrams were routed: counter name -> `route` label.
_QUIC_ROUTES = {
    "quic_routed_by_cid": "by_cid",
    "quic_initial": "initial",
    "quic_unknown_id": "unknown_id",
    "quic_malformed": "malformed",
}


# ============================================================== collector


class BalancerCollector(Collector):
    """Reads the balancer's maps at scrape time (custom collector).

    The daemon changes the Balancer from its event loop while scrapes run
    in the HTTP server's threads: a VIP removed between listing and reading
    is skipped, never an error.
    """

    def __init__(self, balancer: Balancer, health_source: HealthSource | None = None) -> None:
        self.balancer = balancer
        self.health_source = health_source

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        lb = self.balancer
        vip_packets = CounterMetricFamily(
            "xlb_vip_packets", "Packets forwarded to a real, per VIP.", labels=["vip"]
        )
        vip_bytes = CounterMetricFamily(
            "xlb_vip_bytes",
            "Bytes (as received, before encapsulation) forwarded, per VIP.",
            labels=["vip"],
        )
        vip_reals = GaugeMetricFamily(
            "xlb_vip_reals", "Reals configured in the data plane, per VIP.", labels=["vip"]
        )
        vip_ring = GaugeMetricFamily(
            "xlb_vip_ring_size", "Slots of the VIP's Maglev ring.", labels=["vip"]
        )
        real_packets = CounterMetricFamily(
            "xlb_real_packets", "Packets forwarded, per VIP and real.", labels=["vip", "real"]
        )
        real_bytes = CounterMetricFamily(
            "xlb_real_bytes", "Bytes forwarded, per VIP and real.", labels=["vip", "real"]
        )
        real_weight = GaugeMetricFamily(
            "xlb_real_weight", "Maglev weight (0 = draining).", labels=["vip", "real"]
        )
        real_share = GaugeMetricFamily(
            "xlb_real_ring_share",
            "Fraction of the VIP's ring slots the real owns (0-1).",
            labels=["vip", "real"],
        )
        vips = _snapshot_vips(lb)
        for vip in vips:
            name = str(vip)
            try:
                stats = lb.stats(vip)
                per_real = lb.real_stats(vip)
                reals = lb.reals(vip)
                shares = lb.ring_shares(vip)
                ring_size = lb.ring_size(vip)
            except (KeyError, RuntimeError):  # removed while we read
                continue
            vip_packets.add_metric([name], stats.packets)
            vip_bytes.add_metric([name], stats.bytes)
            vip_reals.add_metric([name], len(reals))
            vip_ring.add_metric([name], ring_size)
            for real in reals:
                labels = [name, str(real.address)]
                counter = per_real.get(real.address)
                if counter is not None:
                    real_packets.add_metric(labels, counter.packets)
                    real_bytes.add_metric(labels, counter.bytes)
                real_weight.add_metric(labels, real.weight)
                real_share.add_metric(labels, shares.get(real.address, 0.0))
        yield GaugeMetricFamily("xlb_vips", "VIPs configured in the data plane.", len(vips))
        yield from (vip_packets, vip_bytes, vip_reals, vip_ring)
        yield from (real_packets, real_bytes, real_weight, real_share)
        yield from _global_counters(lb.counters())
        yield GaugeMetricFamily(
            "xlb_syn_flood_cpus",
            "CPUs under a SYN flood now: their SYNs record no connection-table entry.",
            sum(1 for cpu in lb.syn_flood() if cpu.under_flood),
        )
        yield from _conn_table_fill(lb)
        if self.health_source is not None:
            try:
                health = self.health_source()
            except Exception:  # a broken health source must not break the scrape
                log.exception("health source failed")
            else:
                yield from _health_metrics(health)
        yield GaugeMetricFamily(
            "xlb_scrape_duration_seconds",
            "Time this scrape took to read the data plane.",
            time.perf_counter() - started,
        )


def _snapshot_vips(lb: Balancer) -> list[Vip]:
    for _ in range(5):
        try:
            return lb.vips()
        except RuntimeError:  # dict changed size during iteration: try again
            time.sleep(0.001)
    return []


def _global_counters(counters: Mapping[str, int]) -> Iterator[Metric]:
    actions = CounterMetricFamily(
        "xlb_xdp_actions",
        "Packets by the XDP action the program returned.",
        labels=["action"],
    )
    reasons = CounterMetricFamily(
        "xlb_packets",
        "Packets by why the program did what it did (forward, pass_not_vip, drop_no_real, ...).",
        labels=["reason"],
    )
    quic = CounterMetricFamily(
        "xlb_quic_packets",
        "Datagrams to QUIC VIPs by how their real was chosen (by_cid, initial, "
        "unknown_id, malformed).",
        labels=["route"],
    )
    events: list[Metric] = []
    action_names = set(ACTION_COUNTERS.values())
    for name in counter_names().values():
        value = counters.get(name, 0)
        if name in action_names:
            actions.add_metric([name.removeprefix("xdp_")], value)
        elif name in _NAMED_COUNTERS:
            metric, help_text = _NAMED_COUNTERS[name]
            events.append(CounterMetricFamily(metric, help_text, value=value))
        elif name in _QUIC_ROUTES:
            quic.add_metric([_QUIC_ROUTES[name]], value)
        else:
            reasons.add_metric([name], value)
    yield actions
    yield reasons
    yield from events
    yield quic


def _conn_table_fill(lb: Balancer) -> Iterator[Metric]:
    """Entries and capacity of the connection tables, counted now."""
    try:
        fill = lb.conn_table_fill()
    except XlbError:  # a map gone while the data plane is torn down: skip, not fail
        log.exception("cannot count the connection tables")
        return
    entries = GaugeMetricFamily(
        "xlb_conn_table_entries",
        "Entries in the connection table (LRU: once full, each new flow evicts the oldest).",
        labels=["family"],
    )
    capacity = GaugeMetricFamily(
        "xlb_conn_table_capacity", "Entries the connection table can hold.", labels=["family"]
    )
    for family, table in sorted(fill.items()):
        entries.add_metric([f"ipv{family}"], table.entries)
        capacity.add_metric([f"ipv{family}"], table.capacity)
    yield entries
    yield capacity


def _health_metrics(health: Mapping[str, Any]) -> Iterator[Metric]:
    """Health metrics from a snapshot shaped like `Service.metrics()` (or
    `Service.health()`, which is its "vips" part):

        {"vips": {"10.0.0.1:80/tcp": {"healthy": True, "unhealthy_transitions": 0,
                  "reals": {"10.0.1.1": {"state": "up", "probes_ok": 5,
                            "probes_failed": 0, "transitions_up": 0,
                            "transitions_down": 0, ...}}}},
         "service": {"reloads": 1, ...}, "probe_path": {"encap_v4": 10, ...}}

    Missing keys are left out; a real without a check ("unchecked") has no
    xlb_real_up.
    """
    real_up = GaugeMetricFamily(
        "xlb_real_up",
        "1 if the real passes its health check, 0 if it is down.",
        labels=["vip", "real"],
    )
    configured_weight = GaugeMetricFamily(
        "xlb_real_configured_weight",
        "The real's weight in the configuration (the data plane holds less while it is down: "
        "removed, or drained to 0).",
        labels=["vip", "real"],
    )
    transitions = CounterMetricFamily(
        "xlb_real_health_transitions",
        "Health state changes of a real, by the state it changed to.",
        labels=["vip", "real", "to"],
    )
    probes = CounterMetricFamily(
        "xlb_real_health_probes",
        "Health probes of a real, by result.",
        labels=["vip", "real", "result"],
    )
    vip_healthy = GaugeMetricFamily(
        "xlb_vip_healthy", "1 if the VIP has a real that is up (it can serve).", labels=["vip"]
    )
    vip_unhealthy = CounterMetricFamily(
        "xlb_vip_unhealthy_transitions",
        "Times the VIP lost its last healthy real.",
        labels=["vip"],
    )
    vip_serving = GaugeMetricFamily(
        "xlb_vip_reals_up", "Reals of the VIP that pass their check.", labels=["vip"]
    )
    vip_min = GaugeMetricFamily(
        "xlb_vip_min_healthy_reals",
        "Reals that must be up for the VIP to count as serving: [bgp] min_healthy "
        "(below it the VIP is withdrawn), else 1.",
        labels=["vip"],
    )
    for vip, entry in sorted(_vip_entries(health).items()):
        if "healthy" in entry:
            vip_healthy.add_metric([vip], 1.0 if entry["healthy"] else 0.0)
        if "unhealthy_transitions" in entry:
            vip_unhealthy.add_metric([vip], entry["unhealthy_transitions"])
        serving = entry.get("serving", entry.get("reals_up"))
        if isinstance(serving, int | float):
            vip_serving.add_metric([vip], serving)
        if isinstance(entry.get("min_healthy"), int):
            vip_min.add_metric([vip], entry["min_healthy"])
        for real, state in sorted(_real_entries(entry).items()):
            labels = [vip, real]
            up = state.get("state", state.get("up"))
            if up in ("up", "down", True, False):  # "unchecked": no check, no state
                real_up.add_metric(labels, 1.0 if up in ("up", True) else 0.0)
            weight = state.get("weight")
            if isinstance(weight, int) and not isinstance(weight, bool):
                configured_weight.add_metric(labels, weight)
            for key, to in (("transitions_up", "up"), ("transitions_down", "down")):
                if key in state:
                    transitions.add_metric([*labels, to], state[key])
            for key, result in (("probes_ok", "ok"), ("probes_failed", "failed")):
                if key in state:
                    probes.add_metric([*labels, result], state[key])
    yield from (vip_healthy, vip_unhealthy, vip_serving, vip_min, real_up, configured_weight)
    yield from (transitions, probes)
    service = health.get("service")
    if isinstance(service, Mapping):
        events = CounterMetricFamily(
            "xlb_service_events",
            "Events of the xlb serve daemon (reloads, real_up, real_down, ...).",
            labels=["event"],
        )
        for event, count in sorted(service.items()):
            if isinstance(count, int | float):
                events.add_metric([str(event)], count)
        yield events
    probe_path = health.get("probe_path")
    if isinstance(probe_path, Mapping):
        hc = CounterMetricFamily(
            "xlb_healthcheck_packets",
            "Health-check probe packets seen by the tc egress program, by outcome.",
            labels=["outcome"],
        )
        for outcome, count in sorted(probe_path.items()):
            if isinstance(count, int | float):
                hc.add_metric([str(outcome)], count)
        yield hc
    bgp = health.get("bgp")
    if isinstance(bgp, Mapping):
        yield from _bgp_metrics(bgp)
    config = health.get("config")
    if isinstance(config, Mapping):
        yield from _config_metrics(config)


def _config_metrics(config: Mapping[str, Any]) -> Iterator[Metric]:
    """Whether the daemon runs its file (`Service.config_state()`)."""
    yield GaugeMetricFamily(
        "xlb_config_last_reload_successful",
        "1 if the last reload applied the file (or none happened yet), 0 if it was rejected "
        "(the daemon runs the configuration before it).",
        value=1.0 if config.get("last_reload_ok", True) else 0.0,
    )
    loaded = config.get("loaded_time")
    if isinstance(loaded, int | float):
        yield GaugeMetricFamily(
            "xlb_config_last_reload_success_timestamp_seconds",
            "When the running configuration was read (start, or the last applied reload).",
            value=float(loaded),
        )
    yield GaugeMetricFamily(
        "xlb_config_file_changed",
        "1 while the file holds bytes no reload has read (an edit the daemon has not picked "
        "up), else 0.",
        value=1.0 if config.get("file_changed") else 0.0,
    )


def _bgp_metrics(bgp: Mapping[str, Any]) -> Iterator[Metric]:
    """Announcement state (`Service.bgp_state()`): per VIP, per neighbour."""
    announced = GaugeMetricFamily(
        "xlb_bgp_vip_announced",
        "1 if this node announces the VIP's address over BGP, 0 if it is withdrawn "
        "(too few healthy reals, a drain, or no first health results yet).",
        labels=["vip"],
    )
    for vip, on in sorted(dict(bgp.get("vips", {})).items()):
        announced.add_metric([str(vip)], 1.0 if on else 0.0)
    sessions = GaugeMetricFamily(
        "xlb_bgp_session_established",
        "1 if the BGP session with the neighbour is established; `state` is the engine's word.",
        labels=["neighbor", "state"],
    )
    for neighbor, state in sorted(dict(bgp.get("neighbors", {})).items()):
        up = str(state).lower() in ("established", "up")
        sessions.add_metric([str(neighbor), str(state)], 1.0 if up else 0.0)
    yield announced
    yield sessions
    yield GaugeMetricFamily(
        "xlb_bgp_draining", "1 while the node is drained (`xlb node drain`).",
        value=1.0 if bgp.get("draining") else 0.0,
    )  # fmt: skip


def _vip_entries(health: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """`Service.health()` is keyed by VIP; `Service.metrics()` has it under "vips"."""
    vips = health.get("vips", health)
    if not isinstance(vips, Mapping):
        return {}
    return {str(k): v for k, v in vips.items() if isinstance(v, Mapping)}


def _real_entries(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    reals = entry.get("reals", {})
    if isinstance(reals, Mapping):
        return {str(k): v for k, v in reals.items() if isinstance(v, Mapping)}
    if isinstance(reals, list):  # [{"address": ..., "state": ...}, ...]
        return {str(r.get("address", r.get("real"))): r for r in reals if isinstance(r, Mapping)}
    return {}


# ========================================================= control plane


class UpdateMetrics:
    """Counts the balancer's changes (a Balancer observer): ring swaps per
    VIP, changes per operation and result, and how long they took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ring_updates = Counter(
            "xlb_ring_updates",
            "Maglev rings swapped in by this control plane, per VIP.",
            ["vip"],
            registry=registry,
        )
        self.updates = Counter(
            "xlb_updates",
            "Changes made to the data plane by this control plane, per operation and result.",
            ["op", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "xlb_update_duration_seconds",
            "Time one change of the data plane took (validation, Maglev, map writes).",
            ["op"],
            buckets=UPDATE_BUCKETS,
            registry=registry,
        )

    def __call__(self, event: UpdateEvent) -> None:
        self.updates.labels(event.op, "ok" if event.ok else "error").inc()
        self.duration.labels(event.op).observe(event.seconds)
        if event.ring_swaps and event.vip is not None:
            self.ring_updates.labels(str(event.vip)).inc(event.ring_swaps)


# ================================================================ server


def parse_address(address: str) -> tuple[str, int]:
    """ "HOST:PORT", "[V6]:PORT" or ":PORT" (every IPv4 address) -> (host, port)."""
    try:
        return parse_listen_address(address)
    except ConfigError as exc:
        raise ConfigError(f"invalid metrics address: {exc}") from None


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """The HTTP endpoint (GET /metrics) and what feeds it; `close()` stops it."""

    def __init__(
        self,
        balancer: Balancer,
        address: str = DEFAULT_ADDRESS,
        health_source: HealthSource | None = None,
    ) -> None:
        host, port = parse_address(address)
        self.balancer = balancer
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = BalancerCollector(balancer, health_source)
        self.registry.register(self.collector)
        self.updates = UpdateMetrics(self.registry)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._httpd = make_server(
                host, port, make_wsgi_app(self.registry), server_class, _Handler
            )
        except OSError as exc:
            raise XlbError(f"cannot serve metrics on {address}: {exc.strerror}") from exc
        bound = self._httpd.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        balancer.add_observer(self.updates)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="xlb-metrics", daemon=True
        )
        self._thread.start()
        self._discovery = self._announce()
        log.info("metrics on http://%s/metrics", self.address)

    @property
    def address(self) -> str:
        """Where it listens (0.0.0.0 or [::] when bound to every address)."""
        return _host_port(self.host, self.port)

    @property
    def local_address(self) -> str:
        """Where a client on this host reaches it."""
        return _host_port(_LOOPBACK_OF_ANY.get(self.host, self.host), self.port)

    @property
    def url(self) -> str:
        """The URL to scrape from this host."""
        return f"http://{self.local_address}/metrics"

    def _announce(self) -> Path | None:
        """Write where we listen, so `xlb list` on this host finds health states."""
        if self.balancer.pin_dir is None:
            return None
        path = discovery_file(self.balancer.pin_dir)
        info = {
            "pid": os.getpid(),
            "address": self.local_address,
            "pin_dir": str(self.balancer.pin_dir),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(path)
        except OSError as exc:  # not fatal: only the CLI's health column needs it
            log.warning("cannot write %s: %s", path, exc)
            return None
        return path

    def close(self) -> None:
        self.balancer.remove_observer(self.updates)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self._discovery is not None:
            with contextlib.suppress(OSError):
                info = json.loads(self._discovery.read_text())
                if info.get("pid") == os.getpid():
                    self._discovery.unlink()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def discovery_file(pin_dir: str | Path) -> Path:
    """Where the metrics server of the data plane pinned at `pin_dir` announces itself."""
    key = str(Path(pin_dir)).strip("/").replace("/", "_") or "root"
    return DISCOVERY_DIR / f"{key}.json"


def start_metrics_server(
    balancer: Balancer,
    address: str = DEFAULT_ADDRESS,
    health_source: HealthSource | None = None,
) -> MetricsServer:
    """Serve the balancer's metrics on http://ADDRESS/metrics in a thread.

    address: "HOST:PORT", "[V6]:PORT" or ":PORT" (every IPv4 address);
        127.0.0.1:9077 by default: counters are not for the internet; port
        0 picks a free port, see `.port`.
    health_source: a callable returning the health snapshot (e.g. the
        daemon's `Service.health`), called at each scrape; None: no health
        metrics.
    """
    return MetricsServer(balancer, address, health_source)


__all__ = [
    "DEFAULT_ADDRESS",
    "BalancerCollector",
    "HealthSource",
    "MetricsServer",
    "UpdateMetrics",
    "discovery_file",
    "parse_address",
    "start_metrics_server",
]
