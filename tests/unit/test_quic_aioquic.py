"""xlb.quic with aioquic, without sockets: an aioquic client and a server
connection talk through lists of datagrams (aioquic's sans-I/O API), and
every connection ID the server ever gives out must name its server id:
the source CID of its long headers, the `initial_source_connection_id`
the client checks, every ID of NEW_CONNECTION_ID frames, including those
made after the client migrated and retired some."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import pull_quic_header

from xlb.errors import ConfigError
from xlb.lab.quic import ALPN, SERVER_NAME, make_certificate
from xlb.quic import QuicLbConnection, check_aioquic_version, serve
from xlb.quiclb import server_id_of

CLIENT = ("198.51.100.7", 40000)
SERVER = ("10.100.0.2", 443)
SID = 0x0A0B


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("quic"))


def server_config(certificate: tuple[Path, Path], cid_length: int = 8) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=False, alpn_protocols=[ALPN], connection_id_length=cid_length
    )
    config.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return config


def client_config(certificate: tuple[Path, Path]) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name=SERVER_NAME)
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(cafile=str(certificate[0]))
    return config


class Wire:
    """Datagrams between one client and one server connection, with a clock."""

    def __init__(self, client: QuicConnection, server: QuicConnection) -> None:
        self.client, self.server = client, server
        self.now = 1.0
        self.server_datagrams: list[bytes] = []

    def run(self, rounds: int = 50) -> None:
        """Deliver until neither side has anything to send."""
        for _ in range(rounds):
            self.now += 0.001
            to_server = [d for d, _ in self.client.datagrams_to_send(now=self.now)]
            for data in to_server:
                self.server.receive_datagram(data, CLIENT, now=self.now)
            to_client = [d for d, _ in self.server.datagrams_to_send(now=self.now)]
            self.server_datagrams += to_client
            for data in to_client:
                self.client.receive_datagram(data, SERVER, now=self.now)
            if not to_server and not to_client:
                return
        raise AssertionError("the connection did not settle")


def connect(
    certificate: tuple[Path, Path], make_server: str, cid_length: int = 8
) -> tuple[Wire, QuicLbConnection]:
    """A client's handshake with a server made by the constructor
    ("subclass") or by adopting aioquic's own connection ("adopt"), as
    xlb.quic.serve does inside aioquic's QuicServer."""
    client = QuicConnection(configuration=client_config(certificate))
    client.connect(SERVER, now=1.0)
    first = client.datagrams_to_send(now=1.0)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=cid_length)
    config = server_config(certificate, cid_length)
    odcid = header.destination_cid
    if make_server == "subclass":
        server = QuicLbConnection(
            server_id=SID, configuration=config, original_destination_connection_id=odcid
        )
    else:
        plain = QuicConnection(configuration=config, original_destination_connection_id=odcid)
        server = QuicLbConnection.adopt(plain, SID)
        assert server is plain
    wire = Wire(client, server)
    for data, _ in first:
        server.receive_datagram(data, CLIENT, now=1.0)
    wire.run()
    assert client._handshake_complete and server._handshake_complete
    return wire, server


def issued_cids(wire: Wire, cid_length: int) -> Iterator[bytes]:
    """Every server CID the client saw: long headers' SCIDs, its peer CIDs."""
    for data in wire.server_datagrams:
        if data[0] & 0x80:
            yield pull_quic_header(Buffer(data=data), host_cid_length=cid_length).source_cid
    yield wire.client._peer_cid.cid
    yield from (c.cid for c in wire.client._peer_cid_available)
    assert wire.client._remote_initial_source_connection_id is not None
    yield wire.client._remote_initial_source_connection_id


