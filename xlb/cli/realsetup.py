"""`xlb real-setup`: make this host a real behind xlb.

What a backend needs to answer clients directly (direct server return):

1. the decap program (xlb.decap.Decap) on the interface the balancer's
   packets arrive on, stripping packets addressed to that interface's own
   addresses, pinned under /sys/fs/bpf/xlb-decap/<iface> so it keeps running
   after this command exits (tc mode: the tc filter stays by itself);
2. every VIP on loopback (/32, /128), so the stack accepts the inner packet
   and answers from the VIP;
3. ARP: arp_ignore=1, arp_announce=2 (all + the interface), so the real
   never answers ARP for a VIP on a segment it shares with the balancer;
4. rp_filter=2 (loose) on all + the interface: decapsulated packets come
   from any client address, which strict mode may reject.

All or nothing: each change records how to undo itself, and when a step
fails the changes already made are undone, newest first (VIPs off lo,
sysctls back to their old values, the decap program detached, its pins and
their contents as they were), so the host is left as it was found and the
error names the step that failed.

`--remove` undoes 1 and 2 (sysctls stay: they are harmless and may be
shared with other services).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import host
from ..errors import XlbError
from ..model import IPAddress
from ..pins import DECAP_PIN_ROOT
from .common import CliError, UsageError

if TYPE_CHECKING:
    from .._bpf import Map

#: What a decap pin directory holds (xlb.decap): the maps, and the XDP link.
DECAP_MAP_PINS = ("decap_addrs", "decap_config", "decap_counters")
LINK_PIN = "link"


# ========================================================== the undo log


class StepFailed(XlbError):
    """A step of real-setup failed; `step` says which, `cause` why."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause


@dataclass(slots=True)
class _Change:
    report: str  # the line printed on success ("" for none)
    undo: Callable[[], None]
    undone: str  # the line printed when it is undone


class Changes:
    """The changes made so far, each with its undo, undone newest first on failure."""

    def __init__(self) -> None:
        self._changes: list[_Change] = []
        self._closers: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one step; an error in it becomes StepFailed naming the step."""
        try:
            yield
        except (XlbError, OSError) as exc:
            raise StepFailed(name, exc) from exc

    def made(self, undo: Callable[[], None], undone: str, report: str = "") -> None:
        self._changes.append(_Change(report, undo, undone))

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run `fn` when real-setup ends, whether it succeeded or not (closing handles)."""
        self._closers.append(fn)

    def reports(self) -> list[str]:
        return [change.report for change in self._changes if change.report]

    def roll_back(self) -> list[str]:
        """Undo every change, newest first; what could not be undone, with why."""
        failed: list[str] = []
        while self._changes:
            change = self._changes.pop()
            try:
                change.undo()
            except (XlbError, OSError) as exc:
                failed.append(f"{change.undone}: {exc}")
            else:
                print(f"undone: {change.undone}", file=sys.stderr)
        return failed

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(XlbError, OSError):
                self._closers.pop()()


# ============================================================= the verb


def real_setup(args: argparse.Namespace) -> int:
    interface = args.interface or host.default_interface()
    if interface is None:
        raise UsageError("cannot tell which interface the balancer's packets arrive on: use -i")
    if host.link_info(interface) is None:
        raise CliError(f"there is no interface {interface} in this network namespace")
    pin_dir: Path = args.pin_dir or DECAP_PIN_ROOT / interface
    vips: list[IPAddress] = list(dict.fromkeys(args.vip))
    if not vips and not args.remove:
        raise UsageError("name at least one VIP this real serves: --vip ADDR")
    if args.remove:
        return _remove(interface, pin_dir, vips)
    changes = Changes()
    try:
        _attach_decap(args, interface, pin_dir, changes)
        _put_vips_on_lo(vips, changes)
        _set_sysctls(interface, vips, changes)
    except StepFailed as exc:
        not_undone = changes.roll_back()
        raise CliError(_failure(exc, not_undone)) from exc.cause
    except BaseException:
        changes.roll_back()
        raise
    finally:
        changes.close()
    done = changes.reports()
    for line in done:
        print(line)
    if not done:
        print(f"{interface} is already set up as a real for {', '.join(map(str, vips))}")
    print(f"check it end to end with: xlb doctor --role real -i {interface}")
    return 0


