"""xlb: an XDP L4 load balancer with a Python control plane.

from xlb import Balancer, Vip, Real

with Balancer(interface="eth0") as lb:
    web = Vip("192.0.2.10", 443, "tcp")
    lb.add_vip(web)
    lb.set_reals(web, [Real("10.0.0.1"), Real("10.0.0.2", weight=2)])
    print(lb.stats(web))

`import xlb` is cheap: every public name is loaded from its module on first
use (PEP 562), so a service that only builds a `Vip` or reads a config does
not pay for the binding, numpy, asyncio or the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it
_HOMES = {
    "Balancer": "balancer",
    "RunResult": "testrun",
    "AttachError": "errors",
    "BpfError": "errors",
    "CapacityError": "errors",
    "ConfigError": "errors",
    "ExistsError": "errors",
    "MapSizeError": "errors",
    "NotFoundError": "errors",
    "VerifierError": "errors",
    "XlbError": "errors",
    "BalancerConfig": "model",
    "Counter": "model",
    "Flow": "model",
    "Real": "model",
    "Vip": "model",
    "VipFlags": "model",
    "Service": "service",
}

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
    "__version__",
]

if TYPE_CHECKING:
    from .balancer import Balancer
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
    from .testrun import RunResult


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        try:  # a submodule: `xlb.lab` after `import xlb`
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
