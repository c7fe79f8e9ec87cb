"""Test support for services that use xlb: packet builders and pytest fixtures.

Enable the fixtures with `pytest -p xlb.testing.plugin`, or rely on the
`pytest11` entry point installed with the package. See docs/testing.md.
"""

from .packets import (
    CLIENT_MAC,
    GATEWAY_MAC,
    LB_MAC,
    Encapsulated,
    decode_encapsulated,
    outer_destination,
    tcp_packet,
    udp_packet,
)

__all__ = [
    "CLIENT_MAC",
    "GATEWAY_MAC",
    "LB_MAC",
    "Encapsulated",
    "decode_encapsulated",
    "outer_destination",
    "tcp_packet",
    "udp_packet",
]
