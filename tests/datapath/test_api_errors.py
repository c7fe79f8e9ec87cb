"""Wrong input to the Balancer: a typed error, and the maps as they were.

Every public method is called with what a caller may get wrong (None, text
where an object is expected, ints, bytes, floats, negative and huge numbers,
addresses that cannot work). Each call must raise an xlb error (or a
TypeError where Python would), never AttributeError, KeyError,
OverflowError, struct.error or a cffi error, and must leave every map
exactly as it found it.

Where the API takes a VIP, "ADDR:PORT/PROTO" text is taken too; where it
takes a real, an address is taken as a real of weight 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xlb import (
    Balancer,
    BalancerConfig,
    BpfError,
    ConfigError,
    ExistsError,
    Flow,
    NotFoundError,
    Real,
    Vip,
    VipFlags,
)
from xlb.balancer import UpdateEvent
from xlb.testing import GATEWAY_MAC, tcp_packet

VIP = Vip("10.200.0.1", 80, "tcp")
VIP_TEXT = "10.200.0.1:80/tcp"
VIP6 = Vip("2001:db8:200::1", 80, "tcp")
OTHER = Vip("10.200.0.2", 80, "tcp")
MISSING = Vip("10.200.0.99", 80, "tcp")
REALS = [Real("10.0.0.1"), Real("10.0.0.2", weight=2)]
HUGE = 2**200

# Every map the Balancer writes; `stats`' counters only change when packets run.
MAP_NAMES = [
    "vips",
    "reals",
    "config",
    "stats",
    "conn_v4",
    "conn_v6",
    "rings",  # inner map ids: which ring slots exist
    "vip_addrs",
    "vip_filter",
]
ARRAY_MAPS = {"reals", "config", "stats", "vip_filter"}


def dump_maps(lb: Balancer) -> dict[str, Any]:
    """Every entry of every map the control plane writes (as in
    test_control_plane.py, plus the maps add_vip also touches; read in
    batches: entry by entry, the 64 Ki-entry arrays take a second). Arrays
    compare as their bytes in index order; hash maps' entries sorted (a
    failed call that deleted and put back an entry may change their order)."""
    dumped: dict[str, Any] = {}
    for name in MAP_NAMES:
        table = lb.map(name)
        keys, values, count = table.lookup_batch()
        ks, vs = table.key_size, table.stored_value_size
        if name in ARRAY_MAPS:
            dumped[name] = bytes(values[: count * vs])
            continue
        dumped[name] = sorted(
            (keys[i * ks : (i + 1) * ks], values[i * vs : (i + 1) * vs]) for i in range(count)
        )
    return dumped


def program(lb: Balancer) -> Balancer:
    """`lb` with one v4 VIP of two reals and one empty v6 VIP."""
    lb.add_vip(VIP)
    lb.set_reals(VIP, REALS)
    lb.add_vip(VIP6)
    return lb


@pytest.fixture
def programmed(lb: Balancer) -> Balancer:
    return program(lb)


@pytest.fixture(scope="module")
def unchanged() -> Iterator[Balancer]:
    """One programmed Balancer for all the wrong calls: each must leave it
    as it was (which each case checks), so they can share it, and a load of
    the program (~0.7 s, the verifier) is paid once instead of 96 times."""
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=0))
    try:
        yield program(lb)
    finally:
        lb.close()


Call = Callable[[Balancer], Any]

# (call, expected error, text the message must contain). The argument types
# are wrong on purpose: each `type: ignore` below marks one such argument.
BAD_CALLS: dict[str, tuple[Call, type[BaseException], str]] = {
    # -- add_vip
    "add_vip(None)": (lambda lb: lb.add_vip(None), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "add_vip(int)": (lambda lb: lb.add_vip(80), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "add_vip(bytes)": (lambda lb: lb.add_vip(b"10.0.0.1:80"), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "add_vip(garbage text)": (lambda lb: lb.add_vip("10.0.0.1"), ConfigError, "invalid VIP"),
    "add_vip(0.0.0.0 text)": (lambda lb: lb.add_vip("0.0.0.0:80/tcp"), ConfigError, "unspecified"),
    "add_vip(multicast text)": (
        lambda lb: lb.add_vip("[ff02::1]:80/udp"),
        ConfigError,
        "multicast",
    ),
    "add_vip(existing)": (lambda lb: lb.add_vip(VIP_TEXT), ExistsError, "already exists"),
    "add_vip(flags=None)": (lambda lb: lb.add_vip(OTHER, None), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "add_vip(flags=-1)": (lambda lb: lb.add_vip(OTHER, -1), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "add_vip(flags=huge)": (lambda lb: lb.add_vip(OTHER, HUGE), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "add_vip(flags=float)": (lambda lb: lb.add_vip(OTHER, 1.0), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "add_vip(flags=text)": (lambda lb: lb.add_vip(OTHER, "gue"), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "add_vip(ring=None)": (lambda lb: lb.add_vip(OTHER, ring_size=None), ConfigError, "ring"),  # type: ignore[arg-type]
    "add_vip(ring=-7)": (lambda lb: lb.add_vip(OTHER, ring_size=-7), ConfigError, "ring"),
    "add_vip(ring=0)": (lambda lb: lb.add_vip(OTHER, ring_size=0), ConfigError, "ring"),
    "add_vip(ring=7.0)": (lambda lb: lb.add_vip(OTHER, ring_size=7.0), ConfigError, "ring"),  # type: ignore[arg-type]
    "add_vip(ring=True)": (lambda lb: lb.add_vip(OTHER, ring_size=True), ConfigError, "ring"),
    "add_vip(ring=text)": (lambda lb: lb.add_vip(OTHER, ring_size="7"), ConfigError, "ring"),  # type: ignore[arg-type]
    "add_vip(ring=huge prime)": (
        lambda lb: lb.add_vip(OTHER, ring_size=2**521 - 1),
        ConfigError,
        "at most",
    ),
    "add_vip(ring=huge)": (lambda lb: lb.add_vip(OTHER, ring_size=HUGE), ConfigError, "ring"),
    # -- set_vip_flags / remove_vip
    "set_vip_flags(None flags)": (
        lambda lb: lb.set_vip_flags(VIP, None),  # type: ignore[arg-type]
        ConfigError,
        "VIP flags",
    ),
    "set_vip_flags(huge)": (lambda lb: lb.set_vip_flags(VIP, HUGE), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "set_vip_flags(-1)": (lambda lb: lb.set_vip_flags(VIP, -1), ConfigError, "VIP flags"),  # type: ignore[arg-type]
    "set_vip_flags(None vip)": (
        lambda lb: lb.set_vip_flags(None, VipFlags.NONE),  # type: ignore[arg-type]
        ConfigError,
        "expected a Vip",
    ),
    "set_vip_flags(missing)": (
        lambda lb: lb.set_vip_flags(MISSING, VipFlags.NONE),
        NotFoundError,
        "no VIP",
    ),
    "remove_vip(None)": (lambda lb: lb.remove_vip(None), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "remove_vip(int)": (lambda lb: lb.remove_vip(5), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "remove_vip(missing text)": (
        lambda lb: lb.remove_vip("10.200.0.99:80/tcp"),
        NotFoundError,
        "no VIP",
    ),
    # -- add_real
    "add_real(None)": (lambda lb: lb.add_real(VIP, None), ConfigError, "expected a Real"),  # type: ignore[arg-type]
    "add_real(int)": (lambda lb: lb.add_real(VIP, 9), ConfigError, "expected a Real"),  # type: ignore[arg-type]
    "add_real(float)": (lambda lb: lb.add_real(VIP, 1.5), ConfigError, "expected a Real"),  # type: ignore[arg-type]
    "add_real(list)": (lambda lb: lb.add_real(VIP, REALS), ConfigError, "expected a Real"),  # type: ignore[arg-type]
    "add_real(bad bytes)": (lambda lb: lb.add_real(VIP, b"10.0.0"), ConfigError, "real address"),
    "add_real(bad text)": (lambda lb: lb.add_real(VIP, "10.0.0.x"), ConfigError, "real address"),
    "add_real(loopback)": (lambda lb: lb.add_real(VIP, "127.0.0.1"), ConfigError, "loopback"),
    "add_real(existing)": (lambda lb: lb.add_real(VIP, "10.0.0.1"), ExistsError, "already"),
    "add_real(v4 to v6 VIP)": (lambda lb: lb.add_real(VIP6, "10.0.0.9"), ConfigError, "IPv4"),
    "add_real(None vip)": (lambda lb: lb.add_real(None, "10.0.0.9"), ConfigError, "a Vip"),  # type: ignore[arg-type]
    "add_real(missing vip)": (lambda lb: lb.add_real(MISSING, "10.0.0.9"), NotFoundError, "no"),
    # -- set_reals
    "set_reals(None)": (lambda lb: lb.set_reals(VIP, None), ConfigError, "list of reals"),  # type: ignore[arg-type]
    "set_reals(int)": (lambda lb: lb.set_reals(VIP, 5), ConfigError, "list of reals"),  # type: ignore[arg-type]
    "set_reals(text)": (lambda lb: lb.set_reals(VIP, "10.0.0.9"), ConfigError, "list of reals"),
    "set_reals(bytes)": (lambda lb: lb.set_reals(VIP, b"\n\0\0\t"), ConfigError, "list of reals"),  # type: ignore[arg-type]
    "set_reals(a Real)": (lambda lb: lb.set_reals(VIP, REALS[0]), ConfigError, "list of reals"),  # type: ignore[arg-type]
    "set_reals([.., None])": (
        lambda lb: lb.set_reals(VIP, [Real("10.0.0.9"), None]),  # type: ignore[list-item]
        ConfigError,
        "expected a Real",
    ),
    "set_reals(twice)": (
        lambda lb: lb.set_reals(VIP, [Real("10.0.0.9"), "10.0.0.9"]),
        ConfigError,
        "twice",
    ),
    "set_reals(broadcast)": (
        lambda lb: lb.set_reals(VIP, ["10.0.0.9", "255.255.255.255"]),
        ConfigError,
        "broadcast",
    ),
    "set_reals(None vip)": (lambda lb: lb.set_reals(None, REALS), ConfigError, "a Vip"),  # type: ignore[arg-type]
    # -- remove_real / set_weight
    "remove_real(None)": (lambda lb: lb.remove_real(VIP, None), ConfigError, "real address"),  # type: ignore[arg-type]
    "remove_real(int)": (lambda lb: lb.remove_real(VIP, 1), ConfigError, "real address"),  # type: ignore[arg-type]
    "remove_real(missing)": (
        lambda lb: lb.remove_real(VIP, "10.0.0.99"),
        NotFoundError,
        "not in VIP",
    ),
    "set_weight(None)": (
        lambda lb: lb.set_weight(VIP, "10.0.0.1", None),  # type: ignore[arg-type]
        ConfigError,
        "weight None",
    ),
    "set_weight(-1)": (lambda lb: lb.set_weight(VIP, "10.0.0.1", -1), ConfigError, "weight -1"),
    "set_weight(huge)": (lambda lb: lb.set_weight(VIP, "10.0.0.1", HUGE), ConfigError, "weight"),
    "set_weight(float)": (lambda lb: lb.set_weight(VIP, "10.0.0.1", 2.0), ConfigError, "weight"),  # type: ignore[arg-type]
    "set_weight(True)": (lambda lb: lb.set_weight(VIP, "10.0.0.1", True), ConfigError, "weight"),
    "set_weight(text)": (lambda lb: lb.set_weight(VIP, "10.0.0.1", "2"), ConfigError, "weight"),  # type: ignore[arg-type]
    "set_weight(bad weight, missing real)": (
        lambda lb: lb.set_weight(VIP, "10.0.0.99", -1),
        ConfigError,
        "weight -1",
    ),
    "set_weight(None address)": (
        lambda lb: lb.set_weight(VIP, None, 1),  # type: ignore[arg-type]
        ConfigError,
        "real address",
    ),
    # -- reading a VIP
    "vip_flags(None)": (lambda lb: lb.vip_flags(None), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "ring_size(bytes)": (lambda lb: lb.ring_size(b"x"), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "reals(int)": (lambda lb: lb.reals(1), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "ring(missing)": (lambda lb: lb.ring(MISSING), NotFoundError, "no VIP"),
    "ring_shares(text)": (lambda lb: lb.ring_shares("nonsense"), ConfigError, "invalid VIP"),
    "stats(None)": (lambda lb: lb.stats(None), ConfigError, "expected a Vip"),  # type: ignore[arg-type]
    "real_stats(missing text)": (
        lambda lb: lb.real_stats("10.200.0.99:80"),
        NotFoundError,
        "no VIP",
    ),
    # -- configure
    "configure(None)": (lambda lb: lb.configure(None), ConfigError, "BalancerConfig"),  # type: ignore[arg-type]
    "configure(dict)": (lambda lb: lb.configure({"mtu": 0}), ConfigError, "BalancerConfig"),  # type: ignore[arg-type]
    # -- packets and lookups
    "run(text)": (lambda lb: lb.run("abc"), TypeError, "bytes"),  # type: ignore[arg-type]
    "run(None)": (lambda lb: lb.run(None), TypeError, "bytes"),  # type: ignore[arg-type]
    "run(int)": (lambda lb: lb.run(60), TypeError, "bytes"),  # type: ignore[arg-type]
    "run(empty)": (lambda lb: lb.run(b""), BpfError, "test run"),
    "predict(None)": (lambda lb: lb.predict(None), ConfigError, "expected a Flow"),  # type: ignore[arg-type]
    "predict(text)": (lambda lb: lb.predict("10.0.0.1"), ConfigError, "expected a Flow"),  # type: ignore[arg-type]
    "lookup_vip(None)": (lambda lb: lb.lookup_vip(None, 80, "tcp"), ConfigError, "address"),  # type: ignore[arg-type]
    "lookup_vip(port None)": (
        lambda lb: lb.lookup_vip("10.200.0.1", None, "tcp"),  # type: ignore[arg-type]
        ConfigError,
        "port",
    ),
    "lookup_vip(port huge)": (
        lambda lb: lb.lookup_vip("10.200.0.1", HUGE, "tcp"),
        ConfigError,
        "port",
    ),
    "lookup_vip(proto list)": (
        lambda lb: lb.lookup_vip("10.200.0.1", 80, []),  # type: ignore[arg-type]
        ConfigError,
        "'tcp' or 'udp'",
    ),
    "flows(None)": (lambda lb: lb.flows(None), ConfigError, "limit"),  # type: ignore[arg-type]
    "flows(-1)": (lambda lb: lb.flows(-1), ConfigError, "limit"),
    "flows(text)": (lambda lb: lb.flows("10"), ConfigError, "limit"),  # type: ignore[arg-type]
    "flows(float)": (lambda lb: lb.flows(1.5), ConfigError, "limit"),  # type: ignore[arg-type]
    # -- handle
    "map(None)": (lambda lb: lb.map(None), TypeError, "map name"),  # type: ignore[arg-type]
    "map(list)": (lambda lb: lb.map([]), TypeError, "map name"),  # type: ignore[arg-type]
    "map(unknown)": (lambda lb: lb.map("nope"), NotFoundError, "no map"),
    "add_observer(None)": (lambda lb: lb.add_observer(None), TypeError, "callable"),  # type: ignore[arg-type]
    "add_observer(int)": (lambda lb: lb.add_observer(5), TypeError, "callable"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_wrong_input_raises_a_typed_error_and_changes_no_map(
    unchanged: Balancer, name: str
) -> None:
    call, expected, text = BAD_CALLS[name]
    before = dump_maps(unchanged)
    reals_before = unchanged.reals(VIP)
    assert reals_before == REALS and unchanged.vips() == [VIP, VIP6]  # as programmed
    with pytest.raises(expected, match=text):
        call(unchanged)
    assert dump_maps(unchanged) == before
    assert unchanged.reals(VIP) == reals_before
    assert unchanged.vips() == [VIP, VIP6]


@pytest.mark.parametrize(
    "config", [None, 0, "", [], {"mtu": 1500}], ids=["None", "0", "empty", "list", "dict"]
)
def test_balancer_refuses_a_config_that_is_not_a_balancer_config(config: object) -> None:
    """`config=0` or `""` used to mean the defaults (falsy), anything else a
    ConfigError: now None alone means the defaults."""
    if config is None:
        Balancer(config=config).close()
        return
    with pytest.raises(ConfigError, match="BalancerConfig"):
        Balancer(config=config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"mode": None}, ConfigError),
        ({"mode": 1}, ConfigError),
        ({"interface": 5}, TypeError),
        ({"interface": "no-such-if0"}, NotFoundError),
        ({"pin_dir": 5}, TypeError),
        ({"object_path": 5}, TypeError),
        ({"object_path": "/nonexistent/xlb.bpf.o"}, NotFoundError),
    ],
)
def test_balancer_construction_errors_are_typed(
    kwargs: dict[str, object], expected: type[BaseException]
) -> None:
    with pytest.raises(expected):
        Balancer(**kwargs)  # type: ignore[arg-type]


# -------------------------------------------- text for a VIP, an address for a real


def test_add_real_takes_an_address_as_a_real_of_weight_one(programmed: Balancer) -> None:
    programmed.add_real(VIP, "10.0.0.9")
    assert Real("10.0.0.9") in programmed.reals(VIP)
    assert programmed.ring_shares(VIP)[Real("10.0.0.9").address] > 0


def test_set_reals_takes_addresses_and_reals_mixed(programmed: Balancer) -> None:
    programmed.set_reals(VIP, ["10.0.0.3", Real("10.0.0.4", weight=3)])
    assert programmed.reals(VIP) == [Real("10.0.0.3"), Real("10.0.0.4", weight=3)]
    programmed.set_reals(VIP6, ("2001:db8::7",))
    assert programmed.reals(VIP6) == [Real("2001:db8::7")]


def test_every_method_that_takes_a_vip_takes_its_text(programmed: Balancer) -> None:
    lb = programmed
    assert lb.vip_flags(VIP_TEXT) == VipFlags.NONE
    assert lb.ring_size(VIP_TEXT) == lb.ring_size(VIP)
    assert lb.reals(VIP_TEXT) == REALS
    assert lb.ring(VIP_TEXT) == lb.ring(VIP)
    assert lb.ring_shares(VIP_TEXT) == lb.ring_shares(VIP)
    assert lb.stats(VIP_TEXT) == lb.stats(VIP)
    assert lb.real_stats(VIP_TEXT) == lb.real_stats(VIP)
    lb.add_real(VIP_TEXT, "10.0.0.3")
    lb.set_weight(VIP_TEXT, "10.0.0.3", 4)
    lb.remove_real(VIP_TEXT, Real("10.0.0.1"))  # a Real names its address
    assert lb.reals(VIP) == [Real("10.0.0.2", weight=2), Real("10.0.0.3", weight=4)]
    lb.set_reals(VIP_TEXT, REALS)
    lb.set_vip_flags(VIP_TEXT, VipFlags.NO_SPORT)
    assert lb.vip_flags(VIP) == VipFlags.NO_SPORT
    lb.add_vip("[2001:db8:200::2]:0/udp", VipFlags.GUE)
    assert Vip("2001:db8:200::2", 0, "udp") in lb.vips()
    lb.remove_vip(VIP_TEXT)
    assert lb.vips() == [VIP6, Vip("2001:db8:200::2", 0, "udp")]


def test_observers_see_the_vip_a_text_named(programmed: Balancer) -> None:
    events: list[UpdateEvent] = []
    programmed.add_observer(events.append)
    programmed.add_real(VIP_TEXT, "10.0.0.3")
    with pytest.raises(ConfigError):
        programmed.add_real(VIP_TEXT, "127.0.0.1")
    assert [(e.op, e.vip, e.ok) for e in events] == [
        ("add_real", VIP, True),
        ("add_real", VIP, False),
    ]


# ------------------------------------------------ lookups of any destination


@pytest.mark.parametrize("address", ["0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1", "::1"])
def test_no_vip_matches_an_address_no_vip_can_have(programmed: Balancer, address: str) -> None:
    """A packet's destination may be anything: asking which VIP it matches,
    or where its flow would go, answers None (it used to raise after VIPs
    refused such addresses)."""
    assert programmed.lookup_vip(address, 80, "tcp") is None
    source = "10.9.9.9" if ":" not in address else "2001:db8:c::9"
    assert programmed.predict(Flow(source, address, 1000, 80)) is None


def test_flows_checks_its_limit_before_iteration(programmed: Balancer) -> None:
    packet = tcp_packet("198.51.100.1", "10.200.0.1", 1000, 80, flags="S")
    assert programmed.run(packet).action == "XDP_TX"
    assert len(list(programmed.flows(0))) == 0
    assert len(list(programmed.flows(1))) == 1


def test_upgrade_without_pins_fails_before_loading(lb: Balancer, tmp_path: Path) -> None:
    """No object is read when the handle has no pins to upgrade over."""
    with pytest.raises(ConfigError, match="pinned maps"):
        lb.upgrade(tmp_path / "not-an-object.o")


@pytest.mark.parametrize(
    ("path", "expected"),
    [(None, TypeError), (5, TypeError), ("/nonexistent/xlb.bpf.o", NotFoundError)],
)
def test_upgrade_to_no_object_changes_nothing(
    pin_dir: Path, path: object, expected: type[BaseException]
) -> None:
    with Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC)) as lb:
        lb.add_vip(VIP)
        lb.set_reals(VIP, REALS)
        before, program = dump_maps(lb), lb.program
        with pytest.raises(expected):
            lb.upgrade(path)  # type: ignore[arg-type]
        assert dump_maps(lb) == before
        assert lb.program is program
        packet = tcp_packet("198.51.100.1", "10.200.0.1", 1000, 80, flags="S")
        assert lb.run(packet).action == "XDP_TX"


def test_configure_with_a_valid_config_still_works(programmed: Balancer) -> None:
    before = dump_maps(programmed)
    programmed.configure(BalancerConfig(udp_ttl_s=18446744073, gue_port=65535))
    assert dump_maps(programmed)["config"] != before["config"]
    assert programmed.config.udp_ttl_s == 18446744073
