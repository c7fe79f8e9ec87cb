"""The network-namespace lab: clients, a balancer and reals on one machine.

    from xlb.lab import Lab

    with Lab(reals=4) as lab:
        lab.add_default_services()
        print(lab.client.http_get(lab.vip4, count=200).by_real())

Its modules, by what makes them change:

    lab.py        Lab: the topology, building and tearing it down, the
                  balancer nodes' life (see its docstring)
    nodes.py      the nodes: client, balancer and real namespaces
    routers.py    the routing engines: BIRD + ExaBGP, keepalived (VRRP)
    exchanges.py  one request from a client (HTTP, UDP, a held connection)
    traffic.py    background load from a client and what it saw
    state.py      state files, leftovers, cleanup of crashed labs
    cli.py        `python -m xlb.lab cleanup|list` (`xlb lab`)
    server.py     the reals' HTTP and UDP server (standard library only)
    quicserver.py the reals' QUIC server (aioquic via xlb.quic; `quic` extra)
    quic.py       QUIC clients: a certificate, a download that migrates
    demo.py       `python3 build.py demo`
"""

from .cli import main
from .exchanges import REQUEST_CLOSE, REQUEST_KEEP, HeldConnection, Replies, Reply
from .lab import (
    DEFAULT_VIP4,
    DEFAULT_VIP6,
    EPHEMERAL_PORTS,
    FIXED_SPORT_BASE,
    PASS_OBJECT,
    PASS_PROGRAM,
    TOPOLOGIES,
    Family,
    Lab,
    Topology,
)
from .nodes import BalancerNode, ClientNode, KillHow, Node, RealNode
from .state import LAB_PREFIX, LABSERVER, PIN_ROOT, STATE_DIR, cleanup_all, leftovers, running_labs
from .traffic import Traffic, TrafficReport

__all__ = [
    "DEFAULT_VIP4",
    "DEFAULT_VIP6",
    "EPHEMERAL_PORTS",
    "FIXED_SPORT_BASE",
    "LABSERVER",
    "LAB_PREFIX",
    "PASS_OBJECT",
    "PASS_PROGRAM",
    "PIN_ROOT",
    "REQUEST_CLOSE",
    "REQUEST_KEEP",
    "STATE_DIR",
    "TOPOLOGIES",
    "BalancerNode",
    "ClientNode",
    "Family",
    "HeldConnection",
    "KillHow",
    "Lab",
    "Node",
    "RealNode",
    "Replies",
    "Reply",
    "Topology",
    "Traffic",
    "TrafficReport",
    "cleanup_all",
    "leftovers",
    "main",
    "running_labs",
]
