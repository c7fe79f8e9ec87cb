"""keepalived's health checkers as xlb checks.

A real server's checker (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK,
UDP_CHECK, SMTP_CHECK) becomes an xlb `Check`; the others (DNS_CHECK,
PING_CHECK, BFD_CHECK, FILE_CHECK) are reported and carried over as no
check. Settings inherit as keepalived inherits them: checker, then real
server, then virtual server, then keepalived's default (delay_loop 60 s,
connect_timeout 5 s, retry 1 -- 0 for MISC_CHECK --, delay_before_retry
3 s for HTTP_GET/SSL_GET and 1 s otherwise). They map to the check's
timing: delay_loop -> interval, connect_timeout -> timeout (misc_timeout
for MISC_CHECK), retry -> fall (retry + 1 failures take a real out), rise
1 (one success brings it back, as in keepalived).
"""

from __future__ import annotations

import pwd
import shlex
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from ..config.schema import Check, CheckTiming, CheckType
from .kaconf import Statement, Values
from .services import RealServer
from .source import Report, Where

DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
MAX_INTERVAL = 3600.0  # xlb's longest check interval
MAX_FALL = 1000

# ============================================================ inheritance


@dataclass(frozen=True, slots=True)
class Inherited:
    """What a virtual server gives its real servers, and a real server its
    checkers (None: not set at this level)."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    inhibit: bool | None = None
    virtualhost: str | None = None

    def over(self, parent: Inherited) -> Inherited:
        """These settings, the parent's where these are unset."""
        values = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(parent, f.name)
            for f in fields(self)
        }
        return Inherited(**values)


INHERITED_KEYWORDS = {
    "delay_loop": "timer",
    "connect_timeout": "timer",
    "retry": "retry",
    "nb_get_retry": "retry",
    "delay_before_retry": "timer",
    "virtualhost": "word",
}


def inherit(s: Statement, values: Values, current: Inherited) -> Inherited | None:
    """The statement as an inherited setting (None: it is not one)."""
    kind = INHERITED_KEYWORDS.get(s.keyword)
    if kind is None:
        return None
    values.no_block(s)
    name = "retry" if kind == "retry" else s.keyword
    value: Any
    if kind == "timer":
        value = values.timer(s)
    elif kind == "retry":
        value = values.integer(s, 0, 2**32 - 1)
    else:
        value = values.one(s)
    return replace(current, **{name: value}) if value is not None else current


# ================================================================= checks


@dataclass(frozen=True, slots=True)
class Candidate:
    """One real's checker as an xlb check, with what explains it."""

    check: Check
    describe: str
    where: Where
    retry: int
    delay_before_retry: float
    retry_text: str  # "retry 3, delay_before_retry 1 s (default)"


Handler = Callable[[Statement, list[Statement], "CommonCheck"], dict[str, Any] | None]


