"""The lab's nodes: each a network namespace with one interface (`eth0`) into the lab.

`ClientNode` runs an event loop inside its namespace, so every request
really leaves from the client; `BalancerNode` holds a node's `xlb.Balancer`;
`RealNode` its `Decap` and its lab server (xlb/lab/server.py). What the
client sends is in xlb/lab/exchanges.py, its background load in
xlb/lab/traffic.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .. import host, netns
from ..announce import ExaBgpAnnouncer
from ..balancer import Balancer
from ..decap import Decap
from ..errors import XlbError
from ..model import IPAddress
from .exchanges import HeldConnection, Replies, Reply, http_once, udp_once
from .traffic import Traffic

T = TypeVar("T")

#: How `Lab.kill_data_plane` takes a balancer node's data plane away.
KillHow = Literal["detach", "link-down"]


#: include/net/tcp_states.h, as /proc/net/tcp numbers them.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


@dataclass
class Node:
    """A namespace with one interface (`eth0`) into the lab."""

    role: str  # client1, lb1, real3
    kind: str  # client, lb, real
    index: int
    netns: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    prefix4: int
    prefix6: int
    mac: str
    hub_port: str  # this node's port in the router/bridge namespace
    hub_mac: str
    interface: str = "eth0"

    def address(self, family: int) -> IPAddress:
        return self.ipv4 if family == 4 else self.ipv6

    def link_stats(self) -> tuple[int, int]:
        """(rx_packets, tx_packets) of this node's interface."""
        with netns.enter(self.netns):
            return host.link_packets(self.interface)

    def run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in this node's namespace (no /sys remount)."""
        return netns.run(self.netns, cmd, check=check)


@dataclass
class RealNode(Node):
    """A real: VIPs on loopback, Decap on eth0, the lab server (xlb/lab/server.py) running."""

    decap: Decap | None = None
    server: subprocess.Popen[bytes] | None = None
    control: Path | None = None

    @property
    def name(self) -> str:
        return self.role

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    def tcp_states(self, port: int) -> list[str]:
        """The states of this real's TCP sockets on local port `port`
        (ESTABLISHED, SYN_RECV for a handshake in progress, TIME_WAIT, ...),
        listeners left out: /proc/net/tcp and tcp6 of its namespace."""
        states = []
        with netns.enter(self.netns):
            for table in ("tcp", "tcp6"):
                with open(f"/proc/thread-self/net/{table}") as f:
                    rows = [line.split() for line in f.readlines()[1:]]
                for row in rows:
                    if int(row[1].rsplit(":", 1)[1], 16) == port:
                        states.append(TCP_STATES.get(int(row[3], 16), row[3]))
        return [s for s in states if s != "LISTEN"]

    def server_stats(self) -> dict[str, Any]:
        """The lab server's counters (connections, requests, datagrams)."""
        if self.control is None:
            raise XlbError(f"{self.role} runs no lab server")
        return control_stats(self.control)


