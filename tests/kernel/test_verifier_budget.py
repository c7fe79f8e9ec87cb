"""What the verifier walks to accept each program, against a budget.

The kernel refuses a program whose verification processes more than 1M
instructions, and a load takes time in proportion (the balancer's ~0.8 s
is most of what making a Balancer costs). A data-plane change that
multiplies the paths the verifier walks (an unrolled loop, a branch
before a long inlined function) shows here before it reaches the limit:
the balancer was at 696k and is at 475k on kernel 6.18.
"""

from __future__ import annotations

import pytest

from xlb._bpf import BpfObject
from xlb.balancer import OBJECT_DIR

# Instructions processed, most allowed: about 60% of the kernel's limit
# for the balancer, leaving room for a kernel that prunes less well.
BUDGETS = {
    ("xlb.bpf.o", "xlb_balancer"): 600_000,
    ("decap.bpf.o", "xlb_decap"): 100_000,
    ("decap.bpf.o", "xlb_decap_tc"): 100_000,
    ("healthcheck.bpf.o", "xlb_healthcheck"): 100_000,
    ("pass.bpf.o", "xlb_pass"): 100,
}


@pytest.fixture(scope="module")
def verified() -> dict[tuple[str, str], int]:
    """Instructions processed for each built program, loaded once."""
    counts = {}
    for path in sorted(OBJECT_DIR.glob("*.bpf.o")):
        with BpfObject(path) as obj:
            for name, program in obj.programs.items():
                counts[path.name, name] = program.info()["verified_insns"]
    return counts


def test_each_program_verifies_within_its_budget(verified: dict[tuple[str, str], int]) -> None:
    over = {
        f"{obj}:{prog}": f"{count} > {BUDGETS[obj, prog]}"
        for (obj, prog), count in verified.items()
        if not 0 < count <= BUDGETS.get((obj, prog), 0)
    }
    assert not over, f"verifier instructions processed over budget (1M is refused): {over}"


def test_every_program_has_a_budget(verified: dict[tuple[str, str], int]) -> None:
    assert set(verified) == set(BUDGETS)
