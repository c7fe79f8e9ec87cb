"""sd_notify against real Unix datagram sockets the test binds (a path and
an abstract name), and the journal detection against real files."""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlb.sdnotify import Notifier, monotonic_usec, socket_address, stream_is_journal
from xlb.service import JournalFormatter, log_formatter


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket at a path, as systemd binds it, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    """The next datagram's KEY=VALUE lines."""
    lines = sock.recv(4096).decode().split("\n")
    return dict(line.split("=", 1) for line in lines)


def test_ready_reaches_a_path_socket_and_the_variable_leaves_the_environment(
    listener: tuple[socket.socket, str],
) -> None:
    sock, value = listener
    env = {"NOTIFY_SOCKET": value, "OTHER": "x"}
    notifier = Notifier.from_environment(env)
    assert env == {"OTHER": "x"}  # children (checks, BGP speakers) cannot notify
    assert notifier.ready("serving 2 VIPs")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 VIPs"


def test_an_abstract_name_is_reached() -> None:
    name = f"xlb-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping("bye")
        assert fields(sock) == {"STOPPING": "1", "STATUS": "bye"}


def test_reloading_carries_the_monotonic_clock(listener: tuple[socket.socket, str]) -> None:
    sock, value = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(value).reloading("reloading /etc/xlb/lb.toml")
    after = monotonic_usec()
    got = fields(sock)
    assert got["RELOADING"] == "1" and got["STATUS"] == "reloading /etc/xlb/lb.toml"
    assert before <= int(got["MONOTONIC_USEC"]) <= after


def test_a_status_with_newlines_stays_one_field(listener: tuple[socket.socket, str]) -> None:
    sock, value = listener
    assert Notifier(value).status("two\nlines\n READY=1")
    assert sock.recv(4096) == b"STATUS=two lines READY=1"


def test_without_systemd_nothing_is_sent() -> None:
    env: dict[str, str] = {}
    notifier = Notifier.from_environment(env)
    assert not notifier.enabled
    assert not notifier.ready("x")


@pytest.mark.parametrize("value", ["", "relative/path", "@", "vsock:2:1234"])
def test_addresses_this_module_cannot_speak_disable_it(value: str) -> None:
    assert socket_address(value) is None
    assert not Notifier.from_environment({"NOTIFY_SOCKET": value}).enabled


def test_unset_false_keeps_the_variable(listener: tuple[socket.socket, str]) -> None:
    _sock, value = listener
    env = {"NOTIFY_SOCKET": value}
    assert Notifier.from_environment(env, unset=False).enabled
    assert env == {"NOTIFY_SOCKET": value}


def test_a_gone_socket_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="xlb.sdnotify"):
        assert not notifier.ready("x")
        assert not notifier.status("y")
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


def test_stderr_is_the_journal_only_when_dev_and_inode_match(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as first, open(tmp_path / "b", "w") as second:
        st = os.fstat(first.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journal(first, env)
        assert not stream_is_journal(second, env)  # redirected elsewhere
        assert not stream_is_journal(first, {})
        assert not stream_is_journal(first, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(io.StringIO(), env)  # no file descriptor


def test_journal_lines_have_a_priority_and_no_timestamp() -> None:
    record = logging.LogRecord("xlb.service", logging.WARNING, "", 0, "event=real_down", (), None)
    assert (
        log_formatter("kv", journal=True).format(record) == "<4>WARNING xlb.service event=real_down"
    )
    plain = log_formatter("kv", journal=False).format(record)
    assert plain.endswith(" WARNING xlb.service event=real_down")
    assert plain[:4].isdigit()  # the asctime a terminal or a file needs
    assert isinstance(log_formatter("kv", journal=True), JournalFormatter)
    assert log_formatter("json", journal=True).format(record).startswith('{"time": ')


def test_a_receiver_that_stops_reading_never_blocks_the_sender(
    listener: tuple[socket.socket, str],
) -> None:
    """systemd busy or hung: its queue fills, and the daemon's event loop
    must go on (a blocking sendto hung `xlb serve` in the first version)."""
    _sock, value = listener
    notifier = Notifier(value)
    sent = [notifier.send(STATUS=f"message {n}") for n in range(5000)]
    assert sent[0] and not sent[-1]


def test_an_unchanged_status_is_sent_once(listener: tuple[socket.socket, str]) -> None:
    sock, value = listener
    notifier = Notifier(value)
    assert notifier.status("waiting")
    assert not notifier.status("waiting")
    assert notifier.status("serving")
    assert notifier.ready("serving")  # READY always goes out
    sock.setblocking(False)
    assert [sock.recv(4096) for _ in range(3)] == [
        b"STATUS=waiting",
        b"STATUS=serving",
        b"READY=1\nSTATUS=serving",
    ]
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
