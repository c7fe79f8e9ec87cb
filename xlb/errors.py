"""One exception hierarchy for everything xlb raises.

Kernel and libbpf failures keep their errno and the messages libbpf printed
while the call ran (the verifier log among them), so a caller can branch on
`err.errno` and a person can read `str(err)`.
"""

from __future__ import annotations

import errno as errno_codes
import os


class XlbError(Exception):
    """Base class of every error xlb raises on purpose."""


class ConfigError(XlbError, ValueError):
    """A value given to xlb is invalid (address, port, weight, size...)."""


class NotFoundError(XlbError, KeyError):
    """A VIP, real, map, program or interface that was named does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExistsError(XlbError):
    """Something that must be unique already exists (a VIP, a running daemon)."""


class CapacityError(XlbError):
    """A limit from the ABI header would be exceeded (VIPs, reals, ring size)."""


class BpfError(XlbError, OSError):
    """A libbpf or kernel call failed.

    `errno` is the positive errno; `libbpf_log` holds what libbpf printed
    during the failing call (for a load failure, the verifier's log).
    """

    def __init__(self, what: str, err: int, libbpf_log: str = "") -> None:
        err = abs(err)
        message = f"{what}: {os.strerror(err)} ({errno_codes.errorcode.get(err, err)})"
        if libbpf_log:
            message += "\n" + libbpf_log.rstrip()
        super().__init__(err, message)
        self.what = what
        self.libbpf_log = libbpf_log

    def __str__(self) -> str:
        return str(self.args[1])


class VerifierError(BpfError):
    """The kernel verifier rejected a program; the log says why."""


class MapKeyError(BpfError):
    """A map lookup or delete named a key that is not in the map."""


class AttachError(BpfError):
    """Attaching or detaching a program to an interface failed."""


class MapSizeError(XlbError, ValueError):
    """A key or value handed to a map does not have the map's size."""
