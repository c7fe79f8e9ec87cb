"""The bench programs as Python objects: the test-run wrapper, the baselines.

`Harness` owns one loaded wrapper.bpf.o and runs any XDP program through it
(`measure`), so every figure of bench/pktpath.py and its baselines pay the
same restore + tail call.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xlb._bpf import BpfObject, Map, Program, TestRunResult, ffi, lib

from .common import compile_bpf

# struct bench_wrap_state (bench.h): eth[14], orig_len, src_off, dst_off,
# src_base, src_mod, dst_base, dst_mod, src_ctr, dst_ctr, pad, iterations.
WRAP_STATE = struct.Struct("<14sHHHIIIIII4xQ")
# struct bench_gen_state: hdr[56], flows, pad.
GEN_STATE = struct.Struct("<56sI4x")


def load(name: str, defines: dict[str, int] | None = None) -> BpfObject:
    return BpfObject(compile_bpf(name, defines))


def bss(obj: BpfObject) -> Map:
    for name, m in obj.maps.items():
        if name.endswith(".bss"):
            return m
    raise LookupError(f"{obj.path.name} has no .bss map")


@dataclass(frozen=True)
class Flows:
    """Which two 32-bit words of the frame the wrapper rewrites per iteration.

    word(src_off) = src_base + (i mod src_mod), word(dst_off) likewise; the
    bases are host-order numbers, written in network order.
    """

    src_off: int
    src_base: int
    src_mod: int = 1
    dst_off: int = 0
    dst_base: int = 0
    dst_mod: int = 1

    @classmethod
    def fixed(cls, frame: bytes) -> Flows:
        """Rewrite the v4/v6 source and destination words with their own
        values: the same stores as a varying run, one flow."""
        src_off, dst_off = flow_word_offsets(frame)
        return cls(
            src_off,
            int.from_bytes(frame[src_off : src_off + 4], "big"),
            1,
            dst_off,
            int.from_bytes(frame[dst_off : dst_off + 4], "big"),
            1,
        )

    @classmethod
    def varying(cls, frame: bytes, sources: int, destinations: int = 1) -> Flows:
        """`sources` distinct client addresses (the last address word counts
        up from the frame's), optionally `destinations` consecutive VIPs."""
        base = cls.fixed(frame)
        return cls(base.src_off, base.src_base, sources, base.dst_off, base.dst_base, destinations)


def flow_word_offsets(frame: bytes) -> tuple[int, int]:
    """Offsets of the last 32-bit word of the IP source and destination."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        return 14 + 12, 14 + 16
    if ethertype == 0x86DD:
        return 14 + 8 + 12, 14 + 24 + 12
    raise ValueError(f"not an IP frame (ethertype {ethertype:#06x})")


class Harness:
    """Runs a program under test behind wrapper.bpf.o with BPF_PROG_TEST_RUN."""

    def __init__(self) -> None:
        self.obj = load("wrapper")
        self.wrapper = self.obj.program("bench_wrapper")
        self.target = self.obj.map("target")
        self.state = bss(self.obj)
        if self.state.value_size != WRAP_STATE.size:
            raise RuntimeError(
                f"wrapper .bss is {self.state.value_size} bytes, progs.py packs {WRAP_STATE.size}"
            )

    def close(self) -> None:
        self.obj.close()

    def prepare(self, program: Program, frame: bytes, flows: Flows) -> None:
        """Point the wrapper at `program` and reset its flow counters."""
        self.target.update_fd(struct.pack("<I", 0), program.fd)
        self.state.update(
            struct.pack("<I", 0),
            WRAP_STATE.pack(
                frame[:14],
                len(frame),
                flows.src_off,
                flows.dst_off,
                flows.src_base,
                flows.src_mod,
                flows.dst_base,
                flows.dst_mod,
                0,
                0,
                0,
            ),
        )

    def iterations(self) -> int:
        raw = self.state.lookup(struct.pack("<I", 0))
        assert raw is not None
        return int(WRAP_STATE.unpack(raw)[-1])

    def run(self, frame: bytes, repeat: int) -> TestRunResult:
        return self.wrapper.test_run(frame, repeat=repeat)

    def measure(self, program: Program, frame: bytes, flows: Flows, repeat: int) -> float:
        """ns per packet over `repeat` iterations (flow counters restart at 0).

        The kernel's own figure: time inside the repeat loop / repeat. It
        is rounded down to whole ns, hence + 0.5. Wall time around the
        syscall is useless here: with repeat > 1 the kernel swaps the
        program into the XDP dispatcher and back (bpf_prog_change_xdp),
        which waits for RCU grace periods: tens of ms per call on this VM.
        """
        self.prepare(program, frame, flows)
        return kernel_ns(self.run(frame, repeat))


def kernel_ns(result: TestRunResult) -> float:
    return float(result.duration_ns) + 0.5


class Baselines:
    """bench/baseline.bpf.c loaded: bare XDP_TX, minimal encap, XDP_PASS."""

    def __init__(self) -> None:
        self.obj = load("baseline")
        self.tx = self.obj.program("bench_tx")
        self.min_encap = self.obj.program("bench_min_encap")
        self.pass_ = self.obj.program("bench_pass")

    def close(self) -> None:
        self.obj.close()


def prog_insns(program: Program) -> dict[str, int]:
    """Kernel-side sizes of a loaded program (xlated insns, jited bytes)."""
    info = program.info()
    return {"xlated_insns": info["xlated_insns"], "jited_bytes": info["jited_bytes"]}


def run_live(
    program: Program, frame: bytes, ifindex: int, repeat: int, batch_size: int = 64
) -> None:
    """BPF_PROG_TEST_RUN in live-frames mode: `repeat` frames out of `ifindex`."""
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data = ffi.from_buffer(frame)
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    # egress_ifindex (u32 each); the binding does not declare it.
    ctx_bytes = bytearray(struct.pack("<6I", 0, len(frame), 0, ifindex, 0, 0))
    ctx = ffi.from_buffer(ctx_bytes)
    opts.data_in = data
    opts.data_size_in = len(frame)
    opts.ctx_in = ctx
    opts.ctx_size_in = len(ctx_bytes)
    opts.repeat = repeat
    opts.flags = lib.BPF_F_TEST_XDP_LIVE_FRAMES
    opts.batch_size = batch_size
    ret = lib.bpf_prog_test_run_opts(program.fd, opts)
    if ret < 0:
        raise OSError(-ret, f"live-frames test run of {program.name}")
