"""The `xlb serve` daemon: a config file, health checks and the data plane.

    Service("lb.toml").run()                       # blocking; signals handled

    async with Service(xlb.config.load("lb.toml")) as svc:
        print(svc.health())

`Service` takes a per-interface lock, attaches (or adopts the pinned) data
plane, installs the probe path, starts the health checks and keeps the
data plane equal to "the file, minus what health took out" by diffing it
against what the balancer holds after every reload and every health flip.
Stopping leaves the data plane forwarding unless `teardown` is set.
While it runs it answers on a control socket (xlb/control.py); `run()`
also tells systemd how it goes (xlb/sdnotify.py). docs/config.md describes
the file, the checks and the signals, docs/deploy.md the unit and socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import config as cfg
from .announce import (
    AnnounceError,
    AnnouncementDriver,
    destination_order,
    make_announcer,
    prefixes_to_announce,
)
from .balancer import Balancer
from .config import BgpSettings, Config, ConfigFileError, VipConfig
from .control import ControlServer, Handler, socket_path
from .errors import ConfigError, ExistsError, XlbError
from .health import HealthChecker, JsonFormatter, ProbePath, Target, TargetHealth, log_event
from .health import target_for as _target_for
from .model import IPAddress, Real, Vip
from .sdnotify import Notifier, stream_is_journal

log = logging.getLogger("xlb.service")

WATCH_INTERVAL_S = 1.0
# How often the wait for the first health results looks at the checks (the
# checker reports flips, not single results).
FIRST_RESULTS_POLL_S = 0.05
# How often the BGP sessions' states are asked of the engine (for status,
# `xlb list` and the metrics; asking ExaBGP is a round trip over its pipes).
SESSIONS_REFRESH_S = 1.0
# A drain: withdraw, then wait until no new flow arrived for DRAIN_QUIET_S
# (the routers have moved the flows elsewhere), at most DRAIN_TIMEOUT_S.
DRAIN_TIMEOUT_S = 30.0
DRAIN_QUIET_S = 2.0
DRAIN_POLL_S = 0.1
# The data plane's counters of packets that started a flow on this node: no
# connection-table entry (a new flow), a SYN re-selecting its 5-tuple, or a
# QUIC long header whose connection ID names no server (a client's Initial).
NEW_FLOW_COUNTERS = ("conn_miss", "conn_syn_reset", "quic_initial")
# Events counted from 0 at start (not from their first occurrence): a
# dashboard's rate() and an alert on them need the series before the event.
EVENTS_FROM_ZERO = ("reloads", "reloads_rejected", "real_up", "real_down")
# Settings a reload cannot change: they name the running data plane itself.
RESTART_ONLY = ("interface", "xdp_mode", "pin_dir", "lock_dir")


# ============================================================ pure policy


def serving_reals(
    entry: VipConfig, is_up: Callable[[IPAddress], bool], running: Sequence[Real]
) -> tuple[tuple[Real, ...], bool]:
    """The reals a VIP should have given health, and whether the VIP is healthy.

    Healthy: at least one up real with a configured weight > 0. Down reals
    are left out (`on_failure = "remove"`) or kept with weight 0
    (`"drain"`). With every real down, `all_down = "drop"` serves nothing
    new, and `"keep"` keeps the reals that serve now (`running`, as far as
    the file still lists them) so the ring stays as it was.
    """
    up = [r for r in entry.reals if is_up(r.address)]
    down = [_drained(r) for r in entry.reals if not is_up(r.address)]
    kept_down = down if entry.on_failure == "drain" else []
    healthy = any(r.weight > 0 for r in up)
    if healthy or not entry.reals:
        return cfg.sort_reals([*up, *kept_down]), healthy
    if entry.all_down == "drop":
        return cfg.sort_reals([*(_drained(r) for r in up), *kept_down]), False
    return _last_ring(entry, running), False


def _drained(real: Real) -> Real:
    return real.with_weight(0)  # keeps its MAC and its QUIC server id


def _last_ring(entry: VipConfig, running: Sequence[Real]) -> tuple[Real, ...]:
    """The configured reals that serve in the data plane now (`keep`)."""
    serving_now = {r.address for r in running if r.weight > 0}
    kept = [r for r in entry.reals if r.address in serving_now]
    if not kept:  # nothing serves now (e.g. a fresh start): every configured real
        return entry.reals
    others = [_drained(r) for r in entry.reals if r.address not in serving_now]
    return cfg.sort_reals([*kept, *(others if entry.on_failure == "drain" else [])])


# ================================================================== lock


class ServiceLock:
    """flock(<lock_dir>/<interface>.lock): one daemon per interface.

    The file holds the owner's pid for the message of the one refused. It is
    never unlinked (unlinking a lock file lets two owners hold two inodes).
    It is opened with O_NOFOLLOW (a symlink planted at its path would make
    the daemon, root, truncate the file it points to) and is 0600.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, lock_dir: Path, interface: str) -> ServiceLock:
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / f"{interface}.lock"
        fd = cls._open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ExistsError(
                f"xlb serve already runs on {interface} (pid {owner}; lock {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @staticmethod
    def _open(path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise XlbError(
                    f"{path} is a symbolic link: refusing to use it as the lock file "
                    "(remove it; only root should be able to write its directory)"
                ) from None
            raise XlbError(f"cannot open the lock file {path}: {exc.strerror}") from None
        os.fchmod(fd, 0o600)  # a file left by an older version may be wider
        return fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


# =============================================================== service


@dataclass(frozen=True, slots=True)
class _FileStamp:
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _FileStamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigFile:
    """The daemon's file, and what the last reload read from it.

    `read()` loads it and remembers its stamp (inode, size, mtime) and the
    hash of its content; `changed()` says whether it now differs from that:
    the file watcher reloads only then, so an edit that SIGHUP already
    reloaded (or a broken file already rejected) is not read a second time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: _FileStamp | None = None
        self._digest: bytes | None = None

    def read(self) -> Config:
        stamp = _FileStamp.of(self.path)  # before reading: an edit after it shows as a change
        data = self._bytes()
        self._stamp, self._digest = stamp, hashlib.sha256(data).digest()
        return cfg.loads_bytes(data, source=str(self.path))

    def _bytes(self) -> bytes:
        return cfg.read_bytes(self.path)

    def changed(self) -> bool:
        """Whether the file holds other bytes than `read()` last read (a
        stat first; the content only when the stamp moved). A missing or
        unreadable file is no change: it never empties the data plane."""
        stamp = _FileStamp.of(self.path)
        if stamp is None or stamp == self._stamp:
            return False
        try:
            digest = hashlib.sha256(self._bytes()).digest()
        except ConfigFileError:
            return False
        if digest == self._digest:  # touched, or rewritten the same
            self._stamp = stamp
            return False
        return True


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one apply makes the data plane hold: a config and which of its
    reals are down, both as they were when the apply was asked for."""

    config: Config
    down: frozenset[tuple[Vip, IPAddress]]

    def is_up(self, vip: Vip) -> Callable[[IPAddress], bool]:
        return lambda address: (vip, address) not in self.down


@dataclass(frozen=True, slots=True)
class _Applied:
    changes: list[cfg.Change]
    failures: list[cfg.ApplyFailure]
    healthy: dict[Vip, bool]


def _apply_plan(balancer: Balancer, plan: _Plan) -> _Applied:
    """Diff the running data plane against the plan and apply it (runs in
    the apply thread: Maglev builds, map writes and grace waits stay off the
    event loop that times the probes)."""
    running = cfg.state_of_balancer(balancer)
    healthy: dict[Vip, bool] = {}

    def reals_of(entry: VipConfig) -> tuple[Real, ...]:
        current = running.vips.get(entry.vip)
        reals, healthy[entry.vip] = serving_reals(
            entry, plan.is_up(entry.vip), current.reals if current else ()
        )
        return reals

    changes = cfg.diff(running, cfg.desired_state(plan.config, reals_of))
    failures = cfg.apply(balancer, changes)
    _drop_dead_alternates(balancer, plan)
    return _Applied(changes, failures, healthy)


def _drop_dead_alternates(balancer: Balancer, plan: _Plan) -> None:
    """A real that health took out of its VIP is dead: second chance must
    not hand it the packets of connections a ring change moved (the ring's
    real resets them at once instead of a black hole). A drained real
    (on_failure = "drain") stays in its VIP and keeps them."""
    for vip in balancer.vips():
        for address in balancer.departed_alternates(vip):
            if (vip, address) in plan.down:
                balancer.drop_alternate(vip, address)


class Service:
    """The daemon, usable as a library (see the module docstring).

    `config`: a Config, or the path of a file (then SIGHUP and edits of the
    file reload it). `teardown`: on stop, detach the data plane and remove
    its pins instead of leaving it forwarding. `watch`: poll the file for
    changes (default: when given a path). `drain_on_stop`: with [bgp],
    SIGTERM in `run()` first drains (withdraw, wait for no new flow) as
    `xlb node drain` does (default: [bgp] drain_on_stop).

    Changes to the data plane run in one worker thread, one apply at a
    time; each apply takes the config and health as they are when it
    starts, and requests made while one runs are served by the next.

    While started it answers on `<lock_dir>/<interface>.sock` (ops:
    `health`, `status`, `drain`, `undrain`; the last two need [bgp]).
    With [bgp] it runs the BGP engine and announces the healthy VIPs once
    the first health results are in (docs/deploy.md).
    """

    def __init__(
        self,
        config: Config | str | Path,
        *,
        teardown: bool = False,
        watch: bool | None = None,
        drain_on_stop: bool | None = None,
    ) -> None:
        if isinstance(config, Config):
            self._file: ConfigFile | None = None
            self.config = config
        else:
            self._file = ConfigFile(Path(config))
            self.config = self._file.read()
        self.teardown = teardown
        self.drain_on_stop = drain_on_stop  # None: [bgp] drain_on_stop says
        self._watch = self._file is not None if watch is None else watch
        self.balancer: Balancer | None = None
        self._probe_path: ProbePath | None = None
        self._checker: HealthChecker | None = None
        self._metrics: Any = None  # xlb.metrics.MetricsServer (optional dependency)
        self._lock: ServiceLock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._targets: dict[Vip, dict[IPAddress, Target]] = {}
        self._vip_healthy: dict[Vip, bool] = {}
        self._vip_unhealthy_count: Counter[Vip] = Counter()
        #: VIPs back from every real down, and the loop time until which
        #: their announcement waits for the reals coming back with them.
        self._settling: dict[Vip, float] = {}
        self.counters: Counter[str] = Counter(dict.fromkeys(EVENTS_FROM_ZERO, 0))
        self._running = False
        self._apply_thread: ThreadPoolExecutor | None = None
        self._apply_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._syncs_asked = 0  # apply requests so far
        self._syncs_covered = 0  # requests the applies started so far cover
        self._control: ControlServer | None = None
        self._control_ops: dict[str, Handler] = {
            "health": self._op_health,
            "status": self._op_status,
            "drain": self._op_drain,
        }
        self._notifier = Notifier(None)  # run() asks the environment for systemd's
        self._first_results = False  # every checked real had a result once
        self._started_at: float | None = None
        self._last_reload: dict[str, Any] | None = None
        self._loaded_at = time.time()  # when the running configuration was read
        self._bgp: AnnouncementDriver | None = None  # with [bgp]: the engine
        self._draining = False  # a drain withdrew everything until undrain
        self._announce_lock = asyncio.Lock()
        self._announce_failed = False  # the engine refused the last update
        self._control_ops["undrain"] = self._op_undrain

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Lock, attach or adopt, apply the config, start the checks."""
        settings = self.config.settings
        if settings.interface is None:
            raise ConfigError(f"{self.config.source}: balancer.interface: is required to serve")
        self._lock = ServiceLock.acquire(settings.lock_dir, settings.interface)
        try:
            self.balancer = Balancer(
                settings.interface,
                settings.xdp_mode,
                pin_dir=settings.effective_pin_dir,
                config=cfg.balancer_config(settings),
            )
            cfg.refuse_removing_every_vip(self.balancer.vips(), self.config)
            self._probe_path = ProbePath(
                settings.interface,
                self.balancer.pin_dir,
                route_table=self.config.health.route_table,
                rule_priority=self.config.health.rule_priority,
                path_mtu=settings.mtu,
            )
            self._checker = HealthChecker(self._probe_path, self._on_health_change)
            if settings.metrics is not None:  # before the first changes: they are counted
                self._metrics = self._start_metrics(settings.metrics)
            self._apply_thread = ThreadPoolExecutor(1, thread_name_prefix="xlb-apply")
            await self._install(self.config)
            self._control = ControlServer(
                socket_path(settings.lock_dir, settings.interface), self._control_ops
            )
            await self._control.start()
            if self.config.bgp is not None:  # announcing nothing until the first results
                await self._start_announcer(self.config.bgp)
        except BaseException:
            await self._release()
            raise
        self._running = True
        self._started_at = time.time()
        if self._watch and self._file is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch_file()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._refresh_sessions()))
        self._spawn(self._announce_after_first_results())
        log_event(
            log, "started", interface=settings.interface, pin_dir=self.balancer.pin_dir,
            vips=len(self.config.vips), targets=len(self._checker.targets), teardown=self.teardown,
            control=self._control.path,
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop the checks; leave the data plane forwarding (or tear it down)."""
        if not self._running:
            return
        self._running = False
        await self._release()
        log_event(log, "stopped", detached=self.teardown)

    def _start_metrics(self, address: str) -> Any:
        """The Prometheus endpoint (xlb.metrics), fed by `metrics()` at each scrape."""
        assert self.balancer is not None
        try:
            from .metrics import start_metrics_server
        except ImportError as exc:  # prometheus_client missing: serve without metrics
            log_event(log, "metrics_unavailable", logging.WARNING, error=exc)
            return None
        server = start_metrics_server(self.balancer, address, health_source=self.metrics)
        log_event(log, "metrics", url=server.url)
        return server

    @property
    def metrics_url(self) -> str | None:
        """Where the metrics endpoint listens, or None if it is off."""
        return str(self._metrics.url) if self._metrics is not None else None

    async def _release(self) -> None:
        if self._control is not None:  # first, with metrics: they read everything below
            await self._control.close()
            self._control = None
        if self._bgp is not None:  # before the data plane: routers stop sending first
            driver, self._bgp = self._bgp, None
            await self._close_announcer(driver)
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._apply_thread is not None:  # an apply that runs ends before the balancer closes
            await asyncio.get_running_loop().run_in_executor(None, self._apply_thread.shutdown)
            self._apply_thread = None
        if self._checker is not None:
            await self._checker.close()
            self._checker = None
        if self._probe_path is not None:
            self._probe_path.close()
            self._probe_path = None
        if self.balancer is not None:
            self.balancer.close(detach=self.teardown)
            self.balancer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Call from the main thread.

        Under systemd (`NOTIFY_SOCKET`, Type=notify) it reports READY=1 once
        the first apply is done and every checked real has a first result,
        RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1, and STATUS=.
        """
        self._notifier = Notifier.from_environment()
        asyncio.run(self._serve_until_signalled())

    async def _serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_on_signal()))
        self._notifier.status("starting: attaching the data plane, applying the configuration")
        async with self:
            self._spawn(self._notify_ready())
            await stop.wait()
            if self._drain_on_stop():
                self._notifier.status("draining: routes withdrawn, waiting for no new flows")
                await self.drain()
            after = "is detached" if self.teardown else "keeps forwarding"
            self._notifier.stopping(f"stopping (the data plane {after})")

    async def _notify_ready(self) -> None:
        self._notifier.status("waiting for the first health results")
        await self.wait_first_results()
        self._notifier.ready(self.status_line())
        log_event(log, "ready", status=self.status_line())

    async def _reload_on_signal(self) -> None:
        """SIGHUP: reload, told to systemd as RELOADING=1 ... READY=1 (only
        once ready: before, systemd has no reload to wait for)."""
        notifier = self._notifier if self._first_results else Notifier(None)
        notifier.reloading(f"reloading {self._config_name()}")
        applied = await self.reload()
        state = self.status_line()
        notifier.ready(state if applied else f"reload rejected, kept the running config; {state}")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(log, "task_failed", logging.ERROR, error=repr(task.exception()))

    # --------------------------------------------------------------- reload

    async def reload(self, config: Config | None = None) -> bool:
        """Apply a new config (default: re-read the file). An invalid one is
        logged with every error and changes nothing; returns whether applied.
        Reloads run one at a time, in the order asked."""
        async with self._reload_lock:
            return await self._reload(config)

    async def poll_config_file(self) -> bool:
        """One step of the file watcher: reload if the file holds something
        else than what the last reload read; returns whether it reloaded."""
        if self._file is None or not self._running or not self._file.changed():
            return False
        async with self._reload_lock:
            if not self._file.changed():  # a reload (SIGHUP) read it meanwhile
                return False
            log_event(log, "config_changed", path=self._file.path)
            return await self._reload(None)

    async def _reload(self, config: Config | None) -> bool:
        if not self._running:  # e.g. SIGHUP while starting or stopping
            log_event(log, "reload_skipped", logging.WARNING, reason="not running")
            return False
        self.counters["reloads"] += 1
        try:
            new = config if config is not None else await asyncio.to_thread(self._read_file)
        except ConfigFileError as exc:
            self._reject(exc.issues)
            return False
        except ConfigError as exc:
            self._reject([cfg.ConfigIssue(self.config.source, "", str(exc))])
            return False
        issues = self._refusals(new)
        if issues:
            self._reject(issues)
            return False
        if new.bgp != self.config.bgp:
            try:
                await self._replace_announcer(new.bgp)
            except AnnounceError as exc:
                self._reject([cfg.ConfigIssue(new.source, "bgp", str(exc))])
                await self._announce()  # the running settings' engine, started again
                return False
        await self._install(new)
        self._last_reload = {"time": time.time(), "result": "applied", "source": new.source}
        self._loaded_at = self._last_reload["time"]
        log_event(log, "reloaded", source=new.source, vips=len(new.vips))
        return True

    def _read_file(self) -> Config:
        if self._file is None:
            raise ConfigError("this service was given a Config, not a file: pass the new one")
        return self._file.read()

    def _refusals(self, new: Config) -> list[cfg.ConfigIssue]:
        """Why a valid file cannot be applied: settings that need a restart,
        and removing every VIP without `vips = []`."""
        issues = self._restart_only_changes(new)
        try:
            cfg.refuse_removing_every_vip((e.vip for e in self.config.vips), new)
        except cfg.EmptyConfigError as exc:
            issues.append(cfg.ConfigIssue(new.source, "", str(exc)))
        return issues

    def _restart_only_changes(self, new: Config) -> list[cfg.ConfigIssue]:
        issues = [
            cfg.ConfigIssue(new.source, f"balancer.{name}", "changing it needs a restart")
            for name in RESTART_ONLY
            if getattr(new.settings, name) != getattr(self.config.settings, name)
        ]
        if new.health.route_table != self.config.health.route_table:
            issues.append(cfg.ConfigIssue(new.source, "health.route_table", "needs a restart"))
        if new.health.rule_priority != self.config.health.rule_priority:
            issues.append(cfg.ConfigIssue(new.source, "health.rule_priority", "needs a restart"))
        return issues

    def _reject(self, issues: Sequence[cfg.ConfigIssue]) -> None:
        self.counters["reloads_rejected"] += 1
        self._last_reload = {
            "time": time.time(),
            "result": "rejected",
            "errors": [str(issue) for issue in issues],
        }
        for issue in issues:
            log_event(log, "config_error", logging.ERROR, where=issue.location or issue.source,
                      source=issue.source, error=issue.message)  # fmt: skip
        log_event(log, "reload_rejected", logging.ERROR, errors=len(issues),
                  keeping=self.config.source)  # fmt: skip

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            await self.poll_config_file()

    # ---------------------------------------------------------------- state

    async def _install(self, config: Config) -> None:
        """Make `config` the one served: targets first, then the data plane."""
        assert self._checker is not None
        self.config = config
        self._targets = {
            entry.vip: {
                real.address: target
                for real in entry.reals
                if (target := _target_for(entry, real, config.settings)) is not None
            }
            for entry in config.vips
        }
        self._checker.set_targets(t for by_real in self._targets.values() for t in by_real.values())
        for vip in [v for v in self._vip_healthy if v not in self._targets]:
            del self._vip_healthy[vip]
        await self._sync()

    async def _sync(self) -> None:
        """Make the data plane equal to config + health, in the apply thread.

        One apply at a time. An apply covers every request made before it
        started (it reads config and health then), so requests that pile up
        behind a long apply are served by one more apply, not one each.
        """
        self._syncs_asked += 1
        ticket = self._syncs_asked
        async with self._apply_lock:
            if self._syncs_covered >= ticket or self._apply_thread is None:
                return
            self._syncs_covered = self._syncs_asked
            plan = self._plan()
            assert self.balancer is not None
            loop = asyncio.get_running_loop()
            applied = await loop.run_in_executor(
                self._apply_thread, _apply_plan, self.balancer, plan
            )
            self._log_changes(applied.changes, applied.failures)
            self._update_vip_health(applied.healthy, plan.config)
            if self._first_results:  # before, the status says what start-up waits for
                self._notifier.status(self.status_line())
        await self._announce()

    def _plan(self) -> _Plan:
        """The config and the down reals now (read on the event loop, which
        alone changes them)."""
        checker = self._checker
        down = frozenset(
            (vip, address)
            for vip, by_real in self._targets.items()
            for address, target in by_real.items()
            if checker is not None and not checker.is_up(target)
        )
        return _Plan(self.config, down)

    def _log_changes(self, changes: Sequence[cfg.Change], failures: list[cfg.ApplyFailure]) -> None:
        failed = {change for failure in failures for change in failure.changes}
        for change in changes:
            if change in failed:
                continue
            self.counters[f"changes_{type(change).__name__.lower()}"] += 1
            log_event(log, "change", change=str(change))
        for failure in failures:
            self.counters["apply_failures"] += 1
            log_event(log, "apply_failed", logging.ERROR, vip=failure.vip or "-", error=failure)

    def _update_vip_health(self, healthy: dict[Vip, bool], config: Config) -> None:
        for vip, ok in healthy.items():
            if vip not in self._targets:  # a reload removed it while this apply ran
                continue
            before = self._vip_healthy.get(vip)
            self._vip_healthy[vip] = ok
            if before == ok or (before is None and ok):
                continue
            if not ok:
                self._vip_unhealthy_count[vip] += 1
            entry = config.vip(vip)
            if ok:
                self._hold_return(vip, entry)
            event = "vip_healthy" if ok else "vip_unhealthy"
            level = logging.INFO if ok else logging.WARNING
            log_event(log, event, level, vip=vip, all_down=entry.all_down)

    def _hold_return(self, vip: Vip, entry: VipConfig) -> None:
        """A VIP back from every real down is announced only once the reals
        coming back with it had time to pass their checks too (rise x
        interval + timeout): announced at its first real up, its ring would
        lack the others while the routers bring flows back, and a flow
        another node has sent to one of them would meet the wrong real."""
        if entry.check is None or self._bgp is None:
            return
        timing = entry.check.timing
        settle = timing.rise * timing.interval + timing.timeout
        self._settling[vip] = asyncio.get_running_loop().time() + settle
        self._spawn(self._announce_after(settle))

    async def _announce_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._announce()

    def _settled(self, vip: Vip) -> bool:
        until = self._settling.get(vip)
        if until is None:
            return True
        if asyncio.get_running_loop().time() < until:
            return False
        del self._settling[vip]
        return True

    def _on_health_change(self, target: Target, health: TargetHealth) -> None:
        vips = sorted(
            (vip for vip, by_real in self._targets.items() if target in by_real.values()),
            key=cfg.vip_sort_key,
        )
        fields: dict[str, Any] = {
            "real": target.real,
            "vips": ",".join(map(str, vips)),
            "check": target,
        }
        if health.up:
            log_event(log, "real_up", successes=health.successes, **fields)
        else:
            log_event(log, "real_down", logging.WARNING, reason=health.last_reason,
                      failures=health.failures, **fields)  # fmt: skip
        self.counters["real_up" if health.up else "real_down"] += 1
        self._spawn(self._sync())

    # ---------------------------------------------------- first results

    def first_results_pending(self) -> int:
        """Checked reals with no health result yet: neither a probe that
        passed nor enough failures to be judged down (a real starts up, so
        a failure or two short of `fall` says nothing yet)."""
        checker = self._checker
        if checker is None:
            return 0
        pending = 0
        for target in checker.targets:
            with contextlib.suppress(KeyError):  # left in a reload meanwhile
                health = checker.health(target)
                if health.up and health.probes_ok == 0:
                    pending += 1
        return pending

    async def wait_first_results(self) -> None:
        """Until every checked real has a first result and the data plane
        holds what those results say: what READY=1 (and an announcement
        of the VIPs) waits for after a start."""
        while self._running and (pending := self.first_results_pending()):
            self._notifier.status(f"waiting for the first health results ({pending} reals)")
            await asyncio.sleep(FIRST_RESULTS_POLL_S)
        if not self._running:  # stopped meanwhile: there is nothing to be ready for
            return
        await self._sync()  # covers the flips the first results made
        self._first_results = True
        await self._announce()

    @property
    def has_first_results(self) -> bool:
        """Whether `wait_first_results` has returned once."""
        return self._first_results

    # ------------------------------------------------------- control socket

    def add_control_op(self, op: str, handler: Handler) -> None:
        """Answer `{"op": op, ...}` on the control socket with `handler`
        (an async function of the request returning the answer's fields;
        an XlbError it raises is answered as the error). The BGP announcer
        replaces "drain" this way."""
        self._control_ops[op] = handler

    @property
    def control_path(self) -> Path | None:
        """Where the control socket listens, or None when not started."""
        return self._control.path if self._control is not None else None

    async def _op_health(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"vips": self.health()}

    async def _op_status(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _op_drain(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Withdraw everything, wait until no new flows arrive, answer how
        it went (`timeout`, `quiet`: seconds, optional)."""
        if self._bgp is None:
            raise XlbError("drain: this daemon announces nothing (no [bgp] announcer configured)")
        timeout = _seconds(request, "timeout", DRAIN_TIMEOUT_S)
        quiet = _seconds(request, "quiet", DRAIN_QUIET_S)
        return await self.drain(timeout, quiet)

    async def _op_undrain(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self._bgp is None:
            raise XlbError("undrain: this daemon announces nothing (no [bgp] announcer configured)")
        await self.undrain()
        return {"bgp": self.bgp_state()}

    # ------------------------------------------------------------------ BGP

    async def _start_announcer(self, bgp: BgpSettings) -> None:
        """Start the [bgp] engine, announcing nothing yet (AnnounceError).
        It is the daemon's from the start on: the status shows its sessions
        as down while it starts."""
        driver = self._new_driver(bgp)
        self._bgp = driver
        try:
            await driver.start()
        except BaseException:
            self._bgp = None
            await driver.close()
            raise
        log_event(log, "bgp_started", announcer=bgp.announcer, neighbors=len(bgp.neighbors))

    def _new_driver(self, bgp: BgpSettings) -> AnnouncementDriver:
        """An engine not started yet (ExaBGP's root beside the lock)."""
        settings = self.config.settings
        interface = settings.interface or "xlb"
        root = settings.lock_dir / f"{interface}.exabgp"
        return AnnouncementDriver(bgp, make_announcer(bgp, root, f"xlb-{interface}"))

    async def _close_announcer(self, driver: AnnouncementDriver) -> None:
        try:
            await driver.close()
        except (AnnounceError, OSError) as exc:
            log_event(log, "bgp_close_failed", logging.ERROR, error=exc)
        log_event(log, "bgp_stopped", announcer=driver.bgp.announcer)

    async def _replace_announcer(self, new: BgpSettings | None) -> None:
        """A reload changed [bgp]: restart the engine with the new settings.

        A restart rather than a reconfiguration: ExaBGP's neighbours live in
        its configuration file and BIRD's socket and include are its
        identity, so a new engine is the one way every key takes effect the
        same way. The routers see the sessions close and open again (well
        under a second; ECMP keeps the other nodes' flows, and held flows
        here keep their connection-table entries). If the new engine cannot
        start, the old settings' engine is started again and the reload is
        refused (AnnounceError).
        """
        async with self._announce_lock:
            old, self._bgp = self._bgp, None
            if old is not None:
                await self._close_announcer(old)
            if new is None:
                return
            try:
                await self._start_announcer(new)
            except AnnounceError:
                if old is not None:
                    with contextlib.suppress(AnnounceError):
                        await self._start_announcer(old.bgp)
                raise
        # the caller's install announces what the new config says

    async def _announce_after_first_results(self) -> None:
        if self._bgp is not None:
            await self.wait_first_results()  # which announces

    def _reals_up(self, config: Config) -> dict[Vip, int]:
        """Per VIP, its reals that serve: up (or unchecked), weight > 0;
        none while the VIP settles after every real was down."""
        plan = self._plan()
        return {
            entry.vip: sum(
                1 for r in entry.reals if r.weight > 0 and plan.is_up(entry.vip)(r.address)
            )
            if self._settled(entry.vip)
            else 0
            for entry in config.vips
        }

    async def _announce(self) -> None:
        """Make the engine announce what config, health and drain say now:
        nothing before the first health results."""
        async with self._announce_lock:
            driver, config = self._bgp, self.config
            if driver is None or not self._running:
                return
            reals_up = self._reals_up(config) if self._first_results else None
            wanted = prefixes_to_announce(
                config.vips, reals_up, driver.bgp.min_healthy, self._draining
            )
            before = set(driver.announced)
            try:
                await driver.update(wanted)
            except AnnounceError as exc:
                self.counters["announce_failures"] += 1
                again = self._announce_failed  # once at ERROR, not every retry
                log_event(log, "announce_failed", logging.DEBUG if again else logging.ERROR,
                          error=exc)  # fmt: skip
                self._announce_failed = True  # tried again at the next session refresh
                return
            self._announce_failed = False
            for address in sorted(set(wanted) - before, key=destination_order):
                self.counters["announces"] += 1
                log_event(log, "announced", address=address)
            for address in sorted(before - set(wanted), key=destination_order):
                self.counters["withdraws"] += 1
                log_event(log, "withdrawn", address=address, draining=self._draining)

    async def _refresh_sessions(self) -> None:
        """Every SESSIONS_REFRESH_S: the sessions' states, and an engine
        that died (ExaBGP killed or crashed: its routes went with its
        sessions) started again and told what to announce."""
        while True:
            driver = self._bgp
            if driver is not None and not driver.alive() and self._running:
                await self._restart_dead_engine(driver)
            elif driver is not None:
                try:
                    await driver.refresh_sessions()
                except AnnounceError as exc:
                    log_event(log, "bgp_sessions_unknown", logging.DEBUG, error=exc)
                if self._announce_failed:  # e.g. ExaBGP refuses next-hop self with no session
                    await self._announce()
            await asyncio.sleep(SESSIONS_REFRESH_S)

    async def _restart_dead_engine(self, driver: AnnouncementDriver) -> None:
        self.counters["bgp_engine_restarts"] += 1
        log_event(log, "bgp_engine_died", logging.ERROR, announcer=driver.bgp.announcer)
        try:
            await self._replace_announcer(driver.bgp)
        except AnnounceError as exc:
            log_event(log, "bgp_restart_failed", logging.ERROR, error=exc)
            if self._bgp is None:  # an engine not running: tried again at the next refresh
                self._bgp = self._new_driver(driver.bgp)
            return
        await self._announce()

    def _drain_on_stop(self) -> bool:
        """Whether SIGTERM drains before exiting: the constructor's say, or
        [bgp] drain_on_stop."""
        if self._bgp is None or self.config.bgp is None:
            return False
        if self.drain_on_stop is not None:
            return self.drain_on_stop
        return self.config.bgp.drain_on_stop

    async def drain(
        self, timeout: float = DRAIN_TIMEOUT_S, quiet: float = DRAIN_QUIET_S
    ) -> dict[str, Any]:
        """Withdraw every announcement, then wait until the data plane saw no
        new flow for `quiet` seconds (or `timeout`). The data plane keeps
        serving the flows it has. Returns what happened."""
        started = time.monotonic()
        self._draining = True
        log_event(log, "draining", timeout=timeout, quiet=quiet)
        await self._announce()
        withdrawn_s = time.monotonic() - started
        quiet_reached, new_flows = await self._wait_no_new_flows(started + timeout, quiet)
        result = {
            "drained": quiet_reached,
            "withdrawn_s": round(withdrawn_s, 4),
            "waited_s": round(time.monotonic() - started, 3),
            "new_flows": new_flows,
            "bgp": self.bgp_state(),
        }
        log_event(log, "drained" if quiet_reached else "drain_timeout",
                  logging.INFO if quiet_reached else logging.WARNING,
                  waited_s=result["waited_s"], new_flows=new_flows)  # fmt: skip
        return result

    async def _wait_no_new_flows(self, deadline: float, quiet: float) -> tuple[bool, int]:
        """(whether `quiet` s passed without a new flow before `deadline`,
        new flows counted meanwhile)."""
        first = last = self._new_flows()
        last_change = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_change >= quiet:
                return True, last - first
            if now >= deadline:
                return False, last - first
            await asyncio.sleep(min(DRAIN_POLL_S, max(deadline - now, 0.0)))
            seen = self._new_flows()
            if seen != last:
                last, last_change = seen, time.monotonic()

    def _new_flows(self) -> int:
        if self.balancer is None:
            return 0
        counters = self.balancer.counters()
        return sum(counters.get(name, 0) for name in NEW_FLOW_COUNTERS)

    async def undrain(self) -> None:
        """Announce again what health says (after `drain`)."""
        self._draining = False
        log_event(log, "undrained")
        await self._announce()

    def bgp_state(self) -> dict[str, Any] | None:
        """What is announced, per VIP and per address, and each session's
        state; None without [bgp]. Safe from other threads (snapshots)."""
        driver, config = self._bgp, self.config
        if driver is None:
            return None
        announced = driver.announced
        return {
            "announcer": driver.bgp.announcer,
            "draining": self._draining,
            "announcing": self._first_results,
            "announced": sorted(str(a) for a in announced),
            "vips": {str(e.vip): e.vip.destination in announced for e in config.vips},
            "neighbors": dict(driver.sessions),
        }

    # ------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        """What the daemon is and has done: the `status` control op."""
        health = self.health()
        reals = [real for vip in health.values() for real in vip["reals"].values()]
        checked = [real for real in reals if real["state"] != "unchecked"]
        return {
            "pid": os.getpid(),
            "interface": self.config.settings.interface,
            "config": self._config_name(),
            "pin_dir": str(self.balancer.pin_dir) if self.balancer is not None else None,
            "started_at": self._started_at,
            "ready": self._first_results,
            "last_reload": self._last_reload,
            "vips": len(health),
            "vips_healthy": sum(1 for vip in health.values() if vip["healthy"]),
            "reals_checked": len(checked),
            "reals_up": sum(1 for real in checked if real["state"] == "up"),
            "metrics_url": self.metrics_url,
            "counters": dict(self.counters),
            "bgp": self.bgp_state(),
        }

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        state = self.status()
        return (
            f"serving {state['vips']} VIPs on {state['interface']} "
            f"({state['vips_healthy']} healthy), "
            f"{state['reals_up']} of {state['reals_checked']} checked reals up"
        )

    def _config_name(self) -> str:
        return str(self._file.path) if self._file is not None else self.config.source

    def vip_healthy(self, vip: Vip) -> bool:
        """Whether a VIP has a healthy real (what a BGP speaker announces)."""
        return self._vip_healthy.get(vip, False)

    def health(self) -> dict[str, Any]:
        """Per VIP: healthy, reals up, and each real's check state, counters
        and configured weight.

        Safe to call from another thread (the metrics server's): it reads
        references that reloads replace whole, never mutate.
        """
        config, targets, checker = self.config, self._targets, self._checker
        # A VIP serves with one real up; with [bgp] it is announced from min_healthy.
        min_healthy = config.bgp.min_healthy if config.bgp is not None else 1
        out: dict[str, Any] = {}
        for entry in config.vips:
            reals = {
                str(real.address): {
                    **_real_state(checker, targets.get(entry.vip, {}), real),
                    "weight": real.weight,
                }
                for real in entry.reals
            }
            out[str(entry.vip)] = {
                "healthy": self.vip_healthy(entry.vip),
                "unhealthy_transitions": self._vip_unhealthy_count[entry.vip],
                "reals_up": sum(1 for r in reals.values() if r["state"] != "down"),
                "min_healthy": min_healthy,
                "reals": reals,
            }
        return out

    def config_state(self) -> dict[str, Any]:
        """Whether the running configuration is the file's: the last
        reload's result (ok before any), when the running one was read, and
        whether the file now holds bytes no reload has read (an edit not
        picked up: no watcher, no SIGHUP). Safe from other threads: a stat,
        and the file's hash only when the stat moved."""
        last = self._last_reload
        return {
            "last_reload_ok": last is None or last.get("result") == "applied",
            "loaded_time": self._loaded_at,
            "file_changed": self._file is not None and self._file.changed(),
        }

    def metrics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint: service, probe path, health."""
        path = self._probe_path
        return {
            "service": dict(self.counters),
            "probe_path": path.counters() if path is not None else {},
            "vips": self.health(),
            "bgp": self.bgp_state(),
            "config": self.config_state(),
        }


def _seconds(request: Mapping[str, Any], key: str, default: float) -> float:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 86400:
        raise XlbError(f"{key}: expected seconds (a number from 0 to 86400), got {value!r}")
    return float(value)


def _real_state(
    checker: HealthChecker | None, targets: dict[IPAddress, Target], real: Real
) -> dict[str, Any]:
    target = targets.get(real.address)
    if target is None or checker is None:
        return {"state": "unchecked"}
    try:
        return checker.health(target).as_dict()
    except KeyError:  # the target left in a reload running meanwhile
        return {"state": "unchecked"}


# ================================================================== CLI


def run_daemon(args: argparse.Namespace) -> int:
    """`xlb serve` past its argument parsing (xlb/serve.py): 0 after a clean
    stop, 1 on an invalid file or a failure to start, 2 if another daemon
    holds the interface."""
    _setup_logging(args.log_format, args.log_level)
    try:
        service = Service(args.config, teardown=args.teardown)
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        service.run()
    except ExistsError as exc:
        log_event(log, "refused", logging.ERROR, error=exc)
        return 2
    except XlbError as exc:
        log_event(log, "failed", logging.ERROR, error=exc)
        return 1
    return 0


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(fmt, journal=stream_is_journal(sys.stderr)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_formatter(fmt: str, journal: bool) -> logging.Formatter:
    """JSON lines (their "time" is a field, kept), or key=value lines: with
    a timestamp on a terminal or in a file, without one in the journal,
    which stamps every line itself."""
    if fmt == "json":
        return JsonFormatter()
    if journal:
        return JournalFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")


class JournalFormatter(logging.Formatter):
    """`<priority>LEVEL logger message`: no timestamp (journald adds its
    own), and the syslog priority prefix journald reads (SyslogLevelPrefix),
    so `journalctl -p warning` finds the warnings."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        return f"<{priority}>{super().format(record)}"
