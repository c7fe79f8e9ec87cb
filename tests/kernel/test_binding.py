"""The libbpf binding against the real kernel: load, maps, test runs, attach."""

from __future__ import annotations

import errno
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from xlb import _bpf
from xlb.errors import (
    AttachError,
    BpfError,
    MapSizeError,
    NotFoundError,
    VerifierError,
    XlbError,
)
from xlb.netns import enter

HERE = Path(__file__).parent
ETH_FRAME = bytes.fromhex("0200000000020200000000010800") + bytes(50)


@pytest.fixture
def fixture_obj(compile_bpf: Callable[[Path], Path]) -> Iterator[_bpf.BpfObject]:
    obj = _bpf.BpfObject(compile_bpf(HERE / "bpf" / "fixture.bpf.c"))
    yield obj
    obj.close()


def test_hash_map_update_lookup_delete(fixture_obj: _bpf.BpfObject) -> None:
    m = fixture_obj.map("fx_hash")
    key, value = struct.pack("=I", 7), struct.pack("=Q", 0xDEADBEEF)
    assert m.lookup(key) is None
    m.update(key, value)
    assert m.lookup(key) == value
    assert list(m.keys()) == [key]
    m.delete(key)
    assert m.lookup(key) is None
    with pytest.raises(XlbError) as info:
        m.delete(key)
    # A failed map call is a BpfError, the errors that keep their errno.
    assert cast(BpfError, info.value).errno == errno.ENOENT


def test_batch_update_and_lookup(fixture_obj: _bpf.BpfObject) -> None:
    m = fixture_obj.map("fx_hash")
    keys = np.arange(40, dtype=np.uint32)
    values = (keys.astype(np.uint64) * 1000) + 1
    m.update_batch(keys.tobytes(), values.tobytes(), len(keys))
    raw_keys, raw_values, count = m.lookup_batch(chunk=16)
    assert count == 40
    got = dict(
        zip(np.frombuffer(raw_keys, np.uint32), np.frombuffer(raw_values, np.uint64), strict=True)
    )
    assert got == {int(k): int(v) for k, v in zip(keys, values, strict=True)}


def test_count_is_the_entries_held_across_batches(fixture_obj: _bpf.BpfObject) -> None:
    m = fixture_obj.map("fx_hash")
    assert m.count() == 0
    keys = np.arange(40, dtype=np.uint32)
    m.update_batch(keys.tobytes(), bytes(8 * len(keys)), len(keys))
    assert m.count(chunk=16) == 40  # three batches: 16 + 16 + 8
    for key in keys[:15]:
        m.delete(key.tobytes())
    assert m.count(chunk=16) == 25 and m.count(chunk=64) == 25


def test_array_and_wrong_sized_key(fixture_obj: _bpf.BpfObject) -> None:
    m = fixture_obj.map("fx_action")
    m.update(struct.pack("=I", 2), struct.pack("=I", 3))
    assert m.lookup(struct.pack("=I", 2)) == struct.pack("=I", 3)
    with pytest.raises(MapSizeError, match="key is 2 bytes, the map's keys are 4"):
        m.update(b"\x00\x00", struct.pack("=I", 3))
    with pytest.raises(MapSizeError, match="value is 8 bytes"):
        m.update(struct.pack("=I", 1), bytes(8))


def test_mapped_array_rows_are_the_map_values() -> None:
    # 12-byte values: the kernel spaces them 16 bytes apart, rows hide that.
    flags = _bpf.lib.BPF_F_MMAPABLE
    array = _bpf.Map.create(_bpf.lib.BPF_MAP_TYPE_ARRAY, "fx_mapped", 4, 12, 1000, flags)
    try:
        mapped = array.mapped()
        assert mapped.rows.shape == (1000, 12)
        mapped.rows[[3, 999]] = np.frombuffer(b"abcdefghijklmnopqrstuvwx", np.uint8).reshape(2, 12)
        assert array.lookup(struct.pack("=I", 3)) == b"abcdefghijkl"
        assert array.lookup(struct.pack("=I", 999)) == b"mnopqrstuvwx"
        assert array.lookup(struct.pack("=I", 4)) == bytes(12)
        array.update(struct.pack("=I", 500), b"ABCDEFGHIJKL")
        assert mapped.rows[500].tobytes() == b"ABCDEFGHIJKL"
        kept = mapped.rows[500]  # a view outliving close(): the mapping stays for it
        mapped.close()
        assert kept.tobytes() == b"ABCDEFGHIJKL"
        mapped.close()  # twice is harmless
    finally:
        array.close()


def test_test_run_verdict_output_and_percpu_counter(fixture_obj: _bpf.BpfObject) -> None:
    prog = fixture_obj.program("fx_xdp")
    result = prog.test_run(ETH_FRAME)
    assert result.action == "XDP_PASS"
    swapped = ETH_FRAME[6:12] + ETH_FRAME[0:6] + ETH_FRAME[12:]
    assert result.data == swapped

    fixture_obj.map("fx_action").update(struct.pack("=I", 0), struct.pack("=I", 3))
    assert prog.test_run(ETH_FRAME, repeat=10).action == "XDP_TX"

    per_cpu = fixture_obj.map("fx_packets").lookup_percpu(struct.pack("=I", 0))
    assert per_cpu.shape == (_bpf.possible_cpus(), 1)
    assert int(per_cpu.sum()) == 11


def test_missing_object_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no BPF object file"):
        _bpf.BpfObject(tmp_path / "absent.bpf.o")


def test_verifier_rejection_carries_the_reason(compile_bpf: Callable[[Path], Path]) -> None:
    with pytest.raises(VerifierError) as info:
        _bpf.BpfObject(compile_bpf(HERE / "bpf" / "rejected.bpf.c"))
    assert info.value.errno == errno.EACCES
    assert "invalid access to packet" in str(info.value)


def test_attach_to_missing_interface(fixture_obj: _bpf.BpfObject) -> None:
    with pytest.raises(NotFoundError, match="no network interface named 'nosuch0'"):
        _bpf.XdpLink.attach(fixture_obj.program("fx_xdp"), "nosuch0")


def veth_pair(ns: str) -> None:
    subprocess.run(
        ["ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"], check=True
    )
    subprocess.run(["ip", "-n", ns, "link", "set", "va", "up"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "vb", "up"], check=True)


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_attach_and_detach_xdp_on_veth(
    fixture_obj: _bpf.BpfObject, make_netns: Callable[[], str], mode: _bpf.XdpMode
) -> None:
    ns = make_netns()
    veth_pair(ns)
    prog = fixture_obj.program("fx_xdp")
    with enter(ns):
        link = _bpf.XdpLink.attach(prog, "va", mode)
        try:
            assert _bpf.xdp_attached_id("va") == prog.info()["id"]
            shown = subprocess.run(["ip", "link", "show", "va"], capture_output=True, text=True)
            assert ("xdpgeneric" if mode == "generic" else "xdp") in shown.stdout
            with pytest.raises(AttachError):  # one program per interface
                _bpf.XdpLink.attach(prog, "va", mode)
        finally:
            link.detach()
        assert _bpf.xdp_attached_id("va") == 0
