"""The lab's real server: HTTP on TCP and a UDP echo that answer with a name.

    python xlb/lab/server.py --name real2 --tcp 80 --udp 5353 --control /run/xlb/lab/x/real2.sock

Runs inside a real's network namespace (started by xlb.lab). It binds every
address of the namespace (VIPs are on loopback) so whatever the balancer
sends it answers, directly to the client:

- HTTP/1.1 on each --tcp port: any GET answers `200` with the name as the
  body; connections are kept alive unless the client asks to close them, so
  one connection can be held for minutes and re-used (the lab checks that
  established connections survive changes on the balancer).
- UDP on each --udp port: a datagram `P` is answered with `<name>|P`, sent
  from the address it was sent to (IP_PKTINFO/IPV6_PKTINFO), so a client
  that connected its socket to the VIP accepts it.
- --control: a Unix socket (not network-namespaced, so the lab reaches it
  from anywhere) answering one line, `stats`, with a JSON line of counters.

Prints `ready` on stdout once every socket is bound. Standard library
only: it starts fast and imports nothing of xlb.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

MAX_HEADER = 16384
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


class Stats:
    """What this server has seen, by protocol and address family."""

    def __init__(self) -> None:
        self.tcp_connections = {"4": 0, "6": 0}
        self.http_requests = {"4": 0, "6": 0}
        self.open_connections = 0
        self.udp_datagrams = {"4": 0, "6": 0}

    def as_dict(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "pid": os.getpid(),
            "tcp_connections": self.tcp_connections,
            "http_requests": self.http_requests,
            "open_connections": self.open_connections,
            "udp_datagrams": self.udp_datagrams,
        }


def family_of(peer: Any) -> str:
    host = str(peer[0]) if peer else ""
    return "6" if ":" in host and not host.startswith("::ffff:") else "4"


class Server:
    def __init__(self, name: str) -> None:
        self.name = name
        self.body = name.encode()
        self.stats = Stats()

    # ------------------------------------------------------------- HTTP

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        family = family_of(writer.get_extra_info("peername"))
        self.stats.tcp_connections[family] += 1
        self.stats.open_connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                version = lines[0].rsplit(" ", 1)[-1] if lines[0] else "HTTP/1.0"
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip().lower()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                close = headers.get("connection") == "close" or (
                    version == "HTTP/1.0" and headers.get("connection") != "keep-alive"
                )
                self.stats.http_requests[family] += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(self.body)}\r\n".encode()
                    + (b"Connection: close\r\n" if close else b"Connection: keep-alive\r\n")
                    + b"\r\n"
                    + self.body
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self.stats.open_connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    # -------------------------------------------------------------- UDP

    def udp_socket(self, family: int, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.bind(("::", port))
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        return sock

    def on_udp(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, ancdata, _flags, peer = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply_cmsg: list[tuple[int, int, bytes]] = []
            for level, kind, payload in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    # struct in_pktinfo {ifindex; spec_dst; addr}: answer from addr
                    _ifindex, _spec, dst = struct.unpack("i4s4s", payload[:12])
                    reply_cmsg = [
                        (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, dst, dst))
                    ]
                elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                    dst6 = payload[:16]
                    reply_cmsg = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, dst6 + struct.pack("i", 0))]
            self.stats.udp_datagrams["6" if sock.family == socket.AF_INET6 else "4"] += 1
            with contextlib.suppress(OSError):
                sock.sendmsg([self.body + b"|" + data], reply_cmsg, 0, peer)

    # ---------------------------------------------------------- control

    async def handle_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await answer_control(reader, writer, lambda: self.stats.as_dict(self.name))


async def answer_control(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: Callable[[], dict[str, Any]],
) -> None:
    """One request on a lab server's control socket: `stats` -> its counters
    as one JSON line (also the QUIC server's, xlb/lab/quicserver.py)."""
    try:
        line = (await reader.readline()).strip()
        answer = stats() if line == b"stats" else {"error": "unknown command"}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop when the lab that started us is gone (we were re-parented)."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    stop.set()


async def serve(args: argparse.Namespace) -> None:
    server = Server(args.name)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.AbstractServer] = []
    for port in args.tcp:
        # host=None binds 0.0.0.0 and :: (IPv6-only), every address of the netns
        servers.append(
            await asyncio.start_server(
                server.handle_http, host=None, port=port, reuse_address=True, backlog=1024
            )
        )
    udp_sockets = []
    for port in args.udp:
        for family in (socket.AF_INET, socket.AF_INET6):
            sock = server.udp_socket(family, port)
            loop.add_reader(sock.fileno(), server.on_udp, sock)
            udp_sockets.append(sock)
    if args.control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)
        servers.append(await asyncio.start_unix_server(server.handle_control, path=args.control))
    watcher = loop.create_task(watch_parent(args.parent, stop)) if args.parent else None
    print("ready", flush=True)
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    for s in servers:
        s.close()
    for sock in udp_sockets:
        loop.remove_reader(sock.fileno())
        sock.close()
    if args.control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", required=True, help="what every answer carries, e.g. real2")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="HTTP port")
    parser.add_argument("--udp", type=int, action="append", default=[], help="UDP echo port")
    parser.add_argument("--control", help="Unix socket answering `stats`")
    parser.add_argument("--parent", type=int, help="exit when this process is no longer our parent")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"labserver {args.name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
