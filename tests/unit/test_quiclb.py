"""QUIC-LB ids without the kernel: the CID format, server-id assignment,
the Python mirror of the data plane's CID reading and hash, and the
configuration file's `quic` and `server_id`."""

from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path

import pytest

from xlb import _limits
from xlb import config as cfg
from xlb.errors import CapacityError, ConfigError
from xlb.flowhash import jhash2, quic_cid_hash
from xlb.model import Real, Vip, VipFlags
from xlb.quiclb import (
    HASH_LEN,
    MIN_CID_LEN,
    CidGenerator,
    assign_server_ids,
    check_cid_length,
    derived_server_id,
    destination_cid,
    encode_cid,
    server_id_of,
)
from xlb.testing import QUIC_HANDSHAKE, QUIC_INITIAL, quic_long_header, quic_short_header

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# ================================================================ format


@pytest.mark.parametrize("length", [7, 8, 12, 20])
def test_generated_cids_name_their_server_and_describe_their_length(length: int) -> None:
    gen = CidGenerator(0xBEEF, length)
    cids = {gen.new() for _ in range(200)}
    assert len(cids) == 200  # the nonce is random
    for cid in cids:
        assert len(cid) == length
        assert cid[0] >> 5 == _limits.XLB_QUIC_CONFIG_ID
        assert cid[0] & 0x1F == length - 1
        assert server_id_of(cid) == 0xBEEF


def test_cid_lengths_outside_quic_lb_are_refused() -> None:
    assert MIN_CID_LEN == 7 and HASH_LEN == MIN_CID_LEN
    for bad in (6, 21, 0, "8", True):
        with pytest.raises(ConfigError):
            check_cid_length(bad)
    for bad_id in (-1, 1 << 16, None):
        with pytest.raises(ConfigError):
            encode_cid(bad_id, bytes(5))  # type: ignore[arg-type]


def test_server_id_of_reads_only_our_config() -> None:
    assert server_id_of(bytes([0x07, 0x12, 0x34]) + bytes(4)) == 0x1234
    assert server_id_of(bytes([0xE7, 0x12, 0x34]) + bytes(4)) is None  # config 7: unroutable
    assert server_id_of(bytes([0x20, 0x12, 0x34]) + bytes(4)) is None  # config 1
    assert server_id_of(b"\x00\x12") is None  # too short for a server id


def test_destination_cid_reads_what_the_data_plane_reads() -> None:
    cid = encode_cid(7, bytes(range(9)))
    assert destination_cid(quic_short_header(cid)) == cid[:HASH_LEN]
    assert destination_cid(quic_long_header(QUIC_HANDSHAKE, cid)) == cid
    assert destination_cid(quic_long_header(QUIC_INITIAL, b"", size=1200)) == b""
    assert destination_cid(quic_long_header(QUIC_INITIAL, bytes(21), size=1200)) is None
    assert destination_cid(b"\x41" + bytes(6)) is None


def test_cid_hash_mirrors_the_data_plane_s_words() -> None:
    """Two big-endian words of the first 7 octets, zero-padded: longer CIDs
    hash by their prefix, shorter ones as if zeros followed."""
    assert _limits.XLB_QUIC_HASH_LEN == 7
    cid = bytes(range(1, 12))
    words = [0x01020304, 0x05060700]
    assert quic_cid_hash(cid, 99) == jhash2(words, 99) == quic_cid_hash(cid[:7], 99)
    assert quic_cid_hash(b"\x01\x02", 5) == jhash2([0x01020000, 0], 5)


# ============================================================ assignment


def test_derived_id_is_the_address_s_low_16_bits() -> None:
    assert derived_server_id(addr("10.30.1.2")) == 0x0102
    assert derived_server_id(addr("fd00:30::2")) == 2


def test_assignment_pins_then_keeps_then_derives() -> None:
    reals = [Real("10.0.1.1"), Real("10.0.2.1", server_id=0x0101), Real("10.0.3.1")]
    ids = assign_server_ids(reals)
    # 10.0.1.1 derives 0x0101, which 10.0.2.1 is pinned to: the next free one
    assert ids == {addr("10.0.2.1"): 0x0101, addr("10.0.1.1"): 0x0102, addr("10.0.3.1"): 0x0301}
    assert assign_server_ids(reversed(reals)) == ids  # order-free


