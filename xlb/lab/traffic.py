"""Background load from one lab client, and what it saw (`Traffic`, `TrafficReport`)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ipaddress
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import XlbError
from ..model import IPAddress
from .exchanges import ClientLoop, HeldConnection, Reply, http_once, udp_once


class Traffic:
    """Continuous load from one client, as a context manager:

        with lab.client.traffic([(lab.vip4, 80, "tcp"), (lab.vip6, 7, "udp")], held) as t:
            ...                     # change things on the balancer
        assert t.report.failed == 0

    Each round makes one new connection (TCP: a GET; UDP: an exchange) to
    every target and one request on every held connection, then pauses.
    """

    def __init__(
        self,
        client: ClientLoop,
        targets: Sequence[tuple[IPAddress | str, int, str]],
        held: Sequence[HeldConnection] = (),
        *,
        pause: float = 0.005,
    ) -> None:
        self.client = client
        self.targets = [(ipaddress.ip_address(a), p, proto) for a, p, proto in targets]
        self.held = list(held)
        self.pause = pause
        self.report = TrafficReport()
        self._stop = threading.Event()
        self._future: concurrent.futures.Future[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            jobs: list[Coroutine[Any, Any, Reply]] = []
            for address, port, proto in self.targets:
                if proto == "tcp":
                    jobs.append(http_once(address, port, 0, 3.0))
                else:
                    jobs.append(udp_once(address, port, 0, 3.0, 3))
            results = await asyncio.gather(*jobs)
            for reply in results:
                self.report.add("new", reply)
            for conn in self.held:
                start = time.monotonic()
                try:
                    name = await conn.arequest(3.0)
                    error = None if name == conn.real else f"answered by {name}, not {conn.real}"
                except (OSError, TimeoutError, XlbError) as exc:
                    name, error = None, f"{type(exc).__name__}: {exc}"
                self.report.add("held", Reply(name, conn.sport, error, time.monotonic() - start))
            await asyncio.sleep(self.pause)

    def start(self) -> Traffic:
        self._future = self.client.submit(self._run())
        return self

    def stop(self) -> TrafficReport:
        self._stop.set()
        if self._future is not None:
            self._future.result(30)
            self._future = None
        return self.report

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TrafficReport:
    """What a `Traffic` run saw: counts per kind ("new", "held") and every failure."""

    ok: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[str, Reply]] = field(default_factory=list)
    max_latency_s: float = 0.0
    by_real: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, kind: str, reply: Reply) -> None:
        if reply.ok:
            self.ok[kind] += 1
            if reply.real:
                self.by_real[reply.real] += 1
        else:
            self.failures.append((kind, reply))
        self.max_latency_s = max(self.max_latency_s, reply.latency_s)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + self.failed

    def __str__(self) -> str:
        parts = [f"{kind} ok={n}" for kind, n in sorted(self.ok.items())]
        latency = f"max latency {self.max_latency_s * 1000:.0f} ms"
        return f"{', '.join(parts)}, failed={self.failed}, {latency}"
