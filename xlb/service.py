"""The `xlb serve` daemon: a config file, health checks and the data plane.

    Service("lb.toml").run()                       # blocking; signals handled

    async with Service(xlb.config.load("lb.toml")) as svc:
        print(svc.health())

`Service` takes a per-interface lock, attaches (or adopts the pinned) data
plane, installs the probe path, starts the health checks and keeps the
data plane equal to "the file, minus what health took out" by diffing it
against what the balancer holds after every reload and every health flip.
Stopping leaves the data plane forwarding unless `teardown` is set.
docs/config.md describes the file, the checks and the signals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import config as cfg
from .balancer import Balancer
from .config import Config, ConfigFileError, VipConfig
from .errors import ConfigError, ExistsError, XlbError
from .health import HealthChecker, JsonFormatter, ProbePath, Target, TargetHealth, log_event
from .health import target_for as _target_for
from .model import IPAddress, Real, Vip

log = logging.getLogger("xlb.service")

WATCH_INTERVAL_S = 1.0
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
    return Real(real.address, 0, real.mac)


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


class Service:
    """The daemon, usable as a library (see the module docstring).

    `config`: a Config, or the path of a file (then SIGHUP and edits of the
    file reload it). `teardown`: on stop, detach the data plane and remove
    its pins instead of leaving it forwarding. `watch`: poll the file for
    changes (default: when given a path).
    """

    def __init__(
        self, config: Config | str | Path, *, teardown: bool = False, watch: bool | None = None
    ) -> None:
        if isinstance(config, Config):
            self._path: Path | None = None
            self.config = config
        else:
            self._path = Path(config)
            self.config = cfg.load(self._path)
        self.teardown = teardown
        self._watch = self._path is not None if watch is None else watch
        self.balancer: Balancer | None = None
        self._probe_path: ProbePath | None = None
        self._checker: HealthChecker | None = None
        self._metrics: Any = None  # xlb.metrics.MetricsServer (optional dependency)
        self._lock: ServiceLock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._targets: dict[Vip, dict[IPAddress, Target]] = {}
        self._vip_healthy: dict[Vip, bool] = {}
        self._vip_unhealthy_count: Counter[Vip] = Counter()
        self.counters: Counter[str] = Counter()
        self._running = False

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
            self._probe_path = ProbePath(
                settings.interface,
                self.balancer.pin_dir,
                route_table=self.config.health.route_table,
                rule_priority=self.config.health.rule_priority,
                path_mtu=settings.mtu,
            )
            self._checker = HealthChecker(self._probe_path, self._on_health_change)
            self._install(self.config)
            if settings.metrics is not None:
                self._metrics = self._start_metrics(settings.metrics)
        except BaseException:
            await self._release()
            raise
        self._running = True
        if self._watch and self._path is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch_file()))
        log_event(
            log, "started", interface=settings.interface, pin_dir=self.balancer.pin_dir,
            vips=len(self.config.vips), targets=len(self._checker.targets), teardown=self.teardown,
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
        if self._metrics is not None:  # first: it reads everything below
            self._metrics.close()
            self._metrics = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
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
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Call from the main thread."""
        asyncio.run(self._serve_until_signalled())

    async def _serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        async with self:
            await stop.wait()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    # --------------------------------------------------------------- reload

    async def reload(self, config: Config | None = None) -> bool:
        """Apply a new config (default: re-read the file). An invalid one is
        logged with every error and changes nothing; returns whether applied."""
        if not self._running:  # e.g. SIGHUP while starting or stopping
            log_event(log, "reload_skipped", logging.WARNING, reason="not running")
            return False
        self.counters["reloads"] += 1
        try:
            new = config if config is not None else self._read_file()
            self._check_restart_only(new)
        except ConfigFileError as exc:
            self._reject(exc.issues)
            return False
        except ConfigError as exc:
            self._reject([cfg.ConfigIssue(self.config.source, "", str(exc))])
            return False
        self._install(new)
        log_event(log, "reloaded", source=new.source, vips=len(new.vips))
        return True

    def _read_file(self) -> Config:
        if self._path is None:
            raise ConfigError("this service was given a Config, not a file: pass the new one")
        return cfg.load(self._path)

    def _check_restart_only(self, new: Config) -> None:
        issues = [
            cfg.ConfigIssue(new.source, f"balancer.{name}", "changing it needs a restart")
            for name in RESTART_ONLY
            if getattr(new.settings, name) != getattr(self.config.settings, name)
        ]
        if new.health.route_table != self.config.health.route_table:
            issues.append(cfg.ConfigIssue(new.source, "health.route_table", "needs a restart"))
        if new.health.rule_priority != self.config.health.rule_priority:
            issues.append(cfg.ConfigIssue(new.source, "health.rule_priority", "needs a restart"))
        if issues:
            raise ConfigFileError(issues)

    def _reject(self, issues: Sequence[cfg.ConfigIssue]) -> None:
        self.counters["reloads_rejected"] += 1
        for issue in issues:
            log_event(log, "config_error", logging.ERROR, where=issue.location or issue.source,
                      source=issue.source, error=issue.message)  # fmt: skip
        log_event(log, "reload_rejected", logging.ERROR, errors=len(issues),
                  keeping=self.config.source)  # fmt: skip

    async def _watch_file(self) -> None:
        assert self._path is not None
        stamp = _FileStamp.of(self._path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = _FileStamp.of(self._path)
            if now != stamp and now is not None:
                stamp = now
                log_event(log, "config_changed", path=self._path)
                await self.reload()

    # ---------------------------------------------------------------- state

    def _install(self, config: Config) -> None:
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
        self._sync()

    def _is_up(self, vip: Vip) -> Callable[[IPAddress], bool]:
        targets = self._targets.get(vip, {})
        checker = self._checker

        def is_up(address: IPAddress) -> bool:
            target = targets.get(address)
            return target is None or checker is None or checker.is_up(target)

        return is_up

    def _sync(self) -> None:
        """Diff the running data plane against config + health and apply it."""
        assert self.balancer is not None
        running = cfg.state_of_balancer(self.balancer)
        healthy: dict[Vip, bool] = {}

        def reals_of(entry: VipConfig) -> tuple[Real, ...]:
            current = running.vips.get(entry.vip)
            reals, healthy[entry.vip] = serving_reals(
                entry, self._is_up(entry.vip), current.reals if current else ()
            )
            return reals

        changes = cfg.diff(running, cfg.desired_state(self.config, reals_of))
        failures = cfg.apply(self.balancer, changes)
        self._log_changes(changes, failures)
        self._update_vip_health(healthy)

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

    def _update_vip_health(self, healthy: dict[Vip, bool]) -> None:
        for vip, ok in healthy.items():
            before = self._vip_healthy.get(vip)
            self._vip_healthy[vip] = ok
            if before == ok or (before is None and ok):
                continue
            if not ok:
                self._vip_unhealthy_count[vip] += 1
            entry = self.config.vip(vip)
            event = "vip_healthy" if ok else "vip_unhealthy"
            level = logging.INFO if ok else logging.WARNING
            log_event(log, event, level, vip=vip, all_down=entry.all_down)

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
        self._sync()

    # ------------------------------------------------------------ reporting

    def vip_healthy(self, vip: Vip) -> bool:
        """Whether a VIP has a healthy real (what a BGP speaker announces)."""
        return self._vip_healthy.get(vip, False)

    def health(self) -> dict[str, Any]:
        """Per VIP: healthy, reals up, and each real's check state and counters.

        Safe to call from another thread (the metrics server's): it reads
        references that reloads replace whole, never mutate.
        """
        config, targets, checker = self.config, self._targets, self._checker
        out: dict[str, Any] = {}
        for entry in config.vips:
            reals = {
                str(real.address): _real_state(checker, targets.get(entry.vip, {}), real)
                for real in entry.reals
            }
            out[str(entry.vip)] = {
                "healthy": self.vip_healthy(entry.vip),
                "unhealthy_transitions": self._vip_unhealthy_count[entry.vip],
                "reals_up": sum(1 for r in reals.values() if r["state"] != "down"),
                "reals": reals,
            }
        return out

    def metrics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint: service, probe path, health."""
        path = self._probe_path
        return {
            "service": dict(self.counters),
            "probe_path": path.counters() if path is not None else {},
            "vips": self.health(),
        }


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


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xlb serve",
        description="Run the balancer from a TOML file: health checks, reloads (docs/config.md).",
    )
    parser.add_argument("config", type=Path, help="the configuration file (TOML)")
    parser.add_argument("--check", action="store_true", help="validate the file and exit")
    parser.add_argument(
        "--teardown", action="store_true", help="on exit, detach the data plane (default: leave it)"
    )
    parser.add_argument("--log-format", choices=("kv", "json"), default="kv")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`xlb serve`: 0 after a clean stop (or a valid --check), 1 on an invalid
    file or a failure to start, 2 if another daemon holds the interface."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_format, args.log_level)
    try:
        service = Service(args.config, teardown=args.teardown)
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: ok ({len(service.config.vips)} VIPs)")
        return 0
    try:
        service.run()
    except ExistsError as exc:
        log_event(log, "refused", logging.ERROR, error=exc)
        return 2
    except XlbError as exc:
        log_event(log, "failed", logging.ERROR, error=exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