class Checkers:
    """Each real server's checkers as xlb checks, with notes on what differs."""

    def __init__(self, values: Values, report: Report) -> None:
        self.values = values
        self.report = report

    def convert(
        self, s: Statement, real: RealServer, inherited: Inherited, vports: set[int]
    ) -> Candidate | None:
        block = self.values.block(s)
        self.values.words(s, 0, 0)
        common = CommonCheck(self.values, self.report, s.keyword)
        handlers: dict[str, Handler] = {
            "HTTP_GET": self._http,
            "SSL_GET": self._http,
            "TCP_CHECK": self._tcp,
            "SMTP_CHECK": self._smtp,
            "MISC_CHECK": self._misc,
            "UDP_CHECK": self._udp,
        }
        spec = handlers.get(s.keyword, self._not_carried)(s, block, common)
        if spec is None:
            return None
        settings = common.inherited.over(inherited)
        kind: CheckType = spec.pop("type")
        retry = settings.retry if settings.retry is not None else (0 if kind == "command" else 1)
        default_dbr = 3.0 if s.keyword in ("HTTP_GET", "SSL_GET") else 1.0
        dbr = settings.delay_before_retry
        timing = self._timing(s, settings, retry, kind, spec.pop("command_timeout", None))
        port = self._port(s, common, real, vports, kind)
        if kind == "command":
            spec["command"] = self._real_as_placeholder(s, spec["command"], real)
        if kind in ("http", "https") and spec.get("host") is None:
            spec["host"] = settings.virtualhost
        check = Check(type=kind, timing=timing, port=port, **spec)
        describe = f"{s.keyword} at {s.where}"
        retry_text = f"retry {retry}" + (" (default)" if settings.retry is None else "")
        dbr_text = (
            f"delay_before_retry {dbr:g} s"
            if dbr is not None
            else f"delay_before_retry {default_dbr:g} s (default)"
        )
        return Candidate(
            check,
            describe,
            s.where,
            retry,
            dbr if dbr is not None else default_dbr,
            f"{retry_text}, {dbr_text}",
        )

    def _real_as_placeholder(
        self, s: Statement, command: tuple[str, ...], real: RealServer
    ) -> tuple[str, ...]:
        """keepalived runs misc_path as written, so each real's names its
        address; xlb runs one command per VIP with {real} replaced."""
        address = str(real.address)
        if not any(address in arg for arg in command):
            return command
        self.report.note(s.where, f"misc_path: {address} becomes {{real}} (one command per VIP)")
        return tuple(arg.replace(address, "{real}") for arg in command)

    def _timing(
        self,
        s: Statement,
        settings: Inherited,
        retry: int,
        kind: str,
        command_timeout: float | None,
    ) -> CheckTiming:
        interval = settings.delay_loop if settings.delay_loop is not None else DEFAULT_DELAY_LOOP
        if interval > MAX_INTERVAL:
            self.report.warn(
                s.where, f"delay_loop {interval:g} s: xlb checks at least every {MAX_INTERVAL:g} s"
            )
            interval = MAX_INTERVAL
        if interval <= 0:
            self.report.warn(s.where, "delay_loop 0: xlb checks every second instead")
            interval = 1.0
        if kind == "command":  # misc_timeout, else keepalived waits delay_loop
            timeout = command_timeout if command_timeout is not None else interval
        elif settings.connect_timeout is not None:
            timeout = settings.connect_timeout
        else:
            timeout = DEFAULT_CONNECT_TIMEOUT
        if timeout <= 0 or timeout > interval:
            self.report.note(
                s.where,
                f"timeout {timeout:g} s: a probe must end before the next one starts, so "
                f"the timeout is the interval, {interval:g} s",
            )
            timeout = interval
        fall = min(retry + 1, MAX_FALL)
        if retry + 1 > MAX_FALL:
            self.report.warn(
                s.where, f"retry {retry}: xlb takes at most {MAX_FALL} failures (fall)"
            )
        return CheckTiming(interval=interval, timeout=timeout, rise=1, fall=fall)

    def _port(
        self, s: Statement, common: CommonCheck, real: RealServer, vports: set[int], kind: str
    ) -> int | None:
        """The probe's port: connect_port, else the real's (keepalived's
        default); None where that is the VIP's own port."""
        if kind == "command":
            return None
        port = common.connect_port if common.connect_port is not None else real.port
        if port is None or port == 0:
            return None
        return None if vports == {port} else port

    # ------------------------------------------------------------ types

    def _tcp(self, s: Statement, block: list[Statement], common: CommonCheck) -> dict[str, Any]:
        for item in block:
            common.read(item) or self._unknown(item, s)
        return {"type": "tcp"}

    def _smtp(self, s: Statement, block: list[Statement], common: CommonCheck) -> dict[str, Any]:
        for item in block:
            if common.read(item):
                continue
            if item.keyword in ("helo_name", "host"):
                self.report.warn(item.where, f"SMTP_CHECK {item.keyword}: not carried over")
            else:
                self._unknown(item, s)
        self.report.warn(
            s.where,
            "SMTP_CHECK becomes a tcp check: xlb connects to the port but does not speak SMTP "
            "(a command check can)",
        )
        return {"type": "tcp"}

    def _http(
        self, s: Statement, block: list[Statement], common: CommonCheck
    ) -> dict[str, Any] | None:
        urls: list[Statement] = []
        host: str | None = None
        for item in block:
            if common.read(item):
                continue
            if item.keyword == "url":
                urls.append(item)
            elif item.keyword == "virtualhost":
                host = self.values.one(item)
            elif item.keyword in ("http_protocol", "fast_recovery", "tls_compliant", "enable_sni"):
                self.report.note(item.where, _HTTP_NOTES[item.keyword])
            elif item.keyword == "sni_name":
                host = self.values.one(item) if host is None else host
                self.report.note(item.where, "sni_name: xlb sends the check's host as the SNI name")
            else:
                self._unknown(item, s)
        if not urls:
            self.report.error(s.where, f"{s.keyword} needs a url {{ path ... }} block")
            return None
        spec = self._url(urls[0], s.keyword)
        for extra in urls[1:]:
            self.report.warn(
                extra.where,
                "a second url: an xlb check requests one path; only the first url is carried over",
            )
        spec["type"] = "https" if s.keyword == "SSL_GET" else "http"
        spec["host"] = spec.get("host") or host
        return spec

    def _url(self, url: Statement, checker: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"path": "/", "expect_status": tuple(range(200, 300))}
        for item in self.values.block(url):
            key = item.keyword
            if key == "path":
                path = self.values.one(item)
                if path is not None and (not path.startswith("/") or " " in path):
                    self.report.error(item.where, f"path {path!r} must start with / (no spaces)")
                elif path is not None:
                    spec["path"] = path
            elif key == "status_code":
                codes = self._status_codes(item)
                if codes:
                    spec["expect_status"] = codes
            elif key == "digest":
                self.report.warn(
                    item.where,
                    "digest: xlb does not compare an MD5 of the page (not supported); the check "
                    "passes on the status code (add expect_body to look for a text)",
                )
            elif key == "virtualhost":
                spec["host"] = self.values.one(item)
            elif key == "regex":
                self._regex(item, spec)
            elif key in ("regex_no_match", "regex_options", "regex_stack",
                         "regex_min_offset", "regex_max_offset"):  # fmt: skip
                self.report.warn(
                    item.where, f"{key}: xlb has no regular expressions: not carried over"
                )
            elif key == "tls_compliant":
                self.report.note(item.where, _HTTP_NOTES[key])
            else:
                self.report.error(item.where, f"unknown keyword {key!r} in url of {checker}")
        return spec

    def _status_codes(self, s: Statement) -> tuple[int, ...]:
        codes: list[int] = []
        for word in s.args:
            low, _, high = word.partition("-")
            if not (low.isdigit() and (not high or high.isdigit())):
                self.report.error(s.where, f"status_code {word!r}: a code or a range like 200-299")
                continue
            first, last = int(low), int(high or low)
            if not 100 <= first <= last <= 599:
                self.report.error(s.where, f"status_code {word!r}: codes are 100-599")
                continue
            codes += [c for c in range(first, last + 1) if c not in codes]
        if not s.args:
            self.report.error(s.where, "status_code needs at least one code")
        return tuple(codes)

    def _regex(self, s: Statement, spec: dict[str, Any]) -> None:
        pattern = self.values.one(s)
        if pattern is None:
            return
        if any(ch in pattern for ch in ".^$*+?{}[]\\|()"):
            self.report.warn(
                s.where,
                f"regex {pattern!r}: xlb looks for a plain text in the body (expect_body), not a "
                "regular expression: not carried over",
            )
            return
        spec["expect_body"] = pattern
        self.report.note(s.where, f"regex {pattern!r} has no special characters: expect_body")

    def _misc(
        self, s: Statement, block: list[Statement], common: CommonCheck
    ) -> dict[str, Any] | None:
        command: tuple[str, ...] | None = None
        spec: dict[str, Any] = {"type": "command"}
        for item in block:
            if common.read(item, connection=False):
                continue
            key = item.keyword
            if key == "misc_path":
                command = self._command(item)
            elif key == "misc_timeout":
                timeout = self.values.integer(item, 1, 2**31)
                if timeout is not None:
                    spec["command_timeout"] = float(timeout)
            elif key == "misc_dynamic":
                self.report.warn(
                    item.where,
                    "misc_dynamic: the exit status does not set the real's weight in xlb "
                    "(0 passes, anything else fails): not carried over",
                )
            elif key == "user":
                spec["user"] = self._user(item)
            else:
                self._unknown(item, s)
        if command is None:
            self.report.error(s.where, "MISC_CHECK needs misc_path")
            return None
        spec["command"] = command
        return spec

    def _command(self, s: Statement) -> tuple[str, ...] | None:
        text = self.values.one(s)
        if text is None:
            return None
        try:
            words = tuple(shlex.split(text))
        except ValueError as exc:
            self.report.error(s.where, f"misc_path: {exc}")
            return None
        if not words:
            self.report.error(s.where, "misc_path is empty")
            return None
        return words

    def _user(self, s: Statement) -> str | None:
        words = self.values.words(s, 1, 2)
        if not words:
            return None
        if len(words) == 2:
            self.report.warn(
                s.where,
                f"user's group {words[1]!r}: xlb runs the command with the user's own groups",
            )
        try:
            pwd.getpwnam(words[0])
        except KeyError:
            self.report.warn(
                s.where,
                f"user {words[0]!r} does not exist on this host: the file names it, and "
                "`xlb serve` refuses the file until the user exists here",
            )
        return words[0]

    def _udp(
        self, s: Statement, block: list[Statement], common: CommonCheck
    ) -> dict[str, Any] | None:
        spec: dict[str, Any] = {"type": "udp"}
        reply = False
        for item in block:
            if common.read(item):
                continue
            key = item.keyword
            if key == "payload":
                spec["send"] = self._hex_text(item, "payload") or ""
            elif key == "require_reply":
                reply = True
                if item.args:
                    expect = self._hex_text(item, "require_reply")
                    if expect is not None:
                        spec["expect"] = expect
            elif key in ("min_reply_length", "max_reply_length"):
                self.report.warn(item.where, f"{key}: not carried over (xlb checks the content)")
            else:
                self._unknown(item, s)
        if not reply:
            self.report.warn(
                s.where,
                "UDP_CHECK without require_reply passes unless an ICMP error comes back; xlb's "
                "udp check waits for a reply",
            )
        if "send" not in spec:
            self.report.note(s.where, "UDP_CHECK without payload: xlb sends an empty datagram")
        return spec

    def _hex_text(self, s: Statement, what: str) -> str | None:
        digits = "".join(s.args)
        try:
            data = bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
            text = data.decode()
        except ValueError:
            self.report.warn(
                s.where,
                f"{what} {digits!r}: xlb's udp check sends and expects text, not these bytes "
                "(not carried over)",
            )
            return None
        return text

    def _not_carried(
        self, s: Statement, block: list[Statement], common: CommonCheck
    ) -> dict[str, Any] | None:
        why = {
            "DNS_CHECK": "xlb has no DNS query check (a command check can run dig)",
            "PING_CHECK": "xlb has no ICMP check (a tcp or command check can replace it)",
            "BFD_CHECK": "xlb's checks do not follow BFD sessions",
            "FILE_CHECK": "xlb's checks do not follow track files",
        }[s.keyword]
        self.report.warn(s.where, f"{s.keyword}: {why}; not carried over")
        return None

    def _unknown(self, s: Statement, checker: Statement) -> bool:
        self.report.error(s.where, f"unknown keyword {s.keyword!r} in {checker.keyword}")
        return False