def control_stats(control: Path, timeout: float = 2.0) -> dict[str, Any]:
    """What a lab server's control socket (server.py, quicserver.py)
    answers to `stats`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control))
        sock.sendall(b"stats\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    result: dict[str, Any] = json.loads(data)
    return result


@dataclass
class BalancerNode(Node):
    """A balancer node: its xlb.Balancer (None while its data plane is killed)."""

    balancer: Balancer | None = None
    pin_dir: Path | None = None
    killed: KillHow | None = None
    #: router="bird": the node's BGP speaker (announces the lab's VIPs).
    announcer: ExaBgpAnnouncer | None = None
    #: router="vrrp": the node's keepalived (None once killed).
    keepalived: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.role


class ClientNode(Node):
    """A client namespace with an event loop running inside it.

    Sockets are created by a thread that has entered the namespace, so every
    request really leaves from the client. Methods are synchronous and may be
    called from any thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.held: list[HeldConnection] = []

    # -------------------------------------------------------------- loop

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                with netns.enter(self.netns):
                    loop = asyncio.new_event_loop()
                    self._loop = loop
                    ready.set()
                    loop.run_forever()
                    pending = asyncio.all_tasks(loop)  # an interrupted request, a Traffic
                    for task in pending:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=main, name=f"xlb-lab-{self.role}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise XlbError(f"client loop of {self.role} failed: {failure[0]}")

    def stop(self) -> None:
        for conn in self.held:
            conn.close()
        self.held.clear()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        self._loop = self._thread = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the client's loop (inside its namespace): its future."""
        if self._loop is None:
            coro.close()
            raise XlbError(f"client {self.role} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the client's loop (inside its namespace)."""
        return self.submit(coro).result(timeout)

    # ------------------------------------------------------------- TCP

    async def _batch(self, make: Any, jobs: Sequence[int], concurrency: int) -> Replies:
        gate = asyncio.Semaphore(concurrency)

        async def one(sport: int) -> Reply:
            async with gate:
                result: Reply = await make(sport)
                return result

        return Replies(list(await asyncio.gather(*(one(s) for s in jobs))))

    def http_get(
        self,
        dst: IPAddress | str,
        port: int = 80,
        count: int = 1,
        *,
        sports: Sequence[int] | None = None,
        concurrency: int = 32,
        timeout: float = 3.0,
    ) -> Replies:
        """`count` HTTP GETs, each on a new TCP connection (closed by the
        server); or one per given source port (`sports`, below 32768)."""
        address = ipaddress.ip_address(dst)
        jobs = list(sports) if sports is not None else [0] * count
        return self.call(
            self._batch(lambda s: http_once(address, port, s, timeout), jobs, concurrency),
            timeout * (len(jobs) // concurrency + 2) + 10,
        )

    def hold(
        self,
        dst: IPAddress | str,
        port: int = 80,
        count: int = 1,
        timeout: float = 3.0,
        *,
        sports: Sequence[int] | None = None,
    ) -> list[HeldConnection]:
        """Open `count` kept-alive HTTP connections (each answers once); or
        one per given source port (`sports`, below 32768)."""
        return self.call(self.ahold(dst, port, count, timeout, sports=sports), timeout + 10)

    async def ahold(
        self,
        dst: IPAddress | str,
        port: int = 80,
        count: int = 1,
        timeout: float = 3.0,
        *,
        sports: Sequence[int] | None = None,
    ) -> list[HeldConnection]:
        """`hold()` on the client's loop (to start it with `submit`)."""
        address = ipaddress.ip_address(dst)
        ports = list(sports) if sports is not None else [0] * count
        conns = [HeldConnection(self, address, port, sport) for sport in ports]
        try:
            await asyncio.gather(*(c.aopen(timeout) for c in conns))
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        self.held.extend(conns)
        return conns

    # ------------------------------------------------------------- UDP

    def udp_exchange(
        self,
        dst: IPAddress | str,
        port: int = 7,
        count: int = 1,
        *,
        sports: Sequence[int] | None = None,
        concurrency: int = 64,
        timeout: float = 2.0,
        tries: int = 2,
        size: int = 16,
    ) -> Replies:
        """`count` UDP request/answer exchanges, each from a new socket (a new
        flow), each request `size` bytes (fragmented above the path MTU)."""
        address = ipaddress.ip_address(dst)
        jobs = list(sports) if sports is not None else [0] * count
        return self.call(
            self._batch(
                lambda s: udp_once(address, port, s, timeout, tries, size), jobs, concurrency
            ),
            timeout * (len(jobs) // concurrency + 2) + 10,
        )

    # ------------------------------------------------------- background

    def traffic(
        self,
        targets: Sequence[tuple[IPAddress | str, int, str]],
        held: Sequence[HeldConnection] = (),
        *,
        pause: float = 0.005,
    ) -> Traffic:
        """Background load until `stop()`: see `Traffic`."""
        return Traffic(self, targets, held, pause=pause)
