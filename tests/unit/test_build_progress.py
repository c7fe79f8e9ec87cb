"""build.progress: what long jobs (bootstrap, BPF compiles, the bench) print."""

from __future__ import annotations

import io

import pytest

import build


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    build.progress(0, 3, "apt-get update")
    build.progress(3, 3, "done", who="bench")
    assert out.getvalue() == "[build] (0/3) apt-get update\n[bench] (3/3) done\n"


def test_a_bar_redrawn_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Terminal()
    monkeypatch.setattr("sys.stdout", out)
    build.progress(1, 4, "clang a.bpf.c")
    build.progress(2, 4, "clang b.bpf.c")
    assert "\n" not in out.getvalue()  # the same line, redrawn
    assert out.getvalue().endswith("[build] [##########----------] 2/4 clang b.bpf.c")
    build.progress(4, 4, "built")
    assert out.getvalue().endswith("] 4/4 built\n")  # the last step ends the line
    build.progress(1, 7, "section pktpath", keep=True, who="bench")
    assert out.getvalue().endswith("[bench] [##------------------] 1/7 section pktpath\n")
