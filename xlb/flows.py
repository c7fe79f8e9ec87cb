"""The connection table as the control plane reads it.

Two LRU hash maps, `conn_v4` and `conn_v6`, hold flow 5-tuple -> (real id,
the id's generation, last seen). An entry whose (id, generation) is no
current real's is stale: the data plane takes it for a miss and the flow
selects again from the ring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from . import _abi
from ._bpf import Map
from .errors import ConfigError, MapKeyError
from .model import Flow, IPAddress

CONN_TABLES = ("conn_v4", "conn_v6")

#: (real id, generation) -> the real's address, for the reals in use.
RealOwners = Mapping[tuple[int, int], IPAddress]


def check_sample_limit(limit: object) -> int:
    """A number of flows to sample, checked before any map is read."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"invalid flows limit {limit!r}: an integer >= 0")
    return limit


def sample_flows(
    maps: Mapping[str, Map], owners: RealOwners, limit: int
) -> Iterator[tuple[Flow, IPAddress | None]]:
    """At most `limit` connection-table entries as (flow, its real's
    address, or None if the entry is stale), IPv4 first."""
    seen = 0
    for name in CONN_TABLES:
        for key in maps[name].keys():
            if seen >= limit:
                return
            value = maps[name].lookup(key)
            if value is None:
                continue  # aged out between listing the keys and reading it
            real_id, gen, _ = _abi.parse_conn(value)
            yield _abi.parse_flow_key(name, key), owners.get((real_id, gen))
            seen += 1


def lookup_flow(maps: Mapping[str, Map], owners: RealOwners, flow: Flow) -> IPAddress | None:
    """The real of `flow`'s connection-table entry; None if it has no entry
    or a stale one (its real retired)."""
    table, key = _abi.flow_key(flow)
    value = maps[table].lookup(key)
    if value is None:
        return None
    real_id, gen, _ = _abi.parse_conn(value)
    return owners.get((real_id, gen))


def clear_conn_tables(maps: Mapping[str, Map]) -> int:
    """Empty both connection tables; returns how many entries went."""
    cleared = 0
    for name in CONN_TABLES:
        table = maps[name]
        for key in list(table.keys()):
            with contextlib.suppress(MapKeyError):  # aged out meanwhile
                table.delete(key)
                cleared += 1
    return cleared


__all__ = [
    "CONN_TABLES",
    "RealOwners",
    "check_sample_limit",
    "clear_conn_tables",
    "lookup_flow",
    "sample_flows",
]
