"""aioquic servers behind xlb: connection IDs that name their real.

    from xlb.quic import serve

    server = await serve("10.100.0.2", 443, server_id=0x0A0B, configuration=configuration)

A QUIC VIP (`VipFlags.QUIC`) sends each datagram to the real whose server
id its destination connection ID carries (QUIC-LB, xlb/quiclb.py). The
server on that real must therefore issue every connection ID of its own in
that format with its id: the first one (the source CID of its Initial,
which the client's later packets carry, and the transport parameter
`initial_source_connection_id`) and the ones it hands the client in
NEW_CONNECTION_ID frames for migration.

aioquic has no public hook for its connection IDs: `QuicConnection` draws
them with `os.urandom` in its constructor (`_host_cids[0]`, `host_cid`,
`_local_initial_source_connection_id`) and in `_replenish_connection_ids`.
`QuicLbConnection` rewrites exactly those: the first ID before any packet
is built, each later one as it is made (before a NEW_CONNECTION_ID frame
carries it, and before aioquic announces it with a ConnectionIdIssued
event, which its asyncio server uses to route datagrams to connections).
That is private state, read in aioquic 1.2 to 1.7, the range the `quic`
extra pins; any other version is refused on import rather than left to
issue random IDs that the balancer would scatter.

`serve()` is aioquic's `serve()` with such connections: aioquic's
QuicServer builds plain QuicConnections itself, so `serve` turns each one
into a QuicLbConnection in `create_protocol`, which QuicServer calls before
the connection has handled a packet and before it registers the
connection's first ID. aioquic's Retry (`retry=True`) answers with a
random connection ID of 8 octets that no balancer can route back to this
server, so `serve` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioquic
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.asyncio.server import serve as aioquic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from .errors import ConfigError
from .quiclb import CidGenerator, check_cid_length

#: The aioquic releases whose private connection-ID state this module knows.
SUPPORTED_AIOQUIC = ((1, 2), (1, 7))

__all__ = ["SUPPORTED_AIOQUIC", "QuicLbConnection", "check_aioquic_version", "serve"]


def _aioquic_version(text: str) -> tuple[int, int]:
    major, minor = (int(part) for part in text.split(".")[:2])
    return major, minor


def check_aioquic_version(text: str) -> None:
    """ImportError for an aioquic release outside SUPPORTED_AIOQUIC."""
    low, high = SUPPORTED_AIOQUIC
    try:
        version = _aioquic_version(text)
    except ValueError:
        version = (0, 0)
    if not low <= version <= high:
        raise ImportError(
            f"xlb.quic works with aioquic {low[0]}.{low[1]} to {high[0]}.{high[1]} (it rewrites "
            f"private connection-ID state of QuicConnection); this is aioquic {text}: install "
            "the quic extra, pip install 'xlb-balancer[quic]'"
        )


check_aioquic_version(aioquic.__version__)


class QuicLbConnection(QuicConnection):
    """A server-side aioquic QuicConnection whose own connection IDs are
    QUIC-LB IDs naming `server_id` (of `configuration.connection_id_length`
    octets, 7-20; aioquic's default is 8). Takes QuicConnection's keyword
    arguments besides."""

    _xlb_cids: CidGenerator

    def __init__(self, *, server_id: int, configuration: QuicConfiguration, **kwargs: Any) -> None:
        cids = _generator(server_id, configuration)
        super().__init__(configuration=configuration, **kwargs)
        self._issue_first_cid(cids)

    @classmethod
    def adopt(cls, connection: QuicConnection, server_id: int) -> QuicLbConnection:
        """Make a QuicConnection that has not handled a packet yet (as
        aioquic's QuicServer hands it to `create_protocol`) one of these,
        in place: its first connection ID is replaced, its later ones will
        name `server_id`."""
        if type(connection) is not QuicConnection:
            raise TypeError(f"expected an aioquic QuicConnection, got {type(connection).__name__}")
        cids = _generator(server_id, connection.configuration)
        _check_fresh(connection)  # before the class changes: nothing half-done
        connection.__class__ = cls  # adds methods only: QuicConnection has no __slots__
        adopted: QuicLbConnection = connection  # type: ignore[assignment]
        adopted._issue_first_cid(cids)
        return adopted

    def _issue_first_cid(self, cids: CidGenerator) -> None:
        """Replace the random first connection ID the constructor drew."""
        _check_fresh(self)
        first = self._host_cids[0]
        first.cid = cids.new()
        self.host_cid = first.cid
        self._local_initial_source_connection_id = first.cid
        self._xlb_cids = cids

    def _replenish_connection_ids(self) -> None:
        """aioquic's, with each ID it adds rewritten before anything sends it."""
        known = len(self._host_cids)
        super()._replenish_connection_ids()
        for connection_id in self._host_cids[known:]:
            connection_id.cid = self._xlb_cids.new()

    @property
    def server_id(self) -> int:
        """The server id this connection's IDs carry."""
        return self._xlb_cids.server_id


def _check_fresh(connection: QuicConnection) -> None:
    """A server connection that has only the first connection ID its
    constructor drew, which nothing has sent yet."""
    if connection._is_client:
        raise ConfigError("QuicLbConnection is for servers: a client's IDs are not routed")
    ids = connection._host_cids
    if len(ids) != 1 or ids[0].sequence_number != 0 or ids[0].cid != connection.host_cid:
        raise ConfigError("the connection has issued connection IDs already: adopt it sooner")
    if connection._packet_number != 0:
        raise ConfigError("the connection has sent packets already: adopt it sooner")


def _generator(server_id: int, configuration: QuicConfiguration) -> CidGenerator:
    length = check_cid_length(configuration.connection_id_length)
    return CidGenerator(server_id, length)


async def serve(
    host: str,
    port: int,
    *,
    server_id: int,
    configuration: QuicConfiguration,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    retry: bool = False,
    **kwargs: Any,
) -> QuicServer:
    """aioquic.asyncio.serve() whose connections issue QUIC-LB connection
    IDs naming `server_id` (see the module docstring); other keyword
    arguments go to aioquic's serve."""
    if retry:
        raise ConfigError(
            "retry=True: aioquic's Retry carries a random connection ID that the balancer "
            "cannot route back to this server; serve without Retry behind xlb"
        )
    if configuration.is_client:
        raise ConfigError("serve() needs a server configuration (is_client=False)")
    _generator(server_id, configuration)  # a bad id or length fails here, not per connection

    def routable(connection: QuicConnection, **protocol_kwargs: Any) -> QuicConnectionProtocol:
        return create_protocol(QuicLbConnection.adopt(connection, server_id), **protocol_kwargs)

    return await aioquic_serve(
        host, port, configuration=configuration, create_protocol=routable, **kwargs
    )
