"""What `import xlb` costs a service, as a ratio to `import numpy`.

Method: each statement runs in a fresh interpreter (`python -X importtime`
is not used: it adds its own cost per module), timed from the parent as the
wall time of the whole process; the cost of an import is that time minus
the time of an interpreter that imports nothing. Rounds are interleaved
(empty, numpy, xlb, ...) so drift hits every row alike; best of N, as the
first runs pay for cold page caches.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

STATEMENTS = {
    "empty": "pass",
    "numpy": "import numpy",
    "xlb": "import xlb",
    "xlb_model": "from xlb import Vip, Real, BalancerConfig",
    "xlb_balancer": "from xlb import Balancer",
}


def wall_time(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def run(quick: bool) -> dict[str, Any]:
    rounds = 10 if quick else 30
    best = {name: float("inf") for name in STATEMENTS}
    for _ in range(rounds):
        for name, statement in STATEMENTS.items():
            best[name] = min(best[name], wall_time(statement))
    cost_ms = {name: round((t - best["empty"]) * 1000, 2) for name, t in best.items()}
    numpy_ms = cost_ms["numpy"]
    return {
        "method": f"fresh interpreter per import, best of {rounds} interleaved rounds, "
        "minus an interpreter that imports nothing",
        "interpreter_ms": round(best["empty"] * 1000, 2),
        "cost_ms": cost_ms,
        "vs_numpy": {
            name: round(ms / numpy_ms, 3) for name, ms in cost_ms.items() if name != "empty"
        },
        "import_vs_numpy": round(cost_ms["xlb"] / numpy_ms, 3),
    }
