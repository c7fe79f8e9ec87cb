"""bench/ablate.py: its variants still match the data plane's source (an
edit that no longer applies would make the analysis in bench/RESULTS.md
impossible to repeat), and they compile."""

from __future__ import annotations

from pathlib import Path

import pytest

import build
from bench import ablate


@pytest.mark.parametrize("name", list(ablate.VARIANTS))
def test_each_variant_edits_the_source_it_names(name: str, tmp_path: Path) -> None:
    source = ablate.edited_source(ablate.VARIANTS[name][1], tmp_path)
    for edit in ablate.VARIANTS[name][1]:
        text = (tmp_path / edit.file).read_text()
        assert edit.old not in text.replace(edit.new, "")
        assert edit.new in text
    assert source.read_text() == (build.BPF_SRC / "xlb.bpf.c").read_text()


def test_an_edit_that_no_longer_matches_stops_the_build(tmp_path: Path) -> None:
    stale = ablate.Edit("stats.h", "a line the source does not have", "")
    with pytest.raises(ValueError, match="exactly once"):
        ablate.edited_source((stale,), tmp_path)


def test_the_variant_with_every_edit_compiles(tmp_path: Path) -> None:
    edits = ablate.VARIANTS["no_flow_lookup_no_stats"][1]
    obj = tmp_path / "variant.bpf.o"
    build.compile_bpf(ablate.edited_source(edits, tmp_path / "bpf"), obj)
    assert obj.stat().st_size > 0
