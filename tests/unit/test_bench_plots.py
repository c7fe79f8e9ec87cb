"""bench/plots.py: the report's charts from results.json (no benchmark
runs here: the committed results are the input)."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench import plots, report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results.json"


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RESULTS.read_text())
    return data


def test_every_section_with_figures_gets_an_svg_the_same_each_time(tmp_path: Path) -> None:
    written = plots.write_charts(committed(), tmp_path / "charts")
    assert set(written) == set(plots.CHARTS) & set(committed()["sections"])
    first = {}
    for section, relative in written.items():
        path = tmp_path / relative
        root = ET.fromstring(path.read_bytes())
        assert root.tag.endswith("svg"), section
        assert b"<dc:date>" not in path.read_bytes()  # no timestamp: redrawn = same file
        first[section] = path.read_bytes()
    plots.write_charts(committed(), tmp_path / "charts")
    assert {s: (tmp_path / r).read_bytes() for s, r in written.items()} == first


def test_a_section_not_in_the_results_has_no_chart_and_no_link(tmp_path: Path) -> None:
    results = copy.deepcopy(committed())
    del results["sections"]["throughput"]
    written = plots.write_charts(results, tmp_path / "charts")
    assert "throughput" not in written and not (tmp_path / "charts" / "throughput.svg").exists()
    text = report.render(results, written)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(written.values())


def test_the_committed_report_links_the_committed_charts() -> None:
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == len(set(plots.CHARTS) & set(committed()["sections"]))
    for link in links:
        assert (ROOT / "bench" / link).is_file(), link
    # The report is what render() makes of the committed results (nothing edited by hand).
    charts = {
        s: f"charts/{f}" for s, (f, _) in plots.CHARTS.items() if s in committed()["sections"]
    }
    assert text == report.render(committed(), charts)
