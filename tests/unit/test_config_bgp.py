"""The [bgp] table and [vip.bgp]: every rule gives a located error, valid
files load with their defaults, and `dumps` writes them back."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest

from xlb import config as cfg
from xlb.config import ConfigFileError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"

VIPS = """
[balancer]
interface = "eth0"
gateway_mac = "02:00:00:00:00:01"

[[vip]]
address = "10.100.0.1"
port = 80

[[vip.reals]]
address = "10.0.1.1"
"""

BGP = """
[bgp]
local_as = 65001
router_id = "10.0.0.1"

[[bgp.neighbors]]
address = "10.0.0.254"
as = 65000
"""


@pytest.fixture
def fake_exabgp(tmp_path: Path) -> str:
    """An executable file standing in for ExaBGP: the reader only checks it exists."""
    path = tmp_path / "exabgp"
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def with_exabgp(text: str, exabgp: str) -> str:
    return text.replace("[bgp]\n", f'[bgp]\nexabgp = "{exabgp}"\n', 1)


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        cfg.loads(text, source="lb.toml")
    return [str(issue) for issue in info.value.issues]


def test_no_bgp_table_means_no_bgp() -> None:
    assert cfg.loads(VIPS).bgp is None


def test_minimal_bgp_loads_with_defaults(fake_exabgp: str) -> None:
    config = cfg.loads(with_exabgp(VIPS + BGP, fake_exabgp))
    bgp = config.bgp
    assert bgp is not None
    assert (bgp.local_as, bgp.router_id) == (65001, ipaddress.IPv4Address("10.0.0.1"))
    assert bgp.announcer == "exabgp"
    assert bgp.min_healthy == 1
    assert not bgp.drain_on_stop
    assert bgp.next_hop_v4 is None and bgp.next_hop_v6 is None
    (neighbor,) = bgp.neighbors
    assert neighbor.address == ipaddress.ip_address("10.0.0.254")
    assert (neighbor.peer_as, neighbor.hold_time, neighbor.password) == (65000, 90, None)
    assert config.vips[0].route == cfg.RouteAttributes()


def test_everything_set_round_trips(fake_exabgp: str) -> None:
    text = f"""
[bgp]
local_as = 4200000000
router_id = "10.0.0.1"
min_healthy = 2
drain_on_stop = true
next_hop_v4 = "10.0.0.1"
next_hop_v6 = "fd00::1"
exabgp = "{fake_exabgp}"

[[bgp.neighbors]]
address = "fd00::fe"
as = 65000
hold_time = 3
password = "s3cret"
local_address = "fd00::1"

[[vip]]
address = "2001:db8::1"
port = 80

[[vip.reals]]
address = "2001:db8:1::1"
mac = "02:00:00:00:00:02"

