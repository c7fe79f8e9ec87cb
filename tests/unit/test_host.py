"""xlb.host: sysctl keys keep interface names whole, dots and all.

No root needed: keys are plain data, and /proc/sys is readable by anyone
(writing is tested on real namespaces in tests/e2e/test_realsetup.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xlb import host
from xlb.errors import ConfigError, XlbError


@pytest.mark.parametrize(
    ("interface", "path", "spelled"),
    [
        ("eth0", "net/ipv4/conf/eth0/rp_filter", "net.ipv4.conf.eth0.rp_filter"),
        ("bond0.100", "net/ipv4/conf/bond0.100/rp_filter", "net.ipv4.conf.bond0/100.rp_filter"),
        ("a.b.c", "net/ipv4/conf/a.b.c/rp_filter", "net.ipv4.conf.a/b/c.rp_filter"),
        ("all", "net/ipv4/conf/all/rp_filter", "net.ipv4.conf.all.rp_filter"),
    ],
)
def test_conf_key_keeps_the_interface_whole(interface: str, path: str, spelled: str) -> None:
    key = host.conf_key(interface, "rp_filter")
    assert key.path == Path("/proc/sys") / path
    assert str(key) == spelled
    # sysctl(8)'s two spellings name the same key
    assert host.SysctlKey.parse(spelled) == key
    assert host.SysctlKey.parse(path) == key


def test_ipv6_conf_key() -> None:
    key = host.conf_key("vlan.7", "disable_ipv6", family=6)
    assert key.path == Path("/proc/sys/net/ipv6/conf/vlan.7/disable_ipv6")


def test_plain_keys_parse_like_sysctl() -> None:
    assert host.SysctlKey.parse("net.ipv4.ip_forward").path == Path("/proc/sys/net/ipv4/ip_forward")
    assert host.SysctlKey.parse("net/ipv4/ip_forward").path == Path("/proc/sys/net/ipv4/ip_forward")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a:b", "a b", "x" * 16])
def test_names_no_interface_can_have_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid interface name"):
        host.conf_key(name, "rp_filter")


@pytest.mark.parametrize("name", ["net..ipv4", "net.ipv4.", "/net/ipv4", "net/../../etc"])
def test_keys_that_leave_proc_sys_or_skip_a_level_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid sysctl key"):
        host.SysctlKey.parse(name)


def test_family_is_4_or_6() -> None:
    with pytest.raises(ConfigError, match="4 or 6"):
        host.conf_key("eth0", "rp_filter", family=5)


def test_read_of_a_real_key_and_of_a_missing_interface() -> None:
    assert host.read_int(host.conf_key("lo", "rp_filter")) in (0, 1, 2)
    assert host.read_sysctl(host.conf_key("nosuch.42", "rp_filter")) is None
    assert host.read_int("net.ipv4.conf.nosuch/42.rp_filter") is None


def test_a_failed_write_is_a_typed_error_naming_the_key() -> None:
    key = host.conf_key("nosuch.42", "rp_filter")
    with pytest.raises(host.SysctlError) as caught:
        host.write_sysctl(key, 2)
    assert isinstance(caught.value, XlbError)
    assert caught.value.key == key
    assert str(caught.value).startswith("cannot set sysctl net.ipv4.conf.nosuch/42.rp_filter=2: ")
