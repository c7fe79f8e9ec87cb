"""The `xlb` command line: every verb, its options, examples and checks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .._version import __version__
from ..errors import ConfigError
from ..model import SERVER_ID_MAX, Vip, VipFlags, check_mac, check_second_chance, parse_address
from .apply import cmd_apply, cmd_save
from .common import DEFAULT_LOCK_DIR, EXIT_USAGE, PROG
from .delegates import cmd_lab, cmd_serve
from .doctor import run_doctor
from .importing import cmd_import
from .ipvsadm import cmd_ipvsadm
from .node import cmd_node
from .realsetup import real_setup
from .show import cmd_counters, cmd_flows, cmd_list, cmd_stats
from .top import SORT_KEYS, cmd_top
from .vips import cmd_real, cmd_vip


class _Parser(argparse.ArgumentParser):
    """argparse that reports an error as one line, `xlb: error: ...`, exit 2."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix(PROG).strip()
        hint = f" (see `xlb {verb} --help`)" if verb else " (see `xlb --help`)"
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}{hint}\n")


def _vip_arg(text: str) -> Vip:
    try:
        return Vip.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _address_of(what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse_address(text, what)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = what  # argparse names the type in some messages
    return convert


_address_arg = _address_of("address")


def _vip_address_arg(text: str) -> Any:
    """A VIP for real-setup/doctor: an address, or ADDR:PORT/PROTO (its address)."""
    if ":" in text and ("/" in text or "]" in text or text.count(":") == 1):
        vip = _vip_arg(text)
        if vip.is_prefix:
            raise argparse.ArgumentTypeError(_PREFIX_ON_REAL.format(vip.address_text))
        return vip.address
    if "/" in text:
        raise argparse.ArgumentTypeError(_PREFIX_ON_REAL.format(text))
    return _address_of("VIP address")(text)


_PREFIX_ON_REAL = (
    "{} is a prefix: real-setup puts single VIP addresses on lo; a real of a prefix "
    "VIP needs the whole prefix local (see docs/config.md, Prefix VIPs)"
)


def _flags_arg(text: str) -> VipFlags:
    if text.strip().lower() in ("", "none", "-"):
        return VipFlags.NONE
    try:
        return VipFlags.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _weight_arg(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) > 0xFFFF:
        raise argparse.ArgumentTypeError(f"invalid weight {text!r}: an integer 0-65535")
    return int(text)


def _server_id_arg(text: str) -> int | str:
    """A QUIC server id (decimal or 0x hex, 0-65535), or "auto": xlb assigns it."""
    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= SERVER_ID_MAX:
        raise argparse.ArgumentTypeError(
            f"invalid server id {text!r}: 0-{SERVER_ID_MAX} (0x hex too), or auto"
        )
    return value


def _mac_arg(text: str) -> str:
    try:
        mac = check_mac(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert mac is not None
    return mac


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: seconds, > 0")
    return value


def _second_chance_arg(text: str) -> float:
    try:
        return check_second_chance(float(text))
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(
            f"invalid second chance {text!r}: seconds, 0 (off) or inf"
        ) from exc


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: an integer >= 1")
    return int(text)


def _fwmark_arg(text: str) -> Any:
    from ..migrate import FwmarkTarget

    try:
        return FwmarkTarget.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common() -> argparse.ArgumentParser:
    """Options every verb takes."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("data plane")
    group.add_argument(
        "-i",
        "--interface",
        metavar="IFACE",
        help="the balancer's interface (default: the only one pinned under /sys/fs/bpf/xlb)",
    )
    group.add_argument(
        "--pin-dir",
        type=Path,
        metavar="DIR",
        help="where the data plane is pinned (default: /sys/fs/bpf/xlb/IFACE)",
    )
    group.add_argument(
        "--lock-dir",
        type=Path,
        default=DEFAULT_LOCK_DIR,
        metavar="DIR",
        help="where `xlb serve` keeps IFACE.lock (default: /run/xlb)",
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def _verb(
    sub: Any, name: str, help_text: str, examples: str, parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Inspect and control the xlb XDP load balancer (docs/cli.md).",
        epilog="examples:\n"
        "  xlb list                      VIPs and reals, like ipvsadm -Ln\n"
        "  xlb -Ln                       ipvsadm's listing itself (--stats, --rate, -c)\n"
        "  xlb import keepalived FILE    keepalived.conf as an xlb file (docs/migrate.md)\n"
        "  xlb real edit 10.100.0.1:80/tcp 10.30.1.2 --weight 0   drain a real\n"
        "  xlb doctor                    check this host end to end\n"
        "run `xlb VERB --help` for each verb's options and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = [_common()]
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    p = _verb(
        sub,
        "list",
        "list every VIP with its reals, weights, health and counters",
        """
  xlb list                 VIPs, reals, weights, ring shares, health
  xlb list --stats         packet and byte totals (like ipvsadm -Ln --stats)
  xlb list --rate          packets and bytes per second over --interval
  xlb list --json | jq .   everything, for scripts
""",
        common,
    )
    p.add_argument(
        "-n", "--numeric", action="store_true", help="numeric output (always; ipvsadm habit)"
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--stats", action="store_true", help="packet and byte totals")
    shown.add_argument("--rate", action="store_true", help="packets and bytes per second")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="--rate sample (s)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_list)

    p = _verb(
        sub,
        "vip",
        "add, remove or change a VIP",
        """
  xlb vip add 10.100.0.1:80/tcp
  xlb vip add [fd00:100::1]:53/udp --flags no_sport,gue
  xlb vip add 10.101.0.0/24:80/tcp          a prefix VIP: every address in it
  xlb vip edit 10.100.0.1:80/tcp --flags none
  xlb vip del 10.100.0.1:80/tcp
Refused while `xlb serve` manages the interface: edit its file and reload.
""",
        common,
    )
    p.add_argument("action", choices=("add", "del", "edit"), help="what to do")
    p.add_argument(
        "vip",
        type=_vip_arg,
        metavar="VIP",
        help="ADDR:PORT/PROTO ([V6]:PORT/PROTO; a prefix: PREFIX/LEN:PORT/PROTO)",
    )
    p.add_argument(
        "--flags",
        type=_flags_arg,
        help="comma-separated: no_sport, dport_only, no_conn_table, gue, quic (or none)",
    )
    p.add_argument("--ring-size", type=int, help="Maglev ring size, a prime (default 65537)")
    p.add_argument(
        "--second-chance",
        type=_second_chance_arg,
        metavar="SECONDS",
        help="how long a ring change's previous ring is carried: seconds, 0 (off) or inf "
        "(until the next change); default 3600",
    )
    p.set_defaults(func=cmd_vip)

    p = _verb(
        sub,
        "real",
        "add, remove or re-weight a VIP's real",
        """
  xlb real add 10.100.0.1:80/tcp 10.30.1.2 --weight 2
  xlb real edit 10.100.0.1:80/tcp 10.30.1.2 --weight 0     drain (no new flows)
  xlb real edit 10.100.0.1:443/udp 10.30.1.2 --server-id 0x0a0b   pin its QUIC server id
  xlb real del 10.100.0.1:80/tcp 10.30.1.2
Refused while `xlb serve` manages the interface: edit its file and reload.
""",
        common,
    )
    p.add_argument("action", choices=("add", "del", "edit"), help="what to do")
    p.add_argument("vip", type=_vip_arg, metavar="VIP", help="ADDR:PORT/PROTO")
    p.add_argument(
        "real", type=_address_of("real address"), metavar="REAL", help="the real's address"
    )
    p.add_argument("--weight", type=_weight_arg, help="Maglev weight 0-65535 (add: default 1)")
    p.add_argument("--mac", type=_mac_arg, help="next-hop MAC of the real (flat L2)")
    p.add_argument(
        "--server-id",
        type=_server_id_arg,
        help="QUIC VIPs: pin the real's server id (0-65535, 0x hex too); auto: xlb assigns it",
    )
    p.set_defaults(func=cmd_real)

    p = _verb(
        sub,
        "save",
        "print the running configuration as TOML (what `xlb apply` takes)",
        """
  xlb save > lb.toml
  xlb save --base lb.toml      keep checks and health settings from lb.toml
""",
        common,
    )
    p.add_argument("--base", type=Path, help="a config file to take what the data plane lacks from")
    p.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    p.set_defaults(func=cmd_save)

    p = _verb(
        sub,
        "apply",
        "make the data plane match a TOML file: print the diff, apply it",
        """
  xlb apply lb.toml --dry-run   show what would change
  xlb apply lb.toml             change it (each VIP all-or-nothing)
  xlb apply empty.toml --allow-empty   remove every VIP
Refused while `xlb serve` runs: it reloads its own file (kill -HUP PID).
A file without VIPs is refused (an empty or truncated file?) unless it says
`vips = []` or --allow-empty is given.
""",
        common,
    )
    p.add_argument("file", type=Path, metavar="FILE", help="configuration file (docs/config.md)")
    p.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="apply a file without VIPs although VIPs run (removes them all)",
    )
    p.set_defaults(func=cmd_apply)

    p = _verb(
        sub,
        "stats",
        "per-VIP and per-real packet and byte rates",
        """
  xlb stats                    one sample over --interval
  xlb stats --watch            refresh until Ctrl-C
  xlb stats --watch --count 5 --json
""",
        common,
    )
    p.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="seconds per sample")
    p.add_argument("--count", type=_positive_int, help="stop after COUNT samples")
    p.add_argument("--json", action="store_true", help="one JSON object per sample")
    p.set_defaults(func=cmd_stats)

    p = _verb(
        sub,
        "top",
        "a live view: per VIP and real rates, new flows, shares, health, moving drop reasons",
        """
  xlb top                      refresh every second until Ctrl-C
  xlb top --sort bps           heaviest VIPs, and reals within each, first
  xlb top --once --json        one frame (rates over --interval) for scripts
Without a terminal (a pipe, a log) it prints plain frames instead of redrawing.
""",
        common,
    )
    p.add_argument(
        "--sort", choices=SORT_KEYS, default="pps",
        help="order of VIPs and of reals within each: busiest first (name: address order)",
    )  # fmt: skip
    p.add_argument("--interval", type=_positive_float, default=1.0, help="seconds per frame")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--once", action="store_true", help="one frame, then exit")
    shown.add_argument("--count", type=_positive_int, help="stop after COUNT frames")
    p.add_argument("--json", action="store_true", help="one JSON object per frame")
    p.set_defaults(func=cmd_top)

    p = _verb(
        sub,
        "counters",
        "global counters by name: XDP actions, reasons, connection table",
        """
  xlb counters
  xlb counters --nonzero
  xlb counters --json
""",
        common,
    )
    p.add_argument("--nonzero", action="store_true", help="hide counters that are 0")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_counters)

    p = _verb(
        sub,
        "flows",
        "a sample of the connection table: 5-tuple -> real",
        """
  xlb flows
  xlb flows 10.100.0.1:80/tcp --limit 20
""",
        common,
    )
    p.add_argument("vip", type=_vip_arg, nargs="?", metavar="VIP", help="only this VIP's flows")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many (100)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_flows)

    p = _verb(
        sub,
        "real-setup",
        "configure this host as a real: decap program, VIPs on lo, sysctls",
        """
  xlb real-setup --vip 10.100.0.1 --vip fd00:100::1
  xlb real-setup -i eth1 --vip 10.100.0.1 --mode tc
  xlb real-setup --vip 10.100.0.1 --remove
""",
        common,
    )
    p.add_argument(
        "--vip",
        type=_vip_address_arg,
        action="append",
        default=[],
        metavar="ADDR",
        help="a VIP address this real serves (repeat); ADDR:PORT/PROTO works too",
    )
    p.add_argument(
        "--mode",
        choices=("native", "generic", "tc"),
        default="native",
        help="where decap runs: native/generic XDP or tc ingress (default native)",
    )
    p.add_argument("--gue-port", type=int, default=6080, help="GUE port to strip (0: none)")
    p.add_argument(
        "--decap-addr",
        type=_address_of("decap address"),
        action="append",
        metavar="ADDR",
        help="outer destinations to strip (default: the interface's addresses)",
    )
    p.add_argument("--remove", action="store_true", help="undo: detach decap, VIPs off lo")
    p.set_defaults(func=real_setup)

    p = _verb(
        sub,
        "doctor",
        "check a balancer or real host end to end and say what is wrong",
        """
  xlb doctor                     this host: balancer if one is pinned, else real
  xlb doctor --role real -i eth0 --vip 10.100.0.1
  xlb doctor --json
""",
        common,
    )
    p.add_argument("--role", choices=("auto", "balancer", "real"), default="auto")
    p.add_argument(
        "--vip", type=_vip_address_arg, action="append", default=[], metavar="ADDR",
        help="(real) a VIP address this real should serve (default: those on lo)",
    )  # fmt: skip
    p.add_argument(
        "--client",
        type=_address_of("client address"),
        metavar="ADDR",
        help="(real) a client address to test the return path with (default 198.51.100.1)",
    )
    p.add_argument("--client-mtu", type=int, default=1500, help="clients' packet size (1500)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=run_doctor)

    p = _verb(
        sub,
        "serve",
        "run the daemon: config file, health checks, reloads (xlb.service)",
        """
  xlb serve lb.toml
  xlb serve --check lb.toml
  xlb serve --teardown lb.toml
""",
        [],
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the daemon")
    p.set_defaults(func=cmd_serve)

    p = _verb(
        sub,
        "lab",
        "the namespace lab's housekeeping (xlb.lab)",
        """
  xlb lab cleanup          remove what crashed labs left behind
  xlb lab cleanup --all    also labs whose owner still runs
  xlb lab list
""",
        [],
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="cleanup [--all] | list")
    p.set_defaults(func=cmd_lab)

    p = _verb(
        sub,
        "node",
        "this node's BGP announcements: drain, undrain, status (asks xlb serve)",
        """
  xlb node drain               withdraw every VIP, wait until no new flows arrive
  xlb node drain --timeout 60  give up waiting after 60 s (exit 1)
  xlb node undrain             announce again what health says (also: announce)
  xlb node status              what is announced, and each BGP session
""",
        common,
    )
    p.add_argument("action", choices=("drain", "undrain", "announce", "status"))
    p.add_argument("--timeout", type=_positive_float, default=30.0, help="drain: longest wait (s)")
    p.add_argument(
        "--quiet", type=_positive_float, default=2.0,
        help="drain: seconds without a new flow that make the node drained",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_node)

    _import_verb(sub)
    return parser


def _import_verb(sub: Any) -> None:
    p = _verb(
        sub,
        "import",
        "turn a keepalived.conf or saved ipvsadm rules into an xlb configuration",
        """
  xlb import keepalived /etc/keepalived/keepalived.conf > lb.toml
  ipvsadm-save -n | xlb import ipvsadm -i eth0 > lb.toml
  xlb import keepalived keepalived.conf --base settings.toml -o lb.toml
  xlb import keepalived keepalived.conf --fwmark 1=192.0.2.10:80 --fwmark 1=192.0.2.10:443
What is not carried over is listed on stderr with its file and line
(docs/migrate.md); a source with errors writes nothing and exits 1.
""",
        [],
    )
    p.add_argument("format", choices=("keepalived", "ipvsadm"), help="what FILE is")
    p.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="keepalived.conf, or ipvsadm-save -n output (ipvsadm: default stdin)",
    )
    p.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    p.add_argument("-i", "--interface", metavar="IFACE", help="balancer.interface of the output")
    p.add_argument(
        "--gateway-mac",
        type=_mac_arg,
        metavar="MAC",
        help="next hop towards the reals (default: balancer.fib_lookup = true, as DR)",
    )
    p.add_argument(
        "--base",
        type=Path,
        metavar="TOML",
        help="an xlb file whose [balancer], [health] and [bgp] the output starts from",
    )
    p.add_argument(
        "--fwmark",
        type=_fwmark_arg,
        action="append",
        default=[],
        metavar="MARK=ADDR[:PORT][/PROTO]",
        help="a VIP a firewall-mark service stands for (repeat; port 0 or none: every port)",
    )
    p.add_argument("--strict", action="store_true", help="fail (exit 1) on any warning")
    p.add_argument("-q", "--quiet", action="store_true", help="print warnings, not notes")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=cmd_import)


IPVSADM_LIST = re.compile(r"^-[lL][a-zA-Z]*$|^--list$")


def is_ipvsadm_list(argv: list[str]) -> bool:
    """`xlb -Ln`, `xlb -L -n`, `xlb -lnc`, `xlb --list`: ipvsadm's habit."""
    return bool(argv) and IPVSADM_LIST.match(argv[0]) is not None


def build_ipvsadm_parser() -> argparse.ArgumentParser:
    """`xlb -L ...`: the data plane listed as `ipvsadm -L` lists IPVS."""
    parser = _Parser(
        prog=PROG,
        description="List the running data plane the way `ipvsadm -Ln` lists IPVS "
        "(docs/cli.md: what each column means for xlb).",
        epilog="examples:\n"
        "  xlb -Ln                      services and reals, connection counts\n"
        "  xlb -Ln --stats              Conns InPkts OutPkts InBytes OutBytes\n"
        "  xlb -Ln --rate               CPS InPPS OutPPS InBPS OutBPS over --interval\n"
        "  xlb -Lnc                     the connection table\n"
        "  xlb -Ln -t 10.100.0.1:80     one service (-u for UDP)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common()],
    )
    parser.add_argument("-L", "-l", "--list", action="store_true", required=True, help="list")
    parser.add_argument("-n", "--numeric", action="store_true", help="numeric (always)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-c", "--connection", action="store_true", help="the connection table")
    shown.add_argument("--stats", action="store_true", help="totals")
    shown.add_argument("--rate", action="store_true", help="rates over --interval")
    for option in ("--thresholds", "--persistent-conn", "--timeout", "--daemon"):
        shown.add_argument(option, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exact", "-X", action="store_true", help="numbers in full (no K/M)")
    parser.add_argument("--interval", type=_positive_float, default=1.0, help="--rate sample (s)")
    service = parser.add_mutually_exclusive_group()
    service.add_argument("-t", "--tcp-service", metavar="ADDR:PORT", help="only this TCP service")
    service.add_argument("-u", "--udp-service", metavar="ADDR:PORT", help="only this UDP service")
    parser.add_argument("--sort", "--nosort", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=cmd_ipvsadm)
    return parser


__all__ = ["build_ipvsadm_parser", "build_parser", "is_ipvsadm_list"]