def _failure(exc: StepFailed, not_undone: list[str]) -> str:
    if isinstance(exc.cause, host.IpError):  # the step says what ran
        reason = exc.cause.reason
    else:
        reason = str(exc.cause).removeprefix(f"cannot {exc.step}: ")  # said once is enough
    if not_undone:
        return (
            f"real-setup failed to {exc.step}: {reason}; COULD NOT UNDO "
            f"{'; '.join(not_undone)} (undo those by hand)"
        )
    return f"real-setup failed to {exc.step}: {reason}; what it had changed is undone"


# ================================================================ steps


def _vip_prefix(vip: IPAddress) -> str:
    return f"{vip}/{32 if vip.version == 4 else 128}"


def _del_from_lo(prefix: str) -> None:
    host.ip("addr", "del", prefix, "dev", "lo")


def _put_vips_on_lo(vips: list[IPAddress], changes: Changes) -> None:
    on_lo = {a.ip for a in host.addresses("lo")}
    for vip in vips:
        if vip in on_lo:
            continue
        prefix = _vip_prefix(vip)
        flags = ["nodad"] if vip.version == 6 else []
        with changes.step(f"put VIP {vip} on lo"):
            host.ip("addr", "add", prefix, "dev", "lo", *flags)
        changes.made(
            functools.partial(_del_from_lo, prefix),
            undone=f"VIP {vip} off lo",
            report=f"VIP {vip} on lo",
        )


def _set_sysctls(interface: str, vips: list[IPAddress], changes: Changes) -> None:
    if any(v.version == 4 for v in vips):
        for scope in ("all", interface):
            for setting, value in (("arp_ignore", 1), ("arp_announce", 2)):
                _set_sysctl(host.conf_key(scope, setting), value, changes)
    for scope in ("all", interface):
        key = host.conf_key(scope, "rp_filter")
        if host.read_int(key) == 1:  # strict: loosen; 0 and 2 already accept
            _set_sysctl(key, 2, changes)


def _set_sysctl(key: host.SysctlKey, value: int, changes: Changes) -> None:
    with changes.step(f"set sysctl {key}={value}"):
        old = host.read_sysctl(key)
        if old is None:
            raise host.SysctlError(key, f"read sysctl {key}", errno.ENOENT)
        if old == str(value):
            return
        host.write_sysctl(key, value)
    changes.made(
        lambda: host.write_sysctl(key, old),
        undone=f"sysctl {key}={old} again",
        report=f"sysctl {key}={value} (was {old})",
    )


# ================================================================ decap


def _attach_decap(
    args: argparse.Namespace, interface: str, pin_dir: Path, changes: Changes
) -> None:
    from ..decap import Decap

    xdp = host.xdp_program(interface)
    if args.mode != "tc" and xdp is not None and xdp.name != "xlb_decap":
        raise CliError(
            f"{interface} already runs XDP program {xdp.name!r} (id {xdp.id}): "
            "detach it first, or use --mode tc"
        )
    decap_addrs = args.decap_addr or [
        a.ip for a in host.addresses(interface) if not a.ip.is_link_local
    ]
    if not decap_addrs:
        raise CliError(f"{interface} has no address to receive encapsulated packets on")
    tc_programs = host.tc_ingress_programs(interface) if args.mode == "tc" else []
    if any(p.get("name") == "xlb_decap_tc" for p in tc_programs):
        raise CliError(
            f"decap already runs at tc ingress of {interface}: "
            f"`xlb real-setup -i {interface} --remove` first to change it"
        )
    with changes.step(f"read the pins at {pin_dir}"):
        running = xdp.id if xdp is not None and xdp.name == "xlb_decap" else None
        pins = PinSnapshot(pin_dir, running)
    changes.on_close(pins.close)
    # Registered before the attach, so also undone when Decap fails half way (maps pinned).
    changes.made(
        pins.restore,
        undone=f"pins at {pin_dir} {'as they were' if pins.existed else 'removed'}",
    )
    if args.mode == "tc" and "clsact" not in host.qdisc_kinds(interface):
        changes.made(
            lambda: _delete_clsact(interface), undone=f"clsact qdisc of {interface} removed"
        )
    adopted = args.mode != "tc" and pins.holds(LINK_PIN)
    with changes.step(f"attach the decap program to {interface}"):
        decap = Decap(
            interface,
            addresses=decap_addrs,
            mode=args.mode,
            gue_port=args.gue_port,
            pin_dir=pin_dir,
        )
    changes.on_close(lambda: decap.close(detach=False))
    how = {"native": "native XDP", "generic": "generic XDP", "tc": "tc ingress"}[args.mode]
    # Adopted: the running program stays, the pins' restore puts its addresses back.
    changes.made(
        lambda: decap.close(detach=not adopted),
        undone=f"decap {'put back as it was' if adopted else 'detached'} on {interface}",
        report=(
            f"decap {'updated' if adopted else 'attached'} on {interface} ({how}), stripping "
            f"packets to {', '.join(map(str, decap_addrs))}; pinned at {pin_dir}"
        ),
    )


