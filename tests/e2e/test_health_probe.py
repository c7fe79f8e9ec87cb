"""The probe path: a marked socket to VIP:port reaches the one real its mark
names, through the tunnel (bpf/healthcheck.bpf.c at tc egress), and only
through it: a real whose decap is gone fails the probe while its own
address still answers."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from xlb import netns
from xlb.config import Check, CheckTiming
from xlb.health import ProbePath, ProbeResult, Target, Tunnel, probe
from xlb.lab import Lab

FAST = CheckTiming(interval=1.0, timeout=1.0)


@pytest.fixture(scope="module", params=["routed", "bridged"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """routed: probes go to the router's MAC (gateway_mac); bridged: to each
    real's own MAC (the target's), as the balancer sends there."""
    with Lab(reals=2, topology=request.param) as lab:
        yield lab


def mac_of(lab: Lab, real: Any) -> str | None:
    for node in lab.reals:
        if real in (node.ipv4, node.ipv6):
            return node.mac if lab.topology == "bridged" else None
    return None


def run_in_balancer(lab: Lab, job: Any) -> Any:
    """Run `job(path)` on an event loop inside the balancer's namespace."""
    node = lab.balancers[0]

    async def main() -> Any:
        path = ProbePath(node.interface, node.pin_dir, path_mtu=lab.server_mtu)
        try:
            return await job(path)
        finally:
            path.close()

    with netns.enter(node.netns):
        return asyncio.run(main())


async def probe_via(
    lab: Lab, path: ProbePath, real: ipaddress.IPv4Address | ipaddress.IPv6Address,
    check: Check, vip: Any, port: int, gue: bool = False,
) -> ProbeResult:  # fmt: skip
    """Probe (vip, port) through the tunnel to `real`, as the service would.

    The tunnel stays acquired until the job ends (ProbePath.close): the
    probe's last packet (its connection's final ACK) may leave after probe()
    returns, and with the mark already released it would be counted as
    drop_no_target (the service, too, keeps a target's mark while it checks)."""
    mac = mac_of(lab, real)
    mark = path.acquire(Tunnel(real, mac, gue))
    return await probe(Target(real, vip, port, check, mac, gue), mark)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("gue", [False, True], ids=["ipip", "gue"])
def test_http_probe_to_the_vip_reaches_the_chosen_real(lab: Lab, family: int, gue: bool) -> None:
    """Each real answers the probe marked for it: the body names the real."""

    async def job(path: ProbePath) -> dict[str, ProbeResult]:
        results = {}
        for real in lab.reals:
            check = Check("http", timing=FAST, expect_body=real.role)
            results[real.role] = await probe_via(
                lab, path, real.address(family), check, lab.vip_address(family), lab.tcp_port, gue
            )
        results["counters"] = path.counters()  # type: ignore[assignment]
        return results

    results = run_in_balancer(lab, job)
    counters = results.pop("counters")
    assert results == {real.role: ProbeResult(True) for real in lab.reals}
    assert counters[f"encap_v{family}"] >= 2 * len(lab.reals)  # SYN, ACK, request... per real
    assert counters["drop_no_target"] == counters["drop_encap"] == 0
    if gue:
        assert all(c["gue"] > 0 for c in lab.decap_counters().values())


@pytest.mark.parametrize("family", [4, 6])
def test_udp_and_tcp_probes(lab: Lab, family: int) -> None:
    async def job(path: ProbePath) -> list[ProbeResult]:
        real, vip = lab.reals[0].address(family), lab.vip_address(family)
        udp = Check("udp", timing=FAST, send="hello", expect=f"{lab.reals[0].role}|hello")
        return [
            await probe_via(lab, path, real, udp, vip, lab.udp_port),
            await probe_via(lab, path, real, Check("tcp", timing=FAST), vip, lab.tcp_port),
            await probe_via(lab, path, real, Check("tcp", timing=FAST), vip, 1),  # nothing listens
            await probe_via(lab, path, real, Check("udp", timing=FAST, send="x"), vip, 1),
        ]

    ok_udp, ok_tcp, refused_tcp, refused_udp = run_in_balancer(lab, job)
    assert ok_udp == ok_tcp == ProbeResult(True)
    assert not refused_tcp.ok and "ECONNREFUSED" in refused_tcp.reason
    assert not refused_udp.ok and "ECONNREFUSED" in refused_udp.reason


