"""Health checks of the reals, probed through the tunnel to the VIP.

    path = ProbePath("eth0", pin_dir)            # tc egress program + policy routing
    checker = HealthChecker(path, on_change)     # asyncio probe loops
    checker.set_targets({target_for(entry, real, settings) for ...})

A `Target` is one probe loop: one real, checked one way at one destination
(by default the VIP's address and port). Several VIPs naming the same real
with the same check share a target. Each target's `TargetHealth` is a
rise/fall state machine; `on_change` is called when it flips.

How probes reach a real through the VIP path (docs/config.md has the
picture): a probe socket sets SO_MARK = XLB_HC_MARK_BASE | n and connects
to VIP:port; a policy rule routes marked packets out of the balancer's
interface; bpf/healthcheck.bpf.c at tc egress looks n up and wraps the
packet in the outer header the balancer would use for that real. The real
decapsulates and answers this host's own address directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from . import _abi, host
from ._bpf import BpfObject, Map, Program, check, ffi, ifindex, lib
from .config import Check, Settings, VipConfig, effective_encapsulation, probe_destination
from .errors import AttachError, CapacityError, ConfigError, XlbError
from .model import BalancerConfig, IPAddress, Real

log = logging.getLogger("xlb.health")

HC_OBJECT = Path(__file__).resolve().parent / "_bpf_objects" / "healthcheck.bpf.o"
HC_PROGRAM = "xlb_healthcheck"
MARK_BASE = int(lib.XLB_HC_MARK_BASE)
MARK_INDEX_BITS = int(lib.XLB_HC_MARK_INDEX_BITS)
MARK_MASK = (0xFFFFFFFF >> MARK_INDEX_BITS) << MARK_INDEX_BITS
MAX_TARGETS = int(lib.XLB_HC_LIMIT_MAX_TARGETS)
SO_MARK = getattr(socket, "SO_MARK", 36)
# The probe route's next hop: never on the wire (tc rewrites every packet
# that uses it) but it needs a permanent neighbour entry so the kernel
# neither ARPs for it nor for the VIP.
FAKE_NEXT_HOP = {4: "169.254.120.98", 6: "fe80::786c:62"}
# Outer headers the probe path may add (IPv6 + UDP): the route's MTU leaves room.
MAX_OUTER_BYTES = 48
# tc filter identity: fixed so a restarted daemon replaces its own filter.
TC_HANDLE = 0x786C
TC_PRIORITY = 0x786C
BPF_TC_F_REPLACE = 1  # enum bpf_tc_flags in libbpf.h
HTTP_READ_LIMIT = 64 * 1024
# The PATH of `command` checks (their environment: `command_environment`).
COMMAND_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ================================================================ logging


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line: `event=real_down vip=... real=...`.

    The fields ride along on the record (`record.fields`) so a JSON
    formatter can emit them as they are.
    """
    items = {"event": event, **fields}
    text = " ".join(f"{key}={format_value(value)}" for key, value in items.items())
    logger.log(level, "%s", text, extra={"fields": items})


def format_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\\') or any(ord(c) < 0x20 for c in text):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(
                {k: v if isinstance(v, int | float | bool) else str(v) for k, v in fields.items()}
            )
        else:
            data["message"] = record.getMessage()
        return json.dumps(data)


# ================================================================ targets


@dataclass(frozen=True, slots=True)
class Target:
    """One probe loop: `check` of `real`, sent to (address, port).

    With `via_vip` the probe goes through the tunnel (so `mac` and `gue`,
    which shape the tunnel, are part of what makes a target distinct);
    without it, it goes to the real's own address.
    """

    real: IPAddress
    address: IPAddress
    port: int
    check: Check
    mac: str | None = None
    gue: bool = False

    @property
    def via_vip(self) -> bool:
        return self.check.via_vip

    @property
    def probed_thing(self) -> tuple[IPAddress, IPAddress, int, str]:
        """What the probe tests, whatever its timing: a reload that only
        retimes a check carries the state over (a down real stays down)."""
        return self.real, self.address, self.port, self.check.type

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.check.type}://{host}:{self.port}@{self.real}"


