"""The suite's own layout: pytest imports test modules by basename (rootdir
conftest, no packages), so two test files of one name in different folders
make one of them fail to collect when the whole suite runs together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
