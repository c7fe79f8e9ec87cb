"""A thin, typed layer over libbpf (through the cffi extension `xlb._libbpf`).

Objects here own kernel handles and release them on `close()` (or when
garbage collected). Keys and values are raw bytes: the layers above pack
them with the ABI structs from `ffi`. Every failing libbpf call goes
through `check()`, the one place where a negative errno becomes an
exception from `xlb.errors` carrying what libbpf printed meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mmap
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import AttachError, BpfError, MapKeyError, MapSizeError, NotFoundError, VerifierError
from .xdp import XDP_ACTIONS

try:
    from ._libbpf import ffi as ffi
    from ._libbpf import lib as lib
except ImportError as exc:  # pragma: no cover - only before `build.py build`
    raise ImportError("xlb's libbpf binding is not built; run `python3 build.py build`") from exc

log = logging.getLogger("xlb.libbpf")

BytesLike = bytes | bytearray | memoryview

XdpMode = Literal["native", "generic"]

# ------------------------------------------------------------ libbpf logging

_capture = threading.local()
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


@ffi.def_extern()  # type: ignore[untyped-decorator]
def xlb_libbpf_log(level: int, message: Any) -> None:
    # An exception cannot cross back into C: cffi would print and drop it.
    # That matters for signals (SIGTERM's SystemExit can land here), so keep
    # it and re-raise it when the surrounding capture block ends.
    try:
        text = ffi.string(message).decode(errors="replace")
        lines = getattr(_capture, "lines", None)
        if lines is not None:
            lines.append(text)
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", text.rstrip())
    except BaseException as exc:
        _capture.pending = exc


lib.xlb_route_libbpf_print()


@contextlib.contextmanager
def capture_libbpf_log() -> Iterator[list[str]]:
    """Collect what libbpf prints inside the block (per thread)."""
    previous = getattr(_capture, "lines", None)
    lines: list[str] = []
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = previous
        pending = getattr(_capture, "pending", None)
        if pending is not None:
            _capture.pending = None
            raise pending


def check(
    ret: int, what: str, lines: list[str] | None = None, cls: type[BpfError] = BpfError
) -> int:
    """Turn a libbpf return value (negative errno) into an exception."""
    if ret >= 0:
        return ret
    raise cls(what, -ret, "".join(lines or []))


def check_ptr(
    ptr: Any, what: str, lines: list[str] | None = None, cls: type[BpfError] = BpfError
) -> Any:
    """libbpf returns NULL and sets errno for pointer-returning calls."""
    if ptr == ffi.NULL:
        raise cls(what, ffi.errno or errno.EINVAL, "".join(lines or []))
    return ptr


def possible_cpus() -> int:
    return check(lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def ifindex(interface: str) -> int:
    """The index of an interface in the current network namespace."""
    try:
        return socket.if_nametoindex(interface)
    except OSError as exc:
        raise NotFoundError(f"no network interface named {interface!r}") from exc


# ------------------------------------------------------------------ maps


class Map:
    """A BPF map: raw-bytes access plus numpy views for per-CPU values."""

    def __init__(self, fd: int, name: str, owns_fd: bool = False) -> None:
        info = ffi.new("struct bpf_map_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
        check(lib.bpf_obj_get_info_by_fd(fd, info, size), f"map info for {name}")
        self.fd = fd
        self.name = name
        self.type = int(info.type)
        self.key_size = int(info.key_size)
        self.value_size = int(info.value_size)
        self.max_entries = int(info.max_entries)
        self.flags = int(info.map_flags)
        self.id = int(info.id)
        self._owns_fd = owns_fd

    # -- construction

    @classmethod
    def create(
        cls,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        inner_map_fd: int = 0,
    ) -> Map:
        """Create a standalone map (e.g. an inner ring map; a map of maps
        needs `inner_map_fd`, a map whose shape its entries share)."""
        opts = ffi.new("struct bpf_map_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_map_create_opts")
        opts.map_flags = flags
        opts.inner_map_fd = inner_map_fd
        with capture_libbpf_log() as lines:
            fd = lib.bpf_map_create(
                map_type, name.encode()[:15], key_size, value_size, max_entries, opts
            )
        check(fd, f"creating map {name!r} ({max_entries} entries)", lines)
        return cls(fd, name, owns_fd=True)

    @classmethod
    def from_pin(cls, path: str | Path) -> Map:
        fd = lib.bpf_obj_get(str(path).encode())
        if fd < 0:
            raise NotFoundError(f"no pinned BPF map at {path}")
        return cls(fd, Path(path).name, owns_fd=True)

    @classmethod
    def from_id(cls, map_id: int, name: str = "") -> Map:
        fd = check(lib.bpf_map_get_fd_by_id(map_id), f"opening map id {map_id}")
        return cls(fd, name or f"id{map_id}", owns_fd=True)

    def close(self) -> None:
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def pin(self, path: str | Path) -> None:
        check(lib.bpf_obj_pin(self.fd, str(path).encode()), f"pinning map {self.name} at {path}")

    # -- size checks

    @property
    def is_percpu(self) -> bool:
        return self.type in (
            lib.BPF_MAP_TYPE_PERCPU_ARRAY,
            lib.BPF_MAP_TYPE_PERCPU_HASH,
            lib.BPF_MAP_TYPE_LRU_PERCPU_HASH,
        )

    @property
    def stored_value_size(self) -> int:
        """Bytes of one value as the syscall reads it (all CPUs for per-CPU maps)."""
        if self.is_percpu:
            return ((self.value_size + 7) // 8 * 8) * possible_cpus()
        return self.value_size

    def _check_key(self, key: BytesLike) -> None:
        if len(key) != self.key_size:
            raise MapSizeError(
                f"map {self.name!r}: key is {len(key)} bytes, the map's keys are {self.key_size}"
            )

    def _check_value(self, value: BytesLike) -> None:
        if len(value) != self.stored_value_size:
            raise MapSizeError(
                f"map {self.name!r}: value is {len(value)} bytes, "
                f"the map's values are {self.stored_value_size}"
            )

    # -- element access

    def lookup(self, key: BytesLike) -> bytes | None:
        """The value stored under `key`, or None if absent."""
        self._check_key(key)
        out = ffi.new("char[]", self.stored_value_size)
        ret = lib.bpf_map_lookup_elem(self.fd, ffi.from_buffer(key), out)
        if ret == -errno.ENOENT:
            return None
        check(ret, f"lookup in map {self.name}")
        return bytes(ffi.buffer(out))

    def update(self, key: BytesLike, value: BytesLike, flags: int = 0) -> None:
        self._check_key(key)
        self._check_value(value)
        ret = lib.bpf_map_update_elem(self.fd, ffi.from_buffer(key), ffi.from_buffer(value), flags)
        check(ret, f"update of map {self.name}")

    def update_fd(self, key: BytesLike, inner_fd: int) -> None:
        """Store a map fd in a map-of-maps (the kernel keeps the map, not the fd)."""
        self._check_key(key)
        value = ffi.new("__u32 *", inner_fd)
        check(
            lib.bpf_map_update_elem(self.fd, ffi.from_buffer(key), value, 0),
            f"swap of inner map in {self.name}",
        )

    def delete(self, key: BytesLike) -> None:
        self._check_key(key)
        ret = lib.bpf_map_delete_elem(self.fd, ffi.from_buffer(key))
        if ret == -errno.ENOENT:
            raise MapKeyError(f"delete from map {self.name}", errno.ENOENT)
        check(ret, f"delete from map {self.name}")

    def keys(self) -> Iterator[bytes]:
        """Every key (snapshot semantics are the kernel's: best effort)."""
        key = ffi.new("char[]", self.key_size)
        next_key = ffi.new("char[]", self.key_size)
        prev = ffi.NULL
        while lib.bpf_map_get_next_key(self.fd, prev, next_key) == 0:
            yield bytes(ffi.buffer(next_key))
            ffi.memmove(key, next_key, self.key_size)
            prev = key

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def update_batch(self, keys: BytesLike, values: BytesLike, count: int, flags: int = 0) -> None:
        """Update `count` packed keys/values in one syscall."""
        if len(keys) != count * self.key_size or len(values) != count * self.stored_value_size:
            raise MapSizeError(f"map {self.name!r}: batch buffers do not hold {count} entries")
        opts = ffi.new("struct bpf_map_batch_opts *")
        opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
        opts.elem_flags = flags
        n = ffi.new("__u32 *", count)
        ret = lib.bpf_map_update_batch(
            self.fd, ffi.from_buffer(keys), ffi.from_buffer(values), n, opts
        )
        check(ret, f"batch update of map {self.name} ({n[0]} of {count} written)")

    def lookup_batch(self, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """All entries as packed (keys, values, count), read in chunks."""
        all_keys, all_values, total = bytearray(), bytearray(), 0
        for keys, values, n in self._batches(chunk):
            all_keys += ffi.buffer(keys, n * self.key_size)
            all_values += ffi.buffer(values, n * self.stored_value_size)
            total += n
        return bytes(all_keys), bytes(all_values), total

    def count(self, chunk: int = 8192) -> int:
        """How many entries the map holds now (a hash map's fill), read in
        batches and not kept: the kernel walks every bucket, about 0.4 µs
        an entry (0.4 s for a million on the development VM)."""
        return sum(n for _, _, n in self._batches(chunk))

    def _batches(self, chunk: int) -> Iterator[tuple[Any, Any, int]]:
        """BPF_MAP_LOOKUP_BATCH in chunks: (keys buffer, values buffer,
        entries in them); the buffers are reused by the next chunk."""
        opts = ffi.new("struct bpf_map_batch_opts *")
        opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
        keys = ffi.new("char[]", chunk * self.key_size)
        values = ffi.new("char[]", chunk * self.stored_value_size)
        # Hash maps need a batch token at least key_size wide; 8 suits arrays.
        token_size = max(self.key_size, 8)
        in_batch, out_batch = ffi.new("char[]", token_size), ffi.new("char[]", token_size)
        first = True
        while True:
            n = ffi.new("__u32 *", chunk)
            ret = lib.bpf_map_lookup_batch(
                self.fd, ffi.NULL if first else in_batch, out_batch, keys, values, n, opts
            )
            if ret < 0 and ret != -errno.ENOENT:
                check(ret, f"batch lookup of map {self.name}")
            yield keys, values, int(n[0])
            if ret == -errno.ENOENT:
                return
            ffi.memmove(in_batch, out_batch, token_size)
            first = False

    def mapped(self) -> MappedArray:
        """This BPF_F_MMAPABLE array's values, shared with the kernel."""
        return MappedArray(self)

    # -- per-CPU values

    def lookup_percpu(self, key: BytesLike, dtype: npt.DTypeLike = np.uint64) -> npt.NDArray[Any]:
        """A per-CPU value as a (cpus, ...) numpy array of `dtype`."""
        raw = self.lookup(key)
        if raw is None:
            raise MapKeyError(f"lookup in map {self.name}", errno.ENOENT)
        stride = (self.value_size + 7) // 8 * 8
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(possible_cpus(), stride)
        return rows[:, : self.value_size].copy().view(dtype)

    def sum_percpu(self, key: BytesLike) -> npt.NDArray[np.uint64]:
        """A per-CPU value of u64 fields, summed over CPUs."""
        summed: npt.NDArray[np.uint64] = self.lookup_percpu(key, np.uint64).sum(
            axis=0, dtype=np.uint64
        )
        return summed


# -------------------------------------------------------------- programs


@dataclass(frozen=True)
class TestRunResult:
    """What one BPF_PROG_TEST_RUN returned."""

    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes | None = None

    @property
    def action(self) -> str:
        return XDP_ACTIONS.get(self.retval, str(self.retval))


class Program:
    """A loaded BPF program: one its BpfObject loaded (`handle`, the object
    owns the fd), or one opened from a pin (it owns its fd)."""

    def __init__(self, fd: int, name: str, owner: BpfObject, handle: Any = None) -> None:
        self.fd = fd
        self.name = name
        self._owner = owner  # keeps the object (and so a loaded program's fd) alive
        self._handle = handle

    @classmethod
    def from_pin(cls, path: Path, name: str, owner: BpfObject) -> Program | None:
        """The program pinned at `path`, or None if none is."""
        fd = lib.bpf_obj_get(str(path).encode())
        return None if fd < 0 else cls(fd, name, owner)

    def close(self) -> None:
        """Drop a pinned program's fd (a loaded one's is the object's)."""
        if self._handle is None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    @property
    def insn_count(self) -> int:
        """Instructions after libbpf's relocations, before the verifier."""
        if self._handle is None:
            raise BpfError(f"instructions of program {self.name} (opened from a pin)", errno.ENOENT)
        return int(lib.bpf_program__insn_cnt(self._handle))

    def jited_lines(self) -> list[tuple[int, int]]:
        """(offset in the JIT image, instruction index) of each line-info
        record, from the kernel's jited line info: what maps a sampled
        address back to the instruction (and so the source line) it runs."""
        info = self._info()
        count, rec_size = int(info.nr_line_info), int(info.line_info_rec_size)
        records = ffi.new("char[]", max(count * rec_size, 1))
        addresses = ffi.new("__u64[]", max(count, 1))
        ksym = ffi.new("__u64[]", 1)
        info = ffi.new("struct bpf_prog_info *")
        info.nr_line_info, info.line_info_rec_size = count, rec_size
        info.line_info = int(ffi.cast("uintptr_t", records))
        info.nr_jited_line_info, info.jited_line_info_rec_size = count, 8
        info.jited_line_info = int(ffi.cast("uintptr_t", addresses))
        info.nr_jited_ksyms, info.jited_ksyms = 1, int(ffi.cast("uintptr_t", ksym))
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"line info of {self.name}")
        raw = ffi.buffer(records, count * rec_size)
        insns = [
            int.from_bytes(raw[i * rec_size : i * rec_size + 4], sys.byteorder)
            for i in range(count)
        ]
        return sorted((int(addresses[i]) - int(ksym[0]), insns[i]) for i in range(count))

    def _info(self) -> Any:
        info = ffi.new("struct bpf_prog_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"info for program {self.name}")
        return info

    def map_ids(self) -> set[int]:
        """The ids of the maps the program uses."""
        count = int(self._info().nr_map_ids)
        ids = ffi.new("__u32[]", max(count, 1))
        info = ffi.new("struct bpf_prog_info *")
        info.nr_map_ids = count
        info.map_ids = int(ffi.cast("uintptr_t", ids))
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"map ids of program {self.name}")
        return {int(ids[i]) for i in range(min(count, int(info.nr_map_ids)))}

    def info(self) -> dict[str, int]:
        """Kernel-side sizes: xlated and jited bytes, program id, and the
        instructions the verifier processed to accept it (what its load
        time follows; the kernel refuses a program past 1M)."""
        info = self._info()
        return {
            "id": int(info.id),
            "xlated_bytes": int(info.xlated_prog_len),
            "jited_bytes": int(info.jited_prog_len),
            "xlated_insns": int(info.xlated_prog_len) // 8,
            "verified_insns": int(info.verified_insns),
        }

    def test_run(
        self,
        data: BytesLike,
        *,
        ctx: BytesLike | None = None,
        repeat: int = 1,
        flags: int = 0,
        cpu: int = 0,
        batch_size: int = 0,
        data_out_size: int | None = None,
    ) -> TestRunResult:
        """Run the program once (or `repeat` times) on `data` with BPF_PROG_TEST_RUN."""
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        data_in = ffi.from_buffer(data)
        out_size = data_out_size if data_out_size is not None else len(data) + 512
        data_out = ffi.new("char[]", max(out_size, 1)) if out_size else ffi.NULL
        opts.data_in = data_in
        opts.data_size_in = len(data)
        opts.data_out = data_out
        opts.data_size_out = out_size
        ctx_out = None
        if ctx is not None:
            ctx_in = ffi.from_buffer(ctx)
            ctx_out = ffi.new("char[]", len(ctx))
            opts.ctx_in = ctx_in
            opts.ctx_size_in = len(ctx)
            opts.ctx_out = ctx_out
            opts.ctx_size_out = len(ctx)
        opts.repeat = repeat
        opts.flags = flags
        opts.cpu = cpu
        opts.batch_size = batch_size
        with capture_libbpf_log() as lines:
            ret = lib.bpf_prog_test_run_opts(self.fd, opts)
        check(ret, f"test run of program {self.name}", lines)
        out = bytes(ffi.buffer(data_out, opts.data_size_out)) if out_size else b""
        ctx_bytes = bytes(ffi.buffer(ctx_out, opts.ctx_size_out)) if ctx_out is not None else None
        return TestRunResult(int(opts.retval), out, int(opts.duration), ctx_bytes)


class BpfObject:
    """An opened and loaded BPF ELF object: its programs and maps.

    `pin_dir`: maps are pinned there by name; a map already pinned with a
    compatible definition is reused instead of created (that is how a new
    process, or a new build of the program, adopts a running data plane).
    `only`: load just these programs (the rest stay unloaded).
    `sizes`: max_entries of these maps, instead of the object's (a size
    known only on the machine, such as one per possible CPU).
    `pin_programs` (with `pin_dir`): pin the loaded programs there too,
    under this build's id (the object's bytes and `sizes`), and, unless
    `reload`, take the programs pinned under it instead of loading them:
    the verifier's work (~0.7 s for the balancer) is paid once per build,
    not by every process that adopts the data plane. `reused` says which.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pin_dir: str | Path | None = None,
        only: list[str] | None = None,
        sizes: Mapping[str, int] | None = None,
        pin_programs: bool = False,
        reload: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"no BPF object file at {self.path}")
        self._obj: Any = ffi.NULL
        self.programs: dict[str, Program] = {}
        self.maps: dict[str, Map] = {}
        self.reused = False
        with capture_libbpf_log() as lines:
            obj = lib.bpf_object__open_file(str(self.path).encode(), ffi.NULL)
            self._obj = check_ptr(obj, f"opening BPF object {self.path}", lines)
        try:
            self._prepare(pin_dir, only, sizes or {})
            build = build_id(self.path, sizes or {})
            pins = Path(pin_dir) if pin_dir is not None and pin_programs else None
            if pins is not None and not reload:
                self.reused = self._adopt_pinned(pins, build)
            if not self.reused:
                self._load()
                if pins is not None:
                    self._pin_programs(pins, build)
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        with capture_libbpf_log() as lines:
            ret = lib.bpf_object__load(self._obj)
        check(ret, _load_failure(self.path.name, lines), lines, _load_error_class(lines))
        self.programs = {p.name: p for p in self._iter_programs()}
        self.maps = {m.name: m for m in self._iter_maps()}

    def _adopt_pinned(self, pin_dir: Path, build: str) -> bool:
        """Take this build's programs and every map from their pins; False
        (nothing kept) if one is missing, or if a program does not use the
        maps pinned now (they were replaced since it was loaded)."""
        programs: dict[str, Program] = {}
        maps: dict[str, Map] = {}
        adopted = False
        try:
            for handle in self._raw_programs():
                if lib.bpf_program__autoload(handle):
                    name = ffi.string(lib.bpf_program__name(handle)).decode()
                    pin = pin_dir / program_pin_name(name, build)
                    if (program := Program.from_pin(pin, name, self)) is None:
                        return False
                    programs[name] = program
            for handle in self._raw_maps():
                name = ffi.string(lib.bpf_map__name(handle)).decode()
                if name.startswith(".") or "." in name:
                    return False  # a private map (.data, .bss) is the load's own
                maps[name] = Map.from_pin(pin_dir / name)
            pinned_ids = {m.id for m in maps.values()}
            adopted = bool(programs) and all(p.map_ids() <= pinned_ids for p in programs.values())
            return adopted
        except NotFoundError:
            return False
        finally:
            if adopted:
                self.programs, self.maps = programs, maps
            else:
                for program in programs.values():
                    program.close()
                for pinned_map in maps.values():
                    pinned_map.close()

    def _pin_programs(self, pin_dir: Path, build: str) -> None:
        """Pin each loaded program under this build's id; unpin those of
        other builds (they would keep old programs alive in the kernel)."""
        for name, program in self.programs.items():
            pin = pin_dir / program_pin_name(name, build)
            for old in pin_dir.glob(program_pin_name(name, "*")):
                if old != pin:
                    old.unlink(missing_ok=True)
            pin.unlink(missing_ok=True)
            check(lib.bpf_obj_pin(program.fd, str(pin).encode()), f"pinning program {name}")

    def _prepare(
        self, pin_dir: str | Path | None, only: list[str] | None, sizes: Mapping[str, int]
    ) -> None:
        for handle in self._raw_programs():
            name = ffi.string(lib.bpf_program__name(handle)).decode()
            if only is not None and name not in only:
                lib.bpf_program__set_autoload(handle, False)
        for handle in self._raw_maps():
            name = ffi.string(lib.bpf_map__name(handle)).decode()
            if name in sizes:
                check(lib.bpf_map__set_max_entries(handle, sizes[name]), f"size of map {name}")
            if pin_dir is None or name.startswith(".") or "." in name:
                continue  # .data/.rodata/.bss stay private
            path = str(Path(pin_dir) / name).encode()
            check(lib.bpf_map__set_pin_path(handle, path), f"pin path for map {name}")

    def _raw_programs(self) -> Iterator[Any]:
        prog = lib.bpf_object__next_program(self._obj, ffi.NULL)
        while prog != ffi.NULL:
            yield prog
            prog = lib.bpf_object__next_program(self._obj, prog)

    def _raw_maps(self) -> Iterator[Any]:
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            yield m
            m = lib.bpf_object__next_map(self._obj, m)

    def _iter_programs(self) -> Iterator[Program]:
        for handle in self._raw_programs():
            fd = int(lib.bpf_program__fd(handle))
            if fd >= 0:
                name = ffi.string(lib.bpf_program__name(handle)).decode()
                yield Program(fd, name, self, handle)

    def _iter_maps(self) -> Iterator[Map]:
        for handle in self._raw_maps():
            name = ffi.string(lib.bpf_map__name(handle)).decode()
            yield Map(int(lib.bpf_map__fd(handle)), name)

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise NotFoundError(
                f"{self.path.name} has no program {name!r} (has {sorted(self.programs)})"
            ) from None

    def map(self, name: str) -> Map:
        try:
            return self.maps[name]
        except KeyError:
            raise NotFoundError(
                f"{self.path.name} has no map {name!r} (has {sorted(self.maps)})"
            ) from None

    def close(self) -> None:
        """Release the object; pinned maps and attached links stay in the kernel."""
        for program in getattr(self, "programs", {}).values():
            program.close()
        if self._obj != ffi.NULL:
            lib.bpf_object__close(self._obj)
            self._obj = ffi.NULL
        for m in getattr(self, "maps", {}).values():
            m.close()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class MappedArray:
    """The values of a BPF_F_MMAPABLE array through a shared mapping.

    `rows` is a (max_entries, value_size) uint8 view of the kernel's own
    memory: a write to it is what the programs read next, with no system
    call. That is what an update does too (an array update copies the
    value in place; neither is atomic for a program reading it). The
    kernel lays elements out 8-byte aligned, so rows may be strided.
    """

    def __init__(self, array: Map) -> None:
        stride = (array.value_size + 7) // 8 * 8
        length = -(-array.max_entries * stride // mmap.PAGESIZE) * mmap.PAGESIZE
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self._region: mmap.mmap | None = mmap.mmap(array.fd, length, mmap.MAP_SHARED, prot)
        whole = np.frombuffer(self._region, np.uint8, array.max_entries * stride)
        self.rows: npt.NDArray[np.uint8] = whole.reshape(array.max_entries, stride)[
            :, : array.value_size
        ]

    def close(self) -> None:
        """Unmap, once no view of `rows` is left (until then the mapping
        stays, and with it the map: the collector unmaps it later)."""
        if self._region is None:
            return
        region, self._region = self._region, None
        del self.rows
        with contextlib.suppress(BufferError):  # a view still exported
            region.close()


def build_id(path: Path, sizes: Mapping[str, int]) -> str:
    """What tells builds apart: the object's bytes and the machine's sizes."""
    digest = hashlib.sha256(path.read_bytes())
    digest.update(repr(sorted(sizes.items())).encode())
    return digest.hexdigest()[:16]


def program_pin_name(program: str, build: str) -> str:
    """A program's pin for one build (bpffs names take no dots)."""
    return f"prog_{program}_{build}"


def _load_failure(name: str, lines: list[str]) -> str:
    """What failed, in words an operator can act on."""
    what = f"loading BPF object {name}"
    mismatch = re.search(r"couldn't reuse pinned map at '([^']+)'", "".join(lines))
    if mismatch:
        what += (
            f": the map pinned at {mismatch[1]} has another definition (pinned by an "
            "incompatible build of xlb); tear that data plane down "
            "(`xlb serve --teardown`, or Balancer.close(detach=True)) or use another pin directory"
        )
    return what


def _load_error_class(lines: list[str]) -> type[BpfError]:
    text = "".join(lines)
    return VerifierError if ("verifier" in text or "processed" in text) else BpfError


# ------------------------------------------------------------- attaching


class XdpLink:
    """An XDP program attached to an interface through a BPF link.

    The link is an fd; pinning it keeps the program attached after this
    process exits. `detach()` removes the attachment (and the pin).
    """

    def __init__(self, fd: int, ifindex: int, pin_path: Path | None = None) -> None:
        self.fd = fd
        self.ifindex = ifindex
        self.pin_path = pin_path

    @classmethod
    def attach(cls, program: Program, interface: str, mode: XdpMode = "native") -> XdpLink:
        index = ifindex(interface)
        opts = ffi.new("struct bpf_link_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_create_opts")
        opts.flags = lib.XDP_FLAGS_DRV_MODE if mode == "native" else lib.XDP_FLAGS_SKB_MODE
        with capture_libbpf_log() as lines:
            fd = lib.bpf_link_create(program.fd, index, lib.BPF_XDP, opts)
        check(fd, f"attaching {program.name} to {interface} ({mode} XDP)", lines, AttachError)
        return cls(fd, index)

    @classmethod
    def attach_or_adopt(
        cls, program: Program, interface: str, mode: XdpMode, pin_path: Path | None
    ) -> tuple[XdpLink, bool]:
        """The link pinned at `pin_path`, now running `program` (a new build
        swaps in atomically; the same one is a no-op), or, if none is pinned,
        a new attachment pinned there. Returns (link, attached_here)."""
        if pin_path is not None and pin_path.exists():
            link = cls.open_pinned(pin_path, ifindex(interface))
            link.update(program)
            return link, False
        link = cls.attach(program, interface, mode)
        if pin_path is not None:
            link.pin(pin_path)
        return link, True

    @classmethod
    def open_pinned(cls, path: str | Path, ifindex: int = 0) -> XdpLink:
        fd = lib.bpf_obj_get(str(path).encode())
        if fd < 0:
            raise NotFoundError(f"no pinned XDP link at {path}")
        return cls(fd, ifindex, Path(path))

    def pin(self, path: str | Path) -> None:
        check(lib.bpf_obj_pin(self.fd, str(path).encode()), f"pinning XDP link at {path}")
        self.pin_path = Path(path)

    def update(self, program: Program) -> None:
        """Swap the attached program atomically (no packet sees no program)."""
        check(lib.bpf_link_update(self.fd, program.fd, ffi.NULL), "replacing the XDP program")

    def detach(self) -> None:
        if self.fd < 0:
            return
        check(lib.bpf_link_detach(self.fd), "detaching XDP link", cls=AttachError)
        if self.pin_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pin_path.unlink()
        self.close()

    def close(self) -> None:
        """Drop our fd; a pinned link stays attached."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def xdp_attached_id(interface: str) -> int:
    """The id of the XDP program on an interface (any mode), 0 if none."""
    prog_id = ffi.new("__u32 *")
    check(lib.bpf_xdp_query_id(ifindex(interface), 0, prog_id), f"querying XDP on {interface}")
    return int(prog_id[0])


class TcAttachment:
    """A program attached at tc ingress or egress (clsact) of an interface."""

    def __init__(self, program: Program, interface: str, direction: str = "ingress") -> None:
        self.interface = interface
        self._hook = ffi.new("struct bpf_tc_hook *")
        self._hook.sz = ffi.sizeof("struct bpf_tc_hook")
        self._hook.ifindex = ifindex(interface)
        self._hook.attach_point = (
            lib.BPF_TC_INGRESS if direction == "ingress" else lib.BPF_TC_EGRESS
        )
        ret = lib.bpf_tc_hook_create(self._hook)
        if ret < 0 and ret != -errno.EEXIST:
            check(ret, f"creating clsact on {interface}", cls=AttachError)
        self._opts = ffi.new("struct bpf_tc_opts *")
        self._opts.sz = ffi.sizeof("struct bpf_tc_opts")
        self._opts.prog_fd = program.fd
        with capture_libbpf_log() as lines:
            ret = lib.bpf_tc_attach(self._hook, self._opts)
        check(ret, f"attaching {program.name} at tc {direction} of {interface}", lines, AttachError)

    def detach(self) -> None:
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.handle = self._opts.handle
        opts.priority = self._opts.priority
        check(lib.bpf_tc_detach(self._hook, opts), f"detaching tc program from {self.interface}")
