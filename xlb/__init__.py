"""xlb: an XDP L4 load balancer with a Python control plane.

from xlb import Balancer, Vip, Real

with Balancer(interface="eth0") as lb:
    web = Vip("192.0.2.10", 443, "tcp")
    lb.add_vip(web)
    lb.set_reals(web, [Real("10.0.0.1"), Real("10.0.0.2", weight=2)])
    print(lb.stats(web))
"""

from .balancer import Balancer, RunResult
from .errors import (
    AttachError,
    BpfError,
    CapacityError,
    ConfigError,
    ExistsError,
    MapSizeError,
    NotFoundError,
    VerifierError,
    XlbError,
)
from .model import BalancerConfig, Counter, Flow, Real, Vip, VipFlags
from .service import Service

__all__ = [
    "AttachError",
    "Balancer",
    "BalancerConfig",
    "BpfError",
    "CapacityError",
    "ConfigError",
    "Counter",
    "ExistsError",
    "Flow",
    "MapSizeError",
    "NotFoundError",
    "Real",
    "RunResult",
    "Service",
    "VerifierError",
    "Vip",
    "VipFlags",
    "XlbError",
]
