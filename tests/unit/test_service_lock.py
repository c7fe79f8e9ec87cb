"""The daemon's per-interface lock file: one owner, never through a symlink,
readable by root only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from xlb.errors import ExistsError, XlbError
from xlb.service import ServiceLock


def test_the_lock_file_is_0600_and_names_its_owner(tmp_path: Path) -> None:
    old = os.umask(0)  # whatever the umask, the file is 0600
    try:
        lock = ServiceLock.acquire(tmp_path, "eth0")
    finally:
        os.umask(old)
    try:
        mode = stat.S_IMODE((tmp_path / "eth0.lock").stat().st_mode)
        assert mode == 0o600, oct(mode)
        assert (tmp_path / "eth0.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(ExistsError, match=f"pid {os.getpid()}"):
            ServiceLock.acquire(tmp_path, "eth0")
    finally:
        lock.release()


def test_an_old_lock_file_with_a_wider_mode_is_narrowed(tmp_path: Path) -> None:
    (tmp_path / "eth0.lock").write_text("123\n")
    (tmp_path / "eth0.lock").chmod(0o644)
    lock = ServiceLock.acquire(tmp_path, "eth0")
    try:
        assert stat.S_IMODE((tmp_path / "eth0.lock").stat().st_mode) == 0o600
    finally:
        lock.release()


def test_a_symlink_at_the_lock_path_is_refused(tmp_path: Path) -> None:
    """Whoever can write the lock directory must not make the daemon (root)
    truncate and write a file of their choice."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "eth0.lock").symlink_to(victim)
    with pytest.raises(XlbError, match="symbolic link"):
        ServiceLock.acquire(tmp_path, "eth0")
    assert victim.read_text() == "precious\n"