def target_for(entry: VipConfig, real: Real, settings: Settings) -> Target | None:
    """The target that checks `real` for a VIP (None: the VIP has no check)."""
    check = entry.check
    if check is None:
        return None
    address, port = probe_destination(entry)
    if not check.via_vip:
        address = real.address
    return Target(
        real=real.address,
        address=address,
        port=port,
        check=check,
        mac=real.mac if check.via_vip else None,
        gue=check.via_vip and effective_encapsulation(entry, settings) == "gue",
    )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    reason: str = ""  # why it failed ("" when ok)


@dataclass(slots=True)
class TargetHealth:
    """Rise/fall state of one target, and its counters.

    `up` flips only after `fall` failures (or `rise` successes) in a row,
    so a real that alternates never flips faster than that.
    """

    rise: int
    fall: int
    up: bool = True
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    probes_ok: int = 0
    probes_failed: int = 0
    transitions_up: int = 0
    transitions_down: int = 0
    last_reason: str = ""
    changed_at: float = field(default_factory=time.time)

    def record(self, result: ProbeResult) -> bool:
        """Count one probe result; True if the state flipped."""
        if result.ok:
            self.probes_ok += 1
            self.successes, self.failures = self.successes + 1, 0
            if not self.up and self.successes >= self.rise:
                self._flip(True)
                return True
            return False
        self.probes_failed += 1
        self.failures, self.successes = self.failures + 1, 0
        self.last_reason = result.reason
        if self.up and self.failures >= self.fall:
            self._flip(False)
            return True
        return False

    def _flip(self, up: bool) -> None:
        self.up = up
        if up:
            self.transitions_up += 1
        else:
            self.transitions_down += 1
        self.changed_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "up" if self.up else "down",
            "probes_ok": self.probes_ok,
            "probes_failed": self.probes_failed,
            "transitions_up": self.transitions_up,
            "transitions_down": self.transitions_down,
            "last_failure": self.last_reason,
            "changed_at": round(self.changed_at, 3),
        }


# ================================================================ probes


