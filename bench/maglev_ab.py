"""A/B of xlb.maglev: another git revision's against this tree's, in one process.

Usage: .venv/bin/python -m bench.maglev_ab REV [--builds N] [--rows 10x65537,1000x65537]

REV's `xlb` package is exported into a temporary directory under the name
`xlb_ab` (with this tree's built cffi module and generated _limits.py, so
REV must have the same C bindings), imported beside `xlb`, and both build
the bench's tables interleaved from packed IPv4 addresses. Prints the least
CPU time of the building thread over N builds of each: preemption on a
shared machine does not inflate it, and interleaving spreads the rest of
its noise over both sides alike. The tables must agree.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xlb import maglev  # noqa: E402

ROWS = "10x65537,100x65537,1000x65537,5000x65537,1000x655373"


def export(rev: str, into: Path) -> ModuleType:
    """REV's xlb.maglev, imported as xlb_ab.maglev from a copy under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "xlb"], capture_output=True, check=True
    ).stdout
    tar = into / "xlb.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as files:
        files.extractall(into, filter="data")
    package = into / "xlb_ab"
    (into / "xlb").rename(package)
    for built in [*ROOT.glob("xlb/_libbpf*.so"), ROOT / "xlb" / "_limits.py"]:
        shutil.copy(built, package / built.name)
    sys.path.insert(0, str(into))
    return importlib.import_module("xlb_ab.maglev")


def cpu_ms(module: ModuleType, packed: list[bytes], size: int) -> float:
    """CPU time of the thread for one build, in ms."""
    start = time.thread_time()
    module.build_table(packed, size)
    return (time.thread_time() - start) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--builds", type=int, default=25)
    parser.add_argument("--rows", default=ROWS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = export(args.rev, Path(tmp))
        print(f"| reals x size | {args.rev} ms | this tree ms | ratio |")
        print("|---|---|---|---|")
        for row in args.rows.split(","):
            count, size = map(int, row.split("x"))
            packed = [ipaddress.IPv4Address(0x0A000001 + i).packed for i in range(count)]
            if (
                other.build_table(packed, size).tolist()
                != maglev.build_table(packed, size).tolist()
            ):
                print(f"{row}: the tables differ")
                return 1
            builds = args.builds if size < 100_000 else max(args.builds // 5, 3)
            best = {"other": float("inf"), "this": float("inf")}
            for _ in range(builds):  # interleaved, one build each at a time
                best["other"] = min(best["other"], cpu_ms(other, packed, size))
                best["this"] = min(best["this"], cpu_ms(maglev, packed, size))
            ratio = best["this"] / best["other"]
            print(f"| {row} | {best['other']:.2f} | {best['this']:.2f} | {ratio:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
