"""Value types validate on construction and name what was wrong."""

from __future__ import annotations

import ipaddress
import math
import re

import pytest

from xlb import BalancerConfig, ConfigError, Flow, Real, Vip, VipFlags, XlbError
from xlb.model import UDP_TTL_MAX_S, address_ints, to_real, to_vip


def test_vip_accepts_text_and_ipaddress() -> None:
    assert Vip("10.0.0.1", 80, "tcp") == Vip(ipaddress.ip_address("10.0.0.1"), 80, "tcp")
    assert Vip("2001:db8::1", 0, "udp").family == 6
    assert str(Vip("2001:db8::1", 443, "tcp")) == "[2001:db8::1]:443/tcp"


@pytest.mark.parametrize(
    ("text", "vip"),
    [
        ("10.0.0.1:80/tcp", Vip("10.0.0.1", 80, "tcp")),
        ("10.0.0.1:53/udp", Vip("10.0.0.1", 53, "udp")),
        ("10.0.0.1:0", Vip("10.0.0.1", 0, "tcp")),
        ("[2001:db8::1]:443/tcp", Vip("2001:db8::1", 443, "tcp")),
    ],
)
def test_vip_parse_round_trips(text: str, vip: Vip) -> None:
    assert Vip.parse(text) == vip
    assert Vip.parse(str(vip)) == vip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("10.0.0.256", 80, "tcp"), "invalid VIP address '10.0.0.256'"),
        (("10.0.0.1", 65536, "tcp"), "invalid VIP port 65536"),
        (("10.0.0.1", -1, "tcp"), "invalid VIP port -1"),
        (("10.0.0.1", "80", "tcp"), "invalid VIP port '80'"),
        (("10.0.0.1", 80, "sctp"), "invalid VIP protocol 'sctp'"),
    ],
)
def test_vip_rejects_bad_values(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Vip(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1:http", "[::1:80/tcp", "10.0.0.1:80/icmp"])
def test_vip_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError):
        Vip.parse(text)


def test_real_validation() -> None:
    assert Real("10.0.0.1").weight == 1
    assert Real("10.0.0.1", weight=0).weight == 0
    assert Real("10.0.0.1", mac="02:AA:00:00:00:01").mac == "02:aa:00:00:00:01"
    with pytest.raises(ConfigError, match="weight -1"):
        Real("10.0.0.1", weight=-1)
    with pytest.raises(ConfigError, match=r"weight 1\.5"):
        Real("10.0.0.1", weight=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="MAC"):
        Real("10.0.0.1", mac="02:00:00")
    with pytest.raises(ConfigError, match="real address"):
        Real("not-an-address")


def test_errors_share_one_base_and_value_error() -> None:
    with pytest.raises(XlbError):
        Real("10.0.0.1", weight=-5)
    with pytest.raises(ValueError):
        Vip("10.0.0.1", 99999, "tcp")


def test_flags_parse_by_name() -> None:
    assert VipFlags.parse("no_sport, gue") == VipFlags.NO_SPORT | VipFlags.GUE
    assert VipFlags.parse([]) == VipFlags.NONE
    assert VipFlags.parse(["NO-CONN-TABLE"]) == VipFlags.NO_CONN_TABLE
    assert (VipFlags.NO_SPORT | VipFlags.GUE).names() == ["no_sport", "gue"]
    with pytest.raises(ConfigError, match="unknown VIP flag 'fast'"):
        VipFlags.parse("fast")


def test_flow_rejects_mixed_families() -> None:
    with pytest.raises(ConfigError, match="mixes address families"):
        Flow("10.0.0.1", "2001:db8::1", 1000, 80)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gateway_mac": "zz"}, "gateway_mac"),
        ({"src_v4": "2001:db8::"}, "src_v4"),
        ({"mtu": 100}, "invalid mtu"),
        ({"hash_seed": -1}, "hash_seed"),
        ({"gue_port": 70000}, "gue_port"),
        ({"udp_ttl_s": -1}, "udp_ttl_s"),
    ],
)
def test_balancer_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BalancerConfig(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------- wrong types and ranges


@pytest.mark.parametrize("text", [None, 80, 1.5, b"10.0.0.1:80/tcp", ["10.0.0.1:80"]])
def test_vip_parse_rejects_what_is_not_text(text: object) -> None:
    with pytest.raises(ConfigError, match="invalid VIP"):
        Vip.parse(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("proto", [[], {}, b"tcp", 6, None, "TCP"])
def test_protocols_must_be_tcp_or_udp_text(proto: object) -> None:
    with pytest.raises(ConfigError, match="must be 'tcp' or 'udp'"):
        Vip("10.0.0.1", 80, proto)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be 'tcp' or 'udp'"):
        Flow("10.0.0.1", "10.0.0.2", 1000, 80, proto)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", [None, 10, 1.5, True, [], b"\x0a\x00", ("10.0.0.1",)])
def test_addresses_of_a_wrong_type_are_config_errors(address: object) -> None:
    # `address` is of a wrong type on purpose.
    for make in (
        lambda: Vip(address, 80),  # type: ignore[arg-type]
        lambda: Real(address),  # type: ignore[arg-type]
        lambda: Flow(address, "10.0.0.1", 1, 2),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigError, match="not an IPv4 or IPv6 address"):
            make()


@pytest.mark.parametrize("names", [None, 5, [1], ["gue", None], b"gue", {"gue": 1}])
def test_flags_parse_rejects_what_is_not_names(names: object) -> None:
    with pytest.raises(ConfigError, match="VIP flags"):
        VipFlags.parse(names)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"udp_ttl_s": math.inf}, r"udp_ttl_s inf: .*0-18446744073"),
        ({"udp_ttl_s": math.nan}, r"udp_ttl_s nan: .*0-18446744073"),
        ({"udp_ttl_s": 1e30}, r"udp_ttl_s 1e\+30: .*0-18446744073"),
        ({"udp_ttl_s": 18446744074}, "udp_ttl_s 18446744074"),
        ({"udp_ttl_s": -0.5}, "udp_ttl_s -0.5"),
        ({"udp_ttl_s": 1e-10}, r"udp_ttl_s 1e-10: .*0: never"),
        ({"udp_ttl_s": 10**400}, r"udp_ttl_s 1000.*: seconds"),
        ({"udp_ttl_s": -(10**400)}, r"udp_ttl_s -1000.*: seconds"),
        ({"gue_port": 2**200}, "gue_port 1606938"),
        ({"hash_seed": -(2**200)}, "hash_seed -1606938"),
        ({"mtu": 2**200}, "mtu 1606938"),
        ({"udp_ttl_s": True}, "udp_ttl_s True"),
        ({"udp_ttl_s": "300"}, "udp_ttl_s '300'"),
        ({"gue_port": 0}, r"gue_port 0: .*1-65535"),
        ({"gue_port": 65536}, r"gue_port 65536: .*1-65535"),
        ({"gue_port": 6080.0}, "gue_port 6080.0"),
        ({"gue_port": True}, "gue_port True"),
        ({"hash_seed": 2**32}, r"hash_seed 4294967296: .*0-4294967295"),
        ({"hash_seed": True}, "hash_seed True"),
        ({"hash_seed": 1.0}, "hash_seed 1.0"),
        ({"syn_flood_threshold": -1}, r"syn_flood_threshold -1: .*0-4294967295"),
        ({"syn_flood_threshold": 2**32}, "syn_flood_threshold 4294967296"),
        ({"syn_flood_threshold": 1.5}, "syn_flood_threshold 1.5"),
        ({"mtu": 2**32}, r"mtu 4294967296: .*576-65535"),
        ({"mtu": True}, "mtu True"),
        ({"mtu": 575}, "mtu 575"),
        ({"mtu": -1}, "mtu -1"),
        ({"fib_lookup": "no"}, "fib_lookup 'no': True or False"),
        ({"fib_lookup": 1}, "fib_lookup 1: True or False"),
        ({"gue_all": None}, "gue_all None: True or False"),
        ({"gateway_mac": 5}, "gateway_mac 5"),
        ({"src_v4": None}, "src_v4 None"),
        ({"src_v4": 5}, "src_v4 5"),
        ({"src_v6": "172.16.0.0"}, "src_v6"),
    ],
)
def test_balancer_config_rejects_every_field_out_of_range(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        BalancerConfig(**kwargs)  # type: ignore[arg-type]


def test_balancer_config_takes_the_edges_of_each_range() -> None:
    edges = BalancerConfig(mtu=65535, gue_port=65535, hash_seed=2**32 - 1, udp_ttl_s=UDP_TTL_MAX_S)
    assert edges.udp_ttl_s == 18446744073
    assert BalancerConfig(mtu=0, gue_port=1, hash_seed=0, udp_ttl_s=0).mtu == 0
    assert BalancerConfig(udp_ttl_s=0.25).udp_ttl_s == 0.25
    assert BalancerConfig(udp_ttl_s=1e-9).udp_ttl_s == 1e-9


def test_balancer_config_keeps_source_prefixes_as_canonical_text() -> None:
    """The `config` map is packed from this text: brackets or an ipaddress
    object must not reach it (they made configure() raise ValueError)."""
    config = BalancerConfig(
        src_v4=ipaddress.IPv4Address("172.16.0.0"),  # type: ignore[arg-type]  # on purpose
        src_v6="[FD00:7862:0::]",
    )
    assert (config.src_v4, config.src_v6) == ("172.16.0.0", "fd00:7862::")
    assert config == BalancerConfig()


# ------------------------------------------ addresses that cannot work


UNUSABLE = [
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.1", "multicast"),
    ("239.255.1.1", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1234", "multicast"),
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("::1", "loopback"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
]


@pytest.mark.parametrize(("address", "why"), UNUSABLE)
def test_a_vip_refuses_an_address_no_packet_can_reach(address: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid VIP address {re.escape(address)}: .*{why}"):
        Vip(address, 80, "tcp")
    bracketed = f"[{address}]" if ":" in address else address
    with pytest.raises(ConfigError, match=why):
        Vip.parse(f"{bracketed}:80/tcp")


@pytest.mark.parametrize(("address", "why"), UNUSABLE)
def test_a_real_refuses_an_address_no_packet_can_reach(address: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid real address {re.escape(address)}: .*{why}"):
        Real(address)


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "192.0.2.255", "223.255.255.254", "169.253.0.1", "fec0::1", "fd00::1"]
)
def test_ordinary_unicast_addresses_are_taken(address: str) -> None:
    assert str(Vip(address, 80).address) == address
    assert str(Real(address).address) == address


def test_the_data_plane_may_hold_what_xlb_now_refuses() -> None:
    """Adoption and lookups build values from what the maps or a packet
    hold: an address refused for new VIPs and reals must not stop them."""
    assert Vip.from_data_plane("0.0.0.0", 80, "tcp").address == ipaddress.ip_address("0.0.0.0")
    old = Real.from_data_plane("127.0.0.1", 2, None)
    assert old.with_weight(0) == Real.from_data_plane("127.0.0.1", 0, None)
    with pytest.raises(ConfigError, match="weight -1"):
        old.with_weight(-1)
    with pytest.raises(ConfigError, match="VIP port 70000"):
        Vip.from_data_plane("0.0.0.0", 70000, "tcp")


# ----------------------------------- what the Balancer takes as a VIP or real


def test_text_stands_for_a_vip_and_an_address_for_a_real() -> None:
    vip = Vip("10.0.0.1", 80, "tcp")
    assert to_vip(vip) is vip
    assert to_vip("10.0.0.1:80/tcp") == vip
    assert to_real("10.0.0.9") == Real("10.0.0.9", weight=1)
    assert to_real(ipaddress.ip_address("2001:db8::9")) == Real("2001:db8::9")
    real = Real("10.0.0.9", weight=3)
    assert to_real(real) is real


@pytest.mark.parametrize(
    "value", [None, 80, 1.5, b"10.0.0.1:80", ("10.0.0.1", 80), Real("10.0.0.1")]
)
def test_to_vip_rejects_everything_else(value: object) -> None:
    with pytest.raises(ConfigError, match="expected a Vip or text like"):
        to_vip(value)


@pytest.mark.parametrize("value", [None, 7, 1.5, ["10.0.0.1"], Vip("10.0.0.1", 80)])
def test_to_real_rejects_everything_else(value: object) -> None:
    with pytest.raises(ConfigError, match="expected a Real or an address"):
        to_real(value)


# ------------------------------------------------------------ prefix VIPs


@pytest.mark.parametrize(
    ("text", "address", "prefixlen", "shown"),
    [
        ("10.100.0.0/24:80/tcp", "10.100.0.0", 24, "10.100.0.0/24:80/tcp"),
        ("[10.100.0.0/24]:80/tcp", "10.100.0.0", 24, "10.100.0.0/24:80/tcp"),
        ("[2001:db8:100::/64]:0/udp", "2001:db8:100::", 64, "[2001:db8:100::/64]:0/udp"),
        ("10.0.0.1/32:80/tcp", "10.0.0.1", 32, "10.0.0.1:80/tcp"),  # a /32 is the address
        ("10.0.0.1:80/tcp", "10.0.0.1", 32, "10.0.0.1:80/tcp"),
    ],
)
def test_a_vip_may_be_a_prefix(text: str, address: str, prefixlen: int, shown: str) -> None:
    vip = Vip.parse(text)
    assert (str(vip.address), vip.prefixlen, str(vip)) == (address, prefixlen, shown)
    assert vip.is_prefix == (prefixlen < vip.address.max_prefixlen)
    assert Vip.parse(str(vip)) == vip
    assert Vip(vip.network, vip.port, vip.proto) == vip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.100.0.1/24:80", r"host bits are set \(the prefix is 10.100.0.0/24\)"),
        ("[2001:db8::1/64]:80", r"host bits are set \(the prefix is 2001:db8::/64\)"),
        ("10.0.0.0/33:80", "expected an IPv4 or IPv6 prefix like 10.100.0.0/24"),
        ("10.0.0.0/x:80", "expected an IPv4 or IPv6 prefix"),
        ("0.0.0.0/0:80", r"0.0.0.0/0: it holds the unspecified address"),
        ("127.0.0.0/8:80", "it holds loopback addresses"),
        ("232.0.0.0/8:80", "it holds multicast addresses"),
        ("192.0.0.0/2:80", "it holds the broadcast address"),
        ("169.254.0.0/24:80", "it holds link-local addresses"),
        ("[fe80::/64]:80", "it holds link-local addresses"),
        ("[::/0]:80", "it holds the unspecified address"),
    ],
)
def test_bad_prefixes_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Vip.parse(text)


def test_a_prefix_vip_holds_its_addresses_and_is_probed_at_its_first_host() -> None:
    vip = Vip("10.100.0.0/24", 80)
    assert vip.holds(ipaddress.ip_address("10.100.0.255"))
    assert not vip.holds(ipaddress.ip_address("10.100.1.0"))
    assert not vip.holds(ipaddress.ip_address("::a64:0"))
    assert str(vip.probe_address) == "10.100.0.1"
    assert str(Vip("10.100.0.4/31", 80).probe_address) == "10.100.0.4"
    assert str(Vip("10.0.0.1", 80).probe_address) == "10.0.0.1"
    assert vip.destination == ipaddress.ip_network("10.100.0.0/24")
    assert Vip("10.0.0.1", 80).destination == ipaddress.ip_address("10.0.0.1")


def test_overlapping_prefix_vips_of_one_port_and_protocol() -> None:
    from xlb.model import overlapping_prefix

    wide, narrow = Vip("10.100.0.0/16", 80), Vip("10.100.7.0/24", 80)
    assert overlapping_prefix(narrow, [wide]) == wide
    assert overlapping_prefix(wide, [narrow]) == narrow
    assert overlapping_prefix(narrow, [narrow]) is None  # itself
    assert overlapping_prefix(narrow, [Vip("10.100.0.0/16", 81)]) is None  # another port
    assert overlapping_prefix(narrow, [Vip("10.100.0.0/16", 80, "udp")]) is None
    assert overlapping_prefix(narrow, [Vip("10.100.8.0/24", 80)]) is None  # disjoint
    assert overlapping_prefix(narrow, [Vip("10.100.7.9", 80)]) is None  # exact: allowed
    assert overlapping_prefix(Vip("10.100.7.9", 80), [narrow]) is None


def test_address_ints_are_what_int_gives() -> None:
    """The fast read of many reals' addresses (the Maglev build, the `reals`
    entries) must agree with int() for both families, edges included."""
    addresses = [
        ipaddress.ip_address(text)
        for text in ("0.0.0.1", "10.0.0.1", "255.255.255.255", "::1", "2001:db8::7", "ffff::")
    ]
    assert list(address_ints(addresses)) == [int(a) for a in addresses]
