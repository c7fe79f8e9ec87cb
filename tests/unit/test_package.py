"""`import xlb` is light: public names load on first use (PEP 562)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import xlb

HEAVY = ["numpy", "asyncio", "xlb._bpf", "xlb._libbpf", "xlb.balancer", "xlb.service", "xlb.lab"]


def modules_after(code: str) -> set[str]:
    """Modules a fresh interpreter has loaded after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_xlb_loads_nothing_heavy() -> None:
    loaded = modules_after("import xlb")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "code",
    [
        "from xlb import Vip, Real, BalancerConfig, ConfigError",
        "import xlb.maglev, xlb.model, xlb.config",
    ],
)
def test_the_pure_core_needs_no_binding(code: str) -> None:
    """Model, Maglev and config take their limits from xlb/_limits.py."""
    loaded = modules_after(code)
    assert "xlb._bpf" not in loaded and "xlb._libbpf" not in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    assert sorted(xlb.__all__) == sorted([*xlb._HOMES, "__version__"])
    for name in xlb.__all__:
        assert getattr(xlb, name) is not None
    assert set(xlb.__all__) <= set(dir(xlb))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        xlb.nonesuch  # noqa: B018
    assert xlb.maglev.__name__ == "xlb.maglev"  # submodules still load on access


NO_BINDING = """
import sys
sys.modules["xlb._libbpf"] = None  # as on a machine where the binding is not built
from xlb.cli import main
sys.exit(main(sys.argv[1:]))
"""

CONFIG = """
[balancer]
gateway_mac = "02:00:00:00:00:01"

[[vip]]
address = "192.0.2.10"
port = 443

[[vip.reals]]
address = "10.0.0.1"
"""


def without_binding(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_BINDING, *argv], capture_output=True, text=True, timeout=60
    )


def test_serve_check_needs_no_binding(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text(CONFIG)
    result = without_binding("serve", "--check", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok (1 VIPs)" in result.stdout
    config.write_text(CONFIG.replace("443", "99999"))
    result = without_binding("serve", "--check", str(config))
    assert result.returncode == 1 and "vip[0].port" in result.stderr


def test_apply_dry_run_with_no_data_plane_needs_no_binding(tmp_path: Path) -> None:
    """Nothing pinned (a pin dir of its own): the plan for a new data plane."""
    config = tmp_path / "lb.toml"
    config.write_text(CONFIG)
    result = without_binding("apply", "--dry-run", str(config), "--pin-dir", str(tmp_path / "pins"))
    assert result.returncode == 0, result.stderr
    assert "+ add vip 192.0.2.10:443/tcp" in result.stdout, result.stdout
    assert "set reals 192.0.2.10:443/tcp 10.0.0.1*1" in result.stdout
    assert "for a new data plane" in result.stdout


def test_reading_a_config_loads_no_numpy() -> None:
    """Maglev imports numpy only to build a table: a service that reads and
    checks its configuration does not pay for it."""
    code = f"import xlb.config\nxlb.config.loads({CONFIG!r})"
    assert "numpy" not in modules_after(code)
