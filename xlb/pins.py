"""Where xlb pins its data planes on bpffs: one definition for every module.

A balancer's maps and XDP link are pinned in DEFAULT_PIN_ROOT/<interface>
(the `xlb` command finds data planes there); a directory that holds the
`vips` map (PIN_MARKER) is a balancer's data plane. `xlb real-setup` pins
the decap program in DECAP_PIN_ROOT/<interface>.

Pure: importing it needs neither the binding nor root, so the command line
can name data planes on a machine without either.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/xlb")
DECAP_PIN_ROOT = Path("/sys/fs/bpf/xlb-decap")
PIN_MARKER = "vips"  # a pin dir holding this map is a balancer's data plane


def pinned_interfaces(root: Path = DEFAULT_PIN_ROOT) -> list[str]:
    """Interfaces with a balancer pinned under `root`, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / PIN_MARKER).exists())


__all__ = ["DECAP_PIN_ROOT", "DEFAULT_PIN_ROOT", "PIN_MARKER", "pinned_interfaces"]
