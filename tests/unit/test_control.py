"""The control socket: a real Unix stream socket in a temporary directory,
the blocking client against the asyncio server, and the answers to bad
requests."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from xlb.control import (
    MAX_REQUEST_BYTES,
    ControlError,
    ControlServer,
    DaemonUnreachable,
    Handler,
    answer,
    request,
    socket_path,
)
from xlb.errors import XlbError


async def echo(req: Mapping[str, Any]) -> dict[str, Any]:
    return {"echo": dict(req)}


async def refuse(req: Mapping[str, Any]) -> dict[str, Any]:
    raise XlbError("not now")


async def crash(req: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": 1 // int(req.get("divisor", 0))}


HANDLERS: dict[str, Handler] = {"echo": echo, "refuse": refuse, "crash": crash}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{not json\n", "bad request: not JSON"),
        (b"\xff\xfe\n", "bad request: not JSON"),
        (b"[1, 2]\n", "bad request: expected a JSON object"),
        (b'{"no_op": 1}\n', "unknown op None: one of crash, echo, refuse"),
        (b'{"op": "nope"}\n', "unknown op 'nope'"),
        (b'{"op": 3}\n', "unknown op 3"),
        (b'{"op": "refuse"}\n', "not now"),
        (b'{"op": "crash"}\n', "internal error in crash: ZeroDivisionError"),
    ],
)
def test_a_bad_request_is_answered_with_an_error(line: bytes, error: str) -> None:
    reply = run(answer(line, HANDLERS))
    assert reply["ok"] is False
    assert reply["error"].startswith(error), reply


def test_a_good_request_gets_the_handlers_fields() -> None:
    reply = run(answer(b'{"op": "echo", "x": [1]}\n', HANDLERS))
    assert reply == {"ok": True, "echo": {"op": "echo", "x": [1]}}


# ------------------------------------------------------------------- server


async def with_server(path: Path, client: Any) -> Any:
    """Start a server at `path`, run the blocking `client()` in a thread, close."""
    server = ControlServer(path, HANDLERS)
    await server.start()
    try:
        return await asyncio.to_thread(client)
    finally:
        await server.close()


def test_round_trip_mode_0600_and_the_socket_removed_on_close(tmp_path: Path) -> None:
    path = socket_path(tmp_path, "eth0")
    assert path == tmp_path / "eth0.sock"

    def client() -> tuple[os.stat_result, dict[str, Any]]:
        return os.lstat(path), request(path, "echo", value="x")

    st, reply = run(with_server(path, client))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert reply == {"echo": {"op": "echo", "value": "x"}}
    assert not path.exists()


def test_a_connection_carries_several_requests_and_survives_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"

    def client() -> list[dict[str, Any]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b'{"op": "echo"}\ngarbage\n{"op": "refuse"}\n{"op": "echo", "n": 2}\n')
            data = b""
            while data.count(b"\n") < 4:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    replies = run(with_server(path, client))
    assert [r["ok"] for r in replies] == [True, False, False, True]
    assert replies[3]["echo"]["n"] == 2


def test_an_overlong_request_is_refused_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"

    def client() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b'{"op": "echo", "pad": "' + b"x" * (MAX_REQUEST_BYTES + 10))
            line = sock.makefile("rb").readline()
        return dict(json.loads(line))

    reply = run(with_server(path, client))
    assert reply["ok"] is False and "longer than" in reply["error"]


def test_client_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable):
        request(tmp_path / "none.sock", "status")
    path = tmp_path / "x.sock"

    def client() -> str:
        try:
            request(path, "refuse")
        except DaemonUnreachable:
            return "unreachable"
        except ControlError as exc:
            return str(exc)
        return "no error"

    assert run(with_server(path, client)) == "not now"


def test_a_symlink_at_the_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "eth0.sock"
    path.symlink_to(victim)
    with pytest.raises(XlbError, match="symbolic link"):
        run(ControlServer(path, HANDLERS).start())
    assert path.is_symlink() and victim.read_text() == "keep"


def test_a_file_at_the_path_is_refused_a_stale_socket_replaced(tmp_path: Path) -> None:
    path = tmp_path / "eth0.sock"
    path.write_text("not a socket")
    with pytest.raises(XlbError, match="not a socket"):
        run(ControlServer(path, HANDLERS).start())
    assert path.read_text() == "not a socket"

    path.unlink()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a daemon that died left its socket
    stale.close()
    assert run(with_server(path, lambda: request(path, "echo"))) == {"echo": {"op": "echo"}}


def test_close_leaves_a_file_that_replaced_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "eth0.sock"

    async def scenario() -> None:
        server = ControlServer(path, HANDLERS)
        await server.start()
        path.unlink()
        path.write_text("someone else's")
        await server.close()

    run(scenario())
    assert path.read_text() == "someone else's"
