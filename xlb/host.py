"""Host access: everything xlb reads from or changes on the host, in one place.

- `ip` (iproute2): queries parsed from `ip -json` (links, addresses,
  routes, neighbours, namespace ids) and commands, one at a time or as a
  batch; a failed command is an `IpError` carrying the kernel's answer.
- `tc`: the programs at tc ingress, qdiscs (real-setup's tc decap).
- ethtool offloads (the legacy ETHTOOL_G/S ioctls: no ethtool binary).
- Link and XDP facts: `link_info`, `xdp_of`, `xdp_program`, MTU, MAC,
  packet counts.
- Sysctls by key (below).

Everything here acts on the network namespace of the calling thread: a
child process inherits it, /proc/thread-self and /proc/sys/net follow it,
an ioctl socket is made in it. (/sys/class/net does not: it shows the
namespace that mounted sysfs, which is why link facts come from `ip`.)
`ns=` runs `ip` in a named namespace under /run/netns instead (`ip -n`);
entering a namespace is xlb.netns's job.

Why `ip -json` and not pyroute2: xlb is a library others import, and each
dependency is one more for them to pin and audit; pyroute2 is large, and
what xlb asks of the host is a dozen queries and a few commands at setup
time, never on a packet path. iproute2 is on every host that runs XDP
(the doctor's fixes are `ip` commands an operator can type), its JSON is
stable, and XDP attachment facts are one `ip -d link` field here, where
pyroute2 hands back nested netlink attributes to decode.

Sysctls. The kernel keeps each setting in a file under /proc/sys, and
sysctl(8) names it with dots (`net.ipv4.conf.eth0.rp_filter`). Turning the
dots into slashes finds the file, except where a component holds a dot of
its own: an interface name may (the VLAN `bond0.100`), and its settings
live in /proc/sys/net/ipv4/conf/bond0.100/. So a key is kept as its
components (`SysctlKey`), the interface name whole, and is written the way
sysctl(8) and sysctl.d(5) spell it: dots between components, a slash for a
dot inside one (`net.ipv4.conf.bond0/100.rp_filter`).
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import fcntl
import ipaddress
import json
import os
import shlex
import socket
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, NotFoundError, XlbError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
COMMAND_TIMEOUT = 30.0  # seconds; an `ip` or `tc` that hangs longer has failed

# ================================================================ ip, tc


class IpError(XlbError):
    """An iproute2 command (`ip`, `tc`) failed.

    `command`: what ran; `reason`: the kernel's answer ("RTNETLINK
    answers: " left off); `batch`: the commands of an `ip -batch`.
    """

    def __init__(self, command: Sequence[str], reason: str, batch: Sequence[str] = ()) -> None:
        self.command = tuple(command)
        self.reason = reason
        self.batch = tuple(batch)
        text = f"{shlex.join(self.command)}: {reason}"
        super().__init__("\n".join([text, *self.batch]))


def _reason(stderr: str, returncode: int) -> str:
    text = stderr.strip()
    return text.removeprefix("RTNETLINK answers: ") or f"exit status {returncode}"


def _run(command: Sequence[str], stdin: str | None = None, batch: Sequence[str] = ()) -> str:
    """Run an iproute2 command; its stdout, or IpError."""
    try:
        out = subprocess.run(
            list(command),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise IpError(command, f"no answer after {COMMAND_TIMEOUT:.0f} s", batch) from None
    except OSError as exc:  # not installed
        raise IpError(command, exc.strerror or str(exc), batch) from None
    if out.returncode != 0:
        raise IpError(command, _reason(out.stderr, out.returncode), batch)
    return out.stdout


def _ip_command(args: Sequence[str], ns: str | None) -> list[str]:
    return ["ip", *(["-n", ns] if ns else []), *args]


def ip(*args: str, ns: str | None = None) -> str:
    """Run `ip ARGS` (in namespace `ns`); its output, or IpError."""
    return _run(_ip_command(args, ns))


def ip_batch(commands: Sequence[str], ns: str | None = None) -> None:
    """Run `ip` commands (each as `ip` takes it, without "ip") in one
    process (`ip -batch -`), stopping at the first that fails: IpError."""
    if commands:
        _run(_ip_command(["-batch", "-"], ns), "\n".join(commands) + "\n", commands)


def _parse_json(command: Sequence[str], text: str) -> Any:
    try:
        return json.loads(text or "null")
    except ValueError:
        raise IpError(command, "unparseable JSON answer") from None


def ip_json(*args: str, ns: str | None = None) -> Any:
    """`ip -json ARGS`, parsed (None for no output); IpError if it fails."""
    command = _ip_command(["-json", *args], ns)
    return _parse_json(command, _run(command))


def tc(*args: str) -> str:
    """Run `tc ARGS`; its output, or IpError."""
    return _run(["tc", *args])


def tc_json(*args: str) -> Any:
    """`tc -json ARGS`, parsed; IpError if it fails."""
    command = ["tc", "-json", *args]
    return _parse_json(command, _run(command))


def _list(answer: Any) -> list[dict[str, Any]]:
    return [entry for entry in answer or [] if isinstance(entry, dict)]


# ------------------------------------------------------------------ links


def links(ns: str | None = None) -> list[dict[str, Any]]:
    """Every link, as `ip -json -details link show` describes it."""
    return _list(ip_json("-details", "link", "show", ns=ns))


def link_info(interface: str, ns: str | None = None) -> dict[str, Any] | None:
    """`ip -json -details link show dev IFACE`, parsed; None if there is no such link."""
    try:
        found = _list(ip_json("-details", "link", "show", "dev", interface, ns=ns))
    except IpError:  # "Device ... does not exist"
        return None
    return found[0] if found else None


def _existing_link(interface: str) -> dict[str, Any]:
    link = link_info(interface)
    if link is None:
        raise NotFoundError(f"no network interface named {interface!r}")
    return link


def link_mtu(interface: str) -> int:
    """The MTU of a link; NotFoundError if there is none of that name."""
    return int(_existing_link(interface)["mtu"])


def link_mac(interface: str) -> str:
    """The hardware address of a link; NotFoundError if there is none of that name."""
    return str(_existing_link(interface)["address"])


def link_packets(interface: str) -> tuple[int, int]:
    """(rx_packets, tx_packets) of a link, from /proc/thread-self/net/dev."""
    for line in Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == interface:
            fields = rest.split()
            return int(fields[1]), int(fields[9])
    raise NotFoundError(f"no interface {interface} in this namespace")


def default_interface() -> str | None:
    """The interface of the IPv4 default route, else the only non-loopback one."""
    for route in routes("default"):
        if route.get("dev"):
            return str(route["dev"])
    others = [link["ifname"] for link in links() if "LOOPBACK" not in link.get("flags", [])]
    return str(others[0]) if len(others) == 1 else None


def netns_ids(ns: str | None = None) -> list[dict[str, Any]]:
    """`ip netns list-id`: the ids this namespace gives to others (nsid, name)."""
    return _list(ip_json("netns", "list-id", ns=ns))


# -------------------------------------------------------------------- xdp

XdpAttachMode = Literal["native", "generic", "offload", "multi", "?"]
_XDP_MODES: dict[int, XdpAttachMode] = {1: "native", 2: "generic", 3: "offload", 4: "multi"}


@dataclass(frozen=True, slots=True)
class XdpProgram:
    """The XDP program attached to a link: how, its id and its name."""

    mode: XdpAttachMode
    id: int | None
    name: str


def xdp_of(link: Mapping[str, Any]) -> XdpProgram | None:
    """The XDP program of a link `links()`/`link_info()` described; None if none."""
    xdp = link.get("xdp")
    if not xdp:
        return None
    attached: list[dict[str, Any]] = xdp.get("attached", [])
    prog: dict[str, Any] = xdp.get("prog") or (attached[0].get("prog", {}) if attached else {})
    prog_id = prog.get("id")
    return XdpProgram(
        _XDP_MODES.get(xdp.get("mode", 0), "?"),
        int(prog_id) if prog_id is not None else None,
        str(prog.get("name", "?")),
    )


def xdp_program(interface: str, ns: str | None = None) -> XdpProgram | None:
    """The XDP program attached to an interface; None if none (or no such interface)."""
    link = link_info(interface, ns=ns)
    return xdp_of(link) if link is not None else None


def tc_ingress_programs(interface: str) -> list[dict[str, Any]]:
    """BPF programs at tc ingress of `interface` (id, name); none where tc finds no clsact."""
    try:
        filters = _list(tc_json("filter", "show", "dev", interface, "ingress"))
    except IpError:
        return []
    progs = []
    for entry in filters:
        options = entry.get("options", {})
        if "prog" in options or "bpf_name" in options:
            prog = options.get("prog", {})
            progs.append({"id": prog.get("id"), "name": prog.get("name", options.get("bpf_name"))})
    return progs


def qdisc_kinds(interface: str) -> set[str]:
    """The kinds of the qdiscs on `interface` (clsact, noqueue, ...); empty if unknown."""
    try:
        return {str(q.get("kind", "")) for q in _list(tc_json("qdisc", "show", "dev", interface))}
    except IpError:
        return set()


def program_map_ids(program_id: int) -> list[int]:
    """The ids of the maps a loaded BPF program uses (bpftool); IpError if it cannot tell."""
    command = ["bpftool", "-j", "prog", "show", "id", str(program_id)]
    info = _parse_json(command, _run(command))
    return [int(map_id) for map_id in (info or {}).get("map_ids", [])]


# -------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class AddressEntry:
    """One address of a link, as `ip -json addr show` lists it."""

    interface: str
    address: IPInterface
    scope: str  # global, link, host
    loopback: bool  # the link is a loopback device


def address_entries(interface: str | None = None, ns: str | None = None) -> list[AddressEntry]:
    """The addresses of one interface, or of every one; IpError if `ip` fails."""
    found: list[AddressEntry] = []
    for link in _list(ip_json("addr", "show", *(["dev", interface] if interface else []), ns=ns)):
        loopback = "LOOPBACK" in link.get("flags", [])
        for info in link.get("addr_info", []):
            found.append(
                AddressEntry(
                    str(link.get("ifname", interface)),
                    ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"),
                    str(info.get("scope", "")),
                    loopback,
                )
            )
    return found


def addresses(interface: str, family: int | None = None) -> list[IPInterface]:
    """The addresses (with prefix) of `interface`, of one family or both."""
    return [
        entry.address
        for entry in address_entries(interface)
        if family is None or entry.address.version == family
    ]


# ------------------------------------------------------ routes, neighbours


def routes(
    *selector: str, family: int | None = None, ns: str | None = None
) -> list[dict[str, Any]]:
    """`ip -json route show SELECTOR` (of IPv4, IPv6 with `family`)."""
    flag = [f"-{family}"] if family else []
    return _list(ip_json(*flag, "route", "show", *selector, ns=ns))


def route_get(*args: str) -> tuple[dict[str, Any] | None, str]:
    """`ip route get ARGS`: (the route, "") or (None, the kernel's reason)."""
    try:
        found = _list(ip_json("route", "get", *args))
    except IpError as exc:
        return None, exc.reason
    return (found[0] if found else None), ""


def neighbours(interface: str) -> list[dict[str, Any]]:
    """`ip -json neigh show dev IFACE`: the neighbour entries (dst, lladdr, state)."""
    return _list(ip_json("neigh", "show", "dev", interface))


# ================================================================ ethtool

SIOCETHTOOL = 0x8946
IFREQ_SIZE = 40
#: The offloads that have a legacy get/set ethtool command: (get, set).
OFFLOADS: dict[str, tuple[int, int]] = {
    "rx": (0x14, 0x15),  # ETHTOOL_GRXCSUM, ETHTOOL_SRXCSUM: rx-checksumming
    "tx": (0x16, 0x17),  # ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM: tx-checksumming
}


class EthtoolError(XlbError, OSError):
    """An ethtool ioctl failed; `errno` is the kernel's answer."""

    def __init__(self, what: str, err: int) -> None:
        super().__init__(err, f"cannot {what}: {os.strerror(err)}")

    def __str__(self) -> str:
        return str(self.args[1])


def _ethtool_value(interface: str, command: int, value: int = 0) -> int:
    """One `struct ethtool_value` ioctl (command, data) on `interface`; the data back."""
    check_interface_name(interface)
    data = ctypes.create_string_buffer(struct.pack("II", command, value))
    ifreq = bytearray(struct.pack("16sP", interface.encode(), ctypes.addressof(data)))
    ifreq += bytes(IFREQ_SIZE - len(ifreq))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return int(struct.unpack("II", data.raw[:8])[1])


def _offload_commands(feature: str) -> tuple[int, int]:
    if feature not in OFFLOADS:
        raise ConfigError(f"invalid offload {feature!r}: one of {', '.join(OFFLOADS)}")
    return OFFLOADS[feature]


def get_offload(interface: str, feature: str) -> bool | None:
    """Whether an offload (`ethtool -k`: "tx", "rx") is on; None if unknown."""
    get, _ = _offload_commands(feature)
    try:
        return bool(_ethtool_value(interface, get))
    except OSError:
        return None


def set_offload(interface: str, feature: str, on: bool) -> None:
    """`ethtool -K IFACE FEATURE on|off`; EthtoolError if the device refuses."""
    _, set_command = _offload_commands(feature)
    try:
        _ethtool_value(interface, set_command, int(on))
    except OSError as exc:
        what = f"set {feature} {'on' if on else 'off'} on {interface}"
        raise EthtoolError(what, exc.errno or errno_codes.EIO) from None


def disable_tx_checksum(interface: str) -> None:
    """`ethtool -K IFACE tx off`: native XDP forwards what it gets, and a
    partial checksum left for the NIC to finish arrives broken elsewhere."""
    set_offload(interface, "tx", False)


# ================================================================ sysctls

PROC_SYS = Path("/proc/sys")
IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL


class SysctlError(XlbError, OSError):
    """Reading or writing a sysctl failed; `errno` is the kernel's answer."""

    def __init__(self, key: SysctlKey, what: str, err: int) -> None:
        super().__init__(err, f"cannot {what}: {os.strerror(err)}")
        self.key = key

    def __str__(self) -> str:
        return str(self.args[1])


def _check_component(part: str, key: str) -> None:
    if not part or part in (".", "..") or "/" in part or "\0" in part:
        raise ConfigError(f"invalid sysctl key {key!r}: bad component {part!r}")


@dataclass(frozen=True, slots=True)
class SysctlKey:
    """A sysctl as its path components under /proc/sys (which may hold dots)."""

    parts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ConfigError("invalid sysctl key: no components")
        for part in self.parts:
            _check_component(part, "/".join(self.parts))

    @classmethod
    def parse(cls, name: str) -> SysctlKey:
        """A key as sysctl(8) reads it: `a.b.c`, where a slash stands for a
        dot inside a component (`net.ipv4.conf.bond0/100.rp_filter`), or
        `a/b/c` when the first separator is a slash (then dots are literal)."""
        first = min((i for i in (name.find("."), name.find("/")) if i >= 0), default=-1)
        if first >= 0 and name[first] == "/":
            return cls(tuple(name.split("/")))
        return cls(tuple(part.replace("/", ".") for part in name.split(".")))

    @property
    def path(self) -> Path:
        return PROC_SYS.joinpath(*self.parts)

    def __str__(self) -> str:
        return ".".join(part.replace(".", "/") for part in self.parts)


def check_interface_name(name: str) -> str:
    """`name` if the kernel could call an interface that (dev_valid_name), else ConfigError."""
    if (
        not name
        or len(name) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in name for c in "/:\0")
        or any(c.isspace() for c in name)
    ):
        raise ConfigError(f"invalid interface name {name!r}")
    return name


