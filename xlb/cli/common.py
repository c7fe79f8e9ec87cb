"""What every `xlb` verb shares: its errors, exit codes, which data plane
it works on, and how it opens one (adopted read-mostly, never detached)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import host
from ..config.schema import DEFAULT_LOCK_DIR
from ..errors import XlbError
from ..pins import DEFAULT_PIN_ROOT, PIN_MARKER, pinned_interfaces

if TYPE_CHECKING:
    from ..balancer import Balancer

PROG = "xlb"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class CliError(XlbError):
    """An error the CLI reports as one line (exit 1)."""


class UsageError(CliError):
    """A bad argument found after parsing (exit 2)."""


# ============================================================ data plane


@dataclass(frozen=True, slots=True)
class Target:
    """Which data plane a command works on."""

    interface: str | None
    pin_dir: Path
    lock_dir: Path

    @property
    def name(self) -> str:
        return self.interface or str(self.pin_dir)


def resolve_target(args: argparse.Namespace, require_pinned: bool = True) -> Target:
    interface: str | None = args.interface
    lock_dir: Path = args.lock_dir
    if args.pin_dir is not None:
        pin_dir = Path(args.pin_dir)
        if interface is None and pin_dir.parent == DEFAULT_PIN_ROOT:
            interface = pin_dir.name
    elif interface is not None:
        pin_dir = DEFAULT_PIN_ROOT / interface
    else:
        found = pinned_interfaces(DEFAULT_PIN_ROOT)
        if len(found) == 1:
            interface, pin_dir = found[0], DEFAULT_PIN_ROOT / found[0]
        elif not found:
            if require_pinned:
                raise CliError(
                    f"no xlb data plane is pinned under {DEFAULT_PIN_ROOT}: start one with "
                    "`xlb serve CONFIG` (or name it with -i IFACE / --pin-dir DIR)"
                )
            return Target(None, DEFAULT_PIN_ROOT, lock_dir)
        else:
            raise UsageError(
                f"several data planes are pinned ({', '.join(found)}): choose one with -i IFACE"
            )
    if require_pinned and not (pin_dir / PIN_MARKER).exists():
        where = f"on {interface} " if interface else ""
        raise CliError(
            f"no xlb data plane {where}(nothing pinned at {pin_dir}): "
            "start one with `xlb serve CONFIG`"
        )
    return Target(interface, pin_dir, lock_dir)


@contextlib.contextmanager
def open_balancer(target: Target) -> Iterator[Balancer]:
    """Adopt the pinned maps without touching the attachment; never detaches."""
    from ..balancer import Balancer

    lb = Balancer(pin_dir=target.pin_dir)
    lb.interface = target.interface  # for `save`; this handle attaches nothing
    xdp = host.xdp_program(target.interface) if target.interface else None
    if xdp is not None and xdp.mode == "generic":
        lb.mode = "generic"
    try:
        yield lb
    finally:
        lb.close(detach=False)


def daemon_pid(target: Target) -> int | None:
    """The pid of the `xlb serve` holding <lock_dir>/<interface>.lock, if any.

    Read from /proc/locks (who holds a flock on that file's inode), so asking
    never takes the lock itself and can never make a starting daemon fail.
    """
    if target.interface is None:
        return None
    path = target.lock_dir / f"{target.interface}.lock"
    try:
        st = path.stat()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].lower() == dev:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def refuse_if_daemon(target: Target, what: str) -> None:
    pid = daemon_pid(target)
    if pid is not None:
        raise CliError(
            f"`xlb serve` (pid {pid}) manages {target.interface}: {what} would be undone at its "
            f"next reload or health change; edit its configuration file and reload it "
            f"(kill -HUP {pid})"
        )


__all__ = [
    "DEFAULT_LOCK_DIR",
    "DEFAULT_PIN_ROOT",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "PIN_MARKER",
    "PROG",
    "CliError",
    "Target",
    "UsageError",
    "daemon_pid",
    "open_balancer",
    "refuse_if_daemon",
    "resolve_target",
]
