"""Host access: the kernel settings xlb reads and changes, in one place.

Sysctls. The kernel keeps each setting in a file under /proc/sys, and
sysctl(8) names it with dots (`net.ipv4.conf.eth0.rp_filter`). Turning the
dots into slashes finds the file, except where a component holds a dot of
its own: an interface name may (the VLAN `bond0.100`), and its settings
live in /proc/sys/net/ipv4/conf/bond0.100/. So a key is kept as its
components (`SysctlKey`), the interface name whole, and is written the way
sysctl(8) and sysctl.d(5) spell it: dots between components, a slash for a
dot inside one (`net.ipv4.conf.bond0/100.rp_filter`).

Everything here acts on the network namespace of the calling thread
(/proc/sys/net follows the thread that opens the file).
"""

from __future__ import annotations

import errno as errno_codes
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, XlbError

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


__all__ = [
    "SysctlError",
    "SysctlKey",
    "check_interface_name",
    "conf_key",
    "read_int",
    "read_sysctl",
    "write_sysctl",
]
