"""xlb/_limits.py (generated for the pure core) says what the binding says."""

from __future__ import annotations

from xlb import _limits
from xlb._bpf import lib


def test_the_limits_module_matches_the_binding() -> None:
    generated = {k: v for k, v in vars(_limits).items() if k.startswith("XLB_")}
    assert len(generated) > 50
    binding = {name: getattr(lib, name) for name in dir(lib) if name.startswith("XLB_")}
    binding = {name: value for name, value in binding.items() if isinstance(value, int)}
    assert generated == binding