def echo(wire: Wire, payload: bytes) -> bytes:
    """A stream from the client, echoed back by the server."""
    stream = wire.client.get_next_available_stream_id()
    wire.client.send_stream_data(stream, payload, end_stream=True)
    wire.run()
    while (event := wire.server.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            wire.server.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
    wire.run()
    got = b""
    while (event := wire.client.next_event()) is not None:
        if isinstance(event, StreamDataReceived) and event.stream_id == stream:
            got += event.data
    return got


@pytest.mark.parametrize("make_server", ["subclass", "adopt"])
@pytest.mark.parametrize("cid_length", [7, 8, 20])
def test_every_cid_the_server_issues_names_its_server_id(
    certificate: tuple[Path, Path], make_server: str, cid_length: int
) -> None:
    wire, server = connect(certificate, make_server, cid_length)
    assert server.server_id == SID
    seen: set[bytes] = set()
    for migration in range(6):  # each retires a CID; the server issues new ones
        assert echo(wire, b"ping %d" % migration) == b"ping %d" % migration
        seen.update(issued_cids(wire, cid_length))
        wire.client.change_connection_id()
        wire.run()
    assert len(seen) >= 10  # the first, the spares, the replacements
    assert max(c.sequence_number for c in server._host_cids) >= 8  # replenished
    for cid in seen | {c.cid for c in server._host_cids}:
        assert len(cid) == cid_length
        assert cid[0] & 0x1F == cid_length - 1
        assert server_id_of(cid) == SID, cid.hex()


def test_plain_aioquic_issues_cids_the_balancer_cannot_route(
    certificate: tuple[Path, Path],
) -> None:
    """The control: without xlb.quic the IDs are random (so the test above
    is not passing by accident)."""
    client = QuicConnection(configuration=client_config(certificate))
    client.connect(SERVER, now=1.0)
    first = client.datagrams_to_send(now=1.0)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    servers = [
        QuicConnection(
            configuration=server_config(certificate),
            original_destination_connection_id=header.destination_cid,
        )
        for _ in range(16)
    ]
    assert {server_id_of(s.host_cid) for s in servers} != {SID}


def test_adopting_late_or_the_wrong_side_is_refused(certificate: tuple[Path, Path]) -> None:
    _, server = connect(certificate, "subclass")
    with pytest.raises(TypeError):
        QuicLbConnection.adopt(server, SID)
    client = QuicConnection(configuration=client_config(certificate))
    with pytest.raises(ConfigError, match="for servers"):
        QuicLbConnection.adopt(client, SID)
    plain = QuicConnection(
        configuration=server_config(certificate), original_destination_connection_id=bytes(8)
    )
    plain._replenish_connection_ids()  # as if it had gone on with random ids
    plain._remote_active_connection_id_limit = 4
    plain._replenish_connection_ids()
    with pytest.raises(ConfigError, match="issued connection IDs already"):
        QuicLbConnection.adopt(plain, SID)


@pytest.mark.parametrize(
    ("server_id", "cid_length", "needle"),
    [(1 << 16, 8, "0-65535"), (-1, 8, "0-65535"), (5, 6, "7-20"), (5, 21, "7-20")],
)
def test_bad_ids_and_lengths_are_refused(
    certificate: tuple[Path, Path], server_id: int, cid_length: int, needle: str
) -> None:
    config = server_config(certificate)
    config.connection_id_length = cid_length
    with pytest.raises(ConfigError, match=needle):
        QuicLbConnection(
            server_id=server_id, configuration=config, original_destination_connection_id=bytes(8)
        )
    with pytest.raises(ConfigError, match=needle):
        asyncio.run(serve("127.0.0.1", 0, server_id=server_id, configuration=config))


def test_serve_refuses_retry_and_client_configurations(certificate: tuple[Path, Path]) -> None:
    """Refused before any socket is opened."""
    with pytest.raises(ConfigError, match="Retry"):
        asyncio.run(
            serve("127.0.0.1", 0, server_id=1, configuration=server_config(certificate), retry=True)
        )
    with pytest.raises(ConfigError, match="server configuration"):
        asyncio.run(serve("127.0.0.1", 0, server_id=1, configuration=client_config(certificate)))


@pytest.mark.parametrize(
    ("version", "ok"),
    [("1.2.0", True), ("1.7.2", True), ("1.1.0", False), ("1.8.0", False), ("2.0", False),
     ("dev", False)],
)  # fmt: skip
def test_only_known_aioquic_versions_are_accepted(version: str, ok: bool) -> None:
    if ok:
        check_aioquic_version(version)
    else:
        with pytest.raises(ImportError, match=r"aioquic 1\.2 to 1\.7"):
            check_aioquic_version(version)
