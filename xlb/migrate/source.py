"""What an importer says about its source: places, notes and errors.

Every statement read from a keepalived.conf or an ipvsadm-save output has
a `Where` (file and line). While importing, a `Report` collects:

- errors: the source cannot be imported as it is (a block never closed, an
  unknown keyword, a real without a port). All of them are collected and
  raised together as one `SourceError`, and nothing is written.
- warnings: something the source says that xlb does not carry over, or
  carries over with a different behaviour (a sorry server, a NAT real, a
  scheduler that is not Maglev). The import still succeeds.
- notes: how something was mapped, where the mapping is not one to one
  but keeps the intent (DR becomes IPIP, retry becomes fall).

Nothing the source says is dropped without one of the three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

Severity = Literal["warning", "note"]


@dataclass(frozen=True, slots=True, order=True)
class Where:
    """A line of a source file (1-based), as compilers print it."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Note:
    """One warning or note about the source, with its place when it has one."""

    where: Where | None
    severity: Severity
    message: str

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{place}{self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class SourceIssue:
    """One reason the source cannot be imported."""

    where: Where | None
    message: str

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{place}error: {self.message}"


class SourceError(ConfigError):
    """The source cannot be imported; `issues` lists every problem with its line."""

    def __init__(self, issues: Sequence[SourceIssue]) -> None:
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''}: nothing imported"
        super().__init__("\n".join([*(str(issue) for issue in self.issues), head]))


class Report:
    """Collects errors, warnings and notes while a source is read and mapped."""

    def __init__(self) -> None:
        self.errors: list[SourceIssue] = []
        self.notes: list[Note] = []
        self._said: set[Note] = set()

    def error(self, where: Where | None, message: str) -> None:
        self.errors.append(SourceIssue(where, message))

    def warn(self, where: Where | None, message: str) -> None:
        self._add(Note(where, "warning", message))

    def note(self, where: Where | None, message: str) -> None:
        self._add(Note(where, "note", message))

    def _add(self, note: Note) -> None:
        # A service that becomes several VIPs (a group) says the same once.
        if note not in self._said:
            self._said.add(note)
            self.notes.append(note)

    def raise_errors(self) -> None:
        if self.errors:
            raise SourceError(self.errors)


__all__ = ["Note", "Report", "Severity", "SourceError", "SourceIssue", "Where"]
