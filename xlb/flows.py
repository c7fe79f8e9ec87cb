"""The connection table as the control plane reads it.

Two LRU hash maps, `conn_v4` and `conn_v6`, hold flow 5-tuple -> (real id,
the id's generation, last seen). An entry whose (id, generation) is no
current real's is stale: the data plane takes it for a miss and the flow
selects again from the ring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from . import _abi
from ._bpf import Map
from .errors import ConfigError, MapKeyError
from .model import Flow, IPAddress

CONN_TABLES = ("conn_v4", "conn_v6")
#: IP version -> its table.
TABLE_OF_FAMILY = {4: "conn_v4", 6: "conn_v6"}

#: (real id, generation) -> the real's address, for the reals in use.
RealOwners = Mapping[tuple[int, int], IPAddress]
T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class TableFill:
    """How full one connection table is. An LRU table never refuses a
    flow: once full, each new flow evicts the least recently used entry.
    The LRU lists are per CPU, each holding capacity / CPUs entries, so a
    CPU that receives more new flows than the others starts evicting a
    little before `entries` reaches `capacity`."""

    entries: int
    capacity: int

    @property
    def ratio(self) -> float:
        return self.entries / self.capacity if self.capacity else 0.0


def table_fill(maps: Mapping[str, Map]) -> dict[int, TableFill]:
    """Entries and capacity of each connection table, by IP version
    (counted in batches: ~0.4 s for a full table of a million entries)."""
    return {
        family: TableFill(maps[name].count(), maps[name].max_entries)
        for family, name in TABLE_OF_FAMILY.items()
    }


def owners_by_key(
    maps: Mapping[str, Map], owners: Mapping[tuple[int, int], T], limit: int
) -> dict[bytes, T] | None:
    """Every entry's key (raw: the two tables' keys differ in size, so
    they never collide) -> `owners[(real id, generation)]`, stale entries
    left out; None when the tables hold more than `limit` entries. Read in
    batches (~2 µs an entry, against ~20 µs for `sample_flows`, which
    parses each entry into a Flow)."""
    found: dict[bytes, T] = {}
    total = 0
    for name in CONN_TABLES:
        table = maps[name]
        if total + table.count() > limit:  # cheaper than reading it all to find out
            return None
        keys, values, count = table.lookup_batch(chunk=8192)
        total += count
        size = table.key_size
        for i, (real_id, gen) in enumerate(_abi.conn_owners(values, count).tolist()):
            owner = owners.get((real_id, gen))
            if owner is not None:
                found[keys[i * size : (i + 1) * size]] = owner
    return found


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
    "TABLE_OF_FAMILY",
    "RealOwners",
    "TableFill",
    "check_sample_limit",
    "clear_conn_tables",
    "owners_by_key",
    "sample_flows",
    "table_fill",
]
