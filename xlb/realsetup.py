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

`--remove` undoes 1 and 2 (sysctls stay: they are harmless and may be
shared with other services).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path
from typing import Any

from . import host
from .doctor import DECAP_PIN_ROOT, _run, addresses, default_interface, link_info, xdp_of
from .errors import XlbError


def _set_sysctl(key: host.SysctlKey, value: int) -> str | None:
    """Write a sysctl of this network namespace; a line for the report if it changed."""
    old = host.read_int(key)
    if old == value:
        return None
    host.write_sysctl(key, value)
    return f"sysctl {key}={value} (was {old})"


def _vip_prefix(vip: Any) -> str:
    return f"{vip}/{32 if vip.version == 4 else 128}"


def real_setup(args: argparse.Namespace) -> int:
    from .cli import CliError, UsageError

    interface = args.interface or default_interface()
    if interface is None:
        raise UsageError("cannot tell which interface the balancer's packets arrive on: use -i")
    if link_info(interface) is None:
        raise CliError(f"there is no interface {interface} in this network namespace")
    pin_dir: Path = args.pin_dir or DECAP_PIN_ROOT / interface
    vips = list(dict.fromkeys(args.vip))
    if not vips and not args.remove:
        raise UsageError("name at least one VIP this real serves: --vip ADDR")
    if args.remove:
        return _remove(interface, pin_dir, vips)
    done: list[str] = []
    _attach_decap(args, interface, pin_dir, done)
    on_lo = {a.ip for a in addresses("lo")}
    for vip in vips:
        if vip in on_lo:
            continue
        flags = ["nodad"] if vip.version == 6 else []
        out = _run(["ip", "addr", "add", _vip_prefix(vip), "dev", "lo", *flags])
        if out.returncode != 0:
            raise CliError(f"cannot put {vip} on lo: {out.stderr.strip()}")
        done.append(f"VIP {vip} on lo")
    if any(v.version == 4 for v in vips):
        for scope in ("all", interface):
            for key, value in (("arp_ignore", 1), ("arp_announce", 2)):
                line = _set_sysctl(host.conf_key(scope, key), value)
                if line:
                    done.append(line)
    for scope in ("all", interface):
        rp_filter = host.conf_key(scope, "rp_filter")
        if host.read_int(rp_filter) == 1:  # strict: loosen; 0 and 2 already accept
            line = _set_sysctl(rp_filter, 2)
            if line:
                done.append(line)
    for line in done:
        print(line)
    if not done:
        print(f"{interface} is already set up as a real for {', '.join(map(str, vips))}")
    print(f"check it end to end with: xlb doctor --role real -i {interface}")
    return 0


def _attach_decap(args: argparse.Namespace, interface: str, pin_dir: Path, done: list[str]) -> None:
    from .cli import CliError
    from .decap import Decap

    link = link_info(interface) or {}
    xdp = xdp_of(link)
    if args.mode != "tc" and xdp is not None and xdp["name"] != "xlb_decap":
        raise CliError(
            f"{interface} already runs XDP program {xdp['name']!r} (id {xdp['id']}): "
            "detach it first, or use --mode tc"
        )
    decap_addrs = args.decap_addr or [a.ip for a in addresses(interface) if not a.ip.is_link_local]
    if not decap_addrs:
        raise CliError(f"{interface} has no address to receive encapsulated packets on")
    if args.mode == "tc":
        from .doctor import tc_ingress_programs

        if any(p.get("name") == "xlb_decap_tc" for p in tc_ingress_programs(interface)):
            raise CliError(
                f"decap already runs at tc ingress of {interface}: "
                f"`xlb real-setup -i {interface} --remove` first to change it"
            )
    try:
        decap = Decap(
            interface,
            addresses=decap_addrs,
            mode=args.mode,
            gue_port=args.gue_port,
            pin_dir=pin_dir,
        )
    except XlbError as exc:
        raise CliError(f"cannot attach the decap program to {interface}: {exc}") from exc
    attached_here = decap._attached_here
    decap.close(detach=False)
    how = {"native": "native XDP", "generic": "generic XDP", "tc": "tc ingress"}[args.mode]
    verb = "attached" if attached_here else "updated"
    done.append(
        f"decap {verb} on {interface} ({how}), stripping packets to "
        f"{', '.join(map(str, decap_addrs))}; pinned at {pin_dir}"
    )


def _remove(interface: str, pin_dir: Path, vips: list[Any]) -> int:
    done: list[str] = []
    link_pin = pin_dir / "link"
    if link_pin.exists():
        from ._bpf import XdpLink

        with contextlib.suppress(XlbError):
            XdpLink.open_pinned(link_pin).detach()
            done.append(f"decap detached from {interface}")
    else:
        from .doctor import tc_ingress_programs

        if any(p.get("name") == "xlb_decap_tc" for p in tc_ingress_programs(interface)):
            out = _run(["tc", "filter", "del", "dev", interface, "ingress"])
            if out.returncode == 0:
                done.append(f"decap removed from tc ingress of {interface}")
    if pin_dir.exists():
        shutil.rmtree(pin_dir, ignore_errors=True)
        done.append(f"pins {pin_dir} removed")
    on_lo = {a.ip for a in addresses("lo")}
    for vip in vips:
        if vip in on_lo:
            _run(["ip", "addr", "del", _vip_prefix(vip), "dev", "lo"])
            done.append(f"VIP {vip} off lo")
    for line in done or ["nothing to remove"]:
        print(line)
    return 0


__all__ = ["real_setup"]
