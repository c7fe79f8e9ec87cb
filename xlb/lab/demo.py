"""xlb at work in a namespace lab (`python3 build.py demo`).

One client, one balancer (XDP), four reals and a spare, IPv4 and IPv6:
how new flows spread, direct server return, weight changes, draining,
removing and adding a real while established connections keep working,
and a connection left idle for the whole run. Then, in a second lab, the
scale-out: two balancer nodes announcing the VIPs over BGP (ExaBGP) to a
BIRD router doing ECMP, one drained, then one killed, while the client's
connections go on. Every step checks what it prints; the exit status is
non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from statistics import mean
from typing import Any

from ..config import find_exabgp
from ..model import Vip
from ..xdp import ACTION_COUNTERS
from . import FIXED_SPORT_BASE, HeldConnection, Lab, Replies, Traffic, leftovers

PROBE_FLOWS = 400


class Demo:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.failed: list[str] = []
        self.services: list[Vip] = []
        self.checks = 0

    # ------------------------------------------------------------ output

    def check(self, ok: bool, text: str) -> bool:
        self.checks += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
        if not ok:
            self.failed.append(text)
        return ok

    @staticmethod
    def heading(text: str) -> None:
        print(f"\n== {text}")

    @staticmethod
    def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for n, row in enumerate(cells):
            line = "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            print(f"  {line.rstrip()}")
            if n == 0:
                print("  " + "  ".join("-" * w for w in widths))

    # ------------------------------------------------------------- steps

    def step_lab(self) -> None:
        lab = self.lab
        self.heading(
            f"1. Lab {lab.name}: {lab.topology}, balancer XDP {lab.xdp_mode}, reals decap "
            f"{lab.decap_mode} (built in {lab.setup_seconds:.1f} s)"
        )
        rows = [[n.role, n.ipv4, n.ipv6, n.mac] for n in [*lab.clients, *lab.balancers, *lab.reals]]
        self.table(["node", "IPv4", "IPv6", "MAC"], rows)
        self.services = lab.add_default_services(names=[r.role for r in lab.reals[:4]])
        print(f"  VIPs: {', '.join(str(v) for v in self.services)}")
        print(f"  reals in service: real1..real4 (each VIP, weight 1); spare: {lab.reals[4].role}")

    def spread(self, replies: Replies, vip: Vip) -> tuple[collections.Counter[str], int]:
        """Per-real counts and how many answers came from the predicted real."""
        predicted = self.lab.predict(vip, [r.sport for r in replies])
        matches = sum(1 for r in replies if r.ok and predicted[r.sport] == r.real)
        return replies.by_real(), matches

    def step_spread(self) -> None:
        lab = self.lab
        n = 300
        self.heading(f"2. New flows spread like the Maglev ring ({n} per column, each a new flow)")
        columns: list[tuple[str, Vip, Replies]] = []
        for family in (4, 6):
            columns.append(
                (
                    f"TCP v{family}",
                    lab.vip(family, "tcp"),
                    lab.client.http_get(lab.vip_address(family), lab.tcp_port, n),
                )
            )
        for family in (4, 6):
            columns.append(
                (
                    f"UDP v{family}",
                    lab.vip(family, "udp"),
                    lab.client.udp_exchange(lab.vip_address(family), lab.udp_port, n),
                )
            )
        shares = lab.ring_shares(lab.vip(4, "tcp"))
        counts = {label: self.spread(replies, vip) for label, vip, replies in columns}
        rows = []
        for real in sorted(shares):
            row: list[Any] = [real, f"{shares[real]:.1%}"]
            for label, _, _ in columns:
                c = counts[label][0][real]
                row.append(f"{c} ({c / n:.0%})")
            rows.append(row)
        self.table(["real", "ring share", *[c[0] for c in columns]], rows)
        failures = sum(len(r.failures) for _, _, r in columns)
        total = n * len(columns)
        matched = sum(m for _, m in counts.values())
        self.check(failures == 0, f"{total - failures}/{total} requests answered")
        self.check(
            matched == total, f"{matched}/{total} answers came from the real lb.predict() names"
        )
        worst = max(
            abs(counts[label][0][real] / n - shares[real])
            for label, _, _ in columns
            for real in shares
        )
        self.check(worst < 0.09, f"every real within {worst:.1%} of its ring share (limit 9%)")

    def step_dsr(self) -> None:
        lab = self.lab
        self.heading("3. Direct server return: replies go from the reals straight to the client")
        before = self.snapshot()
        r4 = lab.client.http_get(lab.vip4, lab.tcp_port, 100)
        r6 = lab.client.http_get(lab.vip6, lab.tcp_port, 100)
        u4 = lab.client.udp_exchange(lab.vip4, lab.udp_port, 100)
        time.sleep(0.05)
        after = self.snapshot()
        d = {k: after[k] - before[k] for k in before}
        self.table(
            ["packets (200 HTTP connections + 100 UDP exchanges)", "count"],
            [
                ["client sent, all to the VIPs", d["client_tx"]],
                ["balancer received (XDP, any action)", d["lb_seen"]],
                ["balancer encapsulated and sent back out (XDP_TX)", d["lb_tx"]],
                ["reals decapsulated (decap counters)", d["decap"]],
                ["reals sent (replies, to the client directly)", d["reals_tx"]],
                ["client received", d["client_rx"]],
            ],
        )
        ok = r4.ok and r6.ok and u4.ok
        self.check(ok, "every request answered")
        self.check(
            d["decap"] == d["lb_tx"], "each packet the balancer sent was decapsulated by a real"
        )
        # ARP/ND may add a handful of packets on either side.
        self.check(
            abs(d["lb_seen"] - d["client_tx"]) <= 6,
            f"the balancer saw only the client's packets ({d['lb_seen']} vs {d['client_tx']}), "
            f"none of the {d['client_rx']} replies",
        )
        self.check(
            abs(d["reals_tx"] - d["client_rx"]) <= 6,
            "what the reals sent is what the client received",
        )

    def snapshot(self) -> dict[str, int]:
        lab = self.lab
        counters = lab.balancer.counters()
        decap = lab.decap_counters()
        client_rx, client_tx = lab.client.link_stats()
        return {
            "client_tx": client_tx,
            "client_rx": client_rx,
            "lb_seen": sum(counters[action] for action in ACTION_COUNTERS.values()),
            "lb_tx": counters["xdp_tx"],
            "decap": sum(c["ipip"] + c["ip6ip6"] + c["4in6"] + c["gue"] for c in decap.values()),
            "reals_tx": sum(r.link_stats()[1] for r in lab.reals),
        }

    def step_changes(self, idle: HeldConnection) -> None:
        lab = self.lab
        lb = lab.balancer
        self.heading("4. Changing the reals while connections are established")
        held = lab.client.hold(lab.vip4, lab.tcp_port, 10) + lab.client.hold(
            lab.vip6, lab.tcp_port, 10
        )
        on = collections.Counter(h.real for h in held)
        # Drain and remove a real that holds established connections but not the idle one.
        candidates = [r for r in ("real4", "real3", "real2") if r != idle.real]
        victim = max(candidates, key=lambda r: on[r])
        print(f"  {len(held)} kept-alive HTTP connections open: {dict(sorted(on.items()))}")
        sports = list(range(FIXED_SPORT_BASE, FIXED_SPORT_BASE + PROBE_FLOWS))
        tcp4, tcp6 = lab.vip(4, "tcp"), lab.vip(6, "tcp")
        owners = self.probe(sports)
        share_rows: dict[str, list[str]] = collections.defaultdict(list)

        def shares() -> None:
            s = lab.ring_shares(tcp4)
            for real in [r.role for r in lab.reals]:
                share_rows[real].append(f"{s[real]:.0%}" if real in s else "-")

        shares()
        steps: list[tuple[str, Callable[[], None]]] = [
            (
                "weight real1 1 -> 3",
                lambda: self.each_vip(
                    lambda v: lb.set_weight(v, lab.real("real1").address(v.family), 3)
                ),
            ),
            (
                f"drain {victim} (weight 0)",
                lambda: self.each_vip(
                    lambda v: lb.set_weight(v, lab.real(victim).address(v.family), 0)
                ),
            ),
            (
                f"remove {victim}",
                lambda: self.each_vip(
                    lambda v: lb.remove_real(v, lab.real(victim).address(v.family))
                ),
            ),
            (
                "add real5",
                lambda: self.each_vip(
                    lambda v: lb.add_real(v, lab.backends(v.family, ["real5"])[0])
                ),
            ),
        ]
        rows = []
        for label, change in steps:
            if label.startswith("remove"):
                # Clients of the drained real finish first (that is what draining is for).
                for h in [h for h in held if h.real == victim]:
                    h.close()
                    held.remove(h)
            shares_before = [lab.ring_shares(v) for v in (tcp4, tcp6)]
            rings_before = [lb.ring(v) for v in (tcp4, tcp6)]
            change()
            shares_after = [lab.ring_shares(v) for v in (tcp4, tcp6)]
            # What must move at least: the shares that grew. What the ring moves:
            # the slots whose owner changed (Maglev is close to, not at, the minimum).
            minimum = mean(
                sum(max(0.0, share - before.get(real, 0.0)) for real, share in after.items())
                for before, after in zip(shares_before, shares_after, strict=True)
            )
            ring_moved = mean(
                sum(1 for a, b in zip(old, lb.ring(v), strict=True) if a != b) / len(old)
                for old, v in zip(rings_before, (tcp4, tcp6), strict=True)
            )
            expected = {**self.predict(tcp4, sports), **self.predict(tcp6, sports, v6=True)}
            survived = sum(1 for h in held if h.try_request().real == h.real)
            actual = self.probe(sports)
            moved = sum(1 for k in actual if actual[k] != owners[k]) / len(actual)
            exact = sum(1 for k in actual if actual[k] == expected[k])
            on_victim = sum(1 for h in held if h.real == victim)
            new_on_victim = sum(1 for k in actual if actual[k] == victim)
            rows.append(
                [
                    label,
                    f"{survived}/{len(held)}"
                    + (f" ({on_victim} on {victim})" if on_victim and "drain" in label else ""),
                    f"{moved:.1%}",
                    f"{ring_moved:.1%}",
                    f"{minimum:.1%}",
                    f"{exact}/{len(actual)}",
                ]
            )
            self.check(
                survived == len(held),
                f"{label}: {survived}/{len(held)} established connections kept their real",
            )
            self.check(
                exact == len(actual),
                f"{label}: {exact}/{len(actual)} new flows went where lb.predict() said",
            )
            self.check(
                abs(moved - ring_moved) <= 0.06,
                f"{label}: {moved:.1%} of the probe flows moved, "
                f"{ring_moved:.1%} of the ring did (minimum possible {minimum:.1%})",
            )
            if "drain" in label:
                self.check(
                    new_on_victim == 0, f"{label}: no new flow went to {victim} ({new_on_victim})"
                )
            owners = actual
            shares()
        print()
        self.table(
            [
                "change",
                "established ok",
                f"probe flows moved (of {2 * PROBE_FLOWS})",
                "ring moved",
                "minimum",
                "on predicted real",
            ],
            rows,
        )
        print()
        self.table(
            ["ring share (TCP v4)", "start", *[s[0].split(" (")[0] for s in steps]],
            [[real, *cols] for real, cols in sorted(share_rows.items())],
        )
        for h in held:
            h.close()

    def each_vip(self, fn: Callable[[Vip], None]) -> None:
        for vip in self.services:
            fn(vip)

    def predict(
        self, vip: Vip, sports: list[int], v6: bool = False
    ) -> dict[tuple[int, int], str | None]:
        return {(6 if v6 else 4, s): r for s, r in self.lab.predict(vip, sports).items()}

    def probe(self, sports: list[int]) -> dict[tuple[int, int], str | None]:
        """Owner of each probe flow (same 5-tuples every time), IPv4 and IPv6."""
        lab = self.lab
        out: dict[tuple[int, int], str | None] = {}
        for family in (4, 6):
            replies = lab.client.http_get(lab.vip_address(family), lab.tcp_port, sports=sports)
            out.update({(family, r.sport): r.real for r in replies})
        return out

    def step_idle(self, idle: HeldConnection, opened: float) -> None:
        self.heading("5. The connection left idle since the start")
        reply = idle.try_request()
        self.table(
            ["connection", "idle for", "first answer", "answer now"],
            [
                [
                    f"[{idle.dst}]:{idle.port} from port {idle.sport}",
                    f"{time.monotonic() - opened:.1f} s",
                    idle.real,
                    reply.real or reply.error,
                ]
            ],
        )
        self.check(reply.real == idle.real, "it still works and still reaches the same real")
        idle.close()

    def step_counters(self) -> None:
        lab = self.lab
        lb = lab.balancer
        self.heading("6. Balancer counters (lb.counters(), non-zero) and per-VIP stats")
        counters = lb.counters()
        self.table(["counter", "packets"], [[k, v] for k, v in counters.items() if v])
        print()
        self.table(
            ["VIP", "packets", "bytes"],
            [[str(v), lb.stats(v).packets, lb.stats(v).bytes] for v in self.services],
        )
        bad = {
            k: v for k, v in counters.items() if v and (k.startswith("drop") or k == "xdp_aborted")
        }
        self.check(not bad, f"no packet dropped or aborted {bad or ''}".rstrip())


def node_share(replies: Replies, lab: Lab, vip: Vip) -> dict[str, int]:
    """How many of the replies' flows each balancer node carried (its connection table)."""
    sports = {r.sport for r in replies}
    src = lab.client.address(vip.family)
    out = {node.role: 0 for node in lab.running_balancers()}
    for node in lab.running_balancers():
        assert node.balancer is not None
        for flow, _ in node.balancer.flows(limit=100_000):
            if flow.src == src and flow.dst == vip.address and flow.sport in sports:
                out[node.role] += 1
    return out