def test_probe_fails_when_only_the_vip_path_is_broken(lab: Lab) -> None:
    """No decap on the real: the tunnelled probe fails, a direct one passes."""
    real = lab.reals[1]
    assert real.decap is not None
    real.decap.remove_address(real.ipv4)  # the real no longer strips tunnels to it
    try:

        async def job(path: ProbePath) -> tuple[ProbeResult, ProbeResult]:
            via_vip = Check("http", timing=CheckTiming(interval=0.5, timeout=0.5))
            direct = Check("http", timing=via_vip.timing, via_vip=False)
            tunnelled = await probe_via(lab, path, real.ipv4, via_vip, lab.vip4, lab.tcp_port)
            own = await probe(Target(real.ipv4, real.ipv4, lab.tcp_port, direct), 0)
            return tunnelled, own

        tunnelled, own = run_in_balancer(lab, job)
    finally:
        real.decap.add_address(real.ipv4)
    assert not tunnelled.ok and "timeout" in tunnelled.reason
    assert own == ProbeResult(True)


def test_marked_packet_without_target_is_dropped_not_leaked(lab: Lab) -> None:
    async def job(path: ProbePath) -> tuple[ProbeResult, dict[str, int]]:
        check = Check("tcp", timing=CheckTiming(interval=0.3, timeout=0.3))
        mark = path.acquire(Tunnel(lab.reals[0].ipv4, None, False))
        path.release(Tunnel(lab.reals[0].ipv4, None, False))  # the mark is gone again
        result = await probe(Target(lab.reals[0].ipv4, lab.vip4, lab.tcp_port, check), mark)
        return result, path.counters()

    result, counters = run_in_balancer(lab, job)
    assert not result.ok
    assert counters["drop_no_target"] >= 1


def test_command_probe_gets_the_target_in_its_arguments(lab: Lab) -> None:
    async def job(path: ProbePath) -> tuple[ProbeResult, ProbeResult]:
        script = ("/bin/sh", "-c", 'test "$1" = "{real}" && test "$XLB_VIP" = "{vip}"', "-")
        good = Check("command", timing=FAST, command=(*script, "{real}"))
        slow = Check("command", timing=CheckTiming(0.3, 0.3), command=("sleep", "5"))
        real = lab.reals[0].ipv4
        return await probe(Target(real, lab.vip4, 80, good), 0), await probe(
            Target(real, lab.vip4, 80, slow), 0
        )

    good, slow = run_in_balancer(lab, job)
    assert good == ProbeResult(True)
    assert not slow.ok and "timeout" in slow.reason


def test_fib_mode_resolves_the_next_hop_towards_the_real(lab: Lab) -> None:
    """No MAC anywhere, fib_lookup on: bpf_redirect_neigh() resolves the next
    hop of the outer packet (the real itself when bridged, the router when routed)."""
    before = lab.balancer.config
    lab.balancer.configure(replace(before, gateway_mac=None, fib_lookup=True))
    try:

        async def job(path: ProbePath) -> tuple[dict[str, ProbeResult], dict[str, int]]:
            results = {}
            for real in lab.reals:
                check = Check("http", timing=FAST, expect_body=real.role)
                tunnel = Tunnel(real.ipv4, None, False)
                mark = path.acquire(tunnel)
                target = Target(real.ipv4, lab.vip4, lab.tcp_port, check)
                results[real.role] = await probe(target, mark)
            return results, path.counters()

        results, counters = run_in_balancer(lab, job)
    finally:
        lab.balancer.configure(before)
    assert results == {real.role: ProbeResult(True) for real in lab.reals}
    assert counters["fib_redirect"] >= 2 * len(lab.reals)
