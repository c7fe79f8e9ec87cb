"""Shared test plumbing: kernel capability gate, BPF compilation, namespaces.

Tests under tests/kernel, tests/datapath and tests/e2e need root, BPF and
network namespaces. Without them they skip on a developer's laptop, but
with XLB_REQUIRE_KERNEL=1 (as CI sets) a missing capability, and any skip
at all, is a failure.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pluggy

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIRS = ("kernel", "datapath", "e2e", "packaging")
REQUIRE_KERNEL = os.environ.get("XLB_REQUIRE_KERNEL") == "1"
TEST_NETNS_PREFIX = "xlbt"


@cache
def kernel_unavailable_reason() -> str | None:
    """None if BPF and namespaces are usable here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if " /sys/fs/bpf bpf " not in Path("/proc/mounts").read_text():
        return "bpffs is not mounted on /sys/fs/bpf"
    try:
        from xlb import _bpf  # noqa: F401
    except ImportError as exc:
        return f"libbpf binding not importable: {exc}"
    probe = f"{TEST_NETNS_PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in KERNEL_DIRS:
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable_reason()
    if reason is None:
        return
    if REQUIRE_KERNEL:
        pytest.fail(f"XLB_REQUIRE_KERNEL=1 but the kernel test cannot run: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_KERNEL and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under XLB_REQUIRE_KERNEL=1 (skips are failures): {report.longrepr}"
        )


# ------------------------------------------------------------ BPF helpers


@pytest.fixture(scope="session")
def compile_bpf(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """Compile a test BPF C file with the project's flags; returns the .o path."""
    import build  # the repository root's build.py (pytest's pythonpath)

    out_dir = tmp_path_factory.mktemp("bpf")

    def compile_one(src: Path) -> Path:
        obj = out_dir / src.name.replace(".bpf.c", ".bpf.o")
        if not obj.exists():
            build.compile_bpf(src, obj)
        return obj

    return compile_one


# ------------------------------------------------------------ namespaces

_netns_counter = itertools.count()


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """A factory of fresh network namespaces, all deleted after the test."""
    from xlb import netns as ns

    made: list[str] = []

    def make() -> str:
        name = f"{TEST_NETNS_PREFIX}{os.getpid()}x{next(_netns_counter)}"
        ns.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        ns.delete(name)
