"""The daemon's control socket: one JSON request, one JSON answer, per line.

    $ echo '{"op": "health"}' | socat - UNIX-CONNECT:/run/xlb/eth0.sock
    {"ok": true, "vips": {"10.100.0.1:80/tcp": {"healthy": true, ...}}}

`xlb serve` listens on `<lock_dir>/<interface>.sock` (mode 0600, root's:
what it tells and what it will do, such as draining, is root's business).
A request is a JSON object with an "op" and the op's own keys; the answer
is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. A connection may
carry several requests in turn. docs/deploy.md lists the ops.

`ControlServer` is the daemon's side (asyncio, ops given as handlers),
`request()` the client's (blocking, for the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import XlbError

log = logging.getLogger("xlb.control")

# A request is small ({"op": ...}); a line longer than this is not one.
MAX_REQUEST_BYTES = 64 * 1024
# struct ucred (SO_PEERCRED): pid, uid, gid.
_STRUCT_UCRED = struct.Struct("3i")

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(XlbError):
    """The daemon answered a request with an error."""


class DaemonUnreachable(ControlError):
    """No daemon listens on the control socket (none runs, or an older one)."""


def socket_path(lock_dir: Path, interface: str) -> Path:
    """Where the daemon serving `interface` listens: beside its lock."""
    return lock_dir / f"{interface}.sock"


# ================================================================ server


class ControlServer:
    """Answers requests on a Unix stream socket with `handlers[op](request)`.

    The socket is created 0600 (the umask is narrowed around bind(), so
    there is no moment it is wider), a stale socket from a daemon that died
    is replaced, anything else at the path is refused (a symbolic link
    would point root's socket, and its unlink on exit, somewhere else).
    """

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            previous = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(previous)
            self._inode = os.lstat(self.path).st_ino
            sock.listen(16)
            self._server = await asyncio.start_unix_server(
                self._serve_connection, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            sock.close()
            raise XlbError(f"cannot listen on the control socket {self.path}: {exc}") from None

    async def close(self) -> None:
        """Stop listening, end the open connections, remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        """Remove the socket if it is still the one bound (not a file put
        there since)."""
        if self._inode is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode:
                self.path.unlink()
        self._inode = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if not _peer_is_trusted(writer):
                await _send(writer, _error("permission denied: the control socket is root's"))
                return
            await self._answer_lines(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer_lines(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over the limit
                await _send(writer, _error(f"bad request: longer than {MAX_REQUEST_BYTES} bytes"))
                return
            if not line:
                return
            await _send(writer, await answer(line, self.handlers))


async def answer(line: bytes, handlers: Mapping[str, Handler]) -> dict[str, Any]:
    """The answer to one request line: the handler's, or an error that says
    what was wrong. A handler's failure is an answer too, never a crash."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(f"bad request: not JSON ({exc})")
    if not isinstance(request, dict):
        return _error('bad request: expected a JSON object such as {"op": "status"}')
    op = request.get("op")
    handler = handlers.get(op) if isinstance(op, str) else None
    if handler is None:
        return _error(f"unknown op {op!r}: one of {', '.join(sorted(handlers))}")
    try:
        result = await handler(request)
    except XlbError as exc:
        return _error(str(exc))
    except Exception as exc:  # a bug in a handler: logged, answered, the daemon goes on
        log.exception("control op %s failed", op)
        return _error(f"internal error in {op}: {exc!r}")
    return {"ok": True, **result}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, default=str).encode() + b"\n")
    await writer.drain()


def _peer_is_trusted(writer: asyncio.StreamWriter) -> bool:
    """Root, or the daemon's own user (a test running unprivileged)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _STRUCT_UCRED.size)
    _pid, uid, _gid = _STRUCT_UCRED.unpack(raw)
    return uid in (0, os.geteuid())


def _remove_stale_socket(path: Path) -> None:
    """Make room for the socket: the caller holds the interface's lock, so
    a socket already there was left by a daemon that died."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise XlbError(f"cannot use the control socket path {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise XlbError(
            f"{path} is a symbolic link: refusing to use it as the control socket "
            "(remove it; only root should be able to write its directory)"
        )
    if not stat.S_ISSOCK(st.st_mode):
        raise XlbError(f"{path} exists and is not a socket: refusing to replace it")
    path.unlink()


# ================================================================ client


def request(
    path: Path,
    op: str,
    timeout: float = 5.0,
    fields: Mapping[str, Any] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Send one request, return the daemon's answer (without "ok").

    The op's own keys come as `fields` or keywords (`fields` for keys named
    like this function's parameters: a drain's own "timeout").

    Raises DaemonUnreachable when nothing listens at `path`, ControlError
    when the daemon answers with an error or not at all within `timeout`.
    """
    message = json.dumps({"op": op, **(fields or {}), **more}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
                raise DaemonUnreachable(f"no daemon listens on {path}") from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(message)
            reply = _read_line(sock)
        except OSError as exc:  # a timeout included
            raise ControlError(f"no answer from the daemon on {path}: {exc}") from None
    return _parse_reply(reply, path)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


def _parse_reply(reply: bytes, path: Path) -> dict[str, Any]:
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ControlError(f"the daemon on {path} answered something else than JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the daemon on {path} answered something else than an object")
    if not answer.pop("ok", False):
        raise ControlError(str(answer.get("error", "the daemon refused, saying nothing")))
    return answer


__all__ = [
    "MAX_REQUEST_BYTES",
    "ControlError",
    "ControlServer",
    "DaemonUnreachable",
    "Handler",
    "answer",
    "request",
    "socket_path",
]
