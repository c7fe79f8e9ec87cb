"""What is announced follows health (a pure policy), and what the engines
are told: ExaBGP's configuration and API commands, BIRD's include."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterable, Mapping

from xlb.announce import (
    AnnouncementDriver,
    Announcer,
    Destination,
    bird_include_text,
    exabgp_config_text,
    exabgp_route_command,
    prefix_of,
    prefixes_to_announce,
)
from xlb.config import BgpSettings, Neighbor, RouteAttributes, VipConfig
from xlb.model import Real, Vip

V4 = ipaddress.ip_address("10.100.0.1")
V6 = ipaddress.ip_address("2001:db8::1")
WEB = Vip(V4, 80, "tcp")
TLS = Vip(V4, 443, "tcp")
WEB6 = Vip(V6, 80, "tcp")
ROUTE = RouteAttributes(communities=("65000:1",), med=10, local_pref=200)
NO_ROUTE = RouteAttributes()
VIPS = (
    VipConfig(WEB, (Real("10.0.1.1"), Real("10.0.1.2")), route=ROUTE),
    VipConfig(TLS, (Real("10.0.1.1"),), route=ROUTE),
    VipConfig(WEB6, (Real("2001:db8:1::1"),)),
)


def test_nothing_is_announced_before_the_first_health_results() -> None:
    assert prefixes_to_announce(VIPS, None, min_healthy=1) == {}


def test_an_address_is_announced_while_min_healthy_reals_are_up() -> None:
    up = {WEB: 2, TLS: 1, WEB6: 1}
    assert prefixes_to_announce(VIPS, up, 1) == {V4: ROUTE, V6: RouteAttributes()}
    assert prefixes_to_announce(VIPS, up, 2) == {V4: ROUTE}
    assert prefixes_to_announce(VIPS, up, 3) == {}


def test_fewer_than_min_healthy_withdraws() -> None:
    assert prefixes_to_announce(VIPS, {WEB: 0, TLS: 0, WEB6: 1}, 1) == {V6: RouteAttributes()}


def test_one_healthy_port_keeps_the_address() -> None:
    """Port 443's reals all down must not take port 80 of the same address away."""
    assert prefixes_to_announce(VIPS, {WEB: 2, TLS: 0, WEB6: 0}, 1) == {V4: ROUTE}


def test_a_vip_without_results_yet_is_not_announced() -> None:
    assert prefixes_to_announce(VIPS, {WEB: 1}, 1) == {V4: ROUTE}


def test_a_drain_withdraws_everything() -> None:
    assert prefixes_to_announce(VIPS, {WEB: 2, TLS: 1, WEB6: 1}, 1, draining=True) == {}


def test_prefixes_are_host_routes() -> None:
    assert (prefix_of(V4), prefix_of(V6)) == ("10.100.0.1/32", "2001:db8::1/128")


def test_a_prefix_vip_announces_its_prefix() -> None:
    """A prefix VIP is an anycast range: the node announces the range."""
    ranged = Vip("10.101.0.0/24", 80, "tcp")
    ranged6 = Vip("2001:db8:101::/64", 0, "udp")
    vips = (
        *VIPS,
        VipConfig(ranged, (Real("10.0.1.1"),)),
        VipConfig(ranged6, (Real("2001:db8:1::1"),)),
    )
    wanted = prefixes_to_announce(vips, {WEB: 1, ranged: 1, ranged6: 1}, 1)
    assert wanted == {V4: ROUTE, ranged.network: RouteAttributes(), ranged6.network: NO_ROUTE}
    assert [prefix_of(d) for d in wanted] == ["10.100.0.1/32", "10.101.0.0/24", "2001:db8:101::/64"]
    text = bird_include_text(wanted)
    v4, v6 = text.split("protocol static ")[1:]
    assert v4.index("route 10.100.0.1/32") < v4.index("route 10.101.0.0/24 blackhole;")
    assert "route 2001:db8:101::/64 blackhole;" in v6
    command = exabgp_route_command("announce", ranged.network, RouteAttributes(), SETTINGS)
    assert command.startswith("announce route 10.101.0.0/24 next-hop self")


