"""The `quic_servers` map: which real each server id of a QUIC VIP names.

One entry per real of every VIP with `VipFlags.QUIC`: (VIP id, server id)
-> (real id, pinned). The Balancer decides the ids (`assign_server_ids` in
xlb/quiclb.py) and calls this module in the order of its changes: a
change's new entries are written before the ring flip that may send their
reals the first packets, and the entries it no longer uses are deleted
after it (a stale entry in between names a real that is either still
serving or already retired, which the data plane checks). `pinned` says
that the operator set the id (`Real.server_id`), so that an adopted data
plane gives back the reals it was given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import _abi
from ._bpf import Map
from .errors import BpfError

#: A map entry's value: (real id, pinned).
Entry = tuple[int, bool]


@dataclass(frozen=True, slots=True)
class Undo:
    """What `QuicServers.write` replaced: each key's old value, None if it had none."""

    vip_id: int
    old: dict[int, Entry | None]


class QuicServers:
    """Reads and writes `quic_servers` (the Balancer is its only writer)."""

    def __init__(self, servers_map: Map) -> None:
        self.map = servers_map  # the Balancer points it at a new object's map on upgrade

    def read(self) -> dict[int, dict[int, Entry]]:
        """Every entry, by VIP id, then server id."""
        entries: dict[int, dict[int, Entry]] = {}
        for key, value in self.map.items():
            vip_id, server_id, real_id, pinned = _abi.parse_quic_server(key, value)
            entries.setdefault(vip_id, {})[server_id] = (real_id, pinned)
        return entries

    def write(self, vip_id: int, wanted: Mapping[int, Entry], now: Mapping[int, Entry]) -> Undo:
        """Write the entries of `wanted` that `now` (the VIP's entries as
        they are) lacks or holds otherwise, in one batch; the undo puts them back."""
        changed = {sid: entry for sid, entry in wanted.items() if now.get(sid) != entry}
        if changed:
            keys = b"".join(_abi.quic_server_key(vip_id, sid) for sid in changed)
            values = b"".join(_abi.quic_server_value(*entry) for entry in changed.values())
            self.map.update_batch(keys, values, len(changed))
        return Undo(vip_id, {sid: now.get(sid) for sid in changed})

    def restore(self, undo: Undo) -> None:
        """Put back what a `write` replaced."""
        for sid, entry in undo.old.items():
            key = _abi.quic_server_key(undo.vip_id, sid)
            if entry is None:
                self._delete_key(key)
            else:
                self.map.update(key, _abi.quic_server_value(*entry))

    def delete(self, vip_id: int, server_ids: Iterable[int]) -> None:
        """Remove the VIP's entries for these ids (absent ones are no error)."""
        for sid in server_ids:
            self._delete_key(_abi.quic_server_key(vip_id, sid))

    def _delete_key(self, key: bytes) -> None:
        with contextlib.suppress(BpfError):  # ENOENT: already gone
            self.map.delete(key)


__all__ = ["Entry", "QuicServers", "Undo"]
