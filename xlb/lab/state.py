"""What a lab leaves on the host, and how it goes away.

Everything a lab creates is recorded in a state file (/run/xlb/lab/<name>.json)
before it is created; `Lab.close()` (context manager, SIGTERM/SIGINT/SIGHUP,
interpreter exit) removes it all with `remove_state`, and `cleanup_all()`
(`python -m xlb.lab cleanup`) removes what a crashed run left: namespaces
named `xlbl-*`, pins under /sys/fs/bpf/xlb-lab, lab server processes.
`leftovers()` lists whatever of any lab still exists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO, Any

from .. import host, netns
from ..errors import XlbError

log = logging.getLogger("xlb.lab")

LAB_PREFIX = "xlbl-"
STATE_DIR = Path("/run/xlb/lab")
PIN_ROOT = Path("/sys/fs/bpf/xlb-lab")
#: The lab server, started by path in each real's namespace (standard library only).
LABSERVER = Path(__file__).resolve().parent / "server.py"
#: What a lab server's command line holds wherever xlb is installed: how
#: `leftovers()` finds stray servers.
LABSERVER_MARK = "/".join(LABSERVER.parts[-3:]).encode()  # b"xlb/lab/server.py"


def private_dir(path: Path) -> None:
    """A directory only root may enter (0700, whatever the umask), made if missing.

    The lab's state and run files describe the host's namespaces and
    processes; an existing path that is not a real directory is refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise XlbError(f"{path} is not a directory")
    path.chmod(0o700)


def private_file(path: Path, mode: str = "w") -> IO[Any]:
    """Open `path` for writing, truncated, readable by its owner only (0600
    from the start, whatever the umask; a symlink there is refused)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file left by an earlier run keeps its old mode otherwise
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (None if it is gone)."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(proc_stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(netns.NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def process_name(pid: int) -> str | None:
    """A process's command name (/proc/PID/comm); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def pids_in_netns(name: str) -> list[int]:
    """Processes whose network namespace is `name` (like `ip netns pids`)."""
    target = _netns_inode(name)
    if target is None:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            st = os.stat(proc / "ns" / "net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == target:
            found.append(int(proc.name))
    return found


def kill_pids(pids: Iterable[int], timeout: float = 2.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `timeout`."""
    pending = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            pending.append(pid)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if proc_start_time(p) is not None and not _zombie(p)]
        if pending:
            time.sleep(0.02)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _lab_namespaces() -> list[str]:
    if not netns.NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in netns.NETNS_DIR.iterdir() if p.name.startswith(LAB_PREFIX))


def remove_state(state: dict[str, Any]) -> list[str]:
    """Remove everything a state file lists; what was removed, for reports.

    Each step is attempted even if an earlier one failed; the state file goes
    last, and only when nothing it lists is left."""
    removed: list[str] = []
    problems: list[str] = []

    def attempt(what: str, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:
            problems.append(f"{what}: {exc}")

    def kill_processes() -> None:
        pids = {p["pid"] for p in state.get("processes", []) if _alive(p["pid"], p.get("start"))}
        for name in state.get("namespaces", []):
            pids.update(pids_in_netns(name))
        if pids:
            kill_pids(sorted(pids))
            removed.extend(f"process {pid}" for pid in sorted(pids))

    def delete_namespace(name: str) -> None:
        if netns.exists(name):
            try:
                host.ip("netns", "del", name)
            except host.IpError:
                if netns.exists(name):
                    raise
            removed.append(f"netns {name}")

    def remove_dir(path: str, what: str) -> None:
        if Path(path).exists():
            shutil.rmtree(path)
            removed.append(f"{what} {path}")

    attempt("killing processes", kill_processes)
    for name in state.get("namespaces", []):
        attempt(f"deleting netns {name}", lambda n=name: delete_namespace(n))
    for pin_dir in state.get("pin_dirs", []):
        attempt(f"removing {pin_dir}", lambda d=pin_dir: remove_dir(d, "pins"))
    if state.get("run_dir"):
        attempt(f"removing {state['run_dir']}", lambda: remove_dir(state["run_dir"], "files"))
    if problems:
        for problem in problems:
            log.error("lab %s: %s", state.get("name", "leftovers"), problem)
    elif state.get("name"):
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / f"{state['name']}.json").unlink()
    return removed


def running_labs() -> list[dict[str, Any]]:
    """State of every lab whose owning process is still alive."""
    labs = []
    for path in sorted(STATE_DIR.glob(f"{LAB_PREFIX}*.json")) if STATE_DIR.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            if _alive(state["owner_pid"], state.get("owner_start")):
                labs.append(state)
    return labs


def cleanup_all(include_running: bool = False, only: Collection[str] | None = None) -> list[str]:
    """Remove what labs left behind: namespaces `xlbl-*`, their processes,
    pins under /sys/fs/bpf/xlb-lab, state files. Labs whose owner process is
    alive are left alone unless `include_running`; `only` limits the cleanup
    to the labs of those names (so one test run never removes what another
    run on the same machine is using). Returns what was removed."""
    removed: list[str] = []
    live: set[str] = set()

    def ours(lab: str) -> bool:
        return only is None or lab in only

    for path in sorted(STATE_DIR.glob(f"{LAB_PREFIX}*.json")) if STATE_DIR.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            if only is None:
                path.unlink(missing_ok=True)
            continue
        if not ours(state["name"]):
            live.add(state["name"])
            continue
        if not include_running and _alive(state.get("owner_pid", 0), state.get("owner_start")):
            live.add(state["name"])
            continue
        removed += remove_state(state)
    # Anything named like a lab but not owned by a live lab: a crash before
    # the state file was written, or a state file that was lost.
    orphans = [
        n
        for n in _lab_namespaces()
        if not any(n.startswith(f"{lab}-") for lab in live) and ours(_lab_of(n))
    ]
    if orphans:
        removed += remove_state({"namespaces": orphans})
    for directory in (PIN_ROOT, STATE_DIR):
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            owner = path.name.removesuffix(".json").removesuffix(".tmp")
            if owner.startswith(LAB_PREFIX) and owner not in live and ours(owner):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(f"{path}")
    return removed


def _lab_of(namespace: str) -> str:
    """The lab a namespace belongs to: `xlbl-1a2b3c-real1` -> `xlbl-1a2b3c`."""
    return "-".join(namespace.split("-")[:2])


def leftovers() -> list[str]:
    """What of any lab still exists (empty when everything is clean)."""
    found = [f"netns {n}" for n in _lab_namespaces()]
    if PIN_ROOT.is_dir():
        found += [f"pins {p}" for p in PIN_ROOT.iterdir()]
    if STATE_DIR.is_dir():
        found += [f"state {p}" for p in STATE_DIR.iterdir()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if LABSERVER_MARK in cmdline and b"--control" in cmdline:
                    args = cmdline.decode(errors="replace").split("\0")
                    control = Path(args[args.index("--control") + 1])
                    found.append(f"process {proc.name} ({control.parent.name})")
    return found
