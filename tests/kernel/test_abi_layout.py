"""The ABI structs as cffi lays them out equal what clang put in the BTF.

cffi compiles include/xlb_abi.h with the host compiler; clang compiles it for
the BPF target. If the two ever disagree on a size or an offset, Python would
write maps the data plane misreads: this test makes that impossible to miss.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from xlb._bpf import ffi

OBJECTS = Path(__file__).resolve().parents[2] / "xlb" / "_bpf_objects"


def btf_structs(obj: Path) -> dict[str, dict[str, object]]:
    """Struct name -> {"size": n, "members": {name: byte offset}} from an object's BTF."""
    dump = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "file", str(obj)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    structs = {}
    for t in json.loads(dump)["types"]:
        if t["kind"] == "STRUCT" and t["name"].startswith("xlb_"):
            structs[t["name"]] = {
                "size": t["size"],
                "members": {m["name"]: m["bits_offset"] // 8 for m in t["members"]},
            }
    return structs


def abi_struct_names() -> list[str]:
    _, structs, _ = ffi.list_types()
    return sorted(s for s in structs if s.startswith("xlb_"))


def test_objects_are_built() -> None:
    assert {"decap.bpf.o", "xlb.bpf.o"} <= {p.name for p in OBJECTS.glob("*.bpf.o")}


@pytest.mark.parametrize("struct_name", abi_struct_names())
def test_cffi_layout_matches_btf(struct_name: str) -> None:
    seen = {}
    for obj in OBJECTS.glob("*.bpf.o"):
        seen.update(btf_structs(obj))
    assert struct_name in seen, f"struct {struct_name} is in no BPF object's BTF"
    btf = seen[struct_name]
    ctype = ffi.typeof(f"struct {struct_name}")
    assert ffi.sizeof(ctype) == btf["size"]
    cffi_offsets = {name: ffi.offsetof(ctype, name) for name, _ in ctype.fields}
    assert cffi_offsets == btf["members"]
