"""QUIC in the lab: a certificate, and a client that migrates mid-transfer.

    cert, key = make_certificate(directory)
    report = lab.client.call(download(vip.address, 443, 2_000_000, cert, migrate_at=[...]))

The reals run xlb/lab/quicserver.py (started by `Lab.start_real_process`):
an aioquic server that issues QUIC-LB connection IDs with its real's
server id, through xlb.quic.serve. The
client here is aioquic's sans-I/O QuicConnection driven over a UDP socket
of its own, so that it can do what a phone does between networks: move
to a new local port (a new socket: the balancer sees a new 5-tuple) and
switch to the next connection ID the server gave it
(`change_connection_id()`), in the middle of a download. It runs on the
lab client's event loop, inside the client's namespace.

The protocol on one bidirectional stream: the client sends `GET <n>\\n`,
the server answers `<its name>\\n` then n octets and ends the stream.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import XlbError
from ..model import IPAddress
from .nodes import control_stats
from .quicserver import ALPN as ALPN  # the server's, re-exported for clients

SERVER_NAME = "xlb-lab.test"
#: The script the reals run (with `python -P`: see its docstring).
QUICSERVER = Path(__file__).resolve().parent / "quicserver.py"


def make_certificate(directory: Path, name: str = SERVER_NAME) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for `name`, valid for a day:
    (certificate PEM, key PEM) written into `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "quic-cert.pem", directory / "quic-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Migration:
    """What the client did when it migrated, and what followed."""

    at_octets: int  # received octets when it moved
    local_port: int  # the new socket's port
    cid_before: bytes  # the server CID it sent with until then
    cid_after: bytes  # the next one, from the server's NEW_CONNECTION_ID


@dataclass
class Download:
    """The outcome of `download()`."""

    complete: bool
    server: str  # the name the real announced at the start ("" before it did)
    received: int  # body octets
    seconds: float  # from the first packet sent to the end (or the give-up)
    migrations: list[Migration] = field(default_factory=list)
    error: str = ""  # why it did not complete


class _Socket(asyncio.DatagramProtocol):
    """One UDP socket; datagrams go to a queue shared across migrations."""

    def __init__(self, inbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not derive from DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.inbox.put_nowait(data)


async def _open_socket(family: int, inbox: asyncio.Queue[bytes], port: int) -> _Socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    _, proto = await loop.create_datagram_endpoint(lambda: _Socket(inbox), sock=sock)
    return proto


def client_configuration(cafile: Path) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name=SERVER_NAME)
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(cafile=str(cafile))
    config.idle_timeout = 10.0
    return config


async def download(
    address: IPAddress | str,
    port: int,
    size: int,
    cafile: Path,
    *,
    migrate_at: Sequence[int] = (),
    port_for: Callable[[str, int], int] | None = None,
    stall_timeout: float = 5.0,
) -> Download:
    """Download `size` octets from the QUIC server behind `address:port`.

    At each of `migrate_at` (received octets, increasing) the client
    closes its socket, opens one on `port_for(server name, migration
    index)` (None, or 0: any free port) and switches to its next server
    connection ID, as a client that moved to another network. Gives up
    when the download made no progress for `stall_timeout` seconds (a
    migration the balancer sends to a real that cannot decrypt it looks
    like that from the client).
    """
    dst = ipaddress.ip_address(address)
    family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    peer = (str(dst), port)
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    sock = await _open_socket(family, inbox, 0)
    quic = QuicConnection(configuration=client_configuration(cafile))
    started = progressed = time.monotonic()
    result = Download(False, "", 0, 0.0)
    stream = _Stream(result, size)
    plan = list(migrate_at)

    def flush() -> None:
        assert sock.transport is not None
        for data, _ in quic.datagrams_to_send(now=time.monotonic()):
            sock.transport.sendto(data, peer)

    quic.connect(peer, now=time.monotonic())
    flush()
    try:
        while not stream.done:
            timer = quic.get_timer()
            until = (
                progressed + stall_timeout
                if timer is None
                else min(timer, progressed + stall_timeout)
            )
            try:
                data = await asyncio.wait_for(inbox.get(), max(0.0, until - time.monotonic()))
                quic.receive_datagram(data, peer, now=time.monotonic())
            except TimeoutError:
                if time.monotonic() - progressed >= stall_timeout:
                    result.error = f"no progress for {stall_timeout:g} s"
                    break
                quic.handle_timer(now=time.monotonic())
            before = result.received
            stream.take_events(quic)
            if result.received != before:
                progressed = time.monotonic()
            if stream.stream_id is None and quic._handshake_complete:
                stream.request(quic)
            if plan and result.received >= plan[0] and not stream.done:
                plan.pop(0)
                new_port = port_for(result.server, len(result.migrations)) if port_for else 0
                assert sock.transport is not None
                sock.transport.close()  # the old network is gone
                sock = await _open_socket(family, inbox, new_port)
                result.migrations.append(_migrate(quic, result.received, sock))
            flush()
        result.seconds = time.monotonic() - started
        if stream.done:
            quic.close()
            flush()
        return result
    finally:
        if sock.transport is not None:
            sock.transport.close()


class _Stream:
    """The request stream's side of a `Download`."""

    def __init__(self, result: Download, size: int) -> None:
        self.result, self.size = result, size
        self.stream_id: int | None = None
        self.header = b""
        self.done = False

    def request(self, quic: QuicConnection) -> None:
        self.stream_id = quic.get_next_available_stream_id()
        quic.send_stream_data(self.stream_id, f"GET {self.size}\n".encode(), end_stream=True)

    def take_events(self, quic: QuicConnection) -> None:
        result = self.result
        while (event := quic.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                result.error = f"connection closed: {event.reason_phrase or event.error_code}"
                self.done = True
            elif isinstance(event, StreamDataReceived) and event.stream_id == self.stream_id:
                self._data(event.data)
                if event.end_stream:
                    result.complete = result.received == self.size
                    if not result.complete:
                        result.error = f"the stream ended after {result.received} octets"
                    self.done = True

    def _data(self, data: bytes) -> None:
        result = self.result
        if result.server:
            result.received += len(data)
            return
        self.header += data
        name, sep, body = self.header.partition(b"\n")
        if sep:
            result.server, result.received = name.decode(), len(body)


def _migrate(quic: QuicConnection, received: int, sock: _Socket) -> Migration:
    """Move to the next server connection ID; the caller moved the socket."""
    assert sock.transport is not None
    before = quic._peer_cid.cid
    quic.change_connection_id()
    after = quic._peer_cid.cid
    if after == before:
        raise XlbError("the server gave no spare connection ID to migrate to")
    port = sock.transport.get_extra_info("sockname")[1]
    return Migration(received, int(port), before, after)


def server_stats(control: Path, timeout: float = 2.0) -> dict[str, Any]:
    """What a quicserver's control socket answers to `stats`."""
    return control_stats(control, timeout)
