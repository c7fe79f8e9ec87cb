"""QUIC connections that migrate, through the lab's balancer.

Each real runs xlb/lab/quicserver.py: aioquic issuing QUIC-LB connection
IDs with the server id the balancer gave that real. The client downloads
over one connection and migrates four times on the way (a new socket on a
new port, the next connection ID the server gave it), each time to a port
whose 5-tuple the balancer's ring hashes to another real than the one
serving the connection (`Balancer.predict`). On the QUIC VIP the download
completes on the real it started on, which saw the connection from five
client addresses; on a plain UDP VIP (the control) the migrated packets
reach a real that cannot decrypt them and the download stops.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waits import eventually

from xlb import Flow, Vip, VipFlags
from xlb.lab import FIXED_SPORT_BASE, Lab
from xlb.lab.quic import QUICSERVER, Download, download, make_certificate, server_stats

QUIC_PORT, PLAIN_PORT = 443, 4433
SIZE = 2_000_000
MIGRATE_AT = [300_000, 700_000, 1_100_000, 1_500_000]
# A working migration never stalls this long, however busy the machine;
# the control's stall is for good (nothing reaches the connection's real).
STALL_S = 20.0
CONTROL_STALL_S = 5.0


@dataclass
class QuicLab:
    lab: Lab
    cafile: Path
    controls: dict[str, Path]  # real name -> its quicserver's control socket

    def vip(self, port: int) -> Vip:
        return Vip(self.lab.vip4, port, "udp")

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: server_stats(path) for name, path in self.controls.items()}

    def port_away_from(self, vip: Vip, server: str, used: set[int]) -> int:
        """A client port, unused so far, whose 5-tuple the ring sends to
        another real than `server` (so only the CID can keep it there)."""
        client = self.lab.client.ipv4
        for port in range(FIXED_SPORT_BASE, 32768):
            flow = Flow(client, vip.address, port, vip.port, "udp")
            if port not in used and self.lab.name_of(self.lab.balancer.predict(flow)) != server:
                used.add(port)
                return port
        raise AssertionError("no port hashes away from the server")

    def download(self, vip: Vip, stall: float) -> Download:
        used: set[int] = set()

        def port_for(server: str, _index: int) -> int:
            return self.port_away_from(vip, server, used)

        coro = download(vip.address, vip.port, SIZE, self.cafile, migrate_at=MIGRATE_AT,
                        port_for=port_for, stall_timeout=stall)  # fmt: skip
        return self.lab.client.call(coro, timeout=stall * 6 + 120)


@pytest.fixture(scope="module")
def quic_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuicLab]:
    """3 reals behind a QUIC VIP (:443) and a plain UDP VIP (:4433), the
    same QUIC server on each real answering both."""
    cert, key = make_certificate(tmp_path_factory.mktemp("quic"))
    with Lab(reals=3) as lab:
        quic, plain = Vip(lab.vip4, QUIC_PORT, "udp"), Vip(lab.vip4, PLAIN_PORT, "udp")
        reals = lab.backends(4)
        lab.balancers_do(lambda lb: (lb.add_vip(quic, VipFlags.QUIC), lb.set_reals(quic, reals)))
        lab.balancers_do(lambda lb: (lb.add_vip(plain), lb.set_reals(plain, reals)))
        controls = {}
        for real in lab.reals:
            server_id = lab.balancer.server_ids(quic)[real.ipv4]
            controls[real.role] = lab.run_dir / f"{real.role}-quic.sock"
            argv = [sys.executable, "-P", str(QUICSERVER), "--name", real.role,
                    "--server-id", str(server_id), "--listen", str(lab.vip4),
                    "--port", str(QUIC_PORT), "--port", str(PLAIN_PORT), "--cert", str(cert),
                    "--key", str(key), "--control", str(controls[real.role])]  # fmt: skip
            lab.start_real_process(real, argv, "quic")
        yield QuicLab(lab, cert, controls)


def test_a_migrating_connection_stays_on_its_real(quic_lab: QuicLab) -> None:
    vip = quic_lab.vip(QUIC_PORT)
    before_stats, before = quic_lab.stats(), quic_lab.lab.balancer.counters()
    result = quic_lab.download(vip, STALL_S)
    assert result.complete, result
    print(f"QUIC download of {SIZE} octets with 4 migrations: {result.seconds:.2f} s")
    assert len(result.migrations) == len(MIGRATE_AT)
    assert len({m.local_port for m in result.migrations}) == len(MIGRATE_AT)
    assert all(m.cid_before != m.cid_after for m in result.migrations)
    stats = quic_lab.stats()
    served = stats[result.server]
    assert served["requests"] - before_stats[result.server]["requests"] == 1
    assert served["most_addresses"] >= 1 + len(MIGRATE_AT)  # it followed every move
    assert all(s["foreign_datagrams"] == 0 for s in stats.values())  # nothing misrouted
    after = quic_lab.lab.balancer.counters()
    assert after["quic_routed_by_cid"] - before["quic_routed_by_cid"] > 100
    assert after["quic_initial"] > before["quic_initial"]


def test_control_without_cid_routing_the_migration_breaks(quic_lab: QuicLab) -> None:
    vip = quic_lab.vip(PLAIN_PORT)
    before = quic_lab.stats()
    result = quic_lab.download(vip, CONTROL_STALL_S)
    assert not result.complete, result
    assert result.received >= MIGRATE_AT[0] and len(result.migrations) == 1, result
    assert "no progress" in result.error
    # the migrated packets reached another real, which could not use them
    others = [name for name in quic_lab.controls if name != result.server]

    def foreign() -> int:
        stats = quic_lab.stats()
        return sum(stats[n]["foreign_datagrams"] - before[n]["foreign_datagrams"] for n in others)

    assert eventually(foreign, lambda n: n > 0) > 0