[vip.bgp]
communities = ["65000:100", "65000:200"]
med = 10
local_pref = 200
"""
    config = cfg.loads(text)
    assert config.bgp is not None
    assert config.bgp.neighbors[0].password == "s3cret"
    assert config.bgp.drain_on_stop
    assert config.vips[0].route == cfg.RouteAttributes(("65000:100", "65000:200"), 10, 200)
    assert cfg.loads(cfg.dumps(config)) == config


def test_bird_announcer_needs_no_neighbours_nor_exabgp() -> None:
    text = VIPS + (
        '[bgp]\nannouncer = "bird"\nlocal_as = 65001\nrouter_id = "10.0.0.1"\n'
        'bird_socket = "/run/b.ctl"\nbird_include = "/etc/b/xlb.conf"\nexabgp = "/nonexistent"\n'
    )
    bgp = cfg.loads(text).bgp
    assert bgp is not None and bgp.announcer == "bird" and bgp.neighbors == ()
    assert (str(bgp.bird_socket), str(bgp.bird_include)) == ("/run/b.ctl", "/etc/b/xlb.conf")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("as = 65000", "as = 65000\nport = 179"), "bgp.neighbors[0].port: unknown key"),
        (("as = 65000", "as = 0"), "bgp.neighbors[0].as: must be an integer 1-4294967294, not 0"),
        (("as = 65000", "as = 4294967295"), "bgp.neighbors[0].as: must be an integer 1-"),
        (("local_as = 65001", "local_as = -1"), "bgp.local_as: must be an integer 1-4294967294"),
        (("local_as = 65001\n", ""), "bgp.local_as: is required"),
        (('router_id = "10.0.0.1"', 'router_id = "fd00::1"'), "bgp.router_id: must be an IPv4"),
        (('router_id = "10.0.0.1"', 'router_id = "x"'), "bgp.router_id: must be an IPv4 address"),
        (('address = "10.0.0.254"', 'address = "10.0.0.256"'), "bgp.neighbors[0].address: must"),
        (("as = 65000\n", ""), "bgp.neighbors[0].as: is required"),
        (("as = 65000", "as = 65000\nhold_time = 2"), "bgp.neighbors[0].hold_time: must be 0"),
        (("as = 65000", "as = 65000\nhold_time = 70000"), "bgp.neighbors[0].hold_time: must be"),
        (("as = 65000", 'as = 65000\npassword = ""'), "bgp.neighbors[0].password: must be 1-80"),
        (
            ("as = 65000", 'as = 65000\nlocal_address = "fd00::1"'),
            "bgp.neighbors[0].local_address: must be an IPv4 address like address",
        ),
        (("[bgp]", '[bgp]\nannouncer = "frr"'), "bgp.announcer: must be one of 'exabgp', 'bird'"),
        (("[bgp]", "[bgp]\nmin_healthy = 0"), "bgp.min_healthy: must be an integer 1-"),
        (("[bgp]", '[bgp]\ndrain_on_stop = "yes"'), "bgp.drain_on_stop: must be true or false"),
        (("[bgp]", '[bgp]\nnext_hop_v4 = "fd00::1"'), "bgp.next_hop_v4: must be an IPv4 address"),
        (("[bgp]", '[bgp]\nnext_hop_v6 = "10.0.0.1"'), "bgp.next_hop_v6: must be an IPv6 address"),
        (("[bgp]", '[bgp]\nbird_socket = "rel"'), "bgp.bird_socket: must be an absolute path"),
        (("[bgp]", "[bgp]\nasn = 1"), "bgp.asn: unknown key"),
        (("[[bgp.neighbors]]", "[[bgp.neighbor]]"), "bgp.neighbor: unknown key"),
    ],
)
def test_each_bad_value_has_a_located_error(
    fake_exabgp: str, change: tuple[str, str], expected: str
) -> None:
    text = with_exabgp(VIPS + BGP.replace(*change, 1), fake_exabgp)
    issues = issues_of(text)
    assert any(issue.startswith(f"lb.toml: {expected}") for issue in issues), issues


def test_exabgp_needs_a_neighbour(fake_exabgp: str) -> None:
    text = with_exabgp(VIPS + '[bgp]\nlocal_as = 1\nrouter_id = "10.0.0.1"\n', fake_exabgp)
    assert "lb.toml: bgp.neighbors: is required: ExaBGP needs at least one" in issues_of(text)[0]


def test_bird_refuses_neighbours() -> None:
    text = VIPS + BGP.replace("[bgp]", '[bgp]\nannouncer = "bird"', 1)
    assert 'bgp.neighbors: not used with announcer = "bird"' in issues_of(text)[0]


def test_the_same_neighbour_twice_is_an_error(fake_exabgp: str) -> None:
    text = with_exabgp(VIPS + BGP + BGP.split("\n\n")[1], fake_exabgp)
    assert issues_of(text) == [
        "lb.toml: bgp.neighbors[1].address: 10.0.0.254 is already neighbors[0]"
    ]


def test_exabgp_missing_is_a_located_error() -> None:
    text = with_exabgp(VIPS + BGP, "/nonexistent/exabgp")
    (issue,) = issues_of(text)
    assert issue.startswith("lb.toml: bgp.exabgp: ExaBGP missing: no executable")


def test_exabgp_missing_from_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A bare name is looked up beside this Python, then on PATH: neither has it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    text = with_exabgp(VIPS + BGP, "exabgp-not-installed-here")
    assert "ExaBGP missing" in issues_of(text)[0]


def test_exabgp_found_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    program = tmp_path / "my-exabgp"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cfg.find_exabgp("my-exabgp") == str(program)
    assert cfg.find_exabgp("their-exabgp") is None
    assert cfg.find_exabgp(str(program)) == str(program)
    program.chmod(0o644)
    assert cfg.find_exabgp(str(program)) is None


def test_a_bgp_error_and_a_vip_error_are_both_reported(fake_exabgp: str) -> None:
    text = with_exabgp(VIPS.replace("port = 80", "port = 99999") + BGP, fake_exabgp)
    issues = issues_of(text.replace("as = 65000", "as = 0"))
    assert [i.split(":")[1].strip() for i in issues] == ["vip[0].port", "bgp.neighbors[0].as"]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ('communities = ["65000"]', 'vip[0].bgp.communities: must be "ASN:VALUE" strings'),
        ('communities = ["65536:1"]', "vip[0].bgp.communities: must be"),
        ("communities = [1]", "vip[0].bgp.communities: must be"),
        ("med = -1", "vip[0].bgp.med: must be an integer 0-4294967295"),
        ("local_pref = 4294967296", "vip[0].bgp.local_pref: must be an integer 0-"),
        ("prepend = 2", "vip[0].bgp.prepend: unknown key"),
    ],
)
def test_each_bad_route_attribute_has_a_located_error(
    fake_exabgp: str, route: str, expected: str
) -> None:
    text = with_exabgp(VIPS + f"[vip.bgp]\n{route}\n" + BGP, fake_exabgp)
    issues = issues_of(text)
    assert any(issue.startswith(f"lb.toml: {expected}") for issue in issues), issues


def test_vips_of_one_address_share_their_attributes(fake_exabgp: str) -> None:
    second = "[[vip]]" + VIPS.split("[[vip]]", 1)[1].replace("port = 80", "port = 443")
    text = VIPS + "[vip.bgp]\nmed = 1\n" + second + "[vip.bgp]\nmed = 2\n" + BGP
    (issue,) = issues_of(with_exabgp(text, fake_exabgp))
    assert issue == (
        "lb.toml: vip[1].bgp: differs from vip[0].bgp: "
        "both announce 10.100.0.1 (one prefix, one [vip.bgp])"
    )


def test_a_vip_of_another_family_needs_a_next_hop(fake_exabgp: str) -> None:
    v6 = '\n[[vip]]\naddress = "2001:db8::1"\nport = 80\n[[vip.reals]]\naddress = "2001:db8::9"\n'
    text = with_exabgp(VIPS + v6 + BGP, fake_exabgp)
    (issue,) = issues_of(text)
    assert issue.startswith("lb.toml: bgp.next_hop_v6: is required: vip[1] (2001:db8::1) is IPv6")
    fixed = text.replace("[bgp]", '[bgp]\nnext_hop_v6 = "fd00::1"', 1)
    assert cfg.loads(fixed).bgp is not None


def test_documented_bgp_examples_load(fake_exabgp: str) -> None:
    """Every toml block of docs/config.md's BGP section is valid."""
    section = DOCS.read_text().split("\n## BGP", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "docs/config.md's BGP section has no toml examples"
    kinds = set()
    for block in blocks:
        config = cfg.loads(with_exabgp(block, fake_exabgp), source="docs/config.md")
        assert config.bgp is not None
        kinds.add(config.bgp.announcer)
    assert kinds == {"exabgp", "bird"}
