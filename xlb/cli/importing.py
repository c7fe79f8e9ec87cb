"""`xlb import keepalived FILE` and `xlb import ipvsadm [FILE]`: an IPVS
setup's configuration as an xlb configuration file (xlb.migrate).

The TOML goes to stdout (or `-o FILE`, replaced whole); what was not
carried over, and how the rest was mapped where it is not one to one, goes
to stderr, one line each with its file and line. A source with errors
writes nothing and exits 1, listing every error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .common import EXIT_OK, EXIT_RUNTIME, PROG, UsageError

if TYPE_CHECKING:
    from ..config import Config
    from ..migrate import Imported, Note


def cmd_import(args: argparse.Namespace) -> int:
    from .. import migrate

    options = migrate.ImportOptions(
        interface=args.interface,
        gateway_mac=args.gateway_mac,
        base=_base(args.base) if args.base else None,
        fwmarks=tuple(args.fwmark),
    )
    try:
        if args.format == "keepalived":
            if args.file is None:
                raise UsageError("xlb import keepalived needs the keepalived.conf to read")
            result = migrate.import_keepalived(args.file, options)
        else:
            text, source = _read_rules(args.file)
            result = migrate.import_ipvsadm(text, source, options)
    except migrate.SourceError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        count = len(exc.issues)
        print(f"{PROG}: error: {count} error{'s' if count != 1 else ''}: nothing imported",
              file=sys.stderr)  # fmt: skip
        return EXIT_RUNTIME
    shown = [n for n in result.notes if not (args.quiet and n.severity == "note")]
    for line in _grouped(_ordered(shown, result.files)):
        print(line, file=sys.stderr)
    warnings = len(result.warnings)
    if args.strict and warnings:
        print(
            f"{PROG}: error: {warnings} warning(s) and --strict: nothing written", file=sys.stderr
        )
        return EXIT_RUNTIME
    _write(result.text, args.output)
    print(_summary(result), file=sys.stderr)
    return EXIT_OK


def _base(path: Path) -> Config:
    from .. import config

    base = config.load(path)
    if base.vips:
        raise UsageError(
            f"--base {path}: give settings only ([balancer], [health], [bgp]), no [[vip]]"
        )
    return base


def _read_rules(name: str | None) -> tuple[str, str]:
    if name is None or name == "-":
        if sys.stdin.isatty():
            raise UsageError(
                "xlb import ipvsadm reads the saved rules from FILE or stdin: "
                "ipvsadm-save -n | xlb import ipvsadm"
            )
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(name).read_text(), name
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None


def _ordered(notes: list[Note], files: tuple[str, ...]) -> list[Note]:
    """Located notes in file order then line, the general ones last."""
    rank = {name: i for i, name in enumerate(files)}

    def key(note: Note) -> tuple[int, int, int]:
        where = note.where
        if where is None:
            return (1, 0, 0)
        return (0, rank.get(where.file, len(rank)), where.line)

    return sorted(notes, key=key)


MAX_PLACES = 5  # places listed for a message said at many lines


def _grouped(notes: list[Note]) -> list[str]:
    """One line per message: a note said for many services (the same
    scheduler everywhere) at its first place, the other places after it."""
    places: dict[tuple[str, str], list[Note]] = {}
    for note in notes:
        places.setdefault((note.severity, note.message), []).append(note)
    lines = []
    for same in places.values():
        first, others = same[0], [str(n.where) for n in same[1:] if n.where is not None]
        line = str(first)
        if others:
            listed = ", ".join(others[:MAX_PLACES])
            more = f" and {len(others) - MAX_PLACES} more" if len(others) > MAX_PLACES else ""
            line += f" (also at {listed}{more})"
        lines.append(line)
    return lines


def _write(text: str, output: Path | None) -> None:
    """To stdout, or to a file replaced whole (never left half written)."""
    if output is None:
        sys.stdout.write(text)
        return
    directory = output.parent if str(output.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _summary(result: Imported) -> str:
    config = result.config
    reals = sum(len(v.reals) for v in config.vips)
    warnings = len(result.warnings)
    notes = len(result.notes) - warnings
    return (
        f"{PROG}: imported {len(config.vips)} VIP(s) with {reals} real(s): "
        f"{warnings} warning(s), {notes} note(s)"
    )


__all__ = ["cmd_import"]
