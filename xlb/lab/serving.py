"""`xlb serve` on the lab's balancer nodes: `Lab(serve=True)`.

With `serve=True` the lab builds the topology, the reals and the router
(BIRD with `router="bird"`) but opens no Balancer and starts no BGP speaker
on the balancer nodes: each node is run by an `xlb serve` daemon, started
by `lab.start_serve(node)` on a configuration the lab writes
(`serve_config`): the default TCP services on both VIPs, HTTP checks
through the tunnel, and with `router="bird"` a `[bgp]` table whose ExaBGP
peers with the lab's router. The daemon attaches its own data plane,
announces after its first health results and is driven the way an
operator drives it: its control socket (`xlb node drain`), signals, kill -9.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import control
from ..errors import XlbError

#: Health checks of the lab's daemons: a real is judged in well under a second.
CHECK_INTERVAL_S, CHECK_TIMEOUT_S, CHECK_RISE, CHECK_FALL = 0.25, 0.25, 1, 2


@dataclass
class ServeDaemon:
    """One `xlb serve` process on a balancer node, and its files."""

    role: str
    config: Path
    lock_dir: Path
    log: Path
    interface: str
    process: subprocess.Popen[bytes]
    #: How many times this node's daemon was started (restarts included).
    starts: int = field(default=1)

    @property
    def control_socket(self) -> Path:
        return control.socket_path(self.lock_dir, self.interface)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def ask(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The daemon's answer to a control request (see xlb/control.py)."""
        return control.request(self.control_socket, op, timeout, fields)

    def answers(self) -> bool:
        """The daemon listens on its control socket."""
        with contextlib.suppress(control.ControlError):
            self.ask("status", timeout=2.0)
            return True
        return False

    def bgp(self) -> dict[str, Any]:
        """Its announcement state (`xlb list`'s source)."""
        state = self.ask("status").get("bgp")
        if not isinstance(state, dict):
            raise XlbError(f"{self.role}: the daemon has no [bgp]")
        return state

    def events(self, name: str) -> list[dict[str, Any]]:
        """The events of that name the daemon logged (JSON lines), oldest first."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found


@dataclass(frozen=True)
class NodeSettings:
    """What differs between the nodes' configuration files."""

    interface: str
    xdp_mode: str
    gateway_mac: str
    mtu: int
    pin_dir: Path
    lock_dir: Path
    router_id: str
    next_hop_v6: str
    neighbor: str | None  # the router's address on the node's link (BGP)


def serve_config(
    node: NodeSettings,
    vips: list[tuple[str, int, list[str]]],
    *,
    local_as: int,
    router_as: int,
    hold_time: int,
    drain_on_stop: bool = False,
) -> str:
    """The TOML file of one node's daemon: `vips` are (address, port,
    [real addresses]) TCP services with HTTP checks through the tunnel."""
    text = (
        "[balancer]\n"
        f'interface = "{node.interface}"\n'
        f'xdp_mode = "{node.xdp_mode}"\n'
        f'gateway_mac = "{node.gateway_mac}"\n'
        f"mtu = {node.mtu}\n"
        f'pin_dir = "{node.pin_dir}"\n'
        f'lock_dir = "{node.lock_dir}"\n'
        'metrics = "127.0.0.1:0"\n\n'
        "[health]\n"
        f"interval = {CHECK_INTERVAL_S}\ntimeout = {CHECK_TIMEOUT_S}\n"
        f"rise = {CHECK_RISE}\nfall = {CHECK_FALL}\n"
    )
    if node.neighbor is not None:
        text += (
            "\n[bgp]\n"
            f"local_as = {local_as}\n"
            f'router_id = "{node.router_id}"\n'
            f'next_hop_v6 = "{node.next_hop_v6}"\n'
            f"drain_on_stop = {'true' if drain_on_stop else 'false'}\n\n"
            "[[bgp.neighbors]]\n"
            f'address = "{node.neighbor}"\n'
            f"as = {router_as}\n"
            f"hold_time = {hold_time}\n"
        )
    for address, port, reals in vips:
        text += f'\n[[vip]]\naddress = "{address}"\nport = {port}\n'
        for real in reals:
            text += f'\n[[vip.reals]]\naddress = "{real}"\n'
        text += '\n[vip.check]\ntype = "http"\n'
    return text
