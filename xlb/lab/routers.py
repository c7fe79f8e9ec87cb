"""The lab's real routing engines: BIRD + ExaBGP (`router="bird"`), keepalived (`router="vrrp"`).

With `router="bird"` the router namespace runs BIRD 2 with one BGP session
per balancer node (over IPv4, carrying the IPv4 and the IPv6 VIP) and a
kernel protocol with `merge paths on`: the ECMP route to each VIP is the one
BIRD installs from what the nodes announce. Each balancer node runs an
`xlb.announce.ExaBgpAnnouncer` in its namespace.

With `router="vrrp"` the two balancer nodes share one L2 segment with the
router (a bridge in the router namespace) and run keepalived (VRRP v3,
`advert_int 0.1`, one instance per family in a sync group); the router has a
static route for the VIPs to the floating next hop. keepalived's `notify`
script starts, on MASTER, a watcher that removes the floating address when
keepalived's VRRP process dies: a kill -9 of keepalived would otherwise
leave the address on a dead node.

Daemons that must die with the lab (BIRD, ExaBGP, keepalived) are started
from `OwnerThread`, a thread that lives as long as the lab: the kernel ties
PR_SET_PDEATHSIG to the thread that forked the child.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from ..model import IPAddress

T = TypeVar("T")

RouterKind = Literal["static", "bird", "vrrp"]
ROUTER_KINDS: tuple[RouterKind, ...] = ("static", "bird", "vrrp")

ROUTER_AS = 65000
NODE_AS = 65001
#: BGP timers of the lab: a dead session (no TCP close) is noticed in 3 s.
HOLD_TIME_S = 3
#: The floating next hop of the VRRP pair (on the balancers' shared segment).
FLOATING_V4 = ipaddress.IPv4Address("10.20.0.100")
FLOATING_V6 = ipaddress.IPv6Address("fd00:20::100")
VRRP_PREFIX4, VRRP_PREFIX6 = 24, 64
VRRP_ROUTER_IDS = {4: 51, 6: 52}
VRRP_ADVERT_INT = "0.1"
#: keepalived priorities: the first node is the active one at start.
VRRP_PRIORITIES = (150, 100)


class OwnerThread:
    """A thread that lives as long as the lab and runs what it is given.

    The lab's daemons are started here (`run(fn)`), so their parent thread
    outlives them and PR_SET_PDEATHSIG fires only when the lab's process
    dies (or the thread is stopped, after the daemons were closed)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)

    def run(self, fn: Callable[[], T], timeout: float = 120.0) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future.result(timeout)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(10)


# =================================================================== BIRD


def bird_router_config(
    router_id: ipaddress.IPv4Address,
    log_path: str,
    peers: Iterable[tuple[str, ipaddress.IPv4Address, ipaddress.IPv4Address]],
) -> str:
    """The router's BIRD: kernel protocols that merge equal paths (the ECMP
    route), one BGP protocol per balancer node (name, local, neighbour)."""
    lines = [
        f"router id {router_id};",
        f'log "{log_path}" all;',
        "protocol device { }",
        "protocol kernel k4 { ipv4 { export all; }; merge paths on; }",
        "protocol kernel k6 { ipv6 { export all; }; merge paths on; }",
    ]
    for name, local, neighbor in peers:
        lines += [
            f"protocol bgp {name} {{",
            f"    local {local} as {ROUTER_AS};",
            f"    neighbor {neighbor} as {NODE_AS};",
            f"    hold time {HOLD_TIME_S};",
            "    connect retry time 1;",
            # After a hold timer expiry (a frozen node) BIRD waits `error wait
            # time` (60 s by default) before it takes the node back.
            "    error wait time 1, 5;",
            "    ipv4 { import all; export none; };",
            "    ipv6 { import all; export none; };",
            "}",
        ]
    return "\n".join(lines) + "\n"


def route_hops(routes: list[dict[str, Any]]) -> set[str]:
    """The next hops of `ip -json route show PREFIX` (one route or multipath)."""
    hops: set[str] = set()
    for route in routes:
        if "gateway" in route:
            hops.add(str(route["gateway"]))
        for nexthop in route.get("nexthops", []):
            if "gateway" in nexthop:
                hops.add(str(nexthop["gateway"]))
    return hops


# ============================================================ keepalived

# keepalived runs it as `notify.sh ADDRESS/PREFIX` + INSTANCE NAME STATE PRIORITY.
NOTIFY_SCRIPT = """#!/bin/sh
# keepalived's notify script for one VRRP instance of a lab balancer node.
# On MASTER it starts a watcher that removes the floating address when
# keepalived's VRRP process (our parent) dies: keepalived removes it itself on
# an orderly stop, but a kill -9 would leave it on a dead node.
address=$1 name=$3 state=$4
watch="{directory}/watch-$name.pid"
stop_watch() {{
    if [ -f "$watch" ]; then kill "$(cat "$watch")" 2>/dev/null; rm -f "$watch"; fi
}}
stop_watch
if [ "$state" = MASTER ]; then
    keepalived=$PPID
    setsid sh -c '
        while read -r _ _ s _ < /proc/'"$keepalived"'/stat && [ "$s" != Z ]; do
            sleep 0.02
        done 2>/dev/null
        ip addr del '"$address"' dev {interface}' >/dev/null 2>&1 &
    echo $! > "$watch"
fi
"""


def keepalived_config(
    role: str,
    priority: int,
    interface: str,
    notify: str,
    floating: Iterable[tuple[int, IPAddress, int]],
) -> str:
    """VRRP v3, one instance per family (keepalived has one family per
    instance) in a sync group so both move together."""
    floating = list(floating)
    lines = [
        "global_defs {",
        f"    router_id {role}",
        "    vrrp_version 3",
        # Adverts every 0.1 s should not wait behind a busy machine's other
        # work (a late one makes the backup take over for nothing): a better
        # nice value. Not vrrp_rt_priority: with it, keepalived's RLIMIT_RTTIME
        # killed its VRRP process (signal 9, respawn delayed 16 s) in 3 of 8
        # lab starts.
        "    vrrp_priority -10",
        "    script_user root",
        "    enable_script_security",
        "}",
        "vrrp_sync_group lab {",
        "    group { " + " ".join(f"v{family}" for family, _, _ in floating) + " }",
        "}",
    ]
    for family, address, prefix in floating:
        lines += [
            f"vrrp_instance v{family} {{",
            "    state BACKUP",
            f"    interface {interface}",
            f"    virtual_router_id {VRRP_ROUTER_IDS[family]}",
            f"    priority {priority}",
            f"    advert_int {VRRP_ADVERT_INT}",
            f"    virtual_ipaddress {{ {address}/{prefix} dev {interface} }}",
            f'    notify "{notify} {address}/{prefix}"',
            "}",
        ]
    return "\n".join(lines) + "\n"
