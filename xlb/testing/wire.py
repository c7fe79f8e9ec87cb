"""Frames on real links: send them from a namespace, capture them in another.

Scapy's AF_PACKET sockets belong to the network namespace of the thread
that creates them, for their whole life; `xlb.netns.enter` switches only
the calling thread, so a socket created inside `with netns.enter(ns):`
sends and listens on `ns`'s interfaces even after the block ends.

    with Capture(lab.hub, [lab.balancers[0].hub_port]) as capture:
        send_frames(lab.client.netns, lab.client.interface, [frame])
        frames = capture.collect(lambda f: token in f.frame, until=lambda got: len(got) >= 2)

A capture opens its sockets in `__init__`, so every frame that crosses the
links from then on is queued in the kernel until `collect()` reads it:
open the capture, then send, then collect (no race with a sniffer thread).
Interfaces are not switched to promiscuous mode (veth and bridge ports
hand every frame to packet sockets anyway).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scapy.arch.linux import L2ListenSocket, L2Socket, LinuxInterfaceProvider
from scapy.config import conf
from scapy.interfaces import NetworkInterface
from scapy.packet import Raw
from scapy.sendrecv import sniff

from .. import netns

if TYPE_CHECKING:
    from ..lab import Lab, Node

__all__ = ["Capture", "Captured", "client_next_hop_mac", "send_frames"]


def _interface(name: str) -> NetworkInterface:
    """Scapy's description of interface `name` of the calling thread's namespace.

    Scapy resolves a name through `conf.ifaces`, its process-wide list of
    the interfaces it found when it started, and reloads that list (in the
    calling thread's namespace) when a name is missing. Handing it an
    interface object instead keeps the list alone; a missing interface is
    an OSError here."""
    provider = conf.ifaces.providers[LinuxInterfaceProvider]
    data = {"name": name, "network_name": name, "description": name}
    return NetworkInterface(provider, {**data, "index": socket.if_nametoindex(name)})


@dataclass(frozen=True, slots=True)
class Captured:
    """One frame seen on an interface, as bytes (Ethernet header first)."""

    interface: str
    frame: bytes


def send_frames(namespace: str | None, interface: str, frames: Iterable[bytes]) -> None:
    """Send raw Ethernet frames out of `interface` of namespace `namespace`
    (None: the caller's namespace), as the host behind it would."""
    with netns.enter(namespace):
        sock = L2Socket(iface=_interface(interface), promisc=False)
    try:
        for frame in frames:
            sock.send(Raw(frame))  # byte for byte
    finally:
        sock.close()


class Capture:
    """AF_PACKET listeners on `interfaces` of namespace `namespace`, both
    directions, read with scapy's `sniff()` (a context manager)."""

    def __init__(self, namespace: str | None, interfaces: Sequence[str]) -> None:
        self.namespace = namespace
        self._sockets: dict[Any, str] = {}
        try:
            with netns.enter(namespace):
                for interface in interfaces:
                    listener = L2ListenSocket(iface=_interface(interface), promisc=False)
                    self._sockets[listener] = interface
        except BaseException:
            self.close()
            raise

    def collect(
        self,
        match: Callable[[Captured], bool],
        until: Callable[[list[Captured]], bool],
        timeout: float = 3.0,
    ) -> list[Captured]:
        """Frames that `match`, in arrival order, read until `until(frames)`
        holds or `timeout` seconds pass (then whatever matched so far)."""
        got: list[Captured] = []

        def keep(packet: Any) -> bool:
            seen = Captured(str(packet.sniffed_on), bytes(packet))
            if match(seen):
                got.append(seen)
            return until(got)

        if not until(got):
            deadline = time.monotonic() + timeout
            sniff(
                opened_socket=self._sockets,
                store=False,
                stop_filter=keep,
                timeout=max(0.0, deadline - time.monotonic()),
            )
        return got

    def close(self) -> None:
        """Close every listener (idempotent)."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_next_hop_mac(lab: Lab, client: Node | None = None) -> str:
    """The MAC a lab client sends VIP traffic to: its router port (routed)
    or the balancer's interface (bridged, where the client routes the VIPs
    to the balancer)."""
    node = client or lab.client
    return node.hub_mac if lab.topology == "routed" else lab.balancers[0].mac
