"""xlb.host: sysctl keys keep interface names whole, dots and all; `ip`
queries and commands with a typed error; link, XDP and offload facts.

Most need no root: keys are plain data, /proc/sys is readable by anyone,
and `ip` shows this namespace's loopback to anyone (sysctl writing is
tested on real namespaces in tests/e2e/test_realsetup.py). Those marked
`kernel` change a namespace they make.
"""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from xlb import host, netns
from xlb.errors import ConfigError, NotFoundError, XlbError


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


# ------------------------------------------------------------------- ip


def test_links_and_addresses_of_this_namespace() -> None:
    assert "lo" in [link["ifname"] for link in host.links()]
    lo = host.link_info("lo")
    assert lo is not None and "LOOPBACK" in lo["flags"]
    assert host.link_mtu("lo") == lo["mtu"]
    assert host.link_mac("lo") == "00:00:00:00:00:00"
    assert ipaddress.ip_interface("127.0.0.1/8") in host.addresses("lo", 4)
    assert all(a.version == 6 for a in host.addresses("lo", 6))
    (entry,) = [e for e in host.address_entries("lo") if str(e.address) == "127.0.0.1/8"]
    assert (entry.interface, entry.scope, entry.loopback) == ("lo", "host", True)
    route, error = host.route_get("127.0.0.1")
    assert route is not None and route["dev"] == "lo" and error == ""


def test_a_missing_link_is_none_or_not_found() -> None:
    assert host.link_info("nosuch0") is None
    assert host.xdp_program("nosuch0") is None
    with pytest.raises(NotFoundError, match="no network interface named 'nosuch0'"):
        host.link_mtu("nosuch0")
    with pytest.raises(NotFoundError):
        host.link_packets("nosuch0")
    assert host.link_packets("lo")[0] >= 0


def test_a_failed_ip_command_is_a_typed_error_with_the_kernels_reason() -> None:
    with pytest.raises(host.IpError) as caught:
        host.ip("link", "show", "dev", "nosuch0")
    assert isinstance(caught.value, XlbError)
    assert caught.value.command == ("ip", "link", "show", "dev", "nosuch0")
    assert caught.value.reason == 'Device "nosuch0" does not exist.'
    assert str(caught.value) == 'ip link show dev nosuch0: Device "nosuch0" does not exist.'
    with pytest.raises(host.IpError) as caught:
        host.ip_batch(["link show dev lo", "link show dev nosuch0"])
    assert caught.value.batch == ("link show dev lo", "link show dev nosuch0")
    assert "nosuch0" in caught.value.reason
    assert str(caught.value).endswith("\nlink show dev lo\nlink show dev nosuch0")
    with pytest.raises(host.IpError, match="no-such-namespace"):
        host.ip_json("link", "show", ns="no-such-namespace")


def test_a_route_the_kernel_refuses_is_its_reason() -> None:
    route, error = host.route_get("127.0.0.1", "from", "127.0.0.1", "iif", "nosuch0")
    assert route is None and "nosuch0" in error


@pytest.mark.parametrize(
    ("xdp", "expected"),
    [
        (None, None),
        ({"mode": 1, "prog": {"id": 7, "name": "xlb_balancer"}}, ("native", 7, "xlb_balancer")),
        ({"mode": 2, "prog": {"id": 9, "name": "xlb_decap"}}, ("generic", 9, "xlb_decap")),
        (  # several programs (ip shows them as "attached")
            {"mode": 4, "attached": [{"mode": 1, "prog": {"id": 3, "name": "a"}}]},
            ("multi", 3, "a"),
        ),
        ({"mode": 9, "prog": {}}, ("?", None, "?")),
    ],
)
def test_xdp_of_reads_both_shapes_ip_prints(
    xdp: dict[str, object] | None, expected: tuple[str, int | None, str] | None
) -> None:
    link = {"ifname": "eth0", **({"xdp": xdp} if xdp else {})}
    found = host.xdp_of(link)
    assert (None if found is None else (found.mode, found.id, found.name)) == expected


def test_offloads_are_read_and_unknown_ones_refused() -> None:
    assert isinstance(host.get_offload("lo", "tx"), bool)
    assert host.get_offload("nosuch0", "tx") is None
    with pytest.raises(ConfigError, match="invalid offload 'gro'"):
        host.get_offload("lo", "gro")


# -------------------------------------------- in a namespace of the test's own


def veth_in(ns: str, name: str, mtu: int) -> None:
    """A veth `name` (up, its peer down) in namespace `ns`."""
    commands = [f"link add {name} mtu {mtu} type veth peer name {name}p", f"link set {name} up"]
    host.ip_batch(commands, ns=ns)


@pytest.mark.kernel
def test_link_facts_follow_the_calling_threads_namespace(make_netns: Any) -> None:
    """A link only a namespace has is found there, with its own MTU and MAC
    (sysfs, mounted by the host's namespace, would show the host's links)."""
    ns = make_netns()
    veth_in(ns, "xlbtfacts0", 1600)
    (link,) = [link for link in host.links(ns=ns) if link["ifname"] == "xlbtfacts0"]
    with netns.enter(ns):
        assert host.link_mtu("xlbtfacts0") == 1600
        assert host.link_mac("xlbtfacts0") == link["address"]
        assert host.xdp_program("xlbtfacts0") is None
        assert host.link_packets("xlbtfacts0")[0] == 0  # its peer is down: nothing came in
    assert host.link_info("xlbtfacts0") is None  # not in the test's own namespace


@pytest.mark.kernel
def test_tx_checksum_offload_is_set_and_read_back(make_netns: Any) -> None:
    ns = make_netns()
    veth_in(ns, "xlbtoff0", 1500)
    with netns.enter(ns):
        assert host.get_offload("xlbtoff0", "tx") is True  # a veth starts with it on
        host.disable_tx_checksum("xlbtoff0")
        assert host.get_offload("xlbtoff0", "tx") is False
        host.set_offload("xlbtoff0", "tx", True)
        assert host.get_offload("xlbtoff0", "tx") is True
        with pytest.raises(host.EthtoolError, match="cannot set tx off on nosuch0: ") as caught:
            host.disable_tx_checksum("nosuch0")
    assert isinstance(caught.value, XlbError) and caught.value.errno == errno.ENODEV


@pytest.mark.kernel
def test_probe_routing_uses_the_namespaces_link(make_netns: Any) -> None:
    """The health probes' route and fake neighbour take the MTU and MAC of
    the namespace's link: an interface the host lacks works, and one the
    host has too is not mistaken for the host's."""
    from xlb.health import FAKE_NEXT_HOP, MAX_OUTER_BYTES, ProbePath

    ns = make_netns()
    veth_in(ns, "xlbthc0", 1600)
    with netns.enter(ns):
        mac = host.link_mac("xlbthc0")
        path = ProbePath("xlbthc0", path_mtu=0, route_table=4242, rule_priority=4242)
        try:
            (route,) = host.routes("table", "4242", family=4)
            (neighbour,) = [
                n for n in host.neighbours("xlbthc0") if n.get("dst") == FAKE_NEXT_HOP[4]
            ]
        finally:
            path.close()
    assert route["metrics"] == [{"mtu": 1600 - MAX_OUTER_BYTES}]
    assert neighbour["lladdr"] == mac
