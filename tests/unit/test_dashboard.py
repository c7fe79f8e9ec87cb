"""contrib/grafana/xlb.json as a file: a dashboard Grafana can import,
whose queries read only metrics xlb serves, and whose panels docs/metrics.md
explains. (Whether each query returns data from a live `xlb serve` is
tests/e2e/test_prometheus.py's part, through a real Prometheus.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.unit.metric_names import ROOT, documented, named_in, served

DASHBOARD = ROOT / "contrib" / "grafana" / "xlb.json"
DOCS = ROOT / "docs" / "metrics.md"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(DASHBOARD).read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in load()["panels"] if p["type"] != "row"]


def test_the_dashboard_is_importable_json_with_unique_ids_and_a_layout() -> None:
    dash = load()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]


def test_every_panel_queries_prometheus_with_unique_ref_ids() -> None:
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["description"], f"{p['title']}: say what the panel answers"


def test_queries_use_only_defined_variables() -> None:
    dash = load()
    defined = {v["name"] for v in dash["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    queries = [t["expr"] for p in panels() for t in p["targets"]]
    queries += [a["expr"] for a in dash["annotations"]["list"]]
    for query in queries:
        used = set(re.findall(r"\$\{?(\w+)", query))
        assert used <= defined | builtin, (query, used - defined - builtin)


def test_queries_read_only_metrics_xlb_serves_and_documents() -> None:
    dash = load()
    queries = [t["expr"] for p in panels() for t in p["targets"]]
    queries += [a["expr"] for a in dash["annotations"]["list"]]
    for query in queries:
        names = named_in(query)
        assert names, query
        assert names <= served(), (query, names - served())
        assert names <= documented(), (query, names - documented())


def test_docs_list_every_panel() -> None:
    text = DOCS.read_text()
    for p in panels():
        assert f"**{p['title']}**" in text, f"docs/metrics.md does not explain {p['title']!r}"