def conf_key(interface: str, setting: str, family: int = 4) -> SysctlKey:
    """net.ipv4.conf.<interface>.<setting> (net.ipv6 for family 6).

    `interface`: a device name, kept whole even if it holds dots, or one of
    the kernel's pseudo-interfaces "all" and "default".
    """
    if family not in (4, 6):
        raise ConfigError(f"invalid address family {family!r}: 4 or 6")
    if interface not in ("all", "default"):
        check_interface_name(interface)
    return SysctlKey(("net", f"ipv{family}", "conf", interface, setting))


def _key(key: SysctlKey | str) -> SysctlKey:
    return key if isinstance(key, SysctlKey) else SysctlKey.parse(key)


def read_sysctl(key: SysctlKey | str) -> str | None:
    """The value of a sysctl as the kernel prints it (stripped); None if it does not exist."""
    key = _key(key)
    try:
        return key.path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SysctlError(key, f"read sysctl {key}", exc.errno or errno_codes.EIO) from exc


def read_int(key: SysctlKey | str) -> int | None:
    """The first number of a sysctl's value; None if it does not exist or is not a number."""
    value = read_sysctl(key)
    try:
        return int(value.split()[0]) if value else None
    except ValueError:
        return None


def write_sysctl(key: SysctlKey | str, value: int | str) -> None:
    """Set a sysctl; SysctlError (with the kernel's errno) if it cannot be written."""
    key = _key(key)
    try:
        key.path.write_text(f"{value}\n")
    except OSError as exc:
        raise SysctlError(key, f"set sysctl {key}={value}", exc.errno or errno_codes.EIO) from exc


