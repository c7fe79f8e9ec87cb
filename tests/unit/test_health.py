"""Health policy without a kernel: the rise/fall state machine, what a VIP
serves given its reals' health, target sharing, structured log lines."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import itertools
import json
import logging
import os
import pwd
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xlb import Real, Vip
from xlb.config import Check, CheckTiming, Settings, VipConfig
from xlb.health import (
    COMMAND_PATH,
    HealthChecker,
    JsonFormatter,
    ProbeResult,
    Target,
    TargetHealth,
    format_value,
    log_event,
    probe,
    target_for,
)
from xlb.model import IPAddress
from xlb.service import serving_reals

OK, FAIL = ProbeResult(True), ProbeResult(False, "ECONNREFUSED")


def run(health: TargetHealth, results: str) -> str:
    """Feed "+" (pass) / "-" (fail) results; return the state after each ("U"/"D")."""
    states = []
    for ch in results:
        health.record(OK if ch == "+" else FAIL)
        states.append("U" if health.up else "D")
    return "".join(states)


def test_goes_down_after_fall_failures_in_a_row_and_up_after_rise() -> None:
    health = TargetHealth(rise=2, fall=3)
    assert run(health, "--+---++-++") == "UUUUUDDUUUU"
    assert (health.transitions_down, health.transitions_up) == (1, 1)
    assert (health.probes_ok, health.probes_failed) == (5, 6)
    assert health.last_reason == "ECONNREFUSED"


@pytest.mark.parametrize(("rise", "fall"), [(2, 2), (3, 3), (2, 5)])
def test_an_alternating_real_never_flips(rise: int, fall: int) -> None:
    health = TargetHealth(rise=rise, fall=fall)
    assert set(run(health, "+-" * 50)) == {"U"}
    health = TargetHealth(rise=rise, fall=fall, up=False)
    assert set(run(health, "+-" * 50)) == {"D"}


def test_flips_are_at_least_rise_or_fall_probes_apart() -> None:
    health = TargetHealth(rise=3, fall=2)
    states = run(health, "--+--+++--+-++++---+++" * 3)
    flips = [i for i in range(1, len(states)) if states[i] != states[i - 1]]
    assert flips and all(b - a >= 2 for a, b in itertools.pairwise(flips))


# ------------------------------------------------------------ serving_reals

R1, R2, R3 = Real("10.0.0.1"), Real("10.0.0.2", 2), Real("10.0.0.3")
CHECK = Check("tcp")


def entry(on_failure: Any = "remove", all_down: Any = "keep") -> VipConfig:
    return VipConfig(
        Vip("10.100.0.1", 80), (R1, R2, R3), on_failure=on_failure, all_down=all_down, check=CHECK
    )


def down(*reals: Real) -> Callable[[IPAddress], bool]:
    addresses = {r.address for r in reals}
    return lambda address: address not in addresses


def drained(real: Real) -> Real:
    return Real(real.address, 0, real.mac)


def test_remove_leaves_down_reals_out() -> None:
    assert serving_reals(entry(), down(R2), (R1, R2, R3)) == ((R1, R3), True)


def test_drain_keeps_down_reals_at_weight_zero() -> None:
    result = serving_reals(entry(on_failure="drain"), down(R2), (R1, R2, R3))
    assert result == ((R1, drained(R2), R3), True)


@pytest.mark.parametrize("on_failure", ["remove", "drain"])
def test_all_down_keep_keeps_the_reals_that_served_last(on_failure: str) -> None:
    # R3 died first (already out of the data plane), then R1 and R2.
    running = (R1, R2) if on_failure == "remove" else (R1, R2, drained(R3))
    reals, healthy = serving_reals(entry(on_failure=on_failure), down(R1, R2, R3), running)
    assert not healthy
    expected = (R1, R2) if on_failure == "remove" else (R1, R2, drained(R3))
    assert reals == expected


def test_all_down_keep_with_nothing_serving_keeps_every_real() -> None:
    reals, healthy = serving_reals(entry(), down(R1, R2, R3), ())
    assert (reals, healthy) == ((R1, R2, R3), False)


def test_all_down_drop_serves_nothing_new() -> None:
    assert serving_reals(entry(all_down="drop"), down(R1, R2, R3), (R1,)) == ((), False)
    drain = entry(all_down="drop", on_failure="drain")
    reals, healthy = serving_reals(drain, down(R1, R2, R3), (R1,))
    assert (reals, healthy) == ((drained(R1), drained(R2), drained(R3)), False)


def test_up_reals_with_weight_zero_do_not_make_a_vip_healthy() -> None:
    config = VipConfig(Vip("10.100.0.1", 80), (Real("10.0.0.1", 0),), check=CHECK)
    assert serving_reals(config, lambda a: True, ())[1] is False


def test_unchecked_vip_serves_every_real() -> None:
    config = VipConfig(Vip("10.100.0.1", 80), (R1, R2))

    def is_up(address: IPAddress) -> bool:
        return True

    assert serving_reals(config, is_up, ()) == ((R1, R2), True)


# ---------------------------------------------------------------- targets


def test_same_real_and_check_on_two_vips_share_a_target() -> None:
    check = Check("http", port=80, timing=CheckTiming(interval=1, timeout=1))
    web = VipConfig(Vip("10.100.0.1", 80), (R1,), check=check)
    tls = VipConfig(Vip("10.100.0.1", 443), (R1,), check=check)
    other = VipConfig(Vip("10.100.0.1", 8080), (R1,), check=Check("http", port=80))
    settings = Settings()
    assert target_for(web, R1, settings) == target_for(tls, R1, settings)
    assert target_for(web, R1, settings) != target_for(other, R1, settings)  # other timing


def test_target_defaults_to_the_vip_and_follows_overrides() -> None:
    config = VipConfig(Vip("10.100.0.1", 53, "udp"), (R1,), encapsulation="gue", check=Check("udp"))
    target = target_for(config, R1, Settings())
    assert target is not None
    assert (str(target.address), target.port, target.gue) == ("10.100.0.1", 53, True)
    direct = VipConfig(config.vip, (R1,), check=Check("tcp", via_vip=False, port=22))
    target = target_for(direct, R1, Settings())
    assert target is not None
    assert (target.address, target.port, target.gue) == (R1.address, 22, False)
    assert target_for(VipConfig(config.vip, (R1,)), R1, Settings()) is None


# ---------------------------------------------------------------- logging


def test_log_event_is_one_key_value_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("xlb.test")
    with caplog.at_level(logging.INFO, logger="xlb.test"):
        log_event(logger, "real_down", real="10.0.0.2", reason='status 503 "x"', failures=2)
    expected = 'event=real_down real=10.0.0.2 reason="status 503 \\"x\\"" failures=2'
    assert caplog.messages == [expected]
    line = JsonFormatter().format(caplog.records[0])
    data = json.loads(line)
    assert data["event"] == "real_down" and data["failures"] == 2 and data["level"] == "info"


@pytest.mark.parametrize(("value", "text"), [("a", "a"), ("", '""'), ("a b", '"a b"'), (3, "3")])
def test_format_value_quotes_only_when_needed(value: object, text: str) -> None:
    assert format_value(value) == text


def test_a_reload_that_retimes_a_check_keeps_a_down_real_down() -> None:
    slow = Check("command", timing=CheckTiming(interval=60, timeout=1), command=("true",))
    retimed = Check("command", timing=CheckTiming(interval=30, timeout=1), command=("true",))
    entry_slow = VipConfig(Vip("10.100.0.1", 80), (R1, R2), check=slow)
    entry_retimed = VipConfig(Vip("10.100.0.1", 80), (R1, R2, R3), check=retimed)

    async def scenario() -> tuple[bool, bool, bool]:
        checker = HealthChecker(None, lambda target, health: None)
        old = {r: target_for(entry_slow, r, Settings()) for r in (R1, R2)}
        checker.set_targets(t for t in old.values() if t is not None)
        checker.health(old[R1]).up = False  # type: ignore[arg-type]
        new = {r: target_for(entry_retimed, r, Settings()) for r in (R1, R2, R3)}
        checker.set_targets(t for t in new.values() if t is not None)
        states = tuple(checker.is_up(new[r]) for r in (R1, R2, R3))  # type: ignore[arg-type]
        await checker.close()
        return states  # type: ignore[return-value]

    assert asyncio.run(scenario()) == (False, True, True)  # R3 is new: it starts up


# ------------------------------------------------------------ HTTP probes


class _HttpReplies(http.server.BaseHTTPRequestHandler):
    """A real HTTP/1.1 server; each path answers one way (see `_ROUTES`)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        _ROUTES[self.path](self)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def chunked(self, status: int, *chunks: bytes) -> None:
        """Each chunk written and flushed on its own, as a streaming server does."""
        self.send_response(status)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a prober that read enough hangs up (/late): no traceback on stderr

    def sized(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def until_close(self, body: bytes) -> None:
        """No length, no chunks: the body ends when the connection does."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        self.close_connection = True


_ROUTES: dict[str, Callable[[_HttpReplies], None]] = {
    "/split": lambda h: h.chunked(200, b'{"status": "hea', b'lthy", "ok": 1}'),
    "/split-sick": lambda h: h.chunked(200, b'{"status": "hea', b'ling"}'),
    # 26 bytes: the chunk-size line is "1a", which the body does not contain.
    "/framing": lambda h: h.chunked(200, b"x" * 26),
    "/sized": lambda h: h.sized(200, b"all healthy here"),
    "/until-close": lambda h: h.until_close(b"healthy, no length"),
    "/503": lambda h: h.sized(503, b"healthy but busy"),
    "/late": lambda h: h.chunked(200, b"x" * 70_000, b"healthy"),  # past the 64 KiB read
}


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpReplies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def http_probe(port: int, path: str, expect_body: str | None) -> ProbeResult:
    check = Check(
        "http",
        timing=CheckTiming(interval=5, timeout=5),
        via_vip=False,
        path=path,
        expect_body=expect_body,
    )
    local = ipaddress.ip_address("127.0.0.1")
    return asyncio.run(probe(Target(local, local, port, check), 0))


@pytest.mark.parametrize(
    ("path", "expect_body", "ok"),
    [
        ("/split", "healthy", True),  # the text spans two chunks
        ("/split-sick", "healthy", False),
        ("/framing", "1a", False),  # only the chunk framing holds the text
        ("/framing", "x" * 26, True),
        ("/sized", "healthy", True),
        ("/until-close", "healthy", True),
        ("/sized", None, True),
        ("/503", "healthy", False),
        ("/late", "healthy", False),  # only the first 64 KiB of the body count
    ],
)
def test_http_probe_matches_the_decoded_body(
    http_port: int, path: str, expect_body: str | None, ok: bool
) -> None:
    result = http_probe(http_port, path, expect_body)
    assert result.ok is ok, result


def test_http_probe_reasons_name_what_failed(http_port: int) -> None:
    assert http_probe(http_port, "/503", None) == ProbeResult(False, "status 503")
    assert http_probe(http_port, "/split-sick", "healthy") == ProbeResult(
        False, "body lacks 'healthy'"
    )


def test_http_probe_of_something_that_is_not_http_fails() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = http_probe(port, "/", None)
        thread.join(5)
    assert not result.ok and result.reason.startswith("not an HTTP response"), result


# --------------------------------------------------------- command checks


def test_a_command_check_gets_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATH, HOME and the probe's XLB_* variables: none of the daemon's own."""
    monkeypatch.setenv("XLB_TEST_SECRET", "the daemon's environment")
    out = tmp_path / "seen.json"
    dump = (
        "import json, os, sys\n"
        "json.dump({'env': dict(os.environ), 'cwd': os.getcwd()}, open(sys.argv[1], 'w'))"
    )
    check = Check(
        "command",
        timing=CheckTiming(5, 5),
        via_vip=False,
        command=(sys.executable, "-c", dump, str(out)),
    )
    real, vip = ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.100.0.1")
    assert asyncio.run(probe(Target(real, vip, 80, check), 0x786C0003)) == ProbeResult(True)
    seen = json.loads(out.read_text())
    # The child Python sets LC_CTYPE itself when it finds the C locale (PEP 538).
    assert seen["env"].pop("LC_CTYPE", "C.UTF-8") == "C.UTF-8"
    assert seen["env"] == {
        "PATH": COMMAND_PATH,
        "HOME": pwd.getpwuid(os.getuid()).pw_dir,
        "XLB_VIP": "10.100.0.1",
        "XLB_PORT": "80",
        "XLB_REAL": "10.0.0.2",
        "XLB_MARK": str(0x786C0003),
    }
    assert seen["cwd"] == "/"
    assert COMMAND_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