def step_scale_out(demo: Demo) -> str | None:
    """Two nodes behind BIRD: both carry new flows; lb2 drained (withdrawn)
    under traffic; lb1 killed (ExaBGP -9, XDP gone): held connections go on."""
    demo.heading("7. Scale-out: two balancer nodes announce the VIPs over BGP to a BIRD router")
    if shutil.which("bird") is None or find_exabgp("exabgp") is None:
        print("  skipped: needs BIRD 2 (bird2) and ExaBGP (the bgp extra)")
        return None
    with Lab(reals=3, balancers=2, router="bird") as lab:
        lab.add_default_services()
        print(f"  lab {lab.name} up in {lab.setup_seconds:.1f} s; the router's routes (BIRD):")
        for family in (4, 6):
            route = lab.vip_routes(family).replace("\t", "  ")
            print("    " + route.replace("\n", "\n    "))
        vips = [lab.vip(f, "tcp") for f in (4, 6)]
        held = [c for v in vips for c in lab.client.hold(v.address, v.port, 10)]
        targets = [(v.address, v.port, "tcp") for v in vips]
        rows = []
        for vip in vips:
            replies = lab.client.http_get(vip.address, vip.port, 100)
            rows.append([f"TCP v{vip.family}", *node_share(replies, lab, vip).values()])
            demo.check(
                replies.ok and all(rows[-1][1:]), f"IPv{vip.family}: new flows on both nodes"
            )
        demo.table(["100 new flows", "lb1", "lb2"], rows)

        with lab.client.traffic(targets, held) as drain:
            _wait_rounds(drain)
            started = time.monotonic()
            lab.withdraw("lb2")
            withdrawn = time.monotonic() - started
            _wait_rounds(drain)
        print(
            f"  drain lb2 (ExaBGP withdraw): the router's route without it in "
            f"{withdrawn * 1000:.0f} ms"
        )
        demo.check(drain.report.failed == 0, f"drain under traffic: {drain.report}")
        lab.announce("lb2")
        with lab.client.traffic(targets, held) as crash:
            _wait_rounds(crash)
            dropped = lab.crash_node("lb1")
            _wait_rounds(crash)
        held_failed = sum(1 for kind, _ in crash.report.failures if kind == "held")
        new_failed = crash.report.failed - held_failed
        print(
            f"  kill lb1 (ExaBGP -9, XDP detached): the router dropped it in "
            f"{dropped * 1000:.0f} ms; new connections failed meanwhile: {new_failed}"
        )
        demo.check(
            held_failed == 0, f"{len(held)} held connections went on through lb2: {crash.report}"
        )
        wrong = [c for c in held if c.try_request().real != c.real]
        demo.check(not wrong, f"every held connection still reaches its real ({len(wrong)} wrong)")
        for conn in held:
            conn.close()
        return lab.name


