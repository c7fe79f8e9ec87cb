"""Maglev lookup tables, computed with numpy (no I/O, no root).

A table ("ring") of a prime `size` maps each slot to the real that owns it;
the data plane picks slot ``hash(flow) % size``. This module defines the
table exactly, so that every balancer node, and the C reference in
``bench/maglev_ref.c``, builds the same one from the same configuration.

Specification
=============

1. Identity and canonical order. Each real is identified by its packed
   address: 4 bytes for IPv4, 16 for IPv6. Reals are sorted by
   (length, bytes): IPv4 before IPv6, then bytewise. The input order
   therefore never matters. Duplicate addresses are an error.

2. Participants. Reals with weight 0 take no part (they own no slot and,
   because only the relative order of participants matters below, the
   table is the same as if they were absent). Participant ``j`` is the j-th
   real of weight > 0 in canonical order; ``n`` is their number. With no
   participant (no reals, or all weights 0) every slot is -1.

3. Permutation of a real. With ``h = FNV-1a-64(address bytes)`` (offset
   basis 0xcbf29ce484222325, prime 0x100000001b3) and ``mix`` the splitmix64
   finaliser (x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
   x *= 0x94d049bb133111eb; x ^= x >> 31), all modulo 2**64, and
   ``G = 0x9e3779b97f4a7c15``::

       offset = mix(h + G) % size
       skip   = mix(h + 2*G) % (size - 1) + 1
       pref(j, k) = (offset + k * skip) % size      for rank k = 0 .. size-1

   As `size` is prime, ``pref(j, .)`` visits every slot exactly once.

4. Quotas (largest remainder). With ``W`` the sum of weights,
   ``quota_j = floor(size * w_j / W)``; the ``R = size - sum(quota)`` slots
   left over go, one each, to the R participants with the largest
   ``size * w_j mod W``, ties to the lower j. Quotas sum to `size`, so
   shares are proportional to weights within one slot. (A participant whose
   exact share is below one slot may get none.)

5. Fill, rank by rank. For k = 0, 1, 2, ...: for j = 0 .. n-1 in order,
   if participant j holds fewer than quota_j slots and slot pref(j, k) is
   free, j takes it. Stop when every slot is taken. Equivalently: consider
   the pairs (j, s) in increasing order of ``key = rank_j(s) * n + j`` and
   give s to j when s is free and j is below its quota.

Each real owns exactly its quota, so with equal weights every real has
floor or ceil of size/n slots. A slot goes to the real that ranks it
earliest among those not yet full, so the table changes little when a real
comes or goes: the reals that stay keep their early-ranked slots, and the
disruption comes only from quotas shifting by about size/n**2 each.
(Without quotas this rule would be rendezvous hashing, which moves nothing
else at all; classic Maglev instead lets each real take its next *free*
preference in turn, which is sequential by nature.)

How it is computed here
=======================

Step 5 is the greedy construction of the unique stable matching between
reals (capacity quota_j, preferring low ranks) and slots (capacity 1,
preferring low keys), because both sides rank pairs by the same key. Any
run of real-proposing deferred acceptance yields that same matching,
whatever the order of proposals, and deferred acceptance vectorises: in
each round every real below quota proposes to its next ``deficit`` slots
that it could still win (free, or held with a worse key); each slot keeps
the best key it has seen, and displaced or rejected reals propose again in
the next round. Rejection is permanent (a slot's key only improves), so a
real never revisits a rank.

Round one proposes every real's first ranks, the same number for all, as
a (rank, real) grid (`_Grid`), in blocks of consecutive ranks that keep
their arrays in cache (the grid of a large ring is tens of MB, and passes
over it cost more than the work). A block's slots are computed in uint32,
as the block before's plus a constant per real. A slot a block takes
keeps its key, as later blocks propose larger ones, so the boolean map of
open slots drops a block's proposals to taken slots before any key is
read. The grid goes on until most reals are full (`_grid_ranks`: up to 7
times the smallest quota), or until the reals not yet full times the free
slots are few: its blocks count each real's wins once one could fill up,
a real that wins more than it lacks in a block withdraws its proposals
after the win that filled it (each slot it frees goes to its next best
proposal of the block), and the blocks are laid out again for the reals
not yet full once many are. Every later proposal has a larger key than
the whole grid, so the slots the grid gives out are final and only those
it leaves free are contested afterwards. Later rounds keep that contested
set, narrowed each round to the slots whose key some active real could
still beat, as a boolean map. A round finds each real's candidates either
by scanning its next ranks (as many as should hold its deficit of
winnable slots and a spare or two; the scan is one broadcast over rows of
consecutive ranks, computed in uint32, and the map drops most probes
before any key is read) or, when the contested slots are fewer than the
ranks it would scan, by inverting its permutation on them (rank = (slot -
offset) * skip**-1 mod size). Each real then proposes to its first
candidates, as many as it lacks, and a real rejected or displaced
proposes to its next ones, for two turns (`_propose`). A few rounds leave
a few reals short of a few contested slots; a round's numpy calls would
then cost more than its work, so the last proposals are made one at a
time, each real walking its winnable slots ranked once
(`_finish_one_by_one`). None of this materialises a reals x size matrix. The
largest arrays come from a per-thread scratch (`_Scratch`): fresh memory
costs a page fault per 4 KiB, which was a fifth of a build. IPv4 reals
given packed or as IPv4Address, with plain int weights, are sorted,
checked and hashed as arrays (`_ipv4_participants`). The C reference
runs step 5 literally; tests check that both give identical tables, and
that random inputs give the table of `build_table_literally`.

The rules of a ring size are `check_ring_size`'s, for every caller (the
balancer's add_vip, the configuration file, build_table). numpy is imported
by the functions that compute tables, not when the module loads: reading a
configuration file checks ring sizes and must not pay for numpy (see
xlb/__init__.py).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from . import _limits
from .errors import ConfigError
from .model import address_ints

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Int64Array: TypeAlias = npt.NDArray[np.int64]
    UInt64Array: TypeAlias = npt.NDArray[np.uint64]
    Table: TypeAlias = npt.NDArray[np.int32]

__all__ = [
    "DEFAULT_SIZE",
    "MAX_SIZE",
    "Address",
    "build_table",
    "build_table_literally",
    "check_ring_size",
    "is_prime",
    "packed_address",
    "permutations",
    "quotas",
]

DEFAULT_SIZE = _limits.XLB_RING_SIZE_DEFAULT
MAX_SIZE = _limits.XLB_RING_SIZE_MAX

_FNV_OFFSET_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_UINT64_MASK = (1 << 64) - 1
_NO_KEY = (1 << 63) - 1  # key of a free slot (the largest int64): any proposal beats it


class _HasAddress(Protocol):
    @property
    def address(self) -> AddressValue: ...


AddressValue: TypeAlias = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
Address: TypeAlias = AddressValue | _HasAddress


# ---- Validation and canonical form ------------------------------------------


def is_prime(n: int) -> bool:
    """Whether `n` is prime (deterministic Miller-Rabin, exact below 3.3e24)."""
    n = operator.index(n)
    if n < 2:
        return False
    small_primes = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in small_primes:
        return True
    if any(n % p == 0 for p in small_primes):
        return False
    odd_part, twos = n - 1, 0
    while odd_part % 2 == 0:
        odd_part, twos = odd_part // 2, twos + 1
    return all(_passes_miller_rabin(n, base, odd_part, twos) for base in small_primes)


def _passes_miller_rabin(n: int, base: int, odd_part: int, twos: int) -> bool:
    x = pow(base, odd_part, n)
    if x in (1, n - 1):
        return True
    for _ in range(twos - 1):
        x = x * x % n
        if x == n - 1:
            return True
    return False


def packed_address(real: Address) -> bytes:
    """The identity of a real: its address packed in 4 (IPv4) or 16 bytes."""
    value = getattr(real, "address", real)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value.packed
    if isinstance(value, bytes):
        if len(value) not in (4, 16):
            raise ValueError(f"packed address must be 4 or 16 bytes, got {len(value)}: {value!r}")
        return value
    if isinstance(value, str):
        return ipaddress.ip_address(value).packed
    raise TypeError(f"not an address: {real!r}")


def check_ring_size(size: int, reals: int = 0) -> None:
    """Raise ConfigError unless `size` can be the ring of a VIP with `reals`
    reals of non-zero weight: a prime (step 3 needs it), at most MAX_SIZE
    (the data plane's limit), and no smaller than `reals` (each needs a slot).

    Whether `size` is an int at all is the caller's check: each API reports
    a wrong type its own way."""
    if size > MAX_SIZE:  # first: is_prime is exact only below 3.3e24
        raise ConfigError(
            f"ring size {size} is larger than the maximum {MAX_SIZE}: "
            f"a ring holds at most {MAX_SIZE} slots"
        )
    if not _is_prime_size(size):
        raise ConfigError(f"ring size {size} is not a prime")
    if reals > size:
        raise ConfigError(
            f"ring size {size} is smaller than the {reals} reals with a non-zero weight"
        )


@functools.lru_cache(maxsize=256)
def _is_prime_size(size: int) -> bool:
    """is_prime for ring sizes, which repeat: every build checks its size."""
    return is_prime(size)


def _validated_size(size: int) -> int:
    if isinstance(size, bool):
        raise TypeError("size must be an int, not bool")
    size = operator.index(size)
    check_ring_size(size)
    return size


def _validated_weights(weights: Sequence[int] | None, count: int) -> list[int]:
    if weights is None:
        return [1] * count
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights given for {count} reals")
    checked = []
    for weight in weights:
        if isinstance(weight, bool):
            raise TypeError("a weight must be an int, not bool")
        value = operator.index(weight)
        if not 0 <= value < 1 << 32:
            raise ValueError(f"weight {value} is outside 0 .. 2**32-1")
        checked.append(value)
    return checked


@dataclass(frozen=True, slots=True)
class _Participants:
    """Reals with a non-zero weight, in canonical order."""

    hashes: UInt64Array  # FNV-1a 64 of each one's packed address
    weights: Int64Array
    input_indexes: Int64Array  # where each one was in the caller's sequence

    @property
    def count(self) -> int:
        return len(self.hashes)


_LENGTH_PREFIX = {4: b"\x04", 16: b"\x10"}


def _canonical_order(addresses: list[bytes]) -> list[int]:
    """Positions of `addresses` in canonical order; duplicates are an error."""
    import numpy as np

    if len(set(addresses)) != len(addresses):
        _reject_duplicates(addresses)
    if all(len(a) == 4 for a in addresses):
        # IPv4 only: sort them as big-endian 32-bit integers.
        as_integers = np.frombuffer(b"".join(addresses), dtype=">u4")
        order: list[int] = np.argsort(as_integers, kind="stable").tolist()
        return order
    # A length byte in front makes plain bytes order the (length, bytes) order.
    sort_keys = [_LENGTH_PREFIX[len(a)] + a for a in addresses]
    return sorted(range(len(addresses)), key=sort_keys.__getitem__)


def _canonical_participants(addresses: list[bytes], weights: list[int]) -> _Participants:
    import numpy as np

    order = _canonical_order(addresses)
    kept = order if all(weights) else [i for i in order if weights[i] > 0]
    return _Participants(
        hashes=_address_hashes([addresses[i] for i in kept]),
        weights=np.array([weights[i] for i in kept], dtype=np.int64),
        input_indexes=np.array(kept, dtype=np.int64),
    )


def _ipv4_participants(
    reals: Sequence[Address], weights: Sequence[int] | None
) -> _Participants | None:
    """The participants of IPv4 reals given packed or as IPv4Address (what
    the balancer and the bench pass) with weights None or plain ints:
    sorted, checked and hashed as arrays, with no Python work per real
    beyond reading it once. None for any other input, which the general
    path checks and reports on."""
    import numpy as np

    if not isinstance(reals, list | tuple):
        return None
    kinds = set(map(type, reals))
    if kinds == {bytes} and set(map(len, reals)) == {4}:
        as_integers = np.frombuffer(b"".join(reals), dtype=">u4").astype(np.uint32)
    elif kinds == {ipaddress.IPv4Address}:
        as_integers = np.fromiter(address_ints(reals), dtype=np.uint32, count=len(reals))
    else:
        return None
    weight = _plain_weights(weights, len(reals))
    if weight is None:
        return None
    order = np.argsort(as_integers, kind="stable")
    ordered = as_integers[order]
    if bool((ordered[1:] == ordered[:-1]).any()):
        _reject_duplicates([packed_address(real) for real in reals])
    if not weight.all():
        serving = weight[order] > 0
        order, ordered = order[serving], ordered[serving]
    rows = ordered.astype(">u4").view(np.uint8).reshape(len(order), 4)  # the packed bytes
    return _Participants(
        hashes=_fnv1a64(rows), weights=weight[order], input_indexes=order.astype(np.int64)
    )


def _plain_weights(weights: Sequence[int] | None, count: int) -> Int64Array | None:
    """`weights` as an array when they are None (all 1) or valid plain
    ints; None when anything needs the general check."""
    import numpy as np

    if weights is None:
        return np.ones(count, dtype=np.int64)
    if len(weights) != count or set(map(type, weights)) != {int}:
        return None
    try:
        weight = np.array(weights, dtype=np.int64)
    except OverflowError:
        return None
    if int(weight.min()) < 0 or int(weight.max()) >= 1 << 32:
        return None
    return weight


def _reject_duplicates(addresses: list[bytes]) -> None:
    seen = set()
    for address in addresses:
        if address in seen:
            raise ValueError(f"real {ipaddress.ip_address(address)} is given more than once")
        seen.add(address)


# ---- Spec steps 3 and 4: permutations and quotas ---------------------------------


def _fnv1a64(rows: npt.NDArray[np.uint8]) -> UInt64Array:
    """FNV-1a 64 of each row of equal-length byte strings."""
    import numpy as np

    h = np.full(rows.shape[0], _FNV_OFFSET_BASIS, dtype=np.uint64)
    for column in rows.T:
        h ^= column
        h *= np.uint64(_FNV_PRIME)  # uint64 arrays wrap modulo 2**64, as FNV wants
    return h


def _splitmix64_mix(x: UInt64Array) -> UInt64Array:
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _address_hashes(addresses: Sequence[bytes]) -> UInt64Array:
    """FNV-1a 64 of each address, vectorised per address length."""
    import numpy as np

    lengths = {len(a) for a in addresses}
    if len(lengths) == 1:  # one family: no need to split
        length = lengths.pop()
        rows = np.frombuffer(b"".join(addresses), dtype=np.uint8)
        return _fnv1a64(rows.reshape(len(addresses), length))
    hashes = np.empty(len(addresses), dtype=np.uint64)
    for length in (4, 16):
        where = [i for i, a in enumerate(addresses) if len(a) == length]
        if where:
            packed = b"".join(addresses[i] for i in where)
            rows = np.frombuffer(packed, dtype=np.uint8).reshape(len(where), length)
            hashes[where] = _fnv1a64(rows)
    return hashes


def permutations(addresses: Sequence[bytes], size: int) -> tuple[Int64Array, Int64Array]:
    """(offset, skip) of each real's preference list, spec step 3."""
    return _permutations_of_hashes(_address_hashes(addresses), size)


def _permutations_of_hashes(h: UInt64Array, size: int) -> tuple[Int64Array, Int64Array]:
    import numpy as np

    with np.errstate(over="ignore"):
        offset = _splitmix64_mix(h + np.uint64(_GOLDEN_GAMMA)) % np.uint64(size)
        skip_seed = h + np.uint64((2 * _GOLDEN_GAMMA) & _UINT64_MASK)
        skip = _splitmix64_mix(skip_seed) % np.uint64(size - 1) + np.uint64(1)
    return offset.astype(np.int64), skip.astype(np.int64)


def quotas(weights: Sequence[int] | Int64Array, size: int) -> Int64Array:
    """Slots per participant by largest remainder, spec step 4.

    Weights are below 2**32 and size below 2**20, so every product and sum
    here fits in int64 exactly.
    """
    import numpy as np

    weight = np.asarray(weights, dtype=np.int64)
    scaled = weight * size
    total = int(weight.sum())
    result = scaled // total
    remainder = scaled - result * total
    left_over = size - int(result.sum())
    # A stable sort keeps equal remainders in participant order.
    result[np.argsort(-remainder, kind="stable")[:left_over]] += 1
    return result


# ---- Spec step 5: the fill, by vectorised deferred acceptance ----------------------


class _Scratch(threading.local):
    """Arrays a thread reuses from one build to the next.

    A build's largest temporaries (the slot keys, the proposal grid and
    each block's keys, slots and reals, the probes of a scan) take about
    110 bytes per slot; the allocator hands such blocks back to the kernel
    when they are freed, and touching fresh memory again costs a page
    fault per 4 KiB (~4 us on a VM), which measured a fifth of a build.
    Kept here, they are faulted in once per thread, within the budget
    below; arrays past it are allocated for the build and freed
    after it.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, npt.NDArray[Any]] = {}
        self.kept_bytes = 0

    def get(self, name: str, count: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
        """An uninitialised array of `count` elements of `dtype`, named for
        its use (two live arrays never share a name)."""
        import numpy as np

        array = self.arrays.get(name)
        if array is None or array.size < count or array.dtype != dtype:
            array = self._keep(name, np.empty(count + count // 4, dtype=dtype))
        return array[:count]

    def counting(self, count: int) -> Int64Array:
        """0, 1, ..., count - 1 (read-only use)."""
        import numpy as np

        array = self.arrays.get("counting")
        if array is None or array.size < count:
            array = self._keep("counting", np.arange(count + count // 4, dtype=np.int64))
        return array[:count]

    def _keep(self, name: str, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Keep `array` under `name` in place of the smaller one kept, if
        the budget allows (it has a quarter of headroom: the next build
        may be a little larger)."""
        old = self.arrays.get(name)
        kept_bytes = self.kept_bytes - (0 if old is None else old.nbytes) + array.nbytes
        if array.nbytes <= _SCRATCH_ARRAY_BYTES and kept_bytes <= _SCRATCH_BYTES:
            self.arrays[name], self.kept_bytes = array, kept_bytes
        return array


# What a thread keeps: every array of a build of a ring of the default size
# (about 10 MiB); a much larger ring's largest arrays are its own.
_SCRATCH_BYTES = 16 << 20
_SCRATCH_ARRAY_BYTES = 2 << 20
_SCRATCH = _Scratch()


@dataclass(slots=True)
class _Fill:
    """State of deferred acceptance; index j is a participant.

    A slot's owner is not stored: it is ``slot_key % count``, since every
    key is ``rank * count + j``.
    """

    size: int
    offset: Int64Array
    skip: Int64Array
    skip_inverse: Int64Array  # skip * skip_inverse == 1 (mod size); 0 = not yet known
    quota: Int64Array
    held: Int64Array  # slots currently held
    next_rank: Int64Array  # ranks below this are proposed or known lost
    slot_key: Int64Array  # best key proposed to each slot; _NO_KEY if free
    contested: Int64Array  # slots some active real may still win (a superset)
    # contested as a map, plus a last entry that is always False: probes
    # past the end of a permutation are pointed there.
    open_map: npt.NDArray[np.bool_]
    scratch: _Scratch

    @property
    def count(self) -> int:
        return len(self.offset)


# A real finds proposals by inverting its permutation on the contested slots
# when its scan would be this many times longer than the list of those slots:
# one inverted candidate costs about as much as two scanned ranks.
_INVERT_WHEN_SCAN_EXCEEDS = 2.0
# The share of the contested slots held by some real that a scan counts on
# winning (the free ones it wins unless another real takes them first).
_HELD_SHARE = 0.25
# A scan looks for this many winnable slots beyond a real's deficit: spares
# for a real that loses a slot to another in the same round (see _propose).
_SCAN_EXTRA = 1.5
# Round one goes on to where a real expects this many slots of its quota to
# be left (less than one: most reals are full), and at most to this many
# times the smallest quota (see _grid_ranks).
_GRID_LEFT = 0.5
_GRID_MOST = 7.0
# The last proposals are made one at a time (_finish_one_by_one) once the
# active reals times the contested slots are at most this: a round then
# costs more in numpy calls than in work. Measured best at 1000 reals.
_ONE_BY_ONE_BELOW = 16384
# Turns of proposals in a round (see _propose).
_PROPOSALS_PER_ROUND = 2


def _reduce_mod(
    values: npt.NDArray[Any], modulus: int | np.unsignedinteger[Any],
    spare: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:  # fmt: skip
    """values % modulus for values >= 0, in place (about 3x faster than %,
    and than uint32's remainder); `spare`, an array of the same shape and
    type, saves a temporary. For uint32 values, give the modulus as
    np.uint32: uint32 division by a scalar is several times faster than
    int64's."""
    import numpy as np

    quotient = np.floor_divide(values, modulus, out=spare)
    quotient *= modulus
    values -= quotient
    return values


def _skip_inverses(fill: _Fill, reals: Int64Array) -> Int64Array:
    """skip**-1 mod size of `reals`, computed once, for the few that need it."""
    unknown = reals[fill.skip_inverse[reals] == 0]
    for j in unknown.tolist():
        fill.skip_inverse[j] = pow(int(fill.skip[j]), -1, fill.size)
    return fill.skip_inverse[reals]


def _fill_table(
    offset: Int64Array, skip: Int64Array, quota: Int64Array, size: int
) -> npt.NDArray[Any]:
    """Owner (participant index) of every slot, spec step 5, in uint32 where
    the keys fit (`_owners`), in a scratch array of the thread: use it
    before the next build."""

    fill = _first_round(offset, skip, quota, size, _SCRATCH)
    while True:
        deficit = fill.quota - fill.held
        active = (deficit > 0).nonzero()[0]
        if active.size == 0:
            return _owners(fill)
        if active.size * fill.contested.size <= _ONE_BY_ONE_BELOW:
            _finish_one_by_one(fill, active, deficit[active])
            return _owners(fill)
        _run_round(fill, active, deficit[active])


def _finish_one_by_one(fill: _Fill, active: Int64Array, deficit: Int64Array) -> None:
    """Deferred acceptance to the end, one proposal at a time.

    A real below quota proposes to its next winnable slot; a slot keeps
    the better key, and the real it displaces proposes on from where it
    stood. The order of proposals does not change the outcome, so a stack
    of reals that lack slots serves. Only the contested slots can still
    change hands, and few are left, so each real's candidates among them
    are ranked once (_candidates): the displaced ones when they are first
    displaced.
    """
    import numpy as np

    _narrow_contested(fill, int((fill.next_rank[active] * fill.count + active).min()))
    count = fill.count
    slot_key = fill.slot_key[fill.contested].tolist()  # by position in contested
    candidates = _candidates(fill, active)
    next_candidate = dict.fromkeys(candidates, 0)
    lacking = dict(zip(active.tolist(), deficit.tolist(), strict=True))
    stack = active.tolist()
    while stack:
        real = stack.pop()
        if real not in candidates:  # displaced for the first time
            candidates.update(_candidates(fill, np.array([real])))
            next_candidate[real] = 0
        keys, positions = candidates[real]
        at, need = next_candidate[real], lacking[real]
        while need:  # a real always has enough: its final slots are among these
            key, position = keys[at], positions[at]
            at += 1
            standing = slot_key[position]
            if key < standing:
                slot_key[position] = key
                need -= 1
                if standing != _NO_KEY:
                    loser = standing % count
                    short = lacking.get(loser, 0)
                    lacking[loser] = short + 1
                    if not short:
                        stack.append(loser)
        next_candidate[real], lacking[real] = at, 0
    fill.slot_key[fill.contested] = slot_key
    fill.held[:] = fill.quota


def _ranks_on_contested(fill: _Fill, reals: Int64Array) -> tuple[Int64Array, Int64Array, Any]:
    """(rank, key, winnable) of every contested slot for each of `reals`,
    as (reals, contested) arrays: the rank through the inverse permutation
    (rank = (slot - offset) * skip**-1 mod size); winnable, whether the
    real could still win it (rank from its next_rank on, key below the
    slot's)."""
    size, contested = fill.size, fill.contested
    distance = (contested + size) - fill.offset[reals][:, None]  # in 1 .. 2 * size - 1
    rank = _reduce_mod(_reduce_mod(distance, size) * _skip_inverses(fill, reals)[:, None], size)
    key = rank * fill.count + reals[:, None]
    winnable = (rank >= fill.next_rank[reals][:, None]) & (key < fill.slot_key[contested])
    return rank, key, winnable


def _candidates(fill: _Fill, reals: Int64Array) -> dict[int, tuple[list[int], list[int]]]:
    """The contested slots each of `reals` could still win (ranks from its
    next_rank on, keys below the slot's), as (keys, positions in
    contested) in increasing key order. A slot it cannot win now it never
    can: slot keys only decrease."""
    import numpy as np

    _, key, winnable = _ranks_on_contested(fill, reals)
    # A key is below 2**39 (size and count are at most MAX_SIZE) and a
    # position below 2**20, so one value holds both and sorting each row
    # (several times faster than argsort) orders the candidates by key.
    key <<= 20
    key += fill.scratch.counting(fill.contested.size)
    key[~winnable] = _NO_KEY  # sorts after every candidate
    key.sort(axis=1)
    found_per_real = np.count_nonzero(winnable, axis=1)
    key = key[np.arange(key.shape[1]) < found_per_real[:, None]]  # by real, then by key
    ends = np.cumsum(found_per_real).tolist()
    keys, positions = (key >> 20).tolist(), (key & ((1 << 20) - 1)).tolist()
    found, start = {}, 0
    for real, end in zip(reals.tolist(), ends, strict=True):
        found[real] = (keys[start:end], positions[start:end])
        start = end
    return found


def _owners(fill: _Fill) -> npt.NDArray[Any]:
    """The owner of each slot of the filled table: slot_key % count, in
    uint32 when the keys fit (uint32 division by a scalar is several times
    faster than int64's, and than uint32's remainder)."""
    import numpy as np

    if fill.size * fill.count > 1 << 32:
        return _reduce_mod(fill.slot_key, fill.count)
    owner = fill.scratch.get("table_owner", fill.size, np.uint32)
    np.copyto(owner, fill.slot_key, casting="unsafe")  # the keys fit
    spare = fill.scratch.get("table_owner_spare", fill.size, np.uint32)
    return _reduce_mod(owner, np.uint32(fill.count), spare)


def _first_round(
    offset: Int64Array, skip: Int64Array, quota: Int64Array, size: int, scratch: _Scratch
) -> _Fill:
    """Round one: the table is empty, so every real proposes its first ranks.

    Every real proposes the same first ranks (`_grid_ranks`, see
    _Grid.propose), so that the proposals form a full (rank, real) grid with
    key rank * n + j. What it leaves is a state of deferred acceptance in
    which every slot taken has a key below ranks * n. Every later proposal
    has a larger key, so those slots are final, and only the slots left free
    are contested from here on. The grid is proposed in blocks of
    consecutive ranks (see _Grid).
    """
    import numpy as np

    count = len(offset)
    grid = _Grid(offset, skip, quota, size, _grid_ranks(quota, size), scratch)
    held, ranks = grid.propose()
    return _Fill(
        size=size,
        offset=offset,
        skip=skip,
        skip_inverse=np.zeros(count, dtype=np.int64),
        quota=quota,
        held=held,
        next_rank=np.full(count, ranks, dtype=np.int64),
        slot_key=grid.slot_key,
        contested=grid.open_map[:size].nonzero()[0],
        open_map=grid.open_map,
        scratch=scratch,
    )


# Round one proposes its grid in blocks of about this many (rank, real)
# pairs, so that a block's arrays (some 20 bytes a pair) stay in cache.
_GRID_BLOCK_PAIRS = 32768
# Round one stops where the reals not yet full times the free slots are
# at most this (see _Grid.propose).
_GRID_LEAVES = 4096
# Round one lays its blocks out again for the reals not yet full when
# fewer than this share of those it proposes for are.
_GRID_LAY_OUT_BELOW = 0.75
# Round one counts each real's wins in chunks of this many slots.
_WINS_CHUNK = 1 << 17


class _Grid:
    """Round one's proposals, made in blocks of consecutive ranks.

    A block's slots are a (rank, real) array if rank_major, else (real,
    rank): the longer side innermost, as numpy broadcasts slowly over
    short rows. A slot taken in a block keeps its key, as every later
    block proposes larger keys; so a block's proposals to slots already
    taken are dropped by one look at the map of open slots, before any
    key is read, and every slot a block proposes to is taken (by its best
    proposal). No real can pass its quota while it has proposed no more
    ranks than that, so the blocks up to the smallest quota go without
    counting wins; from the first block that could fill a real, the wins
    so far are counted from the keys (`_wins`), then after each block
    (`_count_wins`), where a real that won past its quota withdraws
    (`_withdraw`) and a real at its quota proposes no more. Once many
    reals are full, the blocks are laid out again for the others only
    (`_lay_out`), which makes them longer.
    """

    def __init__(
        self, offset: Int64Array, skip: Int64Array, quota: Int64Array, size: int, ranks: int,
        scratch: _Scratch,
    ) -> None:  # fmt: skip
        import numpy as np

        count = len(offset)
        self.offset, self.skip, self.quota, self.size = offset, skip, quota, size
        self.count, self.ranks, self.scratch = count, ranks, scratch
        self.counting_wins = False
        self.slot_key = scratch.get("slot_key", size, np.int64)
        self.slot_key.fill(_NO_KEY)
        self.open_map = scratch.get("open_map", size + 1, np.bool_)
        self.open_map.fill(True)
        self.open_map[size] = False  # the entry that probes past a permutation's end use
        self.held = np.zeros(count, dtype=np.int64)
        self._lay_out((quota > 0).nonzero()[0])

    def _lay_out(self, reals: Int64Array) -> None:
        """Make the blocks propose for `reals` (ascending) from the next one on.

        Slots are computed in uint32: t * skip + start < width * size < 2**32.
        """
        import numpy as np

        self.reals, self.everyone = reals, reals.size == self.count
        self.width = max(min(_GRID_BLOCK_PAIRS // max(reals.size, 1), self.ranks,
                             (1 << 32) // self.size - 1), 1)  # fmt: skip
        self.rank_major = reals.size >= self.width
        shape = (self.width, reals.size) if self.rank_major else (reals.size, self.width)
        pairs = self.width * reals.size
        self.slots = self.scratch.get("grid32", pairs, np.uint32).reshape(shape)
        self.spare = self.scratch.get("grid32_spare", pairs, np.uint32).reshape(shape)
        self.proposing = np.ones(reals.size, dtype=np.bool_)  # which of `reals` propose
        skip = self.skip[reals]
        self.skip32 = skip.astype(np.uint32) if self.rank_major else skip.astype(np.uint32)[:, None]
        # What a block adds to the slots of the one before, per real.
        advance = _reduce_mod(self.width * skip, self.size).astype(np.uint32)
        self.advance = advance if self.rank_major else advance[:, None]
        self.laid_out = True  # the next block computes its slots afresh

    def propose(self) -> tuple[Int64Array, int]:
        """Propose every real's first ranks, or stop early where the reals
        not yet full times the free slots are few enough for later rounds
        to finish at less cost (they invert permutations on the free
        slots). Returns the slots each real holds and the ranks proposed."""
        smallest_quota = int(self.quota[self.reals].min())
        first = 0
        while first < self.ranks and self.reals.size:
            ranks = min(self.width, self.ranks - first)
            if not self.counting_wins and first + ranks > smallest_quota:
                self.held = self._wins() if first else self.held
                self.counting_wins = True
                self._drop_full_reals()  # one may be full already
                continue
            if self.counting_wins and self._few_left():
                break
            self._propose_block(first, ranks)
            first += ranks
        return (self.held if self.counting_wins else self._wins()), first

    def _few_left(self) -> bool:
        free = self.size - int(self.held.sum())
        return int(self.proposing.sum()) * free <= _GRID_LEAVES

    def _propose_block(self, first: int, ranks: int) -> None:
        """Propose ranks first .. first + ranks - 1 of every proposing real."""
        import numpy as np

        self._advance_slots(first)
        position = self._open_pairs(first, ranks)  # in the block's array
        slots = self.slots.ravel()
        if position.size < slots.size:
            slots = _gather(
                slots, position, self.scratch.get("grid_gathered", position.size, np.uint32)
            )
        slot = self.scratch.get("grid_slot", slots.size, np.intp)  # numpy indexes fastest with intp
        np.copyto(slot, slots)
        key, real = self._keys_and_reals(position, first)
        np.minimum.at(self.slot_key, slot, key)
        self.open_map[slot] = False
        if real is not None:
            self._count_wins(slot, key, real)
            self._drop_full_reals()

    def _advance_slots(self, first: int) -> None:
        """The slots of the block at rank `first`: (offset + k * skip) % size
        for the first block after a lay-out, then the previous block's plus
        width * skip, less size where that passes it (in uint32, where that
        wraps around)."""
        import numpy as np

        size = np.uint32(self.size)
        slots, spare = self.slots, self.spare
        if self.laid_out:
            self.laid_out = False
            reals = self.reals
            start = _reduce_mod(self.offset[reals] + first * self.skip[reals], self.size)
            start = start.astype(np.uint32)
            steps = self.scratch.counting(self.width).astype(np.uint32)
            if self.rank_major:
                np.multiply(steps[:, None], self.skip32, out=slots)
                slots += start
            else:
                np.multiply(self.skip32, steps, out=slots)
                slots += start[:, None]
            _reduce_mod(slots, size, spare)
            return
        slots += self.advance
        np.subtract(slots, size, out=spare)
        np.minimum(slots, spare, out=slots)

    def _open_pairs(self, first: int, ranks: int) -> Int64Array:
        """Positions of the pairs of proposing reals at ranks below first +
        ranks to open slots."""
        import numpy as np

        all_propose = bool(self.proposing.all())
        if first == 0 and all_propose:  # nothing is taken yet
            return self.scratch.counting(self.slots.size)
        slots = self.slots[:ranks] if self.rank_major else self.slots
        is_open = self.scratch.get("grid_open", slots.size, np.bool_).reshape(slots.shape)
        _gather(self.open_map, slots.ravel(), is_open.ravel())
        if not self.rank_major:
            is_open[:, ranks:] = False  # past the grid's last rank
        if not all_propose:
            is_open &= self.proposing if self.rank_major else self.proposing[:, None]
        return is_open.ravel().nonzero()[0]

    def _keys_and_reals(
        self, position: Int64Array, first: int
    ) -> tuple[Int64Array, Int64Array | None]:
        """The key, rank * count + real, of the pairs at `position` in the
        block's array (at rank `first`), and their reals while wins are
        counted (else None)."""
        import numpy as np

        n, base = position.size, first * self.count
        key = self.scratch.get("grid_key", n, np.int64)
        real = self.scratch.get("grid_real", n, np.int64)
        if self.rank_major and self.everyone:  # the position is the key, less the block's base
            np.add(position, base, out=key)
            if not self.counting_wins:
                return key, None
            return key, np.remainder(position, self.count, out=real)
        # position = rank * reals + place if rank_major, else place * width + rank
        across = self.reals.size if self.rank_major else self.width
        high = np.floor_divide(position, across, out=key)
        low = self.scratch.get("grid_low", n, np.int64)
        np.subtract(position, np.multiply(high, across, out=low), out=low)
        rank, place = (high, low) if self.rank_major else (low, high)
        if self.everyone:
            np.copyto(real, place)
        else:
            _gather(self.reals, place, real)
        np.multiply(rank, self.count, out=key)  # place, if it was there, is copied out
        key += base
        key += real
        return key, (real if self.counting_wins else None)

    def _drop_full_reals(self) -> None:
        """Stop the full reals' proposals; lay the blocks out again without
        them once they are many."""
        proposing = self.held[self.reals] < self.quota[self.reals]
        if proposing.sum() < _GRID_LAY_OUT_BELOW * self.reals.size:
            self._lay_out(self.reals[proposing])
        else:
            self.proposing = proposing

    def _wins(self) -> Int64Array:
        """Slots each real holds, counted from the keys (a key's real is key
        % count) a chunk of the table at a time: temporaries as large as the
        table would cost a page fault per 4 KiB. Where the grid's keys fit,
        in uint32 (several times faster than int64); the free slots are
        counted in the bin of _NO_KEY's, and taken out of it after."""
        import numpy as np

        count, held = self.count, np.zeros(self.count, dtype=np.int64)
        narrow = self.ranks * count < 1 << 32  # every key proposed fits
        free_key = (_NO_KEY & 0xFFFFFFFF) if narrow else _NO_KEY  # _NO_KEY in uint32: its low bits
        for start in range(0, self.size, _WINS_CHUNK):
            keys = self.slot_key[start : start + _WINS_CHUNK]
            if narrow:
                owner32 = self.scratch.get("grid_owner", keys.size, np.uint32)
                np.copyto(owner32, keys, casting="unsafe")  # the low 32 bits
                spare = self.scratch.get("grid_owner_spare", keys.size, np.uint32)
                _reduce_mod(owner32, np.uint32(count), spare)
                # bincount counts intp: given one, it makes no (page-faulting) copy
                owner = self.scratch.get("grid_owner_intp", keys.size, np.intp)
                np.copyto(owner, owner32)
            else:
                owner = keys % count
            held += np.bincount(owner, minlength=count)
        held[free_key % count] -= int(np.count_nonzero(self.open_map))
        return held

    def _count_wins(self, slot: Int64Array, key: Int64Array, real: Int64Array) -> None:
        """Add the block's wins to `held`, after withdrawals if a real won
        past its quota (`_withdraw`)."""
        import numpy as np

        # Keys are unique, so a proposal won if its slot kept its key.
        won = self.slot_key[slot] == key
        wins = np.bincount(real[won], minlength=self.count)
        if (self.held + wins > self.quota).any():
            wins = self._withdraw(slot, key, real, won, wins)
        self.held += wins

    def _withdraw(
        self, slot: Int64Array, key: Int64Array, real: Int64Array, won: npt.NDArray[np.bool_],
        wins: Int64Array,
    ) -> Int64Array:  # fmt: skip
        """Make the block's proposals a state of deferred acceptance: each
        real that won more than it lacked withdraws its proposals after the
        win that filled it (it would have stopped proposing there), and each
        slot it frees goes to its best remaining proposal of the block, which
        may put another real past its quota; slots no proposal retakes are
        open again. Returns the slots each real won in the block."""
        import numpy as np

        slot_key = self.slot_key
        lacking = self.quota - self.held
        last_key = np.full(self.count, _NO_KEY)  # proposals with larger keys are withdrawn
        reopened = self.scratch.get("reopened", self.size + 1, np.bool_)
        reopened.fill(False)
        freed_all: list[Int64Array] = []
        while (over := wins > lacking).any():
            # Each pass takes at least one win from a real past its quota, so
            # there are fewer passes than proposals: more would be a bug
            # looping, which must fail a change, not hang it.
            if len(freed_all) > key.size:
                raise AssertionError("maglev: round one's withdrawals do not converge")
            last_key[over] = self._filling_keys(key, real, won, over, lacking[over], wins[over])
            withdrawn = key > last_key[real]
            lost = withdrawn & won
            freed = slot[lost]
            won ^= lost
            slot_key[freed] = _NO_KEY
            reopened[freed] = True
            retry = (reopened[slot] > withdrawn).nonzero()[0]  # reopened and not withdrawn
            reopened[freed] = False
            retry_slot, retry_key = slot[retry], key[retry]
            np.minimum.at(slot_key, retry_slot, retry_key)
            won[retry] = slot_key[retry_slot] == retry_key
            wins = np.bincount(real[won], minlength=self.count)
            freed_all.append(freed)
        freed = np.concatenate(freed_all)
        self.open_map[freed] = slot_key[freed] == _NO_KEY
        return wins

    def _filling_keys(
        self, key: Int64Array, real: Int64Array, won: npt.NDArray[np.bool_],
        over: npt.NDArray[np.bool_], lacking: Int64Array, wins: Int64Array,
    ) -> Int64Array:  # fmt: skip
        """The key of the win that fills each real `over` (a mask of the
        reals; `lacking` and `wins` are theirs): its lacking-th in
        increasing key order. The block's pairs are in key order if
        rank_major, else by real, then by key."""
        import numpy as np

        theirs = (won & over[real]).nonzero()[0]
        if self.rank_major:  # by real, keeping the key order within a real
            theirs = theirs[np.argsort(real[theirs], kind="stable")]
        start = np.cumsum(wins) - wins  # where each real's wins begin in `theirs`
        start += lacking
        filling: Int64Array = key[theirs[start - 1]]
        return filling


def _grid_ranks(quota: Int64Array, size: int) -> int:
    """How many ranks every real proposes in round one, at most (see
    _Grid.propose).

    The more, the more of the table the grid fills: its blocks cost less
    per slot than later rounds, which scan each real's ranks on their own,
    though a block in which a real fills up costs a withdrawal. A real
    expects about q * exp(-ranks / q) of its quota q to be left after the
    grid; measured, the grid is best where that is _GRID_LEFT, most reals
    being full, and at most at _GRID_MOST q, past which it fills little.
    """
    import math

    smallest = int(quota.min())
    factor = min(max(math.log(max(smallest, 1) / _GRID_LEFT), 1.0), _GRID_MOST)
    return min(int(smallest * factor), size)


def _run_round(fill: _Fill, active: Int64Array, deficit: Int64Array) -> None:
    """One round: every real below quota looks for slots it could win,
    then proposes to them (`_propose`)."""
    _narrow_contested(fill, int((fill.next_rank[active] * fill.count + active).min()))
    scan_length = _scan_lengths(fill, active, deficit)
    invert = scan_length > _INVERT_WHEN_SCAN_EXCEEDS * fill.contested.size
    if not invert.any():
        _propose(fill, _found_by_scanning(fill, active, scan_length))
        return
    found = _found_by_inverting(fill, active[invert], deficit[invert])
    scan = ~invert
    if scan.any():  # one _propose for both
        more = _found_by_scanning(fill, active[scan], scan_length[scan])
        found = found.joined(more)
    _propose(fill, found)


@dataclass(frozen=True, slots=True)
class _Found:
    """Slots that reals of a round could win, by real, then by rank."""

    reals: Int64Array
    slot: Int64Array
    key: Int64Array
    per_real: Int64Array  # how many slots each real found
    searched_to: Int64Array  # each real's search covered the ranks below this

    def joined(self, other: _Found) -> _Found:
        import numpy as np

        pairs = zip(self.fields(), other.fields(), strict=True)
        return _Found(*(np.concatenate(pair) for pair in pairs))

    def fields(self) -> tuple[Int64Array, ...]:
        return self.reals, self.slot, self.key, self.per_real, self.searched_to


def _propose(fill: _Fill, found: _Found) -> None:
    """Deferred acceptance on the slots the round found: each real proposes
    to its first ones, as many as it lacks; a real rejected or displaced
    proposes to its next ones, for up to _PROPOSALS_PER_ROUND turns (each
    costs far less than a round). A real resumes after the last slot it
    proposed to, or after its search if it proposed to all it found.
    """
    import numpy as np

    reals, per_real = found.reals, found.per_real
    first = np.cumsum(per_real) - per_real  # where each real's slots begin
    proposed = np.zeros(reals.size, dtype=np.int64)
    for _ in range(_PROPOSALS_PER_ROUND):
        now = np.minimum(fill.quota[reals] - fill.held[reals], per_real - proposed)
        total = int(now.sum())
        if not total:
            break
        # The slots each real proposes to now, as one index: ranges of `now`.
        index = np.repeat(first + proposed - (np.cumsum(now) - now), now)
        index += fill.scratch.counting(total)
        _accept(fill, found.slot[index], found.key[index], np.repeat(reals, now))
        proposed += now
    if found.key.size:
        last_key = found.key[np.maximum(first + proposed - 1, 0)]
        resume = np.where(proposed < per_real, last_key // fill.count + 1, found.searched_to)
    else:
        resume = found.searched_to
    fill.next_rank[reals] = resume


def _scan_lengths(fill: _Fill, reals: Int64Array, deficit: Int64Array) -> Int64Array:
    """Ranks each real should scan to expect `deficit` winnable slots.

    A real's winnable slots are among the contested ones, spread evenly
    over the ranks it has not scanned yet: every free slot (no real has
    proposed to one yet, so all lie ahead of every real) and some of those
    held. The scan expects _SCAN_EXTRA slots more, spares for the slots a
    real loses to others in the round (see _propose); a real that finds
    too few scans on in the next round. Measured, scanning further costs
    more in probes than it saves in rounds.
    """
    import numpy as np

    unscanned = fill.size - fill.next_rank[reals]
    free = int(deficit.sum())  # every free slot is one some real still lacks
    winnable = free + _HELD_SHARE * (fill.contested.size - free)
    expected = (deficit + _SCAN_EXTRA) * unscanned * (1 / max(winnable, 1))
    return np.minimum(expected.astype(np.int64) + 1, unscanned)


def _narrow_contested(fill: _Fill, lowest_key: int) -> None:
    """Keep the contested slots whose key an active real could still beat.

    No proposal from now on has a key below `lowest_key` (active reals
    propose at their next ranks or later; a displaced real goes on after the
    slot it lost, whose key was worse than the one that took it), and slot
    keys only decrease, so slots dropped here never come back.
    """

    beatable = fill.slot_key[fill.contested] > lowest_key
    fill.open_map[fill.contested] = beatable
    fill.contested = fill.contested[beatable.nonzero()[0]]  # faster than a mask index


def _block_width(scan_length: Int64Array) -> int:
    """Width of the rows that scans are cut into: about half a typical scan."""
    typical = max(int(scan_length.sum()) // (2 * scan_length.size), 1)
    return min(max(1 << (typical.bit_length() - 1), 4), 1024)


def _gather(source: npt.NDArray[Any], index: Int64Array, out: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """source[index] into `out`. Every index is in range: mode "clip" only
    spares the copy numpy otherwise makes of `out` (its default mode buffers)."""
    return source.take(index, out=out, mode="clip")


def _probe_slots(
    row_start: Int64Array, row_skip: Int64Array, row_rank: Int64Array, width: int, fill: _Fill
) -> tuple[Int64Array, Int64Array]:
    """Slot of step t of every row, (start + t * skip) % size, with probes
    past the end of a permutation pointed at the never-open slot `size`.

    Returns them as a (rows, width) array and as the flat array behind it.
    numpy's inner loops are slow over short rows, so the broadcast runs
    along the longer side (the (rows, width) array is then a transposed
    view), in uint32: t * skip + start < 2**30 + 2**20, and uint32 division
    by a scalar is several times faster than int64's. The slots are then
    widened to int64, the index type numpy gathers with fastest.
    """
    import numpy as np

    size, rows = fill.size, row_start.size
    steps = fill.scratch.counting(width).astype(np.uint32)
    shape = (width, rows) if rows >= width else (rows, width)
    slots = fill.scratch.get("probe32", width * rows, np.uint32).reshape(shape)
    spare = fill.scratch.get("probe32_spare", width * rows, np.uint32).reshape(shape)
    flat = fill.scratch.get("probe64", width * rows, np.int64)
    wide = flat.reshape(shape)
    skip, start = row_skip.astype(np.uint32), row_start.astype(np.uint32)
    past_end = size - row_rank  # steps at or after this wrap around the permutation
    if rows >= width:
        steps = steps[:, None]
    else:
        skip, start, past_end = skip[:, None], start[:, None], past_end[:, None]
    np.multiply(steps, skip, out=slots)
    slots += start
    _reduce_mod(slots, np.uint32(size), spare)
    np.copyto(wide, slots)
    if int(past_end.min()) < width:
        wide[steps >= past_end] = size  # never open
    return (wide.T if rows >= width else wide), flat


def _open_probes(
    row_start: Int64Array, row_skip: Int64Array, row_rank: Int64Array, width: int, fill: _Fill
) -> tuple[Int64Array, Int64Array, Int64Array]:
    """(row, step, slot) of the probes that land on open slots, in (row,
    step) order."""
    import numpy as np

    scratch = fill.scratch
    slots, flat = _probe_slots(row_start, row_skip, row_rank, width, fill)
    # Gather the map along the flat array (in memory order: an index read
    # with a stride costs a line per probe), then lay the (row, step) view
    # out in order for nonzero.
    is_open = _gather(fill.open_map, flat, scratch.get("is_open", flat.size, np.bool_))
    if not slots.flags.c_contiguous:
        ordered = scratch.get("is_open_rows", flat.size, np.bool_).reshape(slots.shape)
        np.copyto(ordered, is_open.reshape(slots.shape[::-1]).T)
        is_open = ordered.ravel()
    probe = is_open.nonzero()[0]  # (row, step) of open probes, in order
    n = probe.size
    row = np.right_shift(probe, width.bit_length() - 1, out=scratch.get("row", n, np.int64))
    step = np.bitwise_and(probe, width - 1, out=scratch.get("step", n, np.int64))
    if not slots.flags.c_contiguous:  # transposed: (row, step) is at step * rows + row
        np.multiply(step, row_start.size, out=probe)
        probe += row
    return row, step, _gather(flat, probe, scratch.get("slot", n, np.int64))


def _found_by_scanning(fill: _Fill, reals: Int64Array, scan_length: Int64Array) -> _Found:
    """The winnable slots among each real's next `scan_length` ranks.

    Each real's scan is cut into rows of `width` consecutive ranks, so that
    the slots of all probes are one broadcast (row start + step * skip),
    and the contested map weeds out most probes before keys are looked at.
    The arrays of open probes go to the thread's scratch (see _Scratch).
    """
    import numpy as np

    size, count, scratch = fill.size, fill.count, fill.scratch
    width = _block_width(scan_length)
    shift = width.bit_length() - 1  # width is a power of 2
    rows = (scan_length + (width - 1)) >> shift
    row_owner = np.repeat(np.arange(reals.size), rows)  # position in `reals`
    row_real = reals[row_owner]
    row_of_real = scratch.counting(row_owner.size) - (np.cumsum(rows) - rows)[row_owner]
    row_rank = fill.next_rank[row_real] + (row_of_real << shift)
    row_skip = fill.skip[row_real]
    row_start = _reduce_mod(fill.offset[row_real] + row_rank * row_skip, size)
    row, step, slot = _open_probes(row_start, row_skip, row_rank, width, fill)
    n = row.size
    key = _gather(row_rank * count + row_real, row, scratch.get("key", n, np.int64))
    spare = np.multiply(step, count, out=step)
    key += spare
    _gather(fill.slot_key, slot, spare)
    winnable = np.less(key, spare, out=scratch.get("winnable", n, np.bool_)).nonzero()[0]
    found_count = winnable.size
    found_row = _gather(row, winnable, scratch.get("found_row", found_count, np.int64))
    owner = _gather(row_owner, found_row, scratch.get("owner", found_count, np.int64))
    return _Found(
        reals=reals,
        slot=_gather(slot, winnable, scratch.get("found_slot", found_count, np.int64)),
        key=_gather(key, winnable, scratch.get("found_key", found_count, np.int64)),
        per_real=np.bincount(owner, minlength=reals.size),
        searched_to=np.minimum(fill.next_rank[reals] + (rows << shift), size),
    )


def _found_by_inverting(fill: _Fill, reals: Int64Array, deficit: Int64Array) -> _Found:
    """Each real's first `deficit` winnable slots, found among the contested.

    The contested slots hold every slot any of these reals could still
    win, so ranking them through the inverse permutation (rank = (slot -
    offset) * skip**-1 mod size) finds the same slots the scan would,
    without walking the ranks in between. Each real has at least
    `deficit` winnable slots (those it will end up with), and a partial
    sort of each real's row picks the lowest ranks.
    """
    import numpy as np

    size, count = fill.size, fill.count
    contested = fill.contested
    rank, _, winnable = _ranks_on_contested(fill, reals)
    rank[~winnable] = size  # sorts after every winnable rank
    most = int(deficit.max())
    if most < contested.size:
        rank = np.partition(rank, most - 1, axis=1)[:, :most]
    rank.sort(axis=1)
    owner, column = np.nonzero(np.arange(most) < deficit[:, None])  # by real, then by rank
    chosen = rank[owner, column]
    real = reals[owner]
    slot = _reduce_mod(fill.offset[real] + chosen * fill.skip[real], size)
    return _Found(
        reals=reals,
        slot=slot,
        key=chosen * count + real,
        per_real=deficit,
        searched_to=rank[np.arange(reals.size), deficit - 1] + 1,
    )


def _accept(fill: _Fill, slot: Int64Array, key: Int64Array, real: Int64Array) -> None:
    """Each proposed slot keeps its best key; displaced holders lose it."""
    import numpy as np

    before = fill.slot_key[slot]
    np.minimum.at(fill.slot_key, slot, key)
    # Keys are unique, so each slot has one winner. Integer gathers are
    # several times faster than boolean-mask indexing here.
    won = (fill.slot_key[slot] == key).nonzero()[0]
    displaced = before[won]
    displaced = _reduce_mod(displaced[displaced != _NO_KEY], fill.count)
    fill.held += np.bincount(real[won], minlength=fill.count)
    fill.held -= np.bincount(displaced, minlength=fill.count)


def _fill_table_literally(
    offset: list[int], skip: list[int], quota: list[int], size: int
) -> list[int]:
    """Spec step 5 word for word, in pure Python: the oracle for tests."""
    owner = [-1] * size
    held = [0] * len(offset)
    position = list(offset)
    active = [j for j, q in enumerate(quota) if q > 0]
    while active:
        still_active = []
        for j in active:
            if owner[position[j]] < 0:
                owner[position[j]] = j
                held[j] += 1
            position[j] = (position[j] + skip[j]) % size
            if held[j] < quota[j]:
                still_active.append(j)
        active = still_active
    return owner


# ---- Public entry points --------------------------------------------------------


def build_table(
    reals: Sequence[Address], size: int = DEFAULT_SIZE, weights: Sequence[int] | None = None
) -> Table:
    """The Maglev table of `reals`: entry i is the index in `reals` owning slot i.

    `size` must be a prime no larger than MAX_SIZE and at least the number
    of reals with a non-zero weight (`check_ring_size`). `weights` (default all 1) are
    non-negative ints below 2**32; weight 0 gives a real no slots. If no real
    has a non-zero weight (or there are no reals), every entry is -1: the
    data plane then finds no real for the VIP. See the module docstring for
    the exact algorithm.
    """
    import numpy as np

    size, participants = _prepare(reals, size, weights)
    if not participants.count:
        return np.full(size, -1, dtype=np.int32)
    offset, skip = _permutations_of_hashes(participants.hashes, size)
    quota = quotas(participants.weights, size)
    owner = _fill_table(offset, skip, quota, size)
    return participants.input_indexes.astype(np.int32).take(owner)


def build_table_literally(
    reals: Sequence[Address], size: int = DEFAULT_SIZE, weights: Sequence[int] | None = None
) -> Table:
    """Same result as build_table, filled by the plain sequential loop.

    Far slower; it exists to check build_table and to time against it.
    """
    import numpy as np

    size, participants = _prepare(reals, size, weights)
    if not participants.count:
        return np.full(size, -1, dtype=np.int32)
    offset, skip = _permutations_of_hashes(participants.hashes, size)
    quota = quotas(participants.weights, size).tolist()
    owner = _fill_table_literally(offset.tolist(), skip.tolist(), quota, size)
    return participants.input_indexes.astype(np.int32)[owner]


def _prepare(
    reals: Sequence[Address], size: int, weights: Sequence[int] | None
) -> tuple[int, _Participants]:
    size = _validated_size(size)
    participants = _ipv4_participants(reals, weights)
    if participants is None:
        # Packed addresses, the common input, skip the general conversion.
        addresses = [
            real if type(real) is bytes and len(real) in (4, 16) else packed_address(real)
            for real in reals
        ]
        weights = _validated_weights(weights, len(reals))
        participants = _canonical_participants(addresses, weights)
    check_ring_size(size, participants.count)
    return size, participants
