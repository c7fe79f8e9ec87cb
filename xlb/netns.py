"""Network namespaces: create, enter (this thread only), run commands in, delete.

`ip netns exec` remounts /sys, which hides pinned objects under
/sys/fs/bpf; `enter()` switches only the network namespace of the calling
thread (setns(2) with CLONE_NEWNET), so bpffs and the rest of the process
stay as they are. Python 3.11 has no os.setns, hence ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from . import host
from .errors import NotFoundError, XlbError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

# The C library the interpreter is linked with (find_library would run ldconfig).
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """Create a named namespace (`ip netns add`), loopback up; host.IpError if it cannot."""
    host.ip("netns", "add", name)
    host.ip("link", "set", "lo", "up", ns=name)


def delete(name: str) -> None:
    """Delete a named namespace; no error if it is already gone."""
    if exists(name):
        with contextlib.suppress(host.IpError):
            host.ip("netns", "del", name)


@contextlib.contextmanager
def enter(name: str | None) -> Iterator[None]:
    """Run the block with this thread in namespace `name` (None: stay)."""
    if name is None:
        yield
        return
    path = NETNS_DIR / name
    if not path.exists():
        raise NotFoundError(f"no network namespace named {name!r}")
    with enter_path(path):
        yield


@contextlib.contextmanager
def enter_path(path: str | Path | None) -> Iterator[None]:
    """Run the block with this thread in the namespace a file names
    (/run/netns/NAME, /proc/PID/ns/net; None: stay)."""
    if path is None:
        yield
        return
    with open("/proc/thread-self/ns/net") as home, open(path) as target:
        try:  # setns inside the try: a signal between the two cannot strand us
            _setns(target.fileno())
            yield
        finally:
            _setns(home.fileno())


def run(
    name: str | None, cmd: list[str], check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `name` without remounting /sys."""
    full = cmd if name is None else ["nsenter", f"--net={NETNS_DIR / name}", *cmd]
    result = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise XlbError(f"command failed in netns {name}: {' '.join(cmd)}: {result.stderr.strip()}")
    return result


def popen(name: str | None, cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a long-running process inside namespace `name`."""
    full = cmd if name is None else ["nsenter", f"--net={NETNS_DIR / name}", *cmd]
    return subprocess.Popen(full, **kwargs)  # type: ignore[call-overload, no-any-return]
