"""From IPVS to xlb: keepalived.conf and ipvsadm-save output as xlb configuration.

    from xlb.migrate import ImportOptions, import_keepalived, import_ipvsadm

    result = import_keepalived("/etc/keepalived/keepalived.conf", ImportOptions(interface="eth0"))
    for note in result.notes:              # "keepalived.conf:12: warning: ..."
        print(note)
    open("lb.toml", "w").write(result.text)

    result = import_ipvsadm(saved_rules_text, "rules.save")

Both read the whole source and raise one `SourceError` listing every error
with its file and line (an unterminated block, an unknown keyword, a real
without a port...); nothing is produced then. Otherwise `result.config`
is the xlb `Config`, `result.text` its TOML (written by
`xlb.config.dumps`, checked by `xlb.config.loads`), and `result.notes`
says, line by line, what was not carried over (warnings) and how the rest
was mapped where it is not one to one (notes): every VIP, real and weight
of the source is in the configuration or named in a warning.

The parts: `source` (places, notes, errors), `kaconf` (keepalived.conf
syntax: blocks, quotes, includes, parameters), `keepalived` (its LVS
keywords and checkers), `ipvsadm` (saved rules), `services` (the IPVS
model both fill, and its mapping to xlb). docs/migrate.md is the guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import config as cfg
from .ipvsadm import IpvsadmReader
from .kaconf import parse_file
from .keepalived import KeepalivedReader
from .services import FwmarkTarget, ImportOptions, Mapped, SourceHints, VirtualService, build
from .source import Note, Report, SourceError, SourceIssue, Where


@dataclass(frozen=True, slots=True)
class Imported:
    """An imported configuration: the model, its TOML, what was said about it."""

    config: cfg.Config
    text: str
    notes: tuple[Note, ...]
    files: tuple[str, ...]  # every file read (includes too)

    @property
    def warnings(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.severity == "warning")


def import_keepalived(path: str | Path, options: ImportOptions | None = None) -> Imported:
    """keepalived.conf (and what it includes) as an xlb configuration."""
    report = Report()
    statements, files = parse_file(path, report)
    reader = KeepalivedReader(report)
    services = reader.read(statements) if not report.errors else []
    return _finish(services, options, report, str(path), files, "keepalived", reader.hints())


def import_ipvsadm(
    text: str, source: str = "<stdin>", options: ImportOptions | None = None
) -> Imported:
    """Saved ipvsadm rules (`ipvsadm-save -n`) as an xlb configuration."""
    report = Report()
    services = IpvsadmReader(report).read(text, source)
    if services:
        report.note(
            None,
            "ipvsadm has no health checks: the VIPs have none (add a [vip.check] each, "
            "docs/config.md)",
        )
    return _finish(services, options, report, source, [source], "ipvsadm", SourceHints())


def _finish(
    services: list[VirtualService],
    options: ImportOptions | None,
    report: Report,
    source: str,
    files: list[str],
    kind: str,
    hints: SourceHints,
) -> Imported:
    report.raise_errors()
    mapped = build(services, options or ImportOptions(), report, source, hints)
    report.raise_errors()
    header = (
        f"Imported from {source} by `xlb import {kind}`.\n"
        "The warnings it printed say what was not carried over (docs/migrate.md)."
    )
    text = cfg.dumps(mapped.config, header=header, vip_comments=mapped.origins)
    _validate(text, source)
    return Imported(mapped.config, text, tuple(report.notes), tuple(files))


def _validate(text: str, source: str) -> None:
    """What the importer writes, xlb's reader accepts (a check of the importer:
    a failure here is a bug, reported as the reader found it). A command
    check's user that does not exist on this host is allowed: it was
    reported, and it may exist where the file will run."""
    try:
        cfg.loads(text, source=f"imported {source}")
    except cfg.ConfigFileError as exc:
        issues = [i for i in exc.issues if not i.location.endswith(".check.user")]
        if issues:
            raise SourceError(
                [SourceIssue(None, f"the imported configuration is invalid: {i}") for i in issues]
            ) from None


__all__ = [
    "FwmarkTarget",
    "ImportOptions",
    "Imported",
    "Mapped",
    "Note",
    "SourceError",
    "SourceIssue",
    "Where",
    "import_ipvsadm",
    "import_keepalived",
]
