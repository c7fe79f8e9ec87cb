"""Announcing VIPs over BGP: which prefixes, and the engines that speak BGP.

xlb has no BGP code of its own. Two engines do the protocol:

- `ExaBgpAnnouncer` runs ExaBGP 5 as a child process with a generated
  configuration (the [bgp] neighbours) and drives it through its API named
  pipes: commands into `{root}/run/{name}.in`, answers from `.out`. The
  root and the name are unique per instance, because ExaBGP also looks for
  its pipes in /run and would share them with another ExaBGP. The child
  gets PR_SET_PDEATHSIG: when its parent dies, even by kill -9, the kernel
  kills ExaBGP and closes its TCP sessions, and the routers drop the routes.
  (xlb is never ExaBGP's `process` child: ExaBGP respawns a crashed child as
  `nobody`, or ignores its death with the routes still announced.)
- `BirdAnnouncer` writes a BIRD include with static /32 and /128 routes for
  what should be announced and reloads BIRD through its control socket. The
  operator's BIRD configuration owns the sessions: the way to get BFD.

`prefixes_to_announce` is the policy, a pure function: which VIP addresses
to announce given the reals' health.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import itertools
import json
import os
import pwd
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .config.reader import find_exabgp
from .config.schema import BgpSettings, Neighbor, RouteAttributes, VipConfig
from .errors import XlbError
from .model import IPAddress, IPNetwork, Vip

__all__ = [
    "AnnounceError",
    "AnnouncementDriver",
    "Announcer",
    "AnnouncerState",
    "BirdAnnouncer",
    "Destination",
    "ExaBgpAnnouncer",
    "bird_include_text",
    "destination_order",
    "exabgp_config_text",
    "exabgp_route_command",
    "make_announcer",
    "prefix_of",
    "prefixes_to_announce",
]


#: What a node announces for a VIP: its address (as a host route), or its prefix.
Destination = IPAddress | IPNetwork


class AnnounceError(XlbError):
    """A BGP engine could not be started, driven or reloaded."""


# ================================================================= policy


def prefixes_to_announce(
    vips: Iterable[VipConfig],
    reals_up: Mapping[Vip, int] | None,
    min_healthy: int,
    draining: bool = False,
) -> dict[Destination, RouteAttributes]:
    """The VIP addresses this node should announce, with their attributes.

    `reals_up`: per VIP, how many of its reals are up; None before the
    first health results (a restarted node announces nothing until it knows
    it can serve); a VIP missing from it has no result yet. An address is
    announced while one of its VIPs has at least `min_healthy` reals up: a
    port whose reals are all down must not take a healthy port of the same
    address off the node. A drain announces nothing.
    """
    if reals_up is None or draining:
        return {}
    wanted: dict[Destination, RouteAttributes] = {}
    for entry in vips:
        if reals_up.get(entry.vip, 0) >= min_healthy:
            wanted[entry.vip.destination] = entry.route
    return wanted


def prefix_of(address: Destination) -> str:
    """The prefix announced for a VIP: its address as a /32 or /128, or
    the prefix of a prefix VIP."""
    if isinstance(address, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(address)
    return f"{address}/{address.max_prefixlen}"


def destination_order(address: Destination) -> tuple[int, bytes, int]:
    """Addresses and prefixes in one order: family, first address, length."""
    network = ipaddress.ip_network(prefix_of(address))
    return network.version, network.network_address.packed, network.prefixlen


# ================================================================= engine

NO_ATTRIBUTES = RouteAttributes()


@dataclass(frozen=True, slots=True)
class AnnouncerState:
    """What an engine announces, and its sessions (neighbour -> state)."""

    announced: Mapping[Destination, RouteAttributes] = field(default_factory=dict)
    # For ExaBGP the neighbour's address, for BIRD the protocol's name; the
    # state as the engine says it ("established", "idle", "up", "start"...).
    sessions: Mapping[str, str] = field(default_factory=dict)

    def established(self, neighbor: str) -> bool:
        return self.sessions.get(neighbor, "").lower() in ("established", "up")


class Announcer:
    """A BGP engine: start it, tell it what to announce, read its state, close it.

    `update(wanted)` is the one call a daemon needs: it announces what is
    new or changed in `wanted` and withdraws what is no longer there.
    """

    def __init__(self) -> None:
        self._announced: dict[Destination, RouteAttributes] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def sessions(self) -> dict[str, str]:
        raise NotImplementedError

    def alive(self) -> bool:
        """Whether the engine still runs (a child process can die)."""
        return True

    def _apply(
        self,
        announce: Mapping[Destination, RouteAttributes],
        withdraw: Iterable[Destination],
        wanted: Mapping[Destination, RouteAttributes],
    ) -> None:
        raise NotImplementedError

    def update(self, wanted: Mapping[Destination, RouteAttributes]) -> None:
        with self._lock:
            announce = {a: r for a, r in wanted.items() if self._announced.get(a) != r}
            withdraw = [a for a in self._announced if a not in wanted]
            if announce or withdraw:
                self._apply(announce, withdraw, dict(wanted))
            self._announced = dict(wanted)

    def announce(self, address: Destination, route: RouteAttributes = NO_ATTRIBUTES) -> None:
        self.update({**self._announced, address: route})

    def withdraw(self, address: Destination) -> None:
        self.update({a: r for a, r in self._announced.items() if a != address})

    def state(self) -> AnnouncerState:
        return AnnouncerState(dict(self._announced), self.sessions())

    def __enter__(self) -> Announcer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ================================================================= ExaBGP

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_instances = itertools.count()
START_TIMEOUT_S = 30.0  # ExaBGP's start is a Python start: seconds on a busy machine
COMMAND_TIMEOUT_S = 10.0


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that forked it ends.

    The kernel ties PR_SET_PDEATHSIG to the forking *thread*: start engines
    from a thread that lives as long as the daemon (its main thread or its
    event loop's). A parent that died before prctl ran is caught by the
    getppid check.
    """

    def preexec() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent_pid:
            os._exit(126)

    return preexec