_HTTP_NOTES = {
    "http_protocol": "http_protocol: xlb sends HTTP/1.1 requests with Connection: close",
    "fast_recovery": "fast_recovery: one passing check brings a real back in xlb (rise 1)",
    "tls_compliant": "tls_compliant: xlb closes TLS connections cleanly",
    "enable_sni": "enable_sni: xlb always sends the SNI name (the check's host, else the address)",
}


class CommonCheck:
    """The keywords every checker takes (connection ones for most)."""

    def __init__(self, values: Values, report: Report, checker: str) -> None:
        self.values = values
        self.report = report
        self.checker = checker
        self.inherited = Inherited()
        self.connect_port: int | None = None

    def read(self, s: Statement, connection: bool = True) -> bool:
        """True when `s` is a common keyword (read here)."""
        key = s.keyword
        if key in INHERITED_KEYWORDS and key != "virtualhost":
            if key == "nb_get_retry" and self.checker not in ("HTTP_GET", "SSL_GET"):
                return False
            if key == "connect_timeout" and not connection:
                return False
            self.inherited = inherit(s, self.values, self.inherited) or self.inherited
            return True
        if key in ("warmup", "alpha", "log_all_failures"):
            self.report.note(s.where, COMMON_NOTES[key])
            return True
        if not connection:
            return False
        if key == "connect_port":
            port = self.values.one(s)
            if port is not None:
                self.connect_port = self.values.port(s, port, "connect_port")
            return True
        if key == "connect_ip":
            self.report.warn(
                s.where,
                f"connect_ip {' '.join(s.args)}: xlb probes the VIP's address through the tunnel "
                "to each real (the address clients use); not carried over",
            )
            return True
        if key in ("bindto", "bind_port", "bind_if", "fwmark"):
            self.report.warn(
                s.where, f"{key}: xlb's probes leave from the balancer's address; not carried over"
            )
            return True
        return False


COMMON_NOTES = {
    "warmup": "warmup: xlb probes every real at once when it starts (not carried over)",
    "alpha": "alpha: xlb starts every real up until its checks fail (not carried over)",
    "log_all_failures": "log_all_failures: xlb logs each change of state (not each failure)",
}


__all__ = [
    "COMMON_NOTES",
    "INHERITED_KEYWORDS",
    "Candidate",
    "Checkers",
    "CommonCheck",
    "Inherited",
    "inherit",
]
