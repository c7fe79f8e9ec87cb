"""setuptools glue for wheels and sdists (developers use build.py).

`pip wheel .`, `pip install .` and `pip install xlb-*.tar.gz` build:
- the cffi extension xlb/_libbpf, in API mode (cffi_modules below);
- in build_py: the BPF objects (bpf/*.bpf.c with clang, the same flags as
  `build.py build`: this file loads build.py for them), xlb/_limits.py from
  the ABI header, and a copy of the header, into the package.
The objects use no kernel struct (no vmlinux.h), so one build serves every
kernel with the features the README lists: the wheel is tagged for the
platform only because of the extension.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def load(name: str, path: Path) -> ModuleType:
    """Import a build script by path: the name `build` is PyPA's build tool."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithBpf(build_py):
    """build_py, then the data-plane objects, the limits module and the header."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable checkout: build.py builds these in the tree
        package = Path(self.build_lib) / "xlb"
        load("xlb_build_script", ROOT / "build.py").compile_bpf_objects(package / "_bpf_objects")
        load("xlb_ffi_build", ROOT / "xlb" / "_ffi_build.py").write_limits(package / "_limits.py")
        (package / "include").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "include" / "xlb_abi.h", package / "include" / "xlb_abi.h")


setup(
    cffi_modules=["xlb/_ffi_build.py:make_ffi"],
    cmdclass={"build_py": BuildPyWithBpf},
)