def exabgp_config_text(bgp: BgpSettings) -> str:
    """ExaBGP's configuration: one `neighbor` block per [[bgp.neighbors]]."""
    return "\n".join(_exabgp_neighbor(bgp, n) for n in bgp.neighbors)


def _exabgp_neighbor(bgp: BgpSettings, n: Neighbor) -> str:
    lines = [
        f"neighbor {n.address} {{",
        f"    router-id {bgp.router_id};",
        f"    local-as {bgp.local_as};",
        f"    peer-as {n.peer_as};",
        f"    hold-time {n.hold_time};",
    ]
    if n.local_address is not None:
        lines.append(f"    local-address {n.local_address};")
    if n.password is not None:
        lines.append(f"    md5-password {json.dumps(n.password)};")
    lines += ["    family {", "        ipv4 unicast;", "        ipv6 unicast;", "    }", "}", ""]
    return "\n".join(lines)


def exabgp_route_command(
    verb: str, address: Destination, route: RouteAttributes, bgp: BgpSettings
) -> str:
    """One API command: `announce route P next-hop N [attributes]` or `withdraw route P ...`."""
    next_hop = bgp.next_hop_v4 if address.version == 4 else bgp.next_hop_v6
    parts = [verb, "route", prefix_of(address), "next-hop", str(next_hop or "self")]
    if route.communities:
        parts += ["community", "[" + " ".join(route.communities) + "]"]
    if route.med is not None:
        parts += ["med", str(route.med)]
    if route.local_pref is not None:
        parts += ["local-preference", str(route.local_pref)]
    return " ".join(parts)