class PinSnapshot:
    """A decap pin directory as real-setup found it, to put back if it fails.

    Holds the pinned objects (so they survive the directory's removal and
    can be pinned again), the maps' contents (counters excepted) and the
    program the pinned link runs (adopting the link swaps in a new one).
    """

    def __init__(self, pin_dir: Path, running_program_id: int | None) -> None:
        from .._bpf import Map, XdpLink, check, lib

        self.pin_dir = pin_dir
        self.existed = pin_dir.is_dir()
        self.entries = sorted(p.name for p in pin_dir.iterdir()) if self.existed else []
        self.maps: dict[str, Map] = {}
        self.contents: dict[str, dict[bytes, bytes]] = {}
        self.link: XdpLink | None = None
        self.program_fd: int | None = None
        try:
            for name in self.entries:
                if name in DECAP_MAP_PINS:
                    self.maps[name] = Map.from_pin(pin_dir / name)
                    if not self.maps[name].is_percpu:
                        self.contents[name] = dict(self.maps[name].items())
                elif name == LINK_PIN:
                    self.link = XdpLink.open_pinned(pin_dir / name)
            if self.link is not None and running_program_id:
                self.program_fd = check(
                    lib.bpf_prog_get_fd_by_id(running_program_id),
                    f"opening the running decap program (id {running_program_id})",
                )
        except BaseException:
            self.close()
            raise

    def holds(self, name: str) -> bool:
        return name in self.entries

    def restore(self) -> None:
        if not self.existed:
            shutil.rmtree(self.pin_dir, ignore_errors=True)
            return
        self.pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in self.pin_dir.iterdir():
            if entry.name not in self.entries:
                entry.unlink()
        for name, pinned in [*self.maps.items(), (LINK_PIN, self.link)]:
            if pinned is not None and not (self.pin_dir / name).exists():
                pinned.pin(self.pin_dir / name)
        for name, contents in self.contents.items():
            _set_map_contents(self.maps[name], contents)
        if self.link is not None and self.program_fd is not None:
            from .._bpf import check, ffi, lib

            check(
                lib.bpf_link_update(self.link.fd, self.program_fd, ffi.NULL),
                "putting the decap program that ran before back on its link",
            )

    def close(self) -> None:
        for pinned in self.maps.values():
            pinned.close()
        if self.link is not None:
            self.link.close()
        if self.program_fd is not None:
            os.close(self.program_fd)
            self.program_fd = None


def _set_map_contents(bpf_map: Map, contents: dict[bytes, bytes]) -> None:
    for key in list(bpf_map.keys()):
        if key not in contents:
            bpf_map.delete(key)
    for key, value in contents.items():
        bpf_map.update(key, value)


def _delete_clsact(interface: str) -> None:
    host.tc("qdisc", "del", "dev", interface, "clsact")


# =============================================================== remove


def _remove(interface: str, pin_dir: Path, vips: list[IPAddress]) -> int:
    done: list[str] = []
    link_pin = pin_dir / LINK_PIN
    if link_pin.exists():
        from .._bpf import XdpLink

        with contextlib.suppress(XlbError):
            XdpLink.open_pinned(link_pin).detach()
            done.append(f"decap detached from {interface}")
    elif any(p.get("name") == "xlb_decap_tc" for p in host.tc_ingress_programs(interface)):
        with contextlib.suppress(host.IpError):
            host.tc("filter", "del", "dev", interface, "ingress")
            done.append(f"decap removed from tc ingress of {interface}")
    if pin_dir.exists():
        shutil.rmtree(pin_dir, ignore_errors=True)
        done.append(f"pins {pin_dir} removed")
    on_lo = {a.ip for a in host.addresses("lo")}
    for vip in vips:
        if vip in on_lo:
            with contextlib.suppress(host.IpError):  # gone meanwhile: off lo all the same
                _del_from_lo(_vip_prefix(vip))
            done.append(f"VIP {vip} off lo")
    for line in done or ["nothing to remove"]:
        print(line)
    return 0


__all__ = ["Changes", "PinSnapshot", "StepFailed", "real_setup"]
