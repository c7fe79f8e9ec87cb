"""Decap: the real-side program that strips the balancer's outer header.

A real behind xlb receives client packets wrapped in an outer IPv4/IPv6
header (IPIP, IP6IP6, IPv4-in-IPv6) or in GUE (UDP). Hosts without tunnel
devices (no ipip/ip6_tnl/fou modules) strip it with bpf/decap.bpf.c, either
at XDP (native or generic) or at tc ingress, and hand the inner packet to
the stack, which answers the client directly from the VIP (configured on
loopback):

    from xlb.decap import Decap

    with Decap("eth0") as decap:           # accept our own addresses as outer dst
        ...
        print(decap.counters())            # {'ipip': 12, 'ip6ip6': 3, ...}

Only packets whose outer destination is one of `addresses()` are stripped;
everything else passes untouched (and is counted by why).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from . import _abi, host
from ._bpf import BpfObject, Map, Program, TcAttachment, XdpLink, XdpMode, ffi, ifindex, lib
from .errors import ConfigError, NotFoundError, XlbError
from .model import AddressLike, IPAddress, check_port, parse_address

log = logging.getLogger("xlb.decap")

OBJECT_DIR = Path(__file__).resolve().parent / "_bpf_objects"
DECAP_OBJECT = OBJECT_DIR / "decap.bpf.o"
XDP_PROGRAM = "xlb_decap"
TC_PROGRAM = "xlb_decap_tc"
LINK_PIN_NAME = "link"
DEFAULT_GUE_PORT = 6080  # BalancerConfig's default: the two sides agree out of the box
MAX_DECAP_ADDRS = int(lib.XLB_LIMIT_MAX_DECAP_ADDRS)

DecapMode = Literal["native", "generic", "tc"]
DECAP_MODES: tuple[DecapMode, ...] = ("native", "generic", "tc")


def counter_names() -> dict[int, str]:
    """Index in `decap_counters` -> name, from enum xlb_decap_counter_index."""
    names = _abi.enum_names("enum xlb_decap_counter_index", "XLB_DCNT_")
    return {index: names[index] for index in sorted(names) if names[index] != "count"}


def local_addresses(interface: str | None = None) -> list[IPAddress]:
    """Global unicast addresses of this thread's network namespace.

    `interface`: only that interface's addresses; None: every interface but
    loopback (VIPs live on loopback and are inner, not outer, addresses).
    """
    try:
        entries = host.address_entries(interface)
    except host.IpError as exc:
        where = interface or "this host"
        raise NotFoundError(f"cannot list addresses of {where}: {exc.reason}") from None
    return [
        entry.address.ip
        for entry in entries
        if entry.scope == "global" and not (interface is None and entry.loopback)
    ]


def _addr_key(address: IPAddress) -> bytes:
    key = ffi.new("struct xlb_decap_addr *")
    _abi.set_addr(key.addr, address)
    key.family = _abi.FAMILY[address.version]
    return _abi.to_bytes(key)


def _parse_addr_key(raw: bytes) -> IPAddress:
    key = _abi.struct_from("struct xlb_decap_addr", raw)
    return _abi.get_addr(key.addr, int(key.family))


class Decap:
    """Load bpf/decap.bpf.o, program its maps and attach it to an interface.

    interface: where encapsulated packets arrive (looked up in the calling
        thread's network namespace); None loads without attaching (for
        BPF_PROG_TEST_RUN through `program`).
    addresses: outer destinations to strip; None = the global addresses of
        every non-loopback interface (see `local_addresses`).
    mode: "native" or "generic" XDP, or "tc" (clsact ingress).
    gue_port: UDP port of GUE packets to strip; 0 = do not strip GUE.
    pin_dir: pin maps (and, for XDP, the link) there so the program keeps
        running after this process exits and a later Decap adopts it.

    `close()` detaches what this instance attached (pinned XDP links stay
    unless `close(detach=True)`). In "tc" mode call it from the network
    namespace it was attached in: libbpf's netlink socket belongs to the
    calling thread's namespace (XDP links are fds and detach from anywhere).
    """

    def __init__(
        self,
        interface: str | None = None,
        *,
        addresses: Iterable[AddressLike] | None = None,
        mode: DecapMode = "native",
        gue_port: int = DEFAULT_GUE_PORT,
        pin_dir: str | Path | None = None,
        object_path: str | Path | None = None,
    ) -> None:
        if mode not in DECAP_MODES:
            raise ConfigError(f"invalid decap mode {mode!r}: one of {', '.join(DECAP_MODES)}")
        check_port(gue_port, "GUE port")
        if interface is not None:
            ifindex(interface)  # fail on a missing interface before loading anything
        wanted = (
            [parse_address(a, "decap address") for a in addresses]
            if addresses is not None
            else local_addresses()
            if interface is not None
            else []
        )
        if len(set(wanted)) > MAX_DECAP_ADDRS:
            raise ConfigError(f"{len(set(wanted))} decap addresses: at most {MAX_DECAP_ADDRS}")
        self.interface = interface
        self.mode: DecapMode = mode
        self.pin_dir = Path(pin_dir) if pin_dir is not None else None
        if self.pin_dir is not None:
            self.pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        program_name = TC_PROGRAM if mode == "tc" else XDP_PROGRAM
        self._obj = BpfObject(
            object_path or DECAP_OBJECT, pin_dir=self.pin_dir, only=[program_name]
        )
        self._prog: Program = self._obj.program(program_name)
        self._link: XdpLink | None = None
        self._tc: TcAttachment | None = None
        self._attached_here = False
        self._closed = False
        try:
            self.set_addresses(wanted)
            self.set_gue_port(gue_port)
            if interface is not None:
                self._attach(interface)
        except BaseException:
            self._obj.close()
            raise

    # ------------------------------------------------------------ lifecycle

    def _attach(self, interface: str) -> None:
        if self.mode == "tc":
            self._tc = TcAttachment(self._prog, interface, "ingress")
            self._attached_here = True
            return
        link_pin = self.pin_dir / LINK_PIN_NAME if self.pin_dir is not None else None
        xdp_mode: XdpMode = "native" if self.mode == "native" else "generic"
        self._link, self._attached_here = XdpLink.attach_or_adopt(
            self._prog, interface, xdp_mode, link_pin
        )
        if not self._attached_here:
            log.info("adopted the decap program pinned at %s", self.pin_dir)

    def close(self, detach: bool | None = None) -> None:
        """Release this handle. `detach`: None = only what this instance
        attached; True = detach and remove the pins; False = leave it running."""
        if self._closed:
            return
        self._closed = True
        if detach is None:
            detach = self._attached_here
        try:
            if self._tc is not None:
                if detach:
                    with contextlib.suppress(XlbError):  # the interface may be gone already
                        self._tc.detach()
                self._tc = None
            if self._link is not None:
                if detach:
                    with contextlib.suppress(XlbError):
                        self._link.detach()
                self._link.close()
                self._link = None
        finally:
            self._obj.close()
            if detach and self.pin_dir is not None:
                shutil.rmtree(self.pin_dir, ignore_errors=True)

    def __enter__(self) -> Decap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def program(self) -> Program:
        return self._prog

    def map(self, name: str) -> Map:
        """One of the program's maps: decap_addrs, decap_config, decap_counters."""
        return self._obj.map(name)

    # ------------------------------------------------------------ addresses

    def addresses(self) -> list[IPAddress]:
        """The outer destinations stripped, sorted (IPv4 first)."""
        found = [_parse_addr_key(k) for k in self.map("decap_addrs").keys()]
        return sorted(found, key=lambda a: (a.version, a.packed))

    def add_address(self, address: AddressLike) -> None:
        addr = parse_address(address, "decap address")
        self.map("decap_addrs").update(_addr_key(addr), _abi.u32(1))

    def remove_address(self, address: AddressLike) -> None:
        addr = parse_address(address, "decap address")
        key = _addr_key(addr)
        m = self.map("decap_addrs")
        if m.lookup(key) is None:
            raise NotFoundError(f"{addr} is not a decap address")
        m.delete(key)

    def set_addresses(self, addresses: Iterable[AddressLike]) -> None:
        """Make the set of stripped outer destinations exactly `addresses`
        (new ones are added before old ones leave)."""
        wanted = {parse_address(a, "decap address") for a in addresses}
        if len(wanted) > MAX_DECAP_ADDRS:
            raise ConfigError(f"{len(wanted)} decap addresses: at most {MAX_DECAP_ADDRS}")
        current = set(self.addresses())
        for addr in sorted(wanted - current, key=lambda a: (a.version, a.packed)):
            self.add_address(addr)
        for addr in current - wanted:
            self.map("decap_addrs").delete(_addr_key(addr))

    # --------------------------------------------------------------- config

    @property
    def gue_port(self) -> int:
        raw = self.map("decap_config").lookup(_abi.u32(0))
        if raw is None:
            return 0
        return _abi.ntohs(int(_abi.struct_from("struct xlb_decap_config", raw).gue_port))

    def set_gue_port(self, port: int) -> None:
        """UDP destination port of GUE packets to strip (0: none)."""
        check_port(port, "GUE port")
        value = ffi.new("struct xlb_decap_config *")
        value.gue_port = _abi.htons(port)
        self.map("decap_config").update(_abi.u32(0), _abi.to_bytes(value))

    # ------------------------------------------------------------- counters

    def counters(self) -> dict[str, int]:
        """Packets per outcome, summed over CPUs: ipip, ip6ip6, 4in6, gue,
        pass_not_encap, pass_foreign, drop_malformed, ..."""
        m = self.map("decap_counters")
        return {name: int(m.sum_percpu(_abi.u32(i))[0]) for i, name in counter_names().items()}

    def reset_counters(self) -> None:
        m = self.map("decap_counters")
        for index in counter_names():
            m.update(_abi.u32(index), bytes(m.stored_value_size))


__all__ = ["DECAP_MODES", "Decap", "DecapMode", "counter_names", "local_addresses"]