class ExaBgpAnnouncer(Announcer):
    """ExaBGP as a child process, driven through its API named pipes.

    `root` is ExaBGP's root directory for this instance (EXABGP_ROOT): it
    holds the generated configuration, `run/{name}.in|.out` and `exabgp.log`.
    The child runs in the network namespace of the thread that calls
    `start()`.
    """

    def __init__(self, bgp: BgpSettings, root: Path, name: str | None = None) -> None:
        super().__init__()
        self.bgp = bgp
        self.root = Path(root)
        self.name = name or f"xlb-{os.getpid()}-{next(_instances)}"
        self.process: subprocess.Popen[bytes] | None = None
        self._out_fd: int | None = None
        self._pending = b""

    @property
    def pipe_in(self) -> Path:
        return self.root / "run" / f"{self.name}.in"

    @property
    def pipe_out(self) -> Path:
        return self.root / "run" / f"{self.name}.out"

    @property
    def log_path(self) -> Path:
        return self.root / "exabgp.log"

    def start(self) -> None:
        executable = find_exabgp(self.bgp.exabgp)
        if executable is None:
            raise AnnounceError(f"ExaBGP missing: no executable {self.bgp.exabgp!r}")
        self._make_pipes()
        config = self.root / "exabgp.conf"
        config.write_text(exabgp_config_text(self.bgp))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [executable, str(config)],
                env=self._environment(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # SIGKILL, not SIGTERM: the kernel then closes ExaBGP's TCP
                # sessions within ms (measured 15-30 ms to the router's route
                # gone); ExaBGP's own orderly shutdown took 0.23-0.32 s.
                preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL),
                close_fds=True,
            )
        try:
            self._wait_for_api()
        except BaseException:
            self.close()
            raise

    def _make_pipes(self) -> None:
        (self.root / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        for pipe in (self.pipe_in, self.pipe_out):
            pipe.unlink(missing_ok=True)
            os.mkfifo(pipe, 0o600)
        # Held open for reading (O_RDWR: never EOF, never blocks) for the
        # whole life of the engine, so ExaBGP's answers always have a reader.
        self._out_fd = os.open(self.pipe_out, os.O_RDWR | os.O_NONBLOCK)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
        env.update(
            {
                "EXABGP_ROOT": str(self.root),
                "exabgp.api.cli": "true",
                "exabgp.api.pipename": self.name,
                "exabgp.api.ack": "true",
                "exabgp.daemon.daemonize": "false",
                # ExaBGP always switches to this user after its start. Another
                # user than ours would make the kernel clear PR_SET_PDEATHSIG
                # (it does on every change of credentials): ExaBGP would
                # outlive us. So it stays who we are.
                "exabgp.daemon.user": pwd.getpwuid(os.getuid()).pw_name,
                "exabgp.daemon.drop": "false",
                "exabgp.log.destination": "stdout",
                "exabgp.tcp.bind": "",  # connect out only, never listen on :179
            }
        )
        return env

    def _wait_for_api(self) -> None:
        """Until ExaBGP answers a command on its pipes (or dies: its log says why)."""
        self.command("version", timeout=START_TIMEOUT_S)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _check_alive(self) -> None:
        if self.process is None:
            raise AnnounceError("ExaBGP is not started")
        code = self.process.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise AnnounceError(f"ExaBGP exited with status {code}: " + " / ".join(tail))

    def command(self, text: str, timeout: float = COMMAND_TIMEOUT_S) -> list[str]:
        """Send one API command; its answer lines, without the final "done".
        AnnounceError on "error" or no answer within `timeout`."""
        deadline = time.monotonic() + timeout
        self._write_command(text + "\n", deadline)
        lines: list[str] = []
        while True:
            line = self._read_line(deadline)
            if line == "done":
                return lines
            if line == "error":
                raise AnnounceError(f"ExaBGP refused {text!r}: {' / '.join(lines)}")
            lines.append(line)

    def _write_command(self, text: str, deadline: float) -> None:
        while True:
            try:
                fd = os.open(self.pipe_in, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:  # ENXIO: ExaBGP's pipe reader is not up yet
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise AnnounceError(f"cannot write to {self.pipe_in}: {exc.strerror}") from None
                self._check_alive()
                time.sleep(0.02)
        try:
            os.write(fd, text.encode())  # one short write into a pipe: atomic
        finally:
            os.close(fd)

    def _read_line(self, deadline: float) -> str:
        assert self._out_fd is not None
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AnnounceError(f"no answer from ExaBGP on {self.pipe_out}")
            ready, _, _ = select.select([self._out_fd], [], [], min(left, 0.2))
            self._check_alive()
            if ready:
                with contextlib.suppress(BlockingIOError):
                    self._pending += os.read(self._out_fd, 65536)
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _apply(
        self,
        announce: Mapping[Destination, RouteAttributes],
        withdraw: Iterable[Destination],
        wanted: Mapping[Destination, RouteAttributes],
    ) -> None:
        self._check_alive()
        for address in withdraw:
            old = self._announced[address]
            self.command(exabgp_route_command("withdraw", address, old, self.bgp))
        for address, route in announce.items():
            self.command(exabgp_route_command("announce", address, route, self.bgp))

    def sessions(self) -> dict[str, str]:
        """Per neighbour address, its BGP state ("established", "idle"...);
        every neighbour "down" when ExaBGP is not running."""
        down = {str(n.address): "down" for n in self.bgp.neighbors}
        if self.process is None or self.process.poll() is not None:
            return down
        try:
            with self._lock:
                lines = self.command("show neighbor json")
            peers = json.loads("".join(lines))
        except (AnnounceError, ValueError):
            return down
        for peer in peers:
            down[str(peer["peer"]["address"])] = str(peer.get("fsm", "down")).lower()
        return down

    def close(self) -> None:
        """Stop ExaBGP (it closes its sessions: the routers withdraw at once)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._out_fd is not None:
            os.close(self._out_fd)
            self._out_fd = None
        for pipe in (self.pipe_in, self.pipe_out):
            pipe.unlink(missing_ok=True)
        self._announced = {}


# =================================================================== BIRD

BIRD_PROTOCOL_V4 = "xlb_vips4"
BIRD_PROTOCOL_V6 = "xlb_vips6"


def bird_include_text(wanted: Mapping[Destination, RouteAttributes]) -> str:
    """Two static protocols (BIRD's static has one channel each) with one
    blackhole route per announced VIP; the operator's BGP protocols export
    `proto = "xlb_vips4"` / `"xlb_vips6"` (and the kernel protocol must not)."""
    out = ["# Written by xlb: the VIPs this node announces. Do not edit.", ""]
    for version, name in ((4, BIRD_PROTOCOL_V4), (6, BIRD_PROTOCOL_V6)):
        out += [f"protocol static {name} {{", f"    ipv{version};"]
        mine = (a for a in wanted if a.version == version)
        for address in sorted(mine, key=destination_order):
            out.append(
                f"    route {prefix_of(address)} blackhole{_bird_attributes(wanted[address])};"
            )
        out += ["}", ""]
    return "\n".join(out)


def _bird_attributes(route: RouteAttributes) -> str:
    settings = [f"bgp_community.add(({c.replace(':', ',')}));" for c in route.communities]
    if route.med is not None:
        settings.append(f"bgp_med = {route.med};")
    if route.local_pref is not None:
        settings.append(f"bgp_local_pref = {route.local_pref};")
    return " { " + " ".join(settings) + " }" if settings else ""


class BirdControl:
    """BIRD's control socket: one command, its reply lines (`birdc`'s protocol).

    Each reply line is a 4-digit code and "-" (more follows) or " " (last
    line); a line starting with a space continues the previous code. Codes
    8xxx and 9xxx are errors.
    """

    def __init__(self, path: Path, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, text: str) -> list[tuple[int, str]]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                reader = sock.makefile("rb")
                self._reply(reader)  # the greeting: "0001 BIRD 2.x ready."
                sock.sendall(text.encode() + b"\n")
                return self._reply(reader)
        except OSError as exc:
            raise AnnounceError(f"BIRD control socket {self.path}: {exc}") from None

    def _reply(self, reader: IO[bytes]) -> list[tuple[int, str]]:
        lines: list[tuple[int, str]] = []
        code = 0
        while True:
            raw = reader.readline().decode(errors="replace").rstrip("\n")
            if not raw:
                raise AnnounceError(f"BIRD closed {self.path} in the middle of a reply")
            if raw.startswith(" "):
                lines.append((code, raw[1:]))
                continue
            code = int(raw[:4])
            lines.append((code, raw[5:]))
            if raw[4] == " ":
                return lines


class BirdAnnouncer(Announcer):
    """Static routes in a BIRD include, reloaded through BIRD's control socket."""

    def __init__(self, bgp: BgpSettings) -> None:
        super().__init__()
        self.bgp = bgp
        self.control = BirdControl(bgp.bird_socket)

    def start(self) -> None:
        """Announce nothing until told: an empty include, BIRD reloaded."""
        self._write_and_reload({})

    def _apply(
        self,
        announce: Mapping[Destination, RouteAttributes],
        withdraw: Iterable[Destination],
        wanted: Mapping[Destination, RouteAttributes],
    ) -> None:
        self._write_and_reload(wanted)

    def _write_and_reload(self, wanted: Mapping[Destination, RouteAttributes]) -> None:
        include = self.bgp.bird_include
        partial = include.with_name(include.name + ".tmp")
        partial.write_text(bird_include_text(wanted))
        os.replace(partial, include)  # BIRD never reads half a file
        reply = self.control.command("configure")
        errors = [text for code, text in reply if code >= 8000]
        if errors:
            raise AnnounceError(f"BIRD refused its configuration: {' / '.join(errors)}")

    def sessions(self) -> dict[str, str]:
        """Per BGP protocol of BIRD, its state ("established", "active"...)."""
        try:
            reply = self.control.command("show protocols")
        except AnnounceError:
            return {}
        out: dict[str, str] = {}
        for code, text in reply:
            words = text.split()
            if code == 1002 and len(words) >= 4 and words[1] == "BGP":
                out[words[0]] = words[-1].lower() if words[3] == "up" else words[3].lower()
        return out

    def close(self) -> None:
        """Withdraw everything (an empty include) if BIRD is still there."""
        with contextlib.suppress(AnnounceError, OSError):
            self._write_and_reload({})
        self._announced = {}


# ================================================================ daemon


def make_announcer(bgp: BgpSettings, root: Path, name: str) -> Announcer:
    """The engine [bgp] names: ExaBGP with its root under `root`, or BIRD."""
    if bgp.announcer == "bird":
        return BirdAnnouncer(bgp)
    return ExaBgpAnnouncer(bgp, root, name)


class AnnouncementDriver:
    """An engine as the daemon drives it: from asyncio, in a thread of its own.

    Every engine call (start, update, sessions, close) runs in one worker
    thread that lives as long as the engine: the kernel ties ExaBGP's
    PR_SET_PDEATHSIG to the thread that forked it, so a short-lived thread
    would kill ExaBGP when it ended; and the engine's blocking pipe and
    socket I/O stays off the event loop that times the probes. The calls run
    in the order made, so the last `update` asked is what is announced.

    `announced` and `sessions` are snapshots replaced whole (never mutated),
    safe to read from the metrics server's threads: asking ExaBGP costs a
    round trip over its pipes, so sessions are refreshed by the daemon
    (`refresh_sessions`), not at every read.
    """

    def __init__(self, bgp: BgpSettings, engine: Announcer) -> None:
        self.bgp = bgp
        self.engine = engine
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="xlb-bgp")
        self.announced: Mapping[Destination, RouteAttributes] = {}
        self.sessions: Mapping[str, str] = _sessions_down(bgp)

    async def _call(self, function: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def start(self) -> None:
        """Start the engine (announcing nothing). AnnounceError if it cannot."""
        await self._call(self.engine.start)

    async def update(self, wanted: Mapping[Destination, RouteAttributes]) -> None:
        """Announce exactly `wanted`. AnnounceError if the engine refuses;
        then `announced` stays what the engine last took."""
        await self._call(self.engine.update, dict(wanted))
        self.announced = dict(wanted)

    def alive(self) -> bool:
        return self.engine.alive()

    async def refresh_sessions(self) -> Mapping[str, str]:
        sessions = await self._call(self.engine.sessions)
        assert isinstance(sessions, dict)
        self.sessions = {**_sessions_down(self.bgp), **sessions}
        return self.sessions

    async def close(self) -> None:
        """Stop the engine (ExaBGP's sessions close: the routers withdraw at
        once; BIRD's include is emptied), then its thread."""
        try:
            await self._call(self.engine.close)
        finally:
            self.announced = {}
            self.sessions = _sessions_down(self.bgp)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)


def _sessions_down(bgp: BgpSettings) -> dict[str, str]:
    return {str(n.address): "down" for n in bgp.neighbors}
