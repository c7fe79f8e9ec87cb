"""XDP actions: the kernel's `enum xdp_action` (linux/bpf.h), by value.

One definition for every place that names an action: a test run's result
(`XDP_TX`), the data plane's per-action counters and their metrics
(`xdp_tx`). Pure: it needs neither the binding nor root.
"""

from __future__ import annotations

XDP_ACTIONS: dict[int, str] = {
    0: "XDP_ABORTED",
    1: "XDP_DROP",
    2: "XDP_PASS",
    3: "XDP_TX",
    4: "XDP_REDIRECT",
}
#: The counter of each action, as `Balancer.counters()` names it (xdp_aborted, ...).
ACTION_COUNTERS: dict[int, str] = {value: name.lower() for value, name in XDP_ACTIONS.items()}

__all__ = ["ACTION_COUNTERS", "XDP_ACTIONS"]
