"""xlb as another service's dependency: the sdist and wheel built from this
checkout, installed outside the source tree into fresh virtual environments.

One environment gets the wheel with the example service (examples/service),
whose own tests then run there: xlb imported from site-packages, a test-run
Balancer forwarding a SYN, the `xlb` command. Another gets the wheel without
extras beside an unrelated project, whose pytest run must not notice xlb.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "service"
BPF_OBJECTS = {"xlb.bpf.o", "decap.bpf.o", "healthcheck.bpf.o", "pass.bpf.o"}


def run(cmd: Sequence[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` of the checkout: the sdist, then the wheel built from
    the sdist (so the wheel proves the sdist has everything)."""
    out = tmp_path_factory.mktemp("dist")
    # Run from outside the root, where build.py would shadow PyPA's `build`.
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    return out


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def venv(path: Path, *requirements: str | Path) -> Path:
    """A fresh virtual environment with `requirements` installed. xlb is
    given as the wheel's path, so nothing of that name comes from an index."""
    run([sys.executable, "-m", "venv", path], cwd=path.parent)
    pip: list[str | Path] = [
        path / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-compile",  # no .pyc for all of numpy and scapy: ~3 s an install here
    ]
    run([*pip, *requirements], cwd=path.parent)
    return path / "bin" / "python"


def test_the_wheel_holds_the_binding_the_objects_and_the_header(dist: Path) -> None:
    wheel = only(list(dist.glob("*.whl")))
    assert re.fullmatch(r"xlb_balancer-.*-cp3\d+-(cp3\d+|abi3)-linux_\w+\.whl", wheel.name)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(re.fullmatch(r"xlb/_libbpf\..*so", n) for n in names), sorted(names)
    assert {f"xlb/_bpf_objects/{o}" for o in BPF_OBJECTS} <= names
    assert {"xlb/include/xlb_abi.h", "xlb/_limits.py", "xlb/py.typed"} <= names
    assert not any("pytest11" in n for n in names)


def test_the_sdist_holds_what_a_build_needs_and_nothing_built(dist: Path) -> None:
    sdist = only(list(dist.glob("*.tar.gz")))
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = {"setup.py", "build.py", "pyproject.toml", "include/xlb_abi.h", "xlb/_ffi_build.py"}
    needed |= {f"bpf/{o.replace('.bpf.o', '.bpf.c')}" for o in BPF_OBJECTS}
    assert needed <= names, needed - names
    assert not [n for n in names if n.endswith((".o", ".so")) or n == "xlb/_limits.py"]


def test_the_example_service_passes_its_tests_with_the_wheel(dist: Path, tmp_path: Path) -> None:
    project = tmp_path / "webfront"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    wheel = only(list(dist.glob("*.whl")))
    python = venv(tmp_path / "venv", f"{wheel}[testing]", f"{project}[test]")
    result = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, XLB_SOURCE_TREE=str(ROOT), XLB_REQUIRE_KERNEL="1",
    )  # fmt: skip
    assert re.search(r"\b4 passed\b", result.stdout), result.stdout
    assert "skipped" not in result.stdout, result.stdout


def test_an_unrelated_project_does_not_notice_xlb(dist: Path, tmp_path: Path) -> None:
    """xlb installed without extras (so no scapy) beside a project of its own:
    its pytest run loads no xlb plugin and passes."""
    python = venv(tmp_path / "venv", only(list(dist.glob("*.whl"))), "pytest")
    project = tmp_path / "other"
    project.mkdir()
    (project / "test_other.py").write_text("def test_other():\n    assert 1 + 1 == 2\n")
    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout
    plugins = run([python, "-m", "pytest", "--trace-config", "-q"], cwd=project, PYTHONWARNINGS="")
    assert "xlb.testing" not in plugins.stdout, plugins.stdout
    code = "import sys, xlb; assert 'numpy' not in sys.modules; print(xlb.__version__)"
    light = run([python, "-c", code], cwd=project)
    assert light.stdout.strip()
