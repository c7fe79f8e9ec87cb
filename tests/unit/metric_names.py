"""The metric names xlb serves, for the tests of what reads them (the
alert rules, the Grafana dashboard): a query that names a metric xlb does
not serve would return nothing, silently, in production."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the exposition format adds to a family's name (counters, histograms).
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
_NAME = re.compile(r"\bxlb_[a-z0-9_]+")


def served() -> set[str]:
    """Every sample name xlb/metrics.py can serve (families and suffixes)."""
    source = (ROOT / "xlb" / "metrics.py").read_text()
    families = set(re.findall(r'"(xlb_[a-z0-9_]+)"', source))
    return {family + suffix for family in families for suffix in SUFFIXES}


def documented() -> set[str]:
    """The names docs/metrics.md's tables list (a histogram's with its
    _bucket, _sum and _count)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = re.findall(r"^\| `(xlb_[a-z0-9_]+)`", text, re.MULTILINE)
    return {name + suffix for name in names for suffix in SUFFIXES}


def named_in(query: str) -> set[str]:
    """The xlb metric names a PromQL expression reads."""
    return set(_NAME.findall(query))