def _wait_rounds(traffic: Traffic, rounds: int = 5, timeout: float = 20.0) -> None:
    """Until the background traffic made `rounds` more rounds (a deadline, no fixed sleep)."""
    start = traffic.report.total
    per_round = len(traffic.targets) + len(traffic.held)
    deadline = time.monotonic() + timeout
    while traffic.report.total - start < rounds * per_round and time.monotonic() < deadline:
        time.sleep(0.01)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    print("xlb demo: an XDP L4 load balancer in network namespaces")
    with Lab(
        reals=5, topology=args.topology, xdp_mode=args.xdp_mode, decap_mode=args.decap_mode
    ) as lab:
        demo = Demo(lab)
        demo.step_lab()
        idle = lab.client.hold(lab.vip4, lab.tcp_port, 1)[0]
        idle_opened = time.monotonic()
        print(
            f"  opened one connection to {lab.vip4}:{lab.tcp_port} (answered by {idle.real}); "
            "it stays idle until step 5"
        )
        demo.step_spread()
        demo.step_dsr()
        demo.step_changes(idle)
        demo.step_idle(idle, idle_opened)
        demo.step_counters()
        name = lab.name
    names = [name]
    if args.scale_out:
        names.append(step_scale_out(demo) or name)
    left = [item for item in leftovers() if any(n in item for n in names)]
    print(f"\n== Teardown of {', '.join(sorted(set(names)))}")
    demo.check(
        not left, "no namespace, pin, state file or process left" + (f": {left}" if left else "")
    )
    elapsed = time.monotonic() - started
    if demo.failed:
        print(f"\n{len(demo.failed)} of {demo.checks} checks FAILED in {elapsed:.1f} s:")
        for text in demo.failed:
            print(f"  - {text}")
        return 1
    print(f"\nall {demo.checks} checks passed in {elapsed:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xlb.lab.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--topology", choices=["routed", "bridged"], default="routed")
    parser.add_argument("--xdp-mode", choices=["native", "generic"], default="native")
    parser.add_argument("--decap-mode", choices=["native", "generic", "tc"], default="native")
    parser.add_argument(
        "--no-scale-out", dest="scale_out", action="store_false", help="skip the BGP step"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
