"""The connection table as the control plane reads it.

Two LRU hash maps, `conn_v4` and `conn_v6`, hold flow 5-tuple -> (real id,
the id's generation, last seen). An entry whose (id, generation) is no
current real's is stale: the data plane takes it for a miss and the flow
selects again from the ring.

"Last seen" (`atime_ns`, the data plane's CLOCK_MONOTONIC_COARSE) is when
the entry was recorded, for TCP (a TCP entry is never refreshed: it has no
idle timeout), and the last packet within a second, for UDP (an entry idle
longer than `udp_ttl` is a miss). `ConnSnapshot` reads both tables with
batch lookups and counts them per real: the entries a flow's next packet
would follow (active) and the UDP entries past their idle timeout
(inactive); it also tells which entries are new since an earlier snapshot.

Each CPU keeps copies of the TCP entries it used last in front of the
table (bpf/flow_cache.h): whatever removes entries here calls
`forget_cached_flows` after, or a copy would outlive its entry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import _abi, _limits
from ._bpf import Map, possible_cpus
from .errors import ConfigError, MapKeyError
from .model import IPPROTO, Flow, IPAddress

CONN_TABLES = ("conn_v4", "conn_v6")
#: IP version -> its table.
TABLE_OF_FAMILY = {4: "conn_v4", 6: "conn_v6"}
FLOW_CACHE = "flow_cache"  # IPv4
FLOW_CACHE6 = "flow_cache6"
FLOW_CACHE_EPOCHS = "flow_cache_epochs"

#: (real id, generation) -> the real's address, for the reals in use.
RealOwners = Mapping[tuple[int, int], IPAddress]
Owner = tuple[int, int]
T = TypeVar("T")


CLOCK_MONOTONIC_COARSE = 6  # linux/time.h; Python's time module does not name it


def conn_clock_ns() -> int:
    """The data plane's clock for `atime_ns` (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


@dataclass(frozen=True, slots=True)
class ConnCounts:
    """A real's connection-table entries: those its flows' next packets
    follow, and UDP entries idle past udp_ttl (their next packet re-selects)."""

    active: int = 0
    inactive: int = 0

    @property
    def total(self) -> int:
        return self.active + self.inactive


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One entry: the flow, the (real id, generation) it points at, its idle time."""

    flow: Flow
    owner: Owner
    idle_ns: int


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    keys: bytes  # packed flow keys
    records: npt.NDArray[Any]  # real_id, real_gen, atime_ns
    protos: npt.NDArray[np.uint8]

    @property
    def key_size(self) -> int:
        return len(self.keys) // len(self.records) if len(self.records) else 0

    def key(self, i: int) -> bytes:
        size = self.key_size
        return self.keys[i * size : (i + 1) * size]


@dataclass(frozen=True, slots=True)
class ConnSnapshot:
    """Both connection tables as read at `taken_ns` (the data plane's clock)."""

    taken_ns: int
    tables: tuple[_Table, ...]

    @classmethod
    def read(cls, maps: Mapping[str, Map]) -> ConnSnapshot:
        tables = []
        taken = conn_clock_ns()
        for name in CONN_TABLES:
            keys, values, count = maps[name].lookup_batch()
            records = _abi.conn_records(values)[:count]
            tables.append(_Table(name, keys, records, _abi.flow_key_protos(name, keys)))
        return cls(taken, tuple(tables))

    def __len__(self) -> int:
        return sum(len(t.records) for t in self.tables)

    def counts(self, udp_ttl_ns: int) -> dict[Owner, ConnCounts]:
        """Per (real id, generation): active and inactive entries."""
        active: dict[Owner, int] = {}
        inactive: dict[Owner, int] = {}
        for table in self.tables:
            expired = self._expired(table, udp_ttl_ns)
            _add_counts(active, table.records[~expired])
            _add_counts(inactive, table.records[expired])
        return {
            owner: ConnCounts(active.get(owner, 0), inactive.get(owner, 0))
            for owner in active.keys() | inactive.keys()
        }

    def new_since(self, earlier: ConnSnapshot) -> dict[Owner, int]:
        """Per (real id, generation): entries recorded after `earlier` was
        taken (keys it did not hold, and TCP entries recorded again by a SYN)."""
        new: dict[Owner, int] = {}
        before = {t.name: t for t in earlier.tables}
        for table in self.tables:
            old = before.get(table.name)
            known = {old.key(i) for i in range(len(old.records))} if old else set()
            tcp = table.protos == IPPROTO["tcp"]
            recorded = tcp & (table.records["atime_ns"] >= earlier.taken_ns)
            unknown = np.fromiter(
                (table.key(i) not in known for i in range(len(table.records))),
                dtype=bool,
                count=len(table.records),
            )
            _add_counts(new, table.records[recorded | unknown])
        return new

    def entries(self) -> Iterator[ConnEntry]:
        """Every entry as a flow (IPv4 first)."""
        for table in self.tables:
            for i, record in enumerate(table.records):
                flow = _abi.parse_flow_key(table.name, table.key(i))
                idle = max(0, self.taken_ns - int(record["atime_ns"]))
                yield ConnEntry(flow, (int(record["real_id"]), int(record["real_gen"])), idle)

    def _expired(self, table: _Table, udp_ttl_ns: int) -> npt.NDArray[np.bool_]:
        udp = table.protos == IPPROTO["udp"]
        if not udp_ttl_ns:
            return np.zeros(len(table.records), dtype=bool)
        atime = table.records["atime_ns"].astype(np.int64)
        expired: npt.NDArray[np.bool_] = udp & (self.taken_ns - atime > udp_ttl_ns)
        return expired


def _add_counts(into: dict[Owner, int], records: npt.NDArray[Any]) -> None:
    if not len(records):
        return
    pairs = (records["real_id"].astype(np.uint64) << np.uint64(32)) | records["real_gen"]
    values, counts = np.unique(pairs, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        owner = (int(value) >> 32, int(value) & 0xFFFFFFFF)
        into[owner] = into.get(owner, 0) + int(count)


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
    forget_cached_flows(maps)
    return cleared


def flow_cache_sizes() -> dict[str, int]:
    """The data plane's map sizes known only on this machine: each possible
    CPU's elements of the flow cache, one array per family (bpf/flow_cache.h)."""
    size = possible_cpus() * _limits.XLB_FLOW_CACHE_SLOTS
    return {FLOW_CACHE: size, FLOW_CACHE6: size}


def forget_cached_flows(maps: Mapping[str, Map]) -> None:
    """After entries were removed: no CPU uses its flow cache's copy of one
    again. Raises the control plane's word of `flow_cache_epochs`, which
    every copy's epoch includes (bpf/flow_cache.h); the data plane never
    writes that word, so a read and a write do not race it."""
    epochs = maps[FLOW_CACHE_EPOCHS]
    key = _abi.u32(_limits.XLB_FLOW_CACHE_GEN)
    raw = epochs.lookup(key)
    gen = _abi.read_u32(raw) if raw is not None else 0
    epochs.update(key, _abi.u32((gen + 1) & 0xFFFFFFFF))


__all__ = [
    "CONN_TABLES",
    "TABLE_OF_FAMILY",
    "ConnCounts",
    "ConnEntry",
    "ConnSnapshot",
    "RealOwners",
    "TableFill",
    "check_sample_limit",
    "clear_conn_tables",
    "conn_clock_ns",
    "flow_cache_sizes",
    "forget_cached_flows",
    "lookup_flow",
    "owners_by_key",
    "sample_flows",
    "table_fill",
]