SETTINGS = BgpSettings(
    local_as=65001,
    router_id=ipaddress.IPv4Address("10.0.0.1"),
    neighbors=(
        Neighbor(ipaddress.ip_address("10.0.0.254"), 65000, hold_time=3, password='p"w'),
        Neighbor(
            ipaddress.ip_address("fd00::fe"),
            65000,
            local_address=ipaddress.ip_address("fd00::1"),
        ),
    ),
    next_hop_v6=ipaddress.IPv6Address("fd00::1"),
)


def test_exabgp_configuration_has_one_block_per_neighbour() -> None:
    text = exabgp_config_text(SETTINGS)
    assert text.count("neighbor ") == 2
    first, second = text.split("neighbor ")[1:]
    assert "10.0.0.254 {" in first and "peer-as 65000;" in first and "hold-time 3;" in first
    assert 'md5-password "p\\"w";' in first and "local-address" not in first
    assert "local-address fd00::1;" in second and "hold-time 90;" in second
    assert "router-id 10.0.0.1;" in second and "local-as 65001;" in second


def test_exabgp_commands_carry_the_attributes_and_next_hop() -> None:
    assert exabgp_route_command("announce", V4, ROUTE, SETTINGS) == (
        "announce route 10.100.0.1/32 next-hop self community [65000:1] med 10 local-preference 200"
    )
    assert exabgp_route_command("withdraw", V6, RouteAttributes(), SETTINGS) == (
        "withdraw route 2001:db8::1/128 next-hop fd00::1"
    )


def test_bird_include_has_a_static_protocol_per_family() -> None:
    text = bird_include_text({V4: ROUTE, V6: RouteAttributes()})
    v4, v6 = text.split("protocol static ")[1:]
    assert v4.startswith("xlb_vips4 {\n    ipv4;\n")
    assert (
        "route 10.100.0.1/32 blackhole { bgp_community.add((65000,1)); bgp_med = 10; "
        "bgp_local_pref = 200; };" in v4
    )
    assert v6.startswith("xlb_vips6 {\n    ipv6;\n")
    assert "route 2001:db8::1/128 blackhole;" in v6


def test_an_empty_bird_include_still_defines_both_protocols() -> None:
    text = bird_include_text({})
    assert "route" not in text.split("Do not edit.")[1]
    assert "xlb_vips4" in text and "xlb_vips6" in text


class ThreadRecorder(Announcer):
    """An engine that records the thread each call ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[str, threading.Thread] = {}
        self.told: list[dict[Destination, RouteAttributes]] = []

    def start(self) -> None:
        self.threads["start"] = threading.current_thread()

    def _apply(
        self,
        announce: Mapping[Destination, RouteAttributes],
        withdraw: Iterable[Destination],
        wanted: Mapping[Destination, RouteAttributes],
    ) -> None:
        self.threads["update"] = threading.current_thread()
        self.told.append(dict(wanted))

    def sessions(self) -> dict[str, str]:
        self.threads["sessions"] = threading.current_thread()
        return {"10.0.0.254": "established"}

    def close(self) -> None:
        self.threads["close"] = threading.current_thread()


def test_the_driver_runs_the_engine_in_one_thread_that_outlives_its_calls() -> None:
    """ExaBGP's PR_SET_PDEATHSIG follows the thread that forked it: the
    driver's start must run in a thread that is still alive after it, and
    every later call in that same thread, off the event loop's."""
    bgp = BgpSettings(
        local_as=65001,
        router_id=ipaddress.IPv4Address("10.0.0.1"),
        neighbors=(Neighbor(ipaddress.ip_address("10.0.0.254"), 65000),),
    )
    engine = ThreadRecorder()
    driver = AnnouncementDriver(bgp, engine)
    assert driver.sessions == {"10.0.0.254": "down"}

    async def drive() -> threading.Thread:
        await driver.start()
        await asyncio.sleep(0.01)
        assert engine.threads["start"].is_alive(), "the thread that started the engine ended"
        await driver.update({V4: ROUTE})
        await driver.update({})
        await driver.refresh_sessions()
        await driver.close()
        return threading.current_thread()

    loop_thread = asyncio.run(drive())
    threads = set(engine.threads.values())
    assert len(threads) == 1 and loop_thread not in threads, engine.threads
    assert engine.told == [{V4: ROUTE}, {}]
    assert driver.announced == {} and driver.sessions == {"10.0.0.254": "down"}
    assert not engine.threads["start"].is_alive()  # close() ends it