async def probe(target: Target, mark: int) -> ProbeResult:
    """Run one probe of `target` within its timeout; never raises."""
    check = target.check
    try:
        async with asyncio.timeout(check.timing.timeout):
            return await _PROBES[check.type](target, mark)
    except TimeoutError:
        return ProbeResult(False, f"timeout after {check.timing.timeout:g}s")
    except (OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError, XlbError) as exc:
        return ProbeResult(False, _describe(exc))
    except Exception as exc:  # a probe bug must fail the probe, not end the loop
        log.exception("probe of %s failed unexpectedly", target)
        return ProbeResult(False, _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _connected_socket(target: Target, mark: int, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket connected to the target, marked for the tunnel."""
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        await asyncio.get_running_loop().sock_connect(sock, (str(target.address), target.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _probe_tcp(target: Target, mark: int) -> ProbeResult:
    sock = await _connected_socket(target, mark, socket.SOCK_STREAM)
    sock.close()
    return ProbeResult(True)


async def _probe_http(target: Target, mark: int) -> ProbeResult:
    check = target.check
    sock = await _connected_socket(target, mark, socket.SOCK_STREAM)
    tls = _tls_context(check) if check.type == "https" else None
    try:
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname=(check.host or str(target.address)) if tls else None
        )
    except BaseException:
        sock.close()
        raise
    try:
        http = h11.Connection(h11.CLIENT)
        writer.write(http.send(_http_request(target)) + http.send(h11.EndOfMessage()))
        await writer.drain()
        return await _judge_http(reader, http, check)
    except h11.RemoteProtocolError as exc:
        return ProbeResult(False, f"not an HTTP response: {exc}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _http_request(target: Target) -> h11.Request:
    check = target.check
    host = check.host or (
        f"[{target.address}]" if target.address.version == 6 else str(target.address)
    )
    headers = [
        ("Host", host),
        ("User-Agent", "xlb-health"),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    return h11.Request(method="GET", target=check.path, headers=headers)


async def _judge_http(
    reader: asyncio.StreamReader, http: h11.Connection, check: Check
) -> ProbeResult:
    """The status, then (with `expect_body`) the body as h11 decodes it
    (chunked or not): the text must be in its first HTTP_READ_LIMIT bytes."""
    response = await _next_event(reader, http)
    while isinstance(response, h11.InformationalResponse):  # 100 Continue and the like
        response = await _next_event(reader, http)
    if not isinstance(response, h11.Response):
        return ProbeResult(False, f"not an HTTP response: {type(response).__name__}")
    if response.status_code not in check.expect_status:
        return ProbeResult(False, f"status {response.status_code}")
    if check.expect_body is None:
        return ProbeResult(True)
    wanted = check.expect_body.encode()
    body = bytearray()
    while len(body) < HTTP_READ_LIMIT:
        event = await _next_event(reader, http)
        if not isinstance(event, h11.Data):  # EndOfMessage (or the connection closed)
            break
        body += event.data
        if wanted in body[:HTTP_READ_LIMIT]:
            return ProbeResult(True)
    return ProbeResult(False, f"body lacks {check.expect_body!r}")


async def _next_event(reader: asyncio.StreamReader, http: h11.Connection) -> Any:
    """The next h11 event of the response, reading from the socket as needed."""
    while (event := http.next_event()) is h11.NEED_DATA:
        http.receive_data(await reader.read(16 * 1024))  # b"": the peer closed
    return event


def _tls_context(check: Check) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not check.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _probe_udp(target: Target, mark: int) -> ProbeResult:
    check = target.check
    loop = asyncio.get_running_loop()
    sock = await _connected_socket(target, mark, socket.SOCK_DGRAM)
    try:
        await loop.sock_sendall(sock, check.send.encode())
        reply = await loop.sock_recv(sock, 65536)  # ICMP unreachable: ConnectionRefusedError
    finally:
        sock.close()
    if check.expect is not None and check.expect.encode() not in reply:
        return ProbeResult(False, f"reply lacks {check.expect!r}: {reply[:40]!r}")
    return ProbeResult(True)


async def _probe_command(target: Target, mark: int) -> ProbeResult:
    values = {
        "{vip}": str(target.address),
        "{port}": str(target.port),
        "{real}": str(target.real),
        "{mark}": str(mark),
    }
    argv = [_substitute(arg, values) for arg in target.check.command]
    account = _command_account(target.check.user)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=command_environment(target, mark, account),
        cwd="/",
        start_new_session=True,  # a timeout kills the command and its children
        **_drop_to(account),
    )
    try:
        _, stderr = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())
        raise
    if process.returncode == 0:
        return ProbeResult(True)
    detail = stderr.decode(errors="replace").strip().splitlines()
    return ProbeResult(
        False, f"exit {process.returncode}" + (f": {detail[-1][:120]}" if detail else "")
    )


def command_environment(
    target: Target, mark: int, account: pwd.struct_passwd | None = None
) -> dict[str, str]:
    """The whole environment of a `command` check: COMMAND_PATH, the HOME of
    the account it runs as, and the probe's XLB_VIP, XLB_PORT, XLB_REAL,
    XLB_MARK. Nothing of the daemon's own environment leaks into it."""
    account = account or pwd.getpwuid(os.getuid())
    return {
        "PATH": COMMAND_PATH,
        "HOME": account.pw_dir,
        "XLB_VIP": str(target.address),
        "XLB_PORT": str(target.port),
        "XLB_REAL": str(target.real),
        "XLB_MARK": str(mark),
    }


def _command_account(user: str | None) -> pwd.struct_passwd | None:
    if user is None:
        return None
    try:
        return pwd.getpwnam(user)
    except KeyError:  # checked when the file was loaded; deleted since
        raise ConfigError(f"no user {user!r} on this host for the command check") from None


def _drop_to(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess arguments that make the child that user: its uid, its
    primary gid and its supplementary groups (set in the child, before exec)."""
    if account is None:
        return {}
    return {
        "user": account.pw_uid,
        "group": account.pw_gid,
        "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid),
    }


def _substitute(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace(key, value)
    return arg


_PROBES: dict[str, Callable[[Target, int], Awaitable[ProbeResult]]] = {
    "tcp": _probe_tcp,
    "http": _probe_http,
    "https": _probe_http,
    "udp": _probe_udp,
    "command": _probe_command,
}


# ============================================================ probe path


class ProbeRouting:
    """The policy routing that sends marked probe sockets out of `interface`.

    `ip rule fwmark BASE/MASK lookup TABLE` (IPv4 and IPv6) and, in that
    table, a default route via a fake next hop with a permanent neighbour
    entry. The route's MTU leaves room for the outer header.
    """

    def __init__(self, interface: str, table: int, priority: int, mtu: int) -> None:
        self.interface = interface
        self.table = table
        self.priority = priority
        self.mtu = mtu
        self.families: list[int] = []

    def install(self) -> None:
        self.remove()  # whatever a previous run left
        mac = host.link_mac(self.interface)
        for family in (4, 6):
            try:
                self._install_family(family, mac)
                self.families.append(family)
            except XlbError as exc:  # e.g. IPv6 disabled: v6 probes cannot work
                log_event(log, "probe_route_failed", logging.WARNING, family=family, error=exc)

    def _install_family(self, family: int, mac: str) -> None:
        hop, flag, table = FAKE_NEXT_HOP[family], f"-{family}", str(self.table)
        mark = f"{MARK_BASE:#x}/{MARK_MASK:#x}"
        dev = self.interface
        host.ip(flag, "neigh", "replace", hop, "lladdr", mac, "dev", dev, "nud", "permanent")
        host.ip(flag, "route", "replace", "default", "via", hop, "dev", dev, "onlink",
                "table", table, "mtu", str(self.mtu))  # fmt: skip
        host.ip(flag, "rule", "add", "pref", str(self.priority), "fwmark", mark, "lookup", table)

    def remove(self) -> None:
        for family in (4, 6):
            flag = f"-{family}"
            with contextlib.suppress(host.IpError):  # no rule left
                for _ in range(16):  # one rule per earlier run at most, but be sure
                    host.ip(flag, "rule", "del", "pref", str(self.priority))
            with contextlib.suppress(host.IpError):  # nothing to flush
                host.ip(flag, "route", "flush", "table", str(self.table))
            with contextlib.suppress(host.IpError):  # no such neighbour
                host.ip(flag, "neigh", "del", FAKE_NEXT_HOP[family], "dev", self.interface)
        self.families.clear()


class TcEgress:
    """A program at tc egress with a fixed handle and priority (replaced, not
    duplicated, when a restarted daemon attaches again)."""

    def __init__(self, program: Program, interface: str) -> None:
        self.interface = interface
        self._hook = ffi.new("struct bpf_tc_hook *")
        self._hook.sz = ffi.sizeof("struct bpf_tc_hook")
        self._hook.ifindex = ifindex(interface)
        self._hook.attach_point = lib.BPF_TC_EGRESS
        ret = lib.bpf_tc_hook_create(self._hook)
        if ret < 0 and ret != -errno.EEXIST:
            check(ret, f"creating clsact on {interface}", cls=AttachError)
        opts = self._opts(program.fd, BPF_TC_F_REPLACE)
        what = f"attaching {program.name} at tc egress of {interface}"
        check(lib.bpf_tc_attach(self._hook, opts), what, cls=AttachError)

    def _opts(self, prog_fd: int = 0, flags: int = 0) -> Any:
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.handle, opts.priority = TC_HANDLE, TC_PRIORITY
        opts.prog_fd, opts.flags = prog_fd, flags
        return opts

    def detach(self) -> None:
        ret = lib.bpf_tc_detach(self._hook, self._opts())
        if ret < 0 and ret != -errno.ENOENT:
            check(ret, f"detaching the probe program from {self.interface}", cls=AttachError)


@dataclass(frozen=True, slots=True)
class Tunnel:
    """What the tc program needs to send a probe to one real."""

    real: IPAddress
    mac: str | None
    gue: bool


class ProbePath:
    """The tc egress program, its target map and the policy routing.

    `pin_dir`: the balancer's pin directory. The program's `config` map is
    the balancer's own (reused from the pin), so the outer source prefix,
    GUE port and next hop always match the data plane. Without a pin
    directory (tests), `write_config()` fills a private one.
    """

    def __init__(
        self,
        interface: str,
        pin_dir: str | Path | None = None,
        *,
        route_table: int = 30818,
        rule_priority: int = 30818,
        path_mtu: int = 1500,
        object_path: str | Path | None = None,
    ) -> None:
        self.interface = interface
        self._obj = BpfObject(object_path or HC_OBJECT, pin_dir=pin_dir, only=[HC_PROGRAM])
        self._targets: Map = self._obj.map("hc_targets")
        self._marks: dict[Tunnel, int] = {}
        self._users: dict[Tunnel, int] = {}
        self._tc: TcEgress | None = None
        self._routing = ProbeRouting(
            interface, route_table, rule_priority, self._route_mtu(path_mtu)
        )
        try:
            self._clear_targets()  # a pinned map keeps a previous run's entries
            self._tc = TcEgress(self._obj.program(HC_PROGRAM), interface)
            self._routing.install()
        except BaseException:
            self.close()
            raise

    def _route_mtu(self, path_mtu: int) -> int:
        link_mtu = host.link_mtu(self.interface)
        usable = min(link_mtu, path_mtu) if path_mtu else link_mtu
        return max(usable - MAX_OUTER_BYTES, 552)

    def _clear_targets(self) -> None:
        for key in list(self._targets.keys()):
            with contextlib.suppress(XlbError):
                self._targets.delete(key)

    def write_config(self, config: BalancerConfig) -> None:
        """Fill the `config` map (only needed when it is not the balancer's)."""
        self._obj.map("config").update(_abi.u32(0), _abi.config_value(config))

    def acquire(self, tunnel: Tunnel) -> int:
        """The mark that sends a socket's packets through `tunnel` (refcounted)."""
        if tunnel in self._marks:
            self._users[tunnel] += 1
            return self._marks[tunnel]
        mark = MARK_BASE | self._free_index()
        self._targets.update(_abi.u32(mark), _target_value(tunnel))
        self._marks[tunnel], self._users[tunnel] = mark, 1
        return mark

    def release(self, tunnel: Tunnel) -> None:
        if tunnel not in self._users:
            return
        self._users[tunnel] -= 1
        if self._users[tunnel] == 0:
            mark = self._marks.pop(tunnel)
            del self._users[tunnel]
            with contextlib.suppress(XlbError):
                self._targets.delete(_abi.u32(mark))

    def _free_index(self) -> int:
        used = {mark & ~MARK_MASK for mark in self._marks.values()}
        for index in range(1, MAX_TARGETS + 1):
            if index not in used:
                return index
        raise CapacityError(f"all {MAX_TARGETS} probe marks are in use")

    def counters(self) -> dict[str, int]:
        names = _abi.enum_names("enum xlb_hc_counter_index", "XLB_HCNT_")
        m = self._obj.map("hc_counters")
        return {
            name: int(m.sum_percpu(_abi.u32(index))[0])
            for index, name in sorted(names.items())
            if name != "count"
        }

    def close(self) -> None:
        """Detach the program, remove the routing; the pinned maps stay."""
        with contextlib.suppress(XlbError):
            self._routing.remove()
        if self._tc is not None:
            with contextlib.suppress(XlbError):
                self._tc.detach()
            self._tc = None
        self._obj.close()


def _target_value(tunnel: Tunnel) -> bytes:
    value = ffi.new("struct xlb_hc_target *")
    _abi.set_addr(value.addr, tunnel.real)
    ffi.memmove(value.mac, _abi.mac_bytes(tunnel.mac), 6)
    value.family = _abi.FAMILY[tunnel.real.version]
    value.flags = lib.XLB_HC_F_GUE if tunnel.gue else lib.XLB_HC_F_NONE
    return _abi.to_bytes(value)


# =============================================================== checker

ChangeCallback = Callable[[Target, TargetHealth], None]


class HealthChecker:
    """Probe loops for a set of targets, on the running event loop.

    `set_targets()` starts loops for new targets, stops those that left and
    keeps the rest (with their state): a reload does not reset health.
    `on_change(target, health)` is called after each flip.
    """

    def __init__(self, path: ProbePath | None, on_change: ChangeCallback) -> None:
        self._path = path
        self._on_change = on_change
        self._tasks: dict[Target, asyncio.Task[None]] = {}
        self._health: dict[Target, TargetHealth] = {}
        self._marks: dict[Target, int] = {}

    @property
    def targets(self) -> list[Target]:
        return list(self._health)

    def health(self, target: Target) -> TargetHealth:
        return self._health[target]

    def is_up(self, target: Target) -> bool:
        health = self._health.get(target)
        return health is None or health.up

    def set_targets(self, targets: Iterable[Target]) -> None:
        wanted = set(targets)
        was_up: dict[tuple[IPAddress, IPAddress, int, str], bool] = {}
        for target in [t for t in self._health if t not in wanted]:
            was_up[target.probed_thing] = self._health[target].up
            self._stop(target)
        for target in wanted - self._health.keys():
            self._start(target, was_up.get(target.probed_thing, True))

    def _start(self, target: Target, up: bool) -> None:
        """New targets start up: a reload or restart takes no traffic away
        while the first probes run."""
        timing = target.check.timing
        self._health[target] = TargetHealth(rise=timing.rise, fall=timing.fall, up=up)
        self._marks[target] = self._acquire_mark(target)
        self._tasks[target] = asyncio.get_running_loop().create_task(
            self._loop(target), name=f"xlb-health {target}"
        )

    def _acquire_mark(self, target: Target) -> int:
        if not target.via_vip or self._path is None:
            return 0
        return self._path.acquire(Tunnel(target.real, target.mac, target.gue))

    def _stop(self, target: Target) -> None:
        task = self._tasks.pop(target, None)
        if task is not None:
            task.cancel()
        del self._health[target]
        if self._marks.pop(target, 0) and self._path is not None:
            self._path.release(Tunnel(target.real, target.mac, target.gue))

    async def _loop(self, target: Target) -> None:
        interval = target.check.timing.interval
        loop = asyncio.get_running_loop()
        # Spread the first probes of many targets over part of an interval.
        await asyncio.sleep(random.uniform(0, interval / 4))
        while True:
            started = loop.time()
            result = await probe(target, self._marks.get(target, 0))
            health = self._health.get(target)
            if health is None:  # stopped while probing
                return
            if health.record(result):
                self._notify(target, health)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    def _notify(self, target: Target, health: TargetHealth) -> None:
        try:
            self._on_change(target, health)
        except Exception:  # a broken callback must not stop the probing
            log.exception("health change handler failed for %s", target)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for target in list(self._health):
            self._stop(target)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = [
    "HealthChecker",
    "JsonFormatter",
    "ProbePath",
    "ProbeResult",
    "Target",
    "TargetHealth",
    "Tunnel",
    "command_environment",
    "log_event",
    "probe",
    "target_for",
]
