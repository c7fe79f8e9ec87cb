"""keepalived.conf syntax: words, blocks and includes, each with its line.

keepalived's format is line based: a statement is a keyword and its
arguments on one line, optionally followed by a `{ ... }` block of
statements (the `{` on the same line or alone on the next one). `#` and
`!` start a comment anywhere outside quotes; a quoted string ('...' or
"...") is one word with its spaces kept, and text next to it joins it.
`include FILE` (and includer/includem/includew/includeb/includea) reads
other files at that point, FILE being a glob relative to the including
file's directory; `$NAME=value` defines a parameter that `$NAME` and
`${NAME}` use on later lines.

`parse_file(path, report)` gives the tree of `Statement`s; every syntax
error (an unterminated block or quote, a `}` too many, a missing include,
an include cycle, an undefined parameter, syntax this reader does not
know: conditional `@id` lines, `~SEQ`/`~LST` blocks) is recorded in the
report with its file and line, and parsing goes on where it can.
"""

from __future__ import annotations

import glob
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..model import IPAddress
from .source import Report, Where

INCLUDE_KEYWORDS = frozenset(
    {"include", "includer", "includem", "includew", "includeb", "includea"}
)
MAX_INCLUDE_DEPTH = 16
_DEFINITION_RE = re.compile(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_PARAMETER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    where: Where
    quoted: bool = False  # a quoted "{" is a word, not a block


@dataclass(slots=True)
class Statement:
    """`keyword args...` with its block (None: the statement has no braces)."""

    keyword: str
    args: list[str]
    where: Where
    block: list[Statement] | None = None
    # Where the block's `{` was: an unterminated block is reported there.
    opened: Where | None = None

    def text(self) -> str:
        return " ".join([self.keyword, *self.args])


@dataclass(slots=True)
class _Reader:
    report: Report
    parameters: dict[str, str] = field(default_factory=dict)
    reading: list[Path] = field(default_factory=list)  # the include chain
    files: list[str] = field(default_factory=list)  # every file read, in order


# ============================================================== tokenizing


def _split_line(text: str, where: Where, report: Report) -> list[Token]:
    """The words of one line: comments cut, quotes joined, braces apart."""
    tokens: list[Token] = []
    word: list[str] = []
    in_word = quoted = False
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\" and i + 1 < len(text):
                i += 1
                word.append(_ESCAPES.get(text[i], text[i]))
            elif ch == quote:
                quote = None
            else:
                word.append(ch)
        elif ch in "\"'":
            quote, in_word, quoted = ch, True, True
        elif ch in "#!":
            break
        elif ch.isspace() or ch in "{}":
            if in_word:
                tokens.append(Token("".join(word), where, quoted))
                word, in_word, quoted = [], False, False
            if ch in "{}":
                tokens.append(Token(ch, where))
        else:
            word.append(ch)
            in_word = True
        i += 1
    if quote is not None:
        report.error(where, f"unterminated quoted string (no closing {quote})")
    if in_word:
        tokens.append(Token("".join(word), where, quoted))
    return tokens


def _substitute(line: str, where: Where, reader: _Reader) -> str | None:
    """`$NAME` and `${NAME}` replaced by their definitions (None: an error)."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in reader.parameters:
            missing.append(name)
            return ""
        return reader.parameters[name]

    result = _PARAMETER_RE.sub(value, line)
    if missing:
        names = ", ".join(f"${n}" for n in missing)
        reader.report.error(where, f"undefined parameter {names} (define it with $NAME=value)")
        return None
    return result


def _tokenize_file(path: Path, shown: str, reader: _Reader, depth: int) -> list[Token]:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        reader.report.error(None, f"cannot read {shown}: {exc.strerror}")
        return []
    reader.files.append(shown)
    reader.reading.append(path.resolve())
    tokens: list[Token] = []
    try:
        for number, raw in enumerate(text.splitlines(), start=1):
            tokens += _tokenize_line(raw, Where(shown, number), path, reader, depth)
    finally:
        reader.reading.pop()
    return tokens


def _tokenize_line(raw: str, where: Where, path: Path, reader: _Reader, depth: int) -> list[Token]:
    definition = _DEFINITION_RE.match(raw)
    if definition:
        name, value = definition.groups()
        substituted = _substitute(value.strip(), where, reader)
        if substituted is not None:
            reader.parameters[name] = substituted
        return []
    stripped = raw.lstrip()
    if stripped.startswith("@"):
        reader.report.error(
            where,
            "conditional configuration (@ID) is not read by the importer: keep the lines "
            "meant for this host without their @ID prefix and delete the others",
        )
        return []
    if stripped.startswith(("~SEQ", "~LST")):
        reader.report.error(
            where, f"{stripped.split('(')[0]} blocks are not read by the importer: write them out"
        )
        return []
    line = _substitute(raw, where, reader) if "$" in raw else raw
    if line is None:
        return []
    tokens = _split_line(line, where, reader.report)
    if tokens and not tokens[0].quoted and tokens[0].text in INCLUDE_KEYWORDS:
        return _include(tokens, path, reader, depth)
    return tokens


def _include(tokens: list[Token], path: Path, reader: _Reader, depth: int) -> list[Token]:
    keyword, where = tokens[0].text, tokens[0].where
    if len(tokens) != 2:
        reader.report.error(where, f"{keyword} takes one file name (a glob), not {len(tokens) - 1}")
        return []
    pattern = tokens[1].text
    full = pattern if pattern.startswith("/") else str(path.parent / pattern)
    matches = sorted(glob.glob(full))
    if not matches:
        if glob.has_magic(pattern):
            reader.report.warn(where, f"{keyword} {pattern}: no file matches (nothing included)")
        else:
            reader.report.error(where, f"{keyword} {pattern}: no such file")
        return []
    if depth >= MAX_INCLUDE_DEPTH:
        reader.report.error(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels")
        return []
    out: list[Token] = []
    for match in matches:
        target = Path(match)
        if target.resolve() in reader.reading:
            reader.report.error(where, f"{keyword} {pattern}: {match} includes itself (a cycle)")
            continue
        if target.is_dir():
            reader.report.warn(where, f"{keyword} {pattern}: {match} is a directory (skipped)")
            continue
        out += _tokenize_file(target, match, reader, depth + 1)
    return out


# ================================================================= parsing


def _parse(tokens: list[Token], report: Report) -> list[Statement]:
    """Tokens into statements: a line's words are one statement, a `{`
    opens the block of the statement before it, a `}` closes it."""
    root: list[Statement] = []
    stack: list[Statement] = []  # the statements whose blocks are open
    current: Statement | None = None  # the statement of the line being read
    last: Statement | None = None  # the last statement of the open level

    def level() -> list[Statement]:
        block = stack[-1].block if stack else root
        assert block is not None
        return block

    for token in tokens:
        if current is not None and token.where != current.where:
            current = None  # a new line: a new statement
        if token.text == "{" and not token.quoted:
            owner = current or last
            if owner is None or owner.block is not None:
                report.error(token.where, "'{' without a keyword before it")
                owner = Statement("{", [], token.where)
                level().append(owner)
            owner.block, owner.opened = [], token.where
            stack.append(owner)
            current = last = None
        elif token.text == "}" and not token.quoted:
            if not stack:
                report.error(token.where, "'}' without a block to close")
            else:
                last = stack.pop()
            current = None
        elif current is None:
            current = last = Statement(token.text, [], token.where)
            level().append(current)
        else:
            current.args.append(token.text)
    for unclosed in stack:
        where = unclosed.opened or unclosed.where
        report.error(
            where, f"unterminated block: `{unclosed.text()} {{` has no closing '}}' (end of input)"
        )
    return root


def parse_file(path: str | Path, report: Report) -> tuple[list[Statement], list[str]]:
    """The statements of a keepalived.conf (includes read in place) and the
    names of every file read."""
    reader = _Reader(report)
    shown = str(path)
    tokens = _tokenize_file(Path(path), shown, reader, 0)
    return _parse(tokens, report), reader.files


def parse_text(text: str, source: str, report: Report) -> list[Statement]:
    """Statements of configuration text (includes relative to the working directory)."""
    reader = _Reader(report)
    tokens: list[Token] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens += _tokenize_line(raw, Where(source, number), Path(source), reader, 0)
    return _parse(tokens, report)


# ================================================================= values

_BOOLEANS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


class Values:
    """Typed reading of a statement's arguments; a bad one is a located error."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def words(self, s: Statement, low: int, high: int) -> list[str] | None:
        if not low <= len(s.args) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            self.report.error(
                s.where, f"{s.keyword} takes {wanted} value(s), not {len(s.args)}: {s.text()!r}"
            )
            return None
        return s.args

    def one(self, s: Statement) -> str | None:
        words = self.words(s, 1, 1)
        return words[0] if words else None

    def integer(self, s: Statement, low: int, high: int, text: str | None = None) -> int | None:
        value = text if text is not None else self.one(s)
        if value is None:
            return None
        if not value.isdigit() or not low <= int(value) <= high:
            self.report.error(s.where, f"{s.keyword}: {value!r} is not an integer {low}-{high}")
            return None
        return int(value)

    def timer(self, s: Statement) -> float | None:
        value = self.one(s)
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < 1e9 or math.isnan(seconds):
            self.report.error(s.where, f"{s.keyword}: {value!r} is not a time in seconds")
            return None
        return seconds

    def boolean(self, s: Statement) -> bool | None:
        words = self.words(s, 0, 1)
        if words is None:
            return None
        if not words:
            return True
        value = _BOOLEANS.get(words[0].lower())
        if value is None:
            self.report.error(s.where, f"{s.keyword}: {words[0]!r} is not one of on/off/yes/no")
        return value

    def address(self, s: Statement, text: str, what: str) -> IPAddress | None:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.report.error(
                s.where, f"{what} {text!r} is not an IPv4 or IPv6 address (names are not resolved)"
            )
            return None

    def port(self, s: Statement, text: str, what: str) -> int | None:
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            self.report.error(s.where, f"{what} port {text!r} is not 0-65535")
            return None
        return int(text)

    def block(self, s: Statement) -> list[Statement]:
        if s.block is None:
            self.report.error(s.where, f"{s.keyword} needs a {{ ... }} block")
            return []
        return s.block

    def no_block(self, s: Statement) -> None:
        if s.block is not None:
            self.report.error(s.where, f"{s.keyword} takes no {{ ... }} block")


__all__ = ["INCLUDE_KEYWORDS", "Statement", "Token", "Values", "parse_file", "parse_text"]
