"""`python -m xlb.lab cleanup|list` (also `xlb lab`): the lab's housekeeping."""

from __future__ import annotations

import argparse

from .state import cleanup_all, leftovers, running_labs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xlb.lab", description="xlb's namespace lab")
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("cleanup", help="remove what crashed labs left behind")
    clean.add_argument("--all", action="store_true", help="also labs whose owner is running")
    clean.add_argument("names", nargs="*", metavar="NAME", help="only these labs (default: all)")
    sub.add_parser("list", help="labs that are running and leftovers")
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        removed = cleanup_all(include_running=args.all, only=args.names or None)
        for item in removed:
            print(f"removed {item}")
        if not removed:
            print("nothing to clean up")
        return 0
    for state in running_labs():
        print(f"{state['name']}: pid {state['owner_pid']}, {len(state['namespaces'])} namespaces")
    live = {s["name"] for s in running_labs()}
    for item in leftovers():
        if not any(lab in item for lab in live):
            print(f"leftover: {item}")
    return 0
