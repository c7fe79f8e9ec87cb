"""docs/testing.md's examples, run as a user would run them.

Every fenced block opened with ```` ```python <name>.py ```` is written to a
fresh directory (outside this repository: no conftest.py, no pyproject
settings) and run with pytest in a subprocess, where the fixtures come only
from the `xlb` plugin. The run must pass with nothing skipped, so the
documentation cannot rot.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"^```python (\S+\.py)\n(.*?)^```", re.M | re.S)
SUMMARY = re.compile(r"^=*\s*(\d+) passed in [\d.]+s", re.M)
NOT_PASSED = re.compile(r"\d+ (failed|errors?|skipped|xfailed|xpassed)\b")


def doc_examples() -> dict[str, str]:
    """File name -> code of every named Python block of docs/testing.md."""
    return dict(BLOCK.findall(DOC.read_text()))


def count_tests(code: str) -> int:
    """Test functions in a module (each example test runs once)."""
    tree = ast.parse(code)
    return sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test") for n in tree.body)


def run_pytest(directory: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """pytest on `directory` in a subprocess; its output (fails the test if it failed)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--strict-markers", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture
def examples(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    blocks = doc_examples()
    for name, code in blocks.items():
        (tmp_path / name).write_text(code)
    return tmp_path, blocks


def test_the_doc_has_its_examples() -> None:
    assert set(doc_examples()) >= {
        "conftest.py",
        "test_web_vips.py",
        "test_web_lab.py",
        "test_web_wire.py",
    }


def test_the_documented_examples_pass(examples: tuple[Path, dict[str, str]]) -> None:
    directory, blocks = examples
    output = run_pytest(directory, str(directory))
    expected = sum(count_tests(code) for code in blocks.values())
    summary = SUMMARY.search(output)
    assert summary is not None, output
    assert int(summary.group(1)) == expected, output
    assert NOT_PASSED.search(output) is None, output


def test_the_plugin_loads_with_p_and_autoloading_off(
    examples: tuple[Path, dict[str, str]],
) -> None:
    """`pytest -p xlb.testing.plugin`, as docs/testing.md says, with no
    conftest.py and entry points not autoloaded."""
    directory, _ = examples
    (directory / "conftest.py").unlink()
    one = f"{directory / 'test_web_vips.py'}::test_a_web_flow_goes_where_the_ring_says"
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    output = run_pytest(directory, "-p", "xlb.testing.plugin", one, env=env)
    summary = SUMMARY.search(output)
    assert summary is not None and summary.group(1) == "1", output


def test_without_the_opt_in_there_are_no_xlb_fixtures(
    examples: tuple[Path, dict[str, str]],
) -> None:
    """Installing xlb is not enough: the plugin is not an entry point."""
    directory, _ = examples
    (directory / "conftest.py").unlink()
    one = f"{directory / 'test_web_vips.py'}::test_a_web_flow_goes_where_the_ring_says"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", one],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "fixture 'xlb_balancer' not found" in result.stdout + result.stderr
