"""The `xlb` command: inspect and change a running data plane, set up reals.

    xlb list                        # VIPs, reals, weights, health (like ipvsadm -Ln)
    xlb list --stats | --rate       # packet/byte totals, or rates
    xlb vip add 10.0.0.1:80/tcp     # direct changes (refused while `xlb serve` runs)
    xlb real add 10.0.0.1:80/tcp 10.0.1.1 --weight 2
    xlb save > lb.toml; xlb apply lb.toml --dry-run
    xlb stats --watch; xlb counters; xlb flows
    xlb real-setup --vip 10.0.0.1   # on a backend: decap, VIP on lo, sysctls
    xlb doctor                      # what is wrong on this host, in plain words
    xlb serve lb.toml               # the daemon (xlb.service)
    xlb lab cleanup                 # remove what crashed labs left (xlb.lab)

Every command works on the data plane pinned under /sys/fs/bpf/xlb/<iface>
(`--interface/-i`, or `--pin-dir`); it adopts it read-mostly and never
detaches it on exit. A command that finds nothing pinned says so instead of
attaching a new data plane. Reference: docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._version import __version__
from .errors import ConfigError, NotFoundError, XlbError
from .model import Real, Vip, VipFlags, check_mac, parse_address

if TYPE_CHECKING:
    from .balancer import Balancer

PROG = "xlb"
DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/xlb")
DEFAULT_LOCK_DIR = Path("/run/xlb")
PIN_MARKER = "vips"  # a pin dir holding this map is a balancer's data plane
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class CliError(XlbError):
    """An error the CLI reports as one line (exit 1)."""


class UsageError(CliError):
    """A bad argument found after parsing (exit 2)."""


# ================================================================ parsing


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
        return _vip_arg(text).address
    return _address_of("VIP address")(text)


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


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: an integer >= 1")
    return int(text)


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
  xlb vip edit 10.100.0.1:80/tcp --flags none
  xlb vip del 10.100.0.1:80/tcp
Refused while `xlb serve` manages the interface: edit its file and reload.
""",
        common,
    )
    p.add_argument("action", choices=("add", "del", "edit"), help="what to do")
    p.add_argument("vip", type=_vip_arg, metavar="VIP", help="ADDR:PORT/PROTO ([V6]:PORT/PROTO)")
    p.add_argument(
        "--flags",
        type=_flags_arg,
        help="comma-separated: no_sport, dport_only, no_conn_table, gue (or none)",
    )
    p.add_argument("--ring-size", type=int, help="Maglev ring size, a prime (default 65537)")
    p.set_defaults(func=cmd_vip)

    p = _verb(
        sub,
        "real",
        "add, remove or re-weight a VIP's real",
        """
  xlb real add 10.100.0.1:80/tcp 10.30.1.2 --weight 2
  xlb real edit 10.100.0.1:80/tcp 10.30.1.2 --weight 0     drain (no new flows)
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
    p.set_defaults(func=cmd_real_setup)

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
    p.set_defaults(func=cmd_doctor)

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
    return parser


# ============================================================ data plane


@dataclass(frozen=True, slots=True)
class Target:
    """Which data plane a command works on."""

    interface: str | None
    pin_dir: Path
    lock_dir: Path

    @property
    def name(self) -> str:
        return self.interface or str(self.pin_dir)


def pinned_interfaces(root: Path | None = None) -> list[str]:
    """Interfaces with a balancer pinned under the (default) root, sorted."""
    root = root or DEFAULT_PIN_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / PIN_MARKER).exists())


def resolve_target(args: argparse.Namespace, require_pinned: bool = True) -> Target:
    interface: str | None = args.interface
    lock_dir: Path = args.lock_dir
    if args.pin_dir is not None:
        pin_dir = Path(args.pin_dir)
        if interface is None and pin_dir.parent == DEFAULT_PIN_ROOT:
            interface = pin_dir.name
    elif interface is not None:
        pin_dir = DEFAULT_PIN_ROOT / interface
    else:
        found = pinned_interfaces()
        if len(found) == 1:
            interface, pin_dir = found[0], DEFAULT_PIN_ROOT / found[0]
        elif not found:
            if require_pinned:
                raise CliError(
                    f"no xlb data plane is pinned under {DEFAULT_PIN_ROOT}: start one with "
                    "`xlb serve CONFIG` (or name it with -i IFACE / --pin-dir DIR)"
                )
            return Target(None, DEFAULT_PIN_ROOT, lock_dir)
        else:
            raise UsageError(
                f"several data planes are pinned ({', '.join(found)}): choose one with -i IFACE"
            )
    if require_pinned and not (pin_dir / PIN_MARKER).exists():
        where = f"on {interface} " if interface else ""
        raise CliError(
            f"no xlb data plane {where}(nothing pinned at {pin_dir}): "
            "start one with `xlb serve CONFIG`"
        )
    return Target(interface, pin_dir, lock_dir)


@contextlib.contextmanager
def open_balancer(target: Target) -> Iterator[Balancer]:
    """Adopt the pinned maps without touching the attachment; never detaches."""
    from .balancer import Balancer

    lb = Balancer(pin_dir=target.pin_dir)
    lb.interface = target.interface  # for `save`; this handle attaches nothing
    info = xdp_info(target.interface) if target.interface else None
    if info is not None and info.get("mode") == "generic":
        lb.mode = "generic"
    try:
        yield lb
    finally:
        lb.close(detach=False)


def xdp_info(interface: str) -> dict[str, Any] | None:
    """The XDP program on an interface of this namespace: mode, id, name; None if none."""
    from .doctor import link_info, xdp_of

    link = link_info(interface)
    return xdp_of(link) if link is not None else None


def daemon_pid(target: Target) -> int | None:
    """The pid of the `xlb serve` holding <lock_dir>/<interface>.lock, if any.

    Read from /proc/locks (who holds a flock on that file's inode), so asking
    never takes the lock itself and can never make a starting daemon fail.
    """
    if target.interface is None:
        return None
    path = target.lock_dir / f"{target.interface}.lock"
    try:
        st = path.stat()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].lower() == dev:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def refuse_if_daemon(target: Target, what: str) -> None:
    pid = daemon_pid(target)
    if pid is not None:
        raise CliError(
            f"`xlb serve` (pid {pid}) manages {target.interface}: {what} would be undone at its "
            f"next reload or health change; edit its configuration file and reload it "
            f"(kill -HUP {pid})"
        )


# ================================================================= health


@dataclass(slots=True)
class Health:
    """What a running daemon reports, read from its metrics endpoint."""

    reals: dict[tuple[str, str], str]  # (vip, real) -> "up" | "down"
    vips: dict[str, bool]
    weights: dict[tuple[str, str], int] = field(default_factory=dict)  # configured

    def real(self, vip: Vip, address: Any) -> str:
        return self.reals.get((str(vip), str(address)), "-")

    def configured_reals(self, vip: Vip) -> dict[str, int]:
        """The daemon's configured reals of a VIP and their weights (down ones
        included, which the data plane may no longer hold)."""
        return {real: weight for (v, real), weight in self.weights.items() if v == str(vip)}

    def vip(self, vip: Vip) -> str:
        healthy = self.vips.get(str(vip))
        return "-" if healthy is None else ("healthy" if healthy else "UNHEALTHY")


def daemon_health(target: Target, timeout: float = 1.0) -> Health:
    """Health states from the daemon's metrics server, if one announced itself."""
    from prometheus_client.parser import text_string_to_metric_families

    from .metrics import discovery_file

    empty = Health({}, {})
    try:
        info = json.loads(discovery_file(target.pin_dir).read_text())
        os.kill(int(info["pid"]), 0)
        url = f"http://{info['address']}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except (OSError, ValueError, KeyError, TypeError):
        return empty
    health = Health({}, {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "xlb_real_up":
                key = (sample.labels["vip"], sample.labels["real"])
                health.reals[key] = "up" if sample.value else "down"
            elif sample.name == "xlb_vip_healthy":
                health.vips[sample.labels["vip"]] = bool(sample.value)
            elif sample.name == "xlb_real_configured_weight":
                key = (sample.labels["vip"], sample.labels["real"])
                health.weights[key] = int(sample.value)
    return health


# ================================================================ helpers


def _encap(lb: Balancer, vip: Vip) -> str:
    return "GUE" if VipFlags.GUE in lb.vip_flags(vip) or lb.config.gue_all else "Tunnel"


def _vip_snapshot(lb: Balancer, health: Health | None = None) -> list[dict[str, Any]]:
    out = []
    for vip in lb.vips():
        stats = lb.stats(vip)
        flags = lb.vip_flags(vip)
        out.append(
            {
                "vip": str(vip),
                "address": str(vip.address),
                "port": vip.port,
                "protocol": vip.proto,
                "flags": flags.names(),
                "forward": _encap(lb, vip),
                "ring_size": lb.ring_size(vip),
                "health": health.vip(vip) if health else "-",
                "packets": stats.packets,
                "bytes": stats.bytes,
                "reals": _real_rows(lb, vip, health),
            }
        )
    return out


def _real_rows(lb: Balancer, vip: Vip, health: Health | None) -> list[dict[str, Any]]:
    """The VIP's reals: those in the data plane, plus those the daemon
    configures but took out (down, `on_failure = "remove"`), with share 0.
    A real the daemon knows shows its configured weight (a drained or
    removed one holds 0 or nothing in the data plane: `serving_weight`)."""
    per_real, shares = lb.real_stats(vip), lb.ring_shares(vip)
    configured = health.configured_reals(vip) if health else {}
    rows: dict[str, dict[str, Any]] = {}
    for real in lb.reals(vip):
        address = str(real.address)
        counter = per_real.get(real.address)
        rows[address] = {
            "address": address,
            "weight": configured.get(address, real.weight),
            "serving_weight": real.weight,
            "mac": real.mac,
            "share": round(shares.get(real.address, 0.0), 6),
            "health": health.real(vip, address) if health else "-",
            "packets": counter.packets if counter else 0,
            "bytes": counter.bytes if counter else 0,
        }
    for address, weight in configured.items():
        if address not in rows:
            rows[address] = {
                "address": address,
                "weight": weight,
                "serving_weight": None,
                "mac": None,
                "share": 0.0,
                "health": health.real(vip, address) if health else "-",
                "packets": 0,
                "bytes": 0,
            }
    return sorted(rows.values(), key=lambda row: _address_key(row["address"]))


def _address_key(text: str) -> tuple[int, bytes]:
    address = parse_address(text)
    return address.version, address.packed


def _add_rates(now: list[dict[str, Any]], before: list[dict[str, Any]], seconds: float) -> None:
    """Add pps/bps (bits) to each VIP and real of `now` from an earlier snapshot."""
    old = {v["vip"]: v for v in before}
    for vip in now:
        prev = old.get(vip["vip"], {})
        _rate(vip, prev, seconds)
        prev_reals = {r["address"]: r for r in prev.get("reals", [])}
        for real in vip["reals"]:
            _rate(real, prev_reals.get(real["address"], {}), seconds)


def _rate(entry: dict[str, Any], prev: dict[str, Any], seconds: float) -> None:
    packets = max(0, entry["packets"] - prev.get("packets", entry["packets"]))
    nbytes = max(0, entry["bytes"] - prev.get("bytes", entry["bytes"]))
    entry["pps"] = round(packets / seconds, 1)
    entry["bps"] = round(nbytes * 8 / seconds, 1)


def _human(value: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or suffix == "T":
            text = f"{value:.0f}" if suffix == "" else f"{value:.1f}{suffix}"
            return text + unit
        value /= 1000
    return str(value)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _header(target: Target, lb: Balancer, pid: int | None) -> str:
    info = xdp_info(target.interface) if target.interface else None
    if info is None:
        where = f"{target.interface} (no XDP program seen in this network namespace)"
    else:
        where = f"{target.interface} (XDP {info['mode']}, program {info['name']} id {info['id']})"
    daemon = f", managed by xlb serve pid {pid}" if pid else ""
    return f"xlb on {where}, pinned at {target.pin_dir}{daemon}"


# ================================================================= verbs


def cmd_list(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    pid = daemon_pid(target)
    health = daemon_health(target) if pid else Health({}, {})
    with open_balancer(target) as lb:
        vips = _vip_snapshot(lb, health)
        if args.rate:
            time.sleep(args.interval)
            before, vips = vips, _vip_snapshot(lb, health)
            _add_rates(vips, before, args.interval)
        header = _header(target, lb, pid)
    if args.json:
        _print_json(
            {
                "interface": target.interface,
                "pin_dir": str(target.pin_dir),
                "daemon_pid": pid,
                "vips": vips,
            }
        )
        return EXIT_OK
    print(header)
    if args.stats:
        print(f"{'Prot LocalAddress:Port':<34}{'InPkts':>12}{'InBytes':>14}")
        print("  -> RemoteAddress")
    elif args.rate:
        print(f"{'Prot LocalAddress:Port':<34}{'InPPS':>12}{'InBPS':>14}")
        print("  -> RemoteAddress")
    else:
        print(f"{'Prot LocalAddress:Port':<34}{'Flags':<16}{'Ring':<8}Health")
        print(f"{'  -> RemoteAddress':<34}{'Forward':<8}{'Weight':<8}{'Share':<8}Health")
    for vip in vips:
        first = f"{vip['protocol'].upper():<5}{_endpoint(vip)}"
        if args.stats:
            print(f"{first:<34}{vip['packets']:>12}{vip['bytes']:>14}")
        elif args.rate:
            print(f"{first:<34}{vip['pps']:>12.0f}{vip['bps'] / 8:>14.0f}")
        else:
            flags = ",".join(f for f in vip["flags"] if f != "gue") or "-"
            print(f"{first:<34}{flags:<16}{vip['ring_size']:<8}{vip['health']}")
        for real in vip["reals"]:
            left = f"  -> {real['address']}"
            if args.stats:
                print(f"{left:<34}{real['packets']:>12}{real['bytes']:>14}")
            elif args.rate:
                print(f"{left:<34}{real['pps']:>12.0f}{real['bps'] / 8:>14.0f}")
            else:
                share = f"{real['share'] * 100:.1f}%"
                print(f"{left:<34}{vip['forward']:<8}{real['weight']:<8}{share:<8}{real['health']}")
    return EXIT_OK


def _endpoint(vip: dict[str, Any]) -> str:
    host = f"[{vip['address']}]" if ":" in vip["address"] else vip["address"]
    return f"{host}:{vip['port']}"


def _apply_one(
    lb: Balancer, vip: Vip, flags: VipFlags, ring_size: int, reals: Sequence[Real]
) -> None:
    """Make one VIP exactly so, through config.diff/apply (transactional per VIP)."""
    from . import config as cfg

    running = cfg.state_of_balancer(lb)
    wanted_vips = dict(running.vips)
    wanted_vips[vip] = cfg.VipState(flags, ring_size, tuple(reals))
    changes = cfg.diff(running, cfg.DataPlaneState(wanted_vips, None))
    failures = cfg.apply(lb, changes)
    if failures:
        raise CliError(str(failures[0].error))


def cmd_vip(args: argparse.Namespace) -> int:
    from .balancer import RING_SIZE_DEFAULT

    target = resolve_target(args)
    refuse_if_daemon(target, f"`xlb vip {args.action}`")
    vip: Vip = args.vip
    with open_balancer(target) as lb:
        exists = vip in lb.vips()
        if args.action == "add":
            if exists:
                raise CliError(f"VIP {vip} already exists (change it with `xlb vip edit`)")
            lb.add_vip(vip, args.flags or VipFlags.NONE, args.ring_size or RING_SIZE_DEFAULT)
            print(f"added VIP {vip}")
            return EXIT_OK
        if not exists:
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        if args.action == "del":
            if args.flags is not None or args.ring_size is not None:
                raise UsageError("`xlb vip del` takes no --flags or --ring-size")
            lb.remove_vip(vip)
            print(f"removed VIP {vip}")
            return EXIT_OK
        if args.flags is None and args.ring_size is None:
            raise UsageError("`xlb vip edit` needs --flags and/or --ring-size")
        flags = args.flags if args.flags is not None else lb.vip_flags(vip)
        ring_size = args.ring_size if args.ring_size is not None else lb.ring_size(vip)
        resized = ring_size != lb.ring_size(vip)
        _apply_one(lb, vip, flags, ring_size, lb.reals(vip))
        names = ",".join(flags.names()) or "none"
        note = " (ring rebuilt: the VIP's flows re-selected)" if resized else ""
        print(f"changed VIP {vip}: flags={names} ring_size={ring_size}{note}")
    return EXIT_OK


def cmd_real(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    refuse_if_daemon(target, f"`xlb real {args.action}`")
    vip: Vip = args.vip
    with open_balancer(target) as lb:
        if vip not in lb.vips():
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        current = {r.address: r for r in lb.reals(vip)}
        address = args.real
        if args.action == "add":
            if address in current:
                raise CliError(f"real {address} is already in VIP {vip} (use `xlb real edit`)")
            weight = 1 if args.weight is None else args.weight
            lb.add_real(vip, Real(address, weight, args.mac))
            print(f"added real {address} to {vip} (weight {weight})")
            return EXIT_OK
        if address not in current:
            raise CliError(f"real {address} is not in VIP {vip} (see `xlb list`)")
        if args.action == "del":
            lb.remove_real(vip, address)
            print(f"removed real {address} from {vip}")
            return EXIT_OK
        if args.weight is None and args.mac is None:
            raise UsageError("`xlb real edit` needs --weight and/or --mac")
        old = current[address]
        new = Real(
            address,
            old.weight if args.weight is None else args.weight,
            old.mac if args.mac is None else args.mac,
        )
        lb.set_reals(vip, [new if r.address == address else r for r in current.values()])
        drain = " (draining: no new flows)" if new.weight == 0 else ""
        print(f"changed real {address} of {vip}: weight {new.weight}{drain}")
    return EXIT_OK


def cmd_save(args: argparse.Namespace) -> int:
    from . import config as cfg

    target = resolve_target(args)
    base = cfg.load(args.base) if args.base else None
    with open_balancer(target) as lb:
        text = cfg.dumps(cfg.from_balancer(lb, base))
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from . import config as cfg

    wanted = cfg.load(args.file)
    if args.interface is None and args.pin_dir is None:
        args.interface = wanted.settings.interface
        args.pin_dir = wanted.settings.pin_dir
    if args.dry_run and not _pinned(args):
        return _plan_for_a_new_data_plane(args.file, wanted)
    target = resolve_target(args)
    if not args.dry_run:
        refuse_if_daemon(target, "`xlb apply`")
    with open_balancer(target) as lb:
        cfg.refuse_removing_every_vip(
            lb.vips(), wanted, allowed=args.allow_empty, how_to_allow="pass --allow-empty"
        )
        changes = cfg.diff(cfg.state_of_balancer(lb), cfg.desired_state(wanted))
        if not changes:
            print(f"no changes: {target.name} already runs {args.file}")
            return EXIT_OK
        for change in changes:
            print(f"{_change_sign(change)} {change}")
        if args.dry_run:
            print(f"{len(changes)} change(s); dry run, nothing applied")
            return EXIT_OK
        failures = cfg.apply(lb, changes)
    for failure in failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    if failures:
        return EXIT_RUNTIME
    print(f"applied {len(changes)} change(s)")
    return EXIT_OK


def _pinned(args: argparse.Namespace) -> bool:
    """Whether the data plane `args` names is pinned (so there is one to compare with)."""
    try:
        resolve_target(args)
    except CliError:
        return False
    return True


def _plan_for_a_new_data_plane(path: str, wanted: Any) -> int:
    """`apply --dry-run` where no data plane runs: the file is checked and the
    changes a new data plane would get are listed. Needs neither the binding
    nor root, so a config can be checked on any machine."""
    from . import config as cfg

    changes = cfg.diff(cfg.DataPlaneState(), cfg.desired_state(wanted))
    for change in changes:
        print(f"{_change_sign(change)} {change}")
    print(
        f"{len(changes)} change(s) for a new data plane (none is pinned); dry run, nothing applied"
    )
    return EXIT_OK


def _change_sign(change: Any) -> str:
    name = type(change).__name__
    return {"AddVip": "+", "RemoveVip": "-"}.get(name, "~")


def cmd_stats(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    count = args.count or (None if args.watch else 1)
    tty = sys.stdout.isatty() and args.watch and not args.json
    with open_balancer(target) as lb:
        before, counters_before = _vip_snapshot(lb), lb.counters()
        taken = time.monotonic()
        shown = 0
        try:
            while count is None or shown < count:
                time.sleep(args.interval)
                now, counters_now = _vip_snapshot(lb), lb.counters()
                elapsed = time.monotonic() - taken
                taken = time.monotonic()
                _add_rates(now, before, elapsed)
                totals = {
                    k: round(max(0, counters_now[k] - counters_before.get(k, 0)) / elapsed, 1)
                    for k in ("xdp_tx", "xdp_pass", "xdp_drop", "conn_hit", "conn_miss")
                }
                if args.json:
                    print(json.dumps({"time": round(time.time(), 3), "rates": totals, "vips": now}))
                else:
                    if tty:
                        sys.stdout.write("\x1b[H\x1b[2J")
                    _print_stats(target, now, totals, elapsed)
                sys.stdout.flush()
                before, counters_before = now, counters_now
                shown += 1
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _print_stats(
    target: Target, vips: list[dict[str, Any]], totals: dict[str, float], t: float
) -> None:
    print(
        f"{target.name}: forwarded {_human(totals['xdp_tx'])} pkt/s, passed "
        f"{_human(totals['xdp_pass'])} pkt/s, dropped {_human(totals['xdp_drop'])} pkt/s, "
        f"conn table {_human(totals['conn_hit'])} hit/s {_human(totals['conn_miss'])} miss/s "
        f"(over {t:.1f}s)"
    )
    print(f"{'VIP / real':<34}{'pkt/s':>10}{'bit/s':>10}{'packets':>14}{'bytes':>16}")
    for vip in vips:
        print(
            f"{vip['vip']:<34}{_human(vip['pps']):>10}{_human(vip['bps']):>10}"
            f"{vip['packets']:>14}{vip['bytes']:>16}"
        )
        for real in vip["reals"]:
            print(
                f"{'  -> ' + real['address']:<34}{_human(real['pps']):>10}"
                f"{_human(real['bps']):>10}{real['packets']:>14}{real['bytes']:>16}"
            )


def cmd_counters(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    from .balancer import counter_names

    with open_balancer(target) as lb:
        raw = lb.counters()
    # In the ABI's order: actions, reasons, connection table.
    counters = {name: raw[name] for _, name in sorted(counter_names().items()) if name in raw}
    if args.nonzero:
        counters = {k: v for k, v in counters.items() if v}
    if args.json:
        _print_json(counters)
        return EXIT_OK
    width = max((len(k) for k in counters), default=0)
    for name, value in counters.items():
        print(f"{name:<{width}}  {value:>14}")
    return EXIT_OK


def cmd_flows(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    vip: Vip | None = args.vip
    rows: list[dict[str, Any]] = []
    with open_balancer(target) as lb:
        if vip is not None and vip not in lb.vips():
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        for flow, real in lb.flows(limit=2**31):
            if vip is not None and not (
                flow.dst == vip.address
                and flow.proto == vip.proto
                and (vip.port == 0 or flow.dport == vip.port)
            ):
                continue
            rows.append(
                {
                    "protocol": flow.proto,
                    "client": str(flow.src),
                    "sport": flow.sport,
                    "vip": str(flow.dst),
                    "dport": flow.dport,
                    "real": str(real) if real is not None else None,
                }
            )
            if len(rows) >= args.limit:
                break
    if args.json:
        _print_json(rows)
        return EXIT_OK
    print(f"{'Prot':<5}{'Client':<42}{'VIP':<42}Real")
    for row in rows:
        client = _hostport(row["client"], row["sport"])
        dst = _hostport(row["vip"], row["dport"])
        owner = row["real"] or "(stale: real retired)"
        print(f"{row['protocol'].upper():<5}{client:<42}{dst:<42}{owner}")
    if not rows:
        print("(no flows in the connection table)")
    return EXIT_OK


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_real_setup(args: argparse.Namespace) -> int:
    from .realsetup import real_setup

    return real_setup(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(args)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import main as serve_main
    except ImportError as exc:
        raise CliError(f"`xlb serve` is not available: {exc}") from None
    return int(serve_main(args.args) or 0)


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab import main as lab_main

    return int(lab_main(args.args or ["list"]) or 0)


DELEGATES: dict[str, Callable[[argparse.Namespace], int]] = {"serve": cmd_serve, "lab": cmd_lab}


# =================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:  # their own parsers, --help included
        args = argparse.Namespace(args=argv[1:], func=DELEGATES[argv[0]], debug=False)
    else:
        args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    debug = getattr(args, "debug", False)
    try:
        return func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `xlb flows | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return EXIT_OK
    except (XlbError, OSError) as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_RUNTIME


def _one_line(exc: BaseException) -> str:
    """The error as one line, except config files, whose issues are listed."""
    from .config import ConfigFileError

    if isinstance(exc, ConfigFileError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"{exc.strerror}: {exc.filename or ''} (xlb needs root: BPF maps and links)".strip()
    if isinstance(exc, NotFoundError):
        return str(exc)
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first + (" (run with --debug for details)" if len(text) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
