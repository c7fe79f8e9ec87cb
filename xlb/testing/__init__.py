"""Test support for services that use xlb: packet builders, wire captures
and pytest fixtures.

The fixtures come with the `pytest11` entry point `xlb` installed with the
package (with plugin autoloading off: `pytest -p xlb`). See docs/testing.md.
"""

from .packets import (
    CLIENT_MAC,
    GATEWAY_MAC,
    LB_MAC,
    QUIC_0RTT,
    QUIC_HANDSHAKE,
    QUIC_INITIAL,
    Encapsulated,
    decode_encapsulated,
    flow_hash_of,
    outer_destination,
    outer_source,
    quic_long_header,
    quic_short_header,
    tcp_packet,
    udp_packet,
)
from .wire import Capture, Captured, client_next_hop_mac, send_frames

__all__ = [
    "CLIENT_MAC",
    "GATEWAY_MAC",
    "LB_MAC",
    "QUIC_0RTT",
    "QUIC_HANDSHAKE",
    "QUIC_INITIAL",
    "Capture",
    "Captured",
    "Encapsulated",
    "client_next_hop_mac",
    "decode_encapsulated",
    "flow_hash_of",
    "outer_destination",
    "outer_source",
    "quic_long_header",
    "quic_short_header",
    "send_frames",
    "tcp_packet",
    "udp_packet",
]
