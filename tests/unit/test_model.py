"""Value types validate on construction and name what was wrong."""

from __future__ import annotations

import ipaddress

import pytest

from xlb import BalancerConfig, ConfigError, Flow, Real, Vip, VipFlags, XlbError


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
        ({"gateway_mac": "zz"}, "gateway MAC"),
        ({"src_v4": "2001:db8::"}, "src_v4"),
        ({"mtu": 100}, "invalid mtu"),
        ({"hash_seed": -1}, "hash_seed"),
        ({"gue_port": 70000}, "GUE port"),
        ({"udp_ttl_s": -1}, "udp_ttl_s"),
    ],
)
def test_balancer_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BalancerConfig(**kwargs)  # type: ignore[arg-type]