def test_collisions_resolve_by_address_and_never_move_a_staying_real() -> None:
    first = assign_server_ids([Real("10.9.0.5"), Real("10.8.0.5")])
    assert first == {addr("10.8.0.5"): 5, addr("10.9.0.5"): 6}  # lower address keeps it
    later = assign_server_ids([Real("10.9.0.5"), Real("10.8.0.5"), Real("10.1.0.5")], first)
    assert later == {**first, addr("10.1.0.5"): 7}  # the newcomer moves, not them
    wrapped = assign_server_ids([Real("10.0.255.255"), Real("10.1.255.255")])
    assert sorted(wrapped.values()) == [0, 0xFFFF]


def test_assignment_errors() -> None:
    with pytest.raises(ConfigError, match="both given server_id 9"):
        assign_server_ids([Real("10.0.0.1", server_id=9), Real("10.0.0.2", server_id=9)])
    many = [Real(ipaddress.IPv6Address(0xFD00 << 112 | i + 1)) for i in range(65537)]
    with pytest.raises(CapacityError):
        assign_server_ids(many)


def test_assignment_is_a_bijection_for_many_colliding_reals() -> None:
    rng = random.Random(3)
    reals = [Real(f"10.{rng.randrange(1, 200)}.0.{rng.randrange(1, 4)}") for _ in range(300)]
    unique = list({r.address: r for r in reals}.values())
    ids = assign_server_ids(unique)
    assert len(set(ids.values())) == len(unique)


def test_real_server_id_is_checked() -> None:
    assert Real("10.0.0.1", server_id=0).server_id == 0
    assert Real("10.0.0.1", server_id=7).with_weight(0).server_id == 7
    for bad in (65536, -1, 1.0, "7", True):
        with pytest.raises(ConfigError, match="server_id"):
            Real("10.0.0.1", server_id=bad)  # type: ignore[arg-type]


# ================================================================ config

BASE = """
[balancer]
gateway_mac = "02:00:00:00:00:01"
"""


def test_quic_vip_and_server_ids_round_trip() -> None:
    text = (
        BASE
        + """
[[vip]]
address = "10.100.0.1"
port = 443
protocol = "udp"
quic = true

[[vip.reals]]
address = "10.0.0.1"
server_id = 0x0102

[[vip.reals]]
address = "10.0.0.2"
"""
    )
    config = cfg.loads(text)
    (entry,) = config.vips
    assert VipFlags.QUIC in entry.flags
    assert entry.reals == (Real("10.0.0.1", server_id=258), Real("10.0.0.2"))
    written = cfg.dumps(config)
    assert "quic = true" in written and "server_id = 258" in written
    assert '"quic"' not in written  # the key, not a flag name
    assert cfg.loads(written) == config
    as_flag = text.replace("quic = true", 'flags = ["quic"]')
    assert cfg.loads(as_flag) == config


def test_quic_errors_are_located() -> None:
    text = (
        BASE
        + """
[[vip]]
address = "10.100.0.1"
port = 443
quic = true

[[vip.reals]]
address = "10.0.0.1"
server_id = 70000

[[vip]]
address = "10.100.0.2"
port = 443
protocol = "udp"
quic = false
flags = ["quic"]

[[vip.reals]]
address = "10.0.0.1"
server_id = 5

[[vip.reals]]
address = "10.0.0.2"
server_id = 5

[[vip]]
address = "10.100.0.3"
port = 443
protocol = "udp"

[[vip.reals]]
address = "10.0.0.1"
server_id = 5
"""
    )
    with pytest.raises(cfg.ConfigFileError) as err:
        cfg.loads(text, source="lb.toml")
    issues = {(i.location, i.message) for i in err.value.issues}
    assert issues == {
        ("vip[0].quic", 'QUIC routing needs protocol = "udp"'),
        ("vip[0].reals[0].server_id", "must be an integer 0-65535, not 70000"),
        ("vip[1].quic", 'false contradicts flag "quic"'),
        ("vip[1].reals[1].server_id", "5 is already reals[0]'s"),
        ("vip[2].reals[0].server_id", "is for a VIP with quic = true"),
    }


def test_documented_example_has_a_quic_vip() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    config = cfg.loads(blocks[0], source="docs/config.md")
    quic = [e for e in config.vips if VipFlags.QUIC in e.flags]
    assert [e.vip for e in quic] == [Vip("10.100.0.2", 443, "udp")]
    assert {r.server_id for r in quic[0].reals} == {None, 0x0A0B}


def test_set_reals_change_shows_pinned_ids() -> None:
    change = cfg.SetReals(Vip("10.0.0.9", 443, "udp"), (Real("10.0.0.1", server_id=3),))
    assert str(change) == "set reals 10.0.0.9:443/udp 10.0.0.1*1#3"