def write_sysctls(settings: Mapping[SysctlKey | str, int | str]) -> None:
    """Set several sysctls, in order (keys as `SysctlKey` or as sysctl(8) names them)."""
    for key, value in settings.items():
        write_sysctl(key, value)


def conf_in_force(interface: str, setting: str) -> int:
    """An IPv4 per-interface setting as the kernel applies it: the larger of
    conf/all and conf/<interface> (how it combines rp_filter, arp_ignore and
    arp_announce); 0 where unreadable."""
    return max(
        read_int(conf_key("all", setting)) or 0,
        read_int(conf_key(interface, setting)) or 0,
    )


__all__ = [
    "AddressEntry",
    "EthtoolError",
    "IpError",
    "SysctlError",
    "SysctlKey",
    "XdpProgram",
    "address_entries",
    "addresses",
    "check_interface_name",
    "conf_in_force",
    "conf_key",
    "default_interface",
    "disable_tx_checksum",
    "get_offload",
    "ip",
    "ip_batch",
    "ip_json",
    "link_info",
    "link_mac",
    "link_mtu",
    "link_packets",
    "links",
    "neighbours",
    "netns_ids",
    "program_map_ids",
    "qdisc_kinds",
    "read_int",
    "read_sysctl",
    "route_get",
    "routes",
    "set_offload",
    "tc",
    "tc_ingress_programs",
    "tc_json",
    "write_sysctl",
    "write_sysctls",
    "xdp_of",
    "xdp_program",
]
