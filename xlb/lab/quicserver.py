"""The lab's QUIC server: aioquic behind a QUIC VIP, issuing routable CIDs.

    python -P xlb/lab/quicserver.py --name real2 --server-id 514 --listen 10.100.0.1 \\
        --port 443 --port 4433 --cert cert.pem --key key.pem \\
        --control /run/xlb/lab/x/real2-quic.sock

Runs inside a real's network namespace (started by `Lab.start_real_process`),
listening on the VIP addresses (on loopback there), so that its replies
leave from the VIP, straight to the client. Its connections issue every
connection ID in the QUIC-LB format with --server-id (xlb.quic.serve), the
id the balancer gave this real (`Balancer.server_ids`).

A bidirectional stream carrying `GET <n>\\n` is answered with the server's
name, a newline and n octets (xlb/lab/quic.py has the client).

--control: a Unix socket answering `stats` with one JSON line: the
connections and requests served, the most client addresses one
connection was seen from (a migration adds one), and the datagrams whose
connection ID names another server (what the balancer should never send
here). Prints `ready` once listening; exits when --parent is gone.
`-P` keeps xlb/lab off sys.path (its module names would shadow others).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamDataReceived

from xlb.lab.server import answer_control, watch_parent
from xlb.quic import serve
from xlb.quiclb import destination_cid, server_id_of

#: The ALPN of the lab's GET protocol (the client, xlb/lab/quic.py, imports it).
ALPN = "xlb-lab"


class Stats:
    def __init__(self, name: str, server_id: int) -> None:
        self.name, self.server_id = name, server_id
        self.connections = 0
        self.requests = 0
        self.most_addresses = 0
        self.datagrams = 0
        self.foreign_datagrams = 0  # connection ID naming another server

    def as_dict(self) -> dict[str, Any]:
        return {"pid": os.getpid(), **vars(self)}


class Handler(QuicConnectionProtocol):
    """One connection: answers GET streams, counts the addresses it came from."""

    def __init__(self, quic: QuicConnection, stats: Stats, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.stats = stats
        self.requests: dict[int, bytes] = {}
        self.addresses: set[Any] = set()
        stats.connections += 1

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.addresses.add(addr)
        self.stats.most_addresses = max(self.stats.most_addresses, len(self.addresses))
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        request = self.requests.get(event.stream_id, b"") + event.data
        self.requests[event.stream_id] = request
        if not event.end_stream:
            return
        verb, _, size = request.decode(errors="replace").strip().partition(" ")
        if verb != "GET" or not size.isdigit():
            self._quic.send_stream_data(event.stream_id, b"bad request\n", end_stream=True)
        else:
            self.stats.requests += 1
            body = self.stats.name.encode() + b"\n" + bytes(int(size))
            self._quic.send_stream_data(event.stream_id, body, end_stream=True)
        self.transmit()


async def run(args: argparse.Namespace) -> None:
    stats = Stats(args.name, args.server_id)
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    configuration.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    def protocol(connection: QuicConnection, **kwargs: Any) -> Handler:
        return Handler(connection, stats, **kwargs)

    servers = []
    for address in args.listen:
        for port in args.port:
            server = await serve(
                address, port, server_id=args.server_id, configuration=configuration,
                create_protocol=protocol,
            )  # fmt: skip
            servers.append(server)
            count_foreign(server, stats)
    control = None
    if args.control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)
        control = await asyncio.start_unix_server(
            lambda r, w: answer_control(r, w, stats.as_dict), path=args.control
        )
    watcher = loop.create_task(watch_parent(args.parent, stop)) if args.parent else None
    print("ready", flush=True)
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    for server in servers:
        server.close()
    if control is not None:
        control.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)


def count_foreign(server: asyncio.DatagramProtocol, stats: Stats) -> None:
    """Count, ahead of aioquic, each datagram and those naming another server."""
    receive = server.datagram_received

    def counting(data: bytes, addr: Any) -> None:
        stats.datagrams += 1
        cid = destination_cid(data)
        sid = server_id_of(cid) if cid is not None else None
        if sid is not None and sid != stats.server_id and not data[0] & 0x80:
            stats.foreign_datagrams += 1
        receive(data, addr)

    server.datagram_received = counting  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", required=True, help="what every answer starts with, e.g. real2")
    parser.add_argument("--server-id", type=int, required=True, help="this real's QUIC server id")
    parser.add_argument("--listen", action="append", required=True, help="address (a VIP)")
    parser.add_argument("--port", type=int, action="append", required=True, help="UDP port")
    parser.add_argument("--cert", required=True, help="certificate chain, PEM")
    parser.add_argument("--key", required=True, help="private key, PEM")
    parser.add_argument("--control", help="Unix socket answering `stats`")
    parser.add_argument("--parent", type=int, help="exit when this process is no longer our parent")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args))
    except OSError as exc:
        print(f"quicserver {args.name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
