"""Print the size of every program in the built BPF objects (run by build.py).

Loading goes through the real verifier, so this is also the first check
that a new build is accepted by the kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._bpf import BpfObject


def main(directory: str) -> None:
    for path in sorted(Path(directory).glob("*.bpf.o")):
        with BpfObject(path) as obj:
            for name, prog in sorted(obj.programs.items()):
                info = prog.info()
                print(
                    f"[build] {path.name}:{name}: {prog.insn_count} insns loaded, "
                    f"{info['xlated_insns']} xlated, {info['jited_bytes']} bytes jited, "
                    f"{info['verified_insns']} verified"
                )


if __name__ == "__main__":
    main(sys.argv[1])
