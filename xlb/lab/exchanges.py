"""One exchange between a lab client and a VIP, and what it answered.

`http_once` (an HTTP GET on a new TCP connection), `udp_once` (a UDP
request and its answer, from a new socket) and `HeldConnection` (a
kept-alive HTTP/1.1 connection) run on a client's event loop, inside its
namespace (`ClientNode` in xlb/lab/nodes.py is the `ClientLoop` they are
given). Each result is a `Reply` naming the real that answered (the lab
servers answer with their name).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import secrets
import socket
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..errors import XlbError
from ..model import IPAddress

T = TypeVar("T")


class ClientLoop(Protocol):
    """What runs coroutines on a client's event loop, inside its namespace
    (a `ClientNode`): synchronously (`call`) or in the background (`submit`)."""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T: ...

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """One request: which real answered (None on failure) and from which local port."""

    real: str | None
    sport: int
    error: str | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Replies:
    """The replies of a batch of requests."""

    replies: list[Reply] = field(default_factory=list)

    def __iter__(self) -> Iterator[Reply]:
        return iter(self.replies)

    def __len__(self) -> int:
        return len(self.replies)

    @property
    def failures(self) -> list[Reply]:
        return [r for r in self.replies if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def by_real(self) -> collections.Counter[str]:
        return collections.Counter(r.real for r in self.replies if r.real is not None)

    def by_sport(self) -> dict[int, str | None]:
        return {r.sport: r.real for r in self.replies}


REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: xlb-lab\r\nConnection: close\r\n\r\n"
REQUEST_KEEP = b"GET / HTTP/1.1\r\nHost: xlb-lab\r\n\r\n"


def _http_body(response: bytes) -> str:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200"):
        raise XlbError(f"bad HTTP response {response[:60]!r}")
    return body.decode()


class HeldConnection:
    """A kept-alive HTTP/1.1 connection from a client to a VIP.

    `real` is the real that answered the first request; `request()` sends
    another GET on the same connection and returns who answered it (the
    same real, as long as the connection survives).
    """

    def __init__(self, client: ClientLoop, dst: IPAddress, port: int, sport: int = 0) -> None:
        self.client = client
        self.dst = dst
        self.port = port
        self.sock: socket.socket | None = None
        self.sport = sport  # 0: an ephemeral port, known once open
        self.real: str | None = None
        self.requests = 0
        self._buffer = b""

    async def aopen(self, timeout: float) -> None:
        """Connect and make the first request (on the client's loop)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if self.dst.version == 6 else socket.AF_INET)
        sock.setblocking(False)
        try:
            if self.sport:
                sock.bind(("", self.sport))
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (str(self.dst), self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.sport = sock.getsockname()[1]
        self.real = await self.arequest(timeout)

    async def arequest(self, timeout: float) -> str:
        """`request()` on the client's loop."""
        if self.sock is None:
            raise XlbError("the held connection is closed")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(self.sock, REQUEST_KEEP)
            while True:
                head, sep, rest = self._buffer.partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        key, _, value = line.partition(b":")
                        if key.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) >= length:
                        self._buffer = rest[length:]
                        self.requests += 1
                        return _http_body(head + sep + rest[:length])
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    raise ConnectionResetError("the real closed the held connection")
                self._buffer += chunk

    def request(self, timeout: float = 3.0) -> str:
        """Send one more GET; the name of the real that answered."""
        return self.client.call(self.arequest(timeout), timeout + 1)

    def try_request(self, timeout: float = 3.0) -> Reply:
        """Like `request()` but a failure is a Reply with `error` set."""
        start = time.monotonic()
        try:
            name = self.request(timeout)
        except (OSError, TimeoutError, XlbError) as exc:
            return Reply(None, self.sport, f"{type(exc).__name__}: {exc}", time.monotonic() - start)
        return Reply(name, self.sport, None, time.monotonic() - start)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __repr__(self) -> str:
        return f"<HeldConnection [{self.dst}]:{self.port} sport={self.sport} real={self.real}>"


async def http_once(dst: IPAddress, port: int, sport: int, timeout: float) -> Reply:
    """One HTTP GET on a new TCP connection (from local port `sport`, 0: any),
    closed by the server: who answered, or why nothing did."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    local = sport
    try:
        if sport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (str(dst), port))
            local = sock.getsockname()[1]
            await loop.sock_sendall(sock, REQUEST_CLOSE)
            data = b""
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
        return Reply(_http_body(data), local, None, time.monotonic() - start)
    except (OSError, TimeoutError, XlbError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Reply(None, local, error, time.monotonic() - start)
    finally:
        sock.close()


async def udp_once(
    dst: IPAddress, port: int, sport: int, timeout: float, tries: int, size: int = 16
) -> Reply:
    """One UDP request/answer from a new socket (a new flow), sent up to
    `tries` times within `timeout`: who answered, or why nothing did. The
    request is `size` bytes (random hex): above the path MTU it leaves the
    client in fragments, and only a real that reassembled it echoes it."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    local = sport
    error = "TimeoutError"
    try:
        if sport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        sock.connect((str(dst), port))
        local = sock.getsockname()[1]
        payload = secrets.token_hex(max(size, 2) // 2).encode()
        for _ in range(tries):
            await loop.sock_sendall(sock, payload)
            try:
                async with asyncio.timeout(timeout / tries):
                    data = await loop.sock_recv(sock, 65536)
            except TimeoutError:
                continue
            name, sep, echo = data.partition(b"|")
            if not sep or echo != payload:
                error = f"bad UDP answer {data[:60]!r}"
                break
            return Reply(name.decode(), local, None, time.monotonic() - start)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return Reply(None, local, error, time.monotonic() - start)
