"""The systemd notification protocol (sd_notify(3)), without libsystemd.

    notifier = Notifier.from_environment()   # takes NOTIFY_SOCKET out of os.environ
    notifier.status("applying the configuration")
    notifier.ready("serving 3 VIPs")

Under `Type=notify` systemd passes a Unix datagram socket in `NOTIFY_SOCKET`:
a path, or an abstract name written with a leading "@". Each message is one
datagram of newline-separated `KEY=VALUE` lines. Without `NOTIFY_SOCKET`
(run by hand, or as a library) every call does nothing and returns False.

Also here, because it is the same contract: whether stderr is the journal
(`JOURNAL_STREAM`, systemd.exec(5)), so log lines can leave their timestamp
to journald.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import IO

log = logging.getLogger("xlb.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
JOURNAL_STREAM = "JOURNAL_STREAM"


def socket_address(value: str) -> str | None:
    """The address to sendto() for a NOTIFY_SOCKET value: a filesystem path
    as it is, "@name" as the abstract name "\\0name"; None for what this
    module does not speak (empty, relative, vsock:)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what RELOADING=1 carries as
    MONOTONIC_USEC, so systemd orders the reload against its own clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """A field value: a newline would start a field of its own."""
    return " ".join(text.split())


class Notifier:
    """Sends notifications to one NOTIFY_SOCKET (or nowhere: `address` None).

    A failed send is logged once and never raised: a daemon keeps serving
    whether or not its supervisor listens. A send never blocks either (a
    receiver that stops reading fills its queue; the daemon's event loop
    must not wait on it), and an unchanged STATUS is not sent again.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._warned = False
        self._last_status: str | None = None

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """The notifier systemd asked for. `unset` removes NOTIFY_SOCKET from
        the environment so that no child (a command check, a BGP speaker)
        can speak for this daemon."""
        env = os.environ if environ is None else environ
        value = env.pop(NOTIFY_SOCKET, None) if unset else env.get(NOTIFY_SOCKET)
        if value is None:
            return cls(None)
        address = socket_address(value)
        if address is None:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket: not notifying systemd", value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram, one `KEY=value` line per field; whether it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._warned:  # once: a gone socket would log at every health change
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc)
            return False
        if "STATUS" in fields:
            self._last_status = str(fields["STATUS"])
        return True

    def status(self, text: str) -> bool:
        """STATUS=: the line `systemctl status` shows (not sent again while
        it says the same)."""
        if text == self._last_status:
            return False
        return self.send(STATUS=text)

    def ready(self, status: str) -> bool:
        """READY=1: start-up (or a reload) is complete."""
        return self.send(READY=1, STATUS=status)

    def reloading(self, status: str = "reloading the configuration") -> bool:
        """RELOADING=1 with MONOTONIC_USEC; a READY=1 must follow."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)


def stream_is_journal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal: JOURNAL_STREAM names its device and
    inode ("dev:inode"). A stream redirected elsewhere (a shell under
    systemd, a pipe) keeps the variable but not the inode."""
    env = os.environ if environ is None else environ
    value = env.get(JOURNAL_STREAM, "")
    dev, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(inode))
    except (OSError, ValueError):  # no fd (a StringIO), or no/garbled variable
        return False


__all__ = ["Notifier", "monotonic_usec", "socket_address", "stream_is_journal"]
