"""Test runs: one packet through a loaded program with BPF_PROG_TEST_RUN.

What tests and tools use to see the data plane's verdict on a packet without
an interface: `Balancer.run` hands its program to `run_packet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._bpf import Program


@dataclass(frozen=True, slots=True)
class RunResult:
    """One packet through the program with BPF_PROG_TEST_RUN."""

    action: str  # "XDP_TX" | "XDP_PASS" | "XDP_DROP" | "XDP_ABORTED"
    packet: bytes
    duration_ns: int


def run_packet(program: Program, packet: bytes) -> RunResult:
    """Run one packet through `program`: its action, the packet as the
    program left it, and how long the run took."""
    if not isinstance(packet, bytes | bytearray | memoryview):
        raise TypeError(f"a packet is bytes, not {type(packet).__name__}")
    result = program.test_run(packet)
    return RunResult(result.action, result.data, result.duration_ns)


__all__ = ["RunResult", "run_packet"]
