"""`xlb node`: this node's part in the BGP fleet, asked of the running daemon.

    xlb node drain [--timeout S] [--quiet S]   withdraw every VIP, wait for no new flows
    xlb node undrain                            announce again what health says
    xlb node status                             what is announced, the sessions

They talk to `xlb serve` over its control socket (xlb/control.py); the data
plane keeps serving the flows it has throughout.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import control
from .common import EXIT_OK, EXIT_RUNTIME, CliError, resolve_target

# What the client adds to the drain's own timeout before giving up on the answer.
ANSWER_MARGIN_S = 10.0


def cmd_node(args: argparse.Namespace) -> int:
    target = resolve_target(args, require_pinned=False)
    if target.interface is None:
        raise CliError("which node? name its interface with -i IFACE")
    path = control.socket_path(target.lock_dir, target.interface)
    if args.action == "drain":
        return _drain(path, args)
    op = "status" if args.action == "status" else "undrain"
    reply = _ask(path, op, ANSWER_MARGIN_S)
    bgp = reply.get("bgp")
    if args.json:
        print(json.dumps(bgp, indent=2, sort_keys=True))
    else:
        print(describe(bgp))
    return EXIT_OK


def _drain(path: Any, args: argparse.Namespace) -> int:
    fields = {"timeout": args.timeout, "quiet": args.quiet}
    reply = _ask(path, "drain", args.timeout + ANSWER_MARGIN_S, fields)
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    elif reply.get("drained"):
        print(
            f"drained: every VIP withdrawn in {reply['withdrawn_s']:.3f} s; no new flow for "
            f"{args.quiet:g} s after {reply['waited_s']:.1f} s ({reply['new_flows']} new flows "
            "meanwhile); established flows are still served"
        )
    else:
        print(
            f"not drained: every VIP withdrawn, but new flows still arrived after "
            f"{reply['waited_s']:.1f} s ({reply['new_flows']} meanwhile): do the routers "
            "still send here?"
        )
    return EXIT_OK if reply.get("drained") else EXIT_RUNTIME


def _ask(path: Any, op: str, wait: float, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The daemon's answer; `fields` are the op's own (a drain's "timeout"
    is its own, not how long this client waits: `wait`)."""
    try:
        return control.request(path, op, wait, fields)
    except control.DaemonUnreachable:
        raise CliError(f"no `xlb serve` answers on {path}: is the daemon running?") from None
    except control.ControlError as exc:
        raise CliError(f"{op}: {exc}") from None


def describe(bgp: dict[str, Any] | None) -> str:
    """Announcement state in lines: per VIP, per neighbour."""
    if bgp is None:
        return "this daemon announces nothing (no [bgp] in its config)"
    mode = (
        "DRAINED"
        if bgp.get("draining")
        else ("announcing" if bgp.get("announcing") else "waiting for the first health results")
    )
    lines = [f"BGP ({bgp.get('announcer')}): {mode}"]
    for vip, announced in sorted(bgp.get("vips", {}).items()):
        lines.append(f"  {vip:<40}{'announced' if announced else 'withdrawn'}")
    for neighbor, state in sorted(bgp.get("neighbors", {}).items()):
        lines.append(f"  neighbor {neighbor:<31}{state}")
    return "\n".join(lines)


__all__ = ["cmd_node", "describe"]
