"""A web front end that publishes its VIP and backends through xlb."""

from __future__ import annotations

from collections.abc import Sequence

from xlb import Balancer, Real, Vip

VIP = Vip("192.0.2.80", 443, "tcp")


class WebFront:
    """The service's view of its load balancing: one VIP, weighted backends."""

    def __init__(self, backends: Sequence[str], vip: Vip = VIP) -> None:
        self.vip = vip
        self.backends = [Real(address) for address in backends]

    def publish(self, lb: Balancer) -> None:
        """Own the VIP on `lb`: create it if needed, then set the backends."""
        if self.vip not in lb.vips():
            lb.add_vip(self.vip)
        lb.set_reals(self.vip, self.backends)

    def drain(self, lb: Balancer, address: str) -> None:
        """No new flows to `address`; its established connections stay."""
        lb.set_weight(self.vip, address, 0)
