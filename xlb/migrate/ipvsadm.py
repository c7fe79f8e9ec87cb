"""`ipvsadm-save -n` output (`ipvsadm -Sn`) read into virtual services.

Each line is one ipvsadm command; a saved table holds two kinds:

    -A -t 192.0.2.10:80 -s wlc -p 300
    -a -t 192.0.2.10:80 -r 10.0.1.1:80 -g -w 1

`-A` adds a service (`-t`/`-u`/`--sctp-service ADDR:PORT`, or `-f MARK`)
with a scheduler (`-s`, default wlc), persistence (`-p [TIMEOUT]`, `-M
MASK`), scheduler flags (`-b`) and one-packet scheduling (`-o`, or `ops`
as older ipvsadm-save writes it); `-a` adds a real server (`-r
ADDR[:PORT]`) with its forwarding method (`-g` direct routing, the
default; `-i` tunnel, with `--tun-type`/`--tun-port`; `-m` NAT) and weight
(`-w`). `-C` (clear the table first) is what importing does anyway.
Long option names work too. Anything else, and names instead of numbers
(save with `-n`), is a located error.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from ..model import MAX_WEIGHT, IPAddress
from .services import SCHEDULERS, Endpoint, Forwarding, RealServer, VirtualService
from .source import Report, Where

DEFAULT_PERSISTENCE = 300  # ipvsadm's, when -p has no value

_SERVICE_OPTIONS = {
    "-t": "tcp",
    "--tcp-service": "tcp",
    "-u": "udp",
    "--udp-service": "udp",
    "--sctp-service": "sctp",
    "-f": "fwmark",
    "--fwmark-service": "fwmark",
}
_COMMANDS = {
    "-A": "add-service",
    "--add-service": "add-service",
    "-a": "add-server",
    "--add-server": "add-server",
    "-C": "clear",
    "--clear": "clear",
}
_METHODS = {
    "-g": "DR",
    "--gatewaying": "DR",
    "-i": "TUN",
    "--ipip": "TUN",
    "-m": "NAT",
    "--masquerading": "NAT",
}
_WITH_VALUE = {
    "-s", "--scheduler", "-M", "--netmask", "-b", "--sched-flags", "--pe", "-r",
    "--real-server", "-w", "--weight", "-x", "--u-threshold", "-y", "--l-threshold",
    "--tun-type", "--tun-port",
}  # fmt: skip
_ENDPOINT_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")


@dataclass(frozen=True, slots=True)
class _Line:
    words: list[str]
    where: Where


class IpvsadmReader:
    """Saved ipvsadm rules into virtual services, every problem located."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.services: dict[tuple[str, str], VirtualService] = {}

    def read(self, text: str, source: str) -> list[VirtualService]:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = self._split(raw, Where(source, number))
            if line is not None and line.words:
                self._command(line)
        return list(self.services.values())

    def _split(self, raw: str, where: Where) -> _Line | None:
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            self.report.error(where, f"cannot split the line: {exc}")
            return None
        return _Line(words, where)

    def _command(self, line: _Line) -> None:
        head, *rest = line.words
        command = _COMMANDS.get(head)
        if command is None:
            self.report.error(
                line.where,
                f"{head!r}: a saved table holds -A (add service) and -a (add server) lines "
                "(ipvsadm-save -n output)",
            )
        elif command == "clear":
            if rest:
                self.report.error(line.where, f"{head} takes no options")
            self.report.note(line.where, f"{head}: importing starts from an empty table anyway")
        else:
            options = self._options(rest, line.where)
            if options is None:
                return
            if command == "add-service":
                self._add_service(options, line.where)
            else:
                self._add_server(options, line.where)

    def _options(self, words: list[str], where: Where) -> dict[str, str] | None:
        """Option -> value ("" for flags), the long names spelled short."""
        options: dict[str, str] = {}
        i = 0
        while i < len(words):
            word = key = words[i]
            if key in _SERVICE_OPTIONS or word in _WITH_VALUE:
                if i + 1 >= len(words):
                    self.report.error(where, f"{word} needs a value")
                    return None
                value, i = words[i + 1], i + 2
            elif key in ("-p", "--persistent"):
                has_value = i + 1 < len(words) and words[i + 1].isdigit()
                value = words[i + 1] if has_value else str(DEFAULT_PERSISTENCE)
                i += 2 if has_value else 1
            elif (
                key in _METHODS
                or key in ("-o", "--ops", "ops", "-6", "--ipv6")
                or key.startswith("--tun-")
            ):
                value, i = "", i + 1
            else:
                self.report.error(where, f"unknown option {word!r}")
                return None
            name = _SHORT.get(key, key)
            if name in options:
                self.report.error(where, f"{word} is given twice")
                return None
            options[name] = value
        return options

    # ------------------------------------------------------------ -A / -a

    def _service_key(self, options: dict[str, str], where: Where) -> tuple[str, str] | None:
        kinds = [k for k in options if k in _SERVICE_OPTIONS]
        if len(kinds) != 1:
            self.report.error(where, "one service: -t, -u or --sctp-service ADDR:PORT, or -f MARK")
            return None
        kind = _SERVICE_OPTIONS[kinds[0]]
        return kind, options[kinds[0]]

    def _add_service(self, options: dict[str, str], where: Where) -> None:
        key = self._service_key(options, where)
        if key is None:
            return
        kind, text = key
        if key in self.services:
            self.report.error(
                where, f"service {text} is already added at {self.services[key].where}"
            )
            return
        endpoint = self._endpoint(kind, text, where)
        if endpoint is None:
            return
        service = VirtualService(
            name=f"-A {_option_of(kind)} {text}",
            where=where,
            endpoints=[endpoint],
            protocol="tcp" if kind == "fwmark" else kind,
        )
        for option, value in options.items():
            self._service_option(service, option, value, where)
        if endpoint.address is not None and endpoint.port == 0 and service.persistence is None:
            self.report.error(where, f"{text}: a service without a port must be persistent (-p)")
            return
        self.services[key] = service

    def _service_option(
        self, service: VirtualService, option: str, value: str, where: Where
    ) -> None:
        if option in _SERVICE_OPTIONS or option == "-6":
            return
        if option == "-s":
            if value not in SCHEDULERS:
                self.report.error(where, f"unknown scheduler {value!r}")
            service.scheduler, service.scheduler_where = value, where
        elif option == "-p":
            service.persistence, service.persistence_where = int(value), where
        elif option == "-M":
            if value not in ("255.255.255.255", "128"):
                service.granularity = value
        elif option == "-b":
            for flag in filter(None, value.split(",")):
                service.sched_flags[flag] = where
        elif option in ("-o", "ops"):
            service.sched_flags["ops"] = where
        elif option == "--pe":
            self.report.warn(where, f"--pe {value} (persistence engine): not carried over")
        else:
            self.report.error(where, f"{option} does not apply to -A (add service)")

    def _add_server(self, options: dict[str, str], where: Where) -> None:
        key = self._service_key(options, where)
        if key is None:
            return
        service = self.services.get(key)
        if service is None:
            self.report.error(where, f"-a for service {key[1]}, which no -A line before it adds")
            return
        if "-r" not in options:
            self.report.error(where, "-a needs the real server: -r ADDR[:PORT]")
            return
        real = self._real(options, where)
        if real is not None:
            service.reals.append(real)

    def _real(self, options: dict[str, str], where: Where) -> RealServer | None:
        parsed = self._address_port(options["-r"], where, "real server")
        if parsed is None:
            return None
        address, port = parsed
        weight = 1
        if "-w" in options:
            text = options["-w"]
            if not text.isdigit() or int(text) > MAX_WEIGHT:
                self.report.error(where, f"weight {text!r}: an integer 0-{MAX_WEIGHT}")
                return None
            weight = int(text)
        forwarding = self._forwarding(options, where)
        for option in ("-x", "-y"):
            if option in options:
                self.report.warn(
                    where, f"{option} {options[option]} (connection threshold): xlb has no "
                    "per-real connection limits; not carried over",
                )  # fmt: skip
        for option in options:
            if option not in _SERVICE_OPTIONS and option not in _SERVER_OPTIONS:
                self.report.error(where, f"{option} does not apply to -a (add server)")
                return None
        if forwarding is None:
            return None
        return RealServer(address, port, weight, forwarding, where)

    def _forwarding(self, options: dict[str, str], where: Where) -> Forwarding | None:
        methods = [_METHODS[o] for o in options if o in _METHODS]
        if len(methods) > 1:
            self.report.error(where, "one forwarding method: -g, -i or -m")
            return None
        method = methods[0] if methods else "DR"  # ipvsadm's default
        tunnel = options.get("--tun-type", "ipip")
        if tunnel not in ("ipip", "gue", "gre"):
            self.report.error(where, f"--tun-type {tunnel!r}: ipip, gue or gre")
            return None
        port = options.get("--tun-port")
        if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
            self.report.error(where, f"--tun-port {port!r}: 1-65535")
            return None
        if (tunnel == "gue") != (port is not None):
            self.report.error(where, "a GUE tunnel needs --tun-port, other tunnels none")
            return None
        if method != "TUN" and "--tun-type" in options:
            self.report.error(where, "--tun-type goes with -i (tunnelling)")
            return None
        for option in ("--tun-nocsum", "--tun-csum", "--tun-remcsum"):
            if option in options:
                self.report.note(where, f"{option}: xlb's GUE and IPIP carry no tunnel checksum")
        return Forwarding(method, tunnel, int(port) if port else None)  # type: ignore[arg-type]

    # ------------------------------------------------------------ values

    def _endpoint(self, kind: str, text: str, where: Where) -> Endpoint | None:
        if kind == "fwmark":
            if not text.isdigit():
                self.report.error(where, f"fwmark {text!r} is not a number")
                return None
            return Endpoint(None, 0, where, int(text))
        parsed = self._address_port(text, where, "service")
        if parsed is None:
            return None
        return Endpoint(parsed[0], parsed[1] or 0, where)

    def _address_port(
        self, text: str, where: Where, what: str
    ) -> tuple[IPAddress, int | None] | None:
        match = _ENDPOINT_RE.match(text)
        host = (match.group("v6") or match.group("host")) if match else text
        port_text = match.group("port") if match else None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            self.report.error(
                where,
                f"{what} {text!r}: not a numeric address (names are not resolved: save the "
                "table with ipvsadm-save -n)",
            )
            return None
        if port_text is None or port_text == "":
            return address, None
        if not port_text.isdigit() or int(port_text) > 65535:
            self.report.error(
                where, f"{what} {text!r}: port {port_text!r} is not 0-65535 (ipvsadm-save -n)"
            )
            return None
        return address, int(port_text)


_SHORT = {
    "--add-service": "-A",
    "--add-server": "-a",
    "--scheduler": "-s",
    "--persistent": "-p",
    "--netmask": "-M",
    "--sched-flags": "-b",
    "--real-server": "-r",
    "--gatewaying": "-g",
    "--ipip": "-i",
    "--masquerading": "-m",
    "--weight": "-w",
    "--u-threshold": "-x",
    "--l-threshold": "-y",
    "--ops": "-o",
    "ops": "-o",
    "--ipv6": "-6",
    "--tcp-service": "-t",
    "--udp-service": "-u",
    "--fwmark-service": "-f",
}
_SERVER_OPTIONS = {"-r", "-w", "-x", "-y", "-g", "-i", "-m", "--tun-type", "--tun-port",
                   "--tun-nocsum", "--tun-csum", "--tun-remcsum"}  # fmt: skip


def _option_of(kind: str) -> str:
    return {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service", "fwmark": "-f"}[kind]


__all__ = ["IpvsadmReader"]
