"""How fast the router stops sending to a node that leaves, against the BGP
hold timer.

Method: a lab (xlb/lab) with two `xlb serve` daemons behind BIRD
(`Lab(balancers=2, router="bird", serve=True)`: ExaBGP as each daemon's
child, hold time 3 s). Each figure is the time from the event to the
router's kernel route to both VIPs without the node, polled every 2 ms:

- `drain`: `xlb node drain` asked on the control socket (the daemon
  withdraws through ExaBGP's API pipe);
- `kill9`: kill -9 of `xlb serve`: ExaBGP dies with it (PR_SET_PDEATHSIG)
  and the kernel closes the TCP session;
- `frozen` (the baseline): SIGSTOP of `xlb serve` and its ExaBGP, a node
  that hangs: nothing closes, BIRD's hold timer ends the session.

With `router="vrrp"` (keepalived, advert_int 0.1): `vrrp`, the time from
killing the active node's keepalived (and blackholing it) to the floating
next hop answering from the backup (`Lab.fail_over`).

Ratios are each figure over the frozen baseline of the same run. BFD (the
node's BIRD, 100 ms x 3) is measured by
tests/e2e/test_serve_bgp.py::test_bfd_drops_a_frozen_node_long_before_the_hold_timer
(245-295 ms); it needs a BIRD on the node, which this lab does not run.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any

from xlb import control
from xlb.lab import Lab
from xlb.lab.state import pids_in_netns, process_name

from .common import log

POLL_S = 0.002
DEADLINE_S = 60.0


def _routes_over(lab: Lab, roles: list[str]) -> bool:
    return all(
        lab.router_hops(f) == {str(lab.balancer_node(r).address(f)) for r in roles} for f in (4, 6)
    )


def _until_routes(lab: Lab, roles: list[str]) -> float:
    """Seconds until the router routes both VIPs over exactly `roles`."""
    started = time.monotonic()
    while not _routes_over(lab, roles):
        if time.monotonic() - started > DEADLINE_S:
            raise TimeoutError(f"the router's routes never went over {roles}")
        time.sleep(POLL_S)
    return time.monotonic() - started


def _exabgp(lab: Lab, role: str) -> list[int]:
    ns = lab.balancer_node(role).netns
    return [p for p in pids_in_netns(ns) if "exabgp" in (process_name(p) or "").lower()]


def _restart(lab: Lab, role: str) -> None:
    daemon = lab.daemons[role]
    if daemon.running:
        os.kill(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait(DEADLINE_S)
    lab.start_serve(role)
    _until_routes(lab, ["lb1", "lb2"])


def _drain(lab: Lab) -> float:
    daemon = lab.daemons["lb1"]
    started = time.monotonic()
    # The drain's own timeout is a field of the request, not the client's wait.
    control.request(daemon.control_socket, "drain", DEADLINE_S, {"timeout": 10, "quiet": 0.2})
    _until_routes(lab, ["lb2"])
    took = time.monotonic() - started
    daemon.ask("undrain")
    _until_routes(lab, ["lb1", "lb2"])
    return took


def _kill9(lab: Lab) -> float:
    daemon = lab.daemons["lb1"]
    started = time.monotonic()
    os.kill(daemon.process.pid, signal.SIGKILL)
    _until_routes(lab, ["lb2"])
    took = time.monotonic() - started
    daemon.process.wait(DEADLINE_S)
    _restart(lab, "lb1")
    return took


def _frozen(lab: Lab) -> float:
    daemon = lab.daemons["lb1"]
    frozen = [daemon.process.pid, *_exabgp(lab, "lb1")]
    started = time.monotonic()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        _until_routes(lab, ["lb2"])
        took = time.monotonic() - started
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    _restart(lab, "lb1")  # its session died while it slept: start clean
    return took


def _bgp_figures(repeats: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"drain": [], "kill9": [], "frozen": []}
    with Lab(reals=2, balancers=2, router="bird", serve=True) as lab:
        for node in lab.balancers:
            lab.start_serve(node)
        _until_routes(lab, ["lb1", "lb2"])
        for round_ in range(repeats):
            log(f"failover: BGP round {round_ + 1}/{repeats}")
            figures["drain"].append(_drain(lab))
            figures["kill9"].append(_kill9(lab))
            if round_ < max(1, repeats // 3):  # each costs a hold time
                figures["frozen"].append(_frozen(lab))
    return figures


def _vrrp_figures(repeats: int) -> list[float]:
    took = []
    for round_ in range(repeats):
        log(f"failover: VRRP round {round_ + 1}/{repeats}")
        with Lab(reals=1, balancers=2, router="vrrp") as lab:
            lab.add_default_services()
            took.append(lab.fail_over())
    return took


def run(quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 9
    figures = _bgp_figures(repeats)
    figures["vrrp"] = _vrrp_figures(2 if quick else 4)
    ms = {name: [round(v * 1000, 1) for v in values] for name, values in figures.items()}
    median = {name: round(statistics.median(values), 1) for name, values in ms.items()}
    baseline = median["frozen"]
    return {
        "method": "two xlb serve daemons behind BIRD (ExaBGP, hold time 3 s) in the lab; "
        "event -> the router's kernel routes without the node, polled every 2 ms; "
        "VRRP: keepalived advert_int 0.1, Lab.fail_over(); medians of each row",
        "ms": ms,
        "median_ms": median,
        "vs_hold_timer": {
            name: round(value / baseline, 3) for name, value in median.items() if name != "frozen"
        },
    }
