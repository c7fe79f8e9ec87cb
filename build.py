#!/usr/bin/env python3
"""One entry point for every job: bootstrap, build, test, demo, bench, lint.

    python3 build.py demo       # set up everything, then show xlb at work
    python3 build.py test       # set up everything, then run the whole suite

    python3 build.py dist       # wheel + sdist into dist/

Runs with the system Python and the standard library only: it is what
creates the virtual environment everything else runs in. Each step is
idempotent and quick when there is nothing to do. setup.py (wheels and
sdists) loads this file for `compile_bpf_objects`, so a package is built
with the same flags as a checkout.

(At the repository root this file shadows PyPA's `python -m build`: run
that from another directory, or use `python3 build.py dist`.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
BPF_SRC = ROOT / "bpf"
BPF_OUT = ROOT / "xlb" / "_bpf_objects"
INCLUDE = ROOT / "include"
BPFFS = Path("/sys/fs/bpf")

# Debian packages the build, the tests, the lab and the benchmarks use.
APT_PACKAGES = [
    "clang",
    "llvm",
    "libbpf-dev",
    "libelf-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "nftables",
    "clang-format",
    "gcc",
    "libc6-dev",
    "pkg-config",
    "bird2",  # the router of the BGP tests and the lab, and the BFD announcer
    "systemd",  # systemd-analyze verify of contrib/xlb.service (no systemd needs to run)
    "keepalived",  # the lab's active/backup pair (VRRP)
    "prometheus",  # prometheus + promtool: the dashboard's queries and the alert rules, tested
]

# The extras of pyproject.toml the checkout's virtual environment holds: the
# suite, lint, ExaBGP, `xlb top`'s rich, the bench's matplotlib, aioquic (xlb.quic).
VENV_EXTRAS = "test,lint,bgp,top,bench,quic"

CLANG_BPF_FLAGS = ["-target", "bpf", "-O2", "-g", "-Wall", "-Wextra", "-Werror"]


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def progress(done: int, total: int, what: str, keep: bool = False, who: str = "build") -> None:
    """Step `done` of `total` of a long job: a bar on a terminal (redrawn
    in place, unless `keep`: when the step prints lines of its own), one
    plain line per step otherwise (logs, CI). `who`: the line's prefix."""
    if not sys.stdout.isatty():
        print(f"[{who}] ({done}/{total}) {what}", flush=True)
        return
    width = 20
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if keep or done >= total else ""
    print(f"\r\x1b[K[{who}] [{bar}] {done}/{total} {what}", end=end, flush=True)


def run(cmd: list[str], **kwargs: Any) -> None:
    subprocess.run(cmd, check=True, **kwargs)


# ---------------------------------------------------------------- bootstrap


def missing_apt_packages() -> list[str]:
    missing = []
    for name in APT_PACKAGES:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True
        )
        if "install ok installed" not in probe.stdout:
            missing.append(name)
    return missing


def install_system_packages() -> None:
    missing = missing_apt_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"[build] missing Debian packages {missing}; run as root to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    progress(0, 2, "apt-get update")
    run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    progress(1, 2, f"apt-get install {' '.join(missing)}")
    run(["apt-get", "install", "-y", "-q", *missing], env=env, stdout=subprocess.DEVNULL)
    progress(2, 2, "Debian packages installed")


def mount_bpffs() -> None:
    if os.geteuid() != 0 or not BPFFS.exists():
        return
    mounts = Path("/proc/mounts").read_text()
    if f" {BPFFS} bpf " not in mounts:
        log(f"mounting bpffs on {BPFFS}")
        run(["mount", "-t", "bpf", "bpf", str(BPFFS)])


def python_deps_stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def create_venv() -> None:
    stamp = VENV / ".xlb-deps"
    if VENV_PY.exists() and stamp.exists() and stamp.read_text() == python_deps_stamp():
        return
    steps = 4
    progress(0, steps, f"creating {VENV}")
    if not VENV_PY.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    progress(1, steps, "pip install --upgrade pip setuptools wheel cffi")
    pip = [str(VENV_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    quiet_pip([*pip, "--upgrade", "pip", "setuptools", "wheel", "cffi"])
    # The distribution was called "xlb" before 0.2: a venv made then still
    # holds it (with its pytest11 entry point), beside the new name.
    progress(2, steps, "removing a pre-0.2 `xlb` distribution, if any")
    subprocess.run([str(VENV_PY), "-m", "pip", "uninstall", "-y", "-q", "xlb"], capture_output=True)
    progress(3, steps, f"pip install -e .[{VENV_EXTRAS}] (xlb, editable)")
    quiet_pip([*pip, "-e", f"{ROOT}[{VENV_EXTRAS}]"])
    progress(4, steps, "virtual environment ready")
    stamp.write_text(python_deps_stamp())


def quiet_pip(cmd: list[str]) -> None:
    """Run pip; show its (noisy) output only when it fails."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"[build] pip failed: {' '.join(cmd[3:])}")


def bootstrap() -> None:
    install_system_packages()
    mount_bpffs()
    create_venv()


# -------------------------------------------------------------------- build


def newest_mtime(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def bpf_sources() -> list[Path]:
    return sorted(BPF_SRC.glob("*.bpf.c"))


def bpf_dependencies() -> list[Path]:
    return [*BPF_SRC.glob("*.h"), *INCLUDE.glob("*.h")]


# The tool each build step needs, and the Debian package that has it.
BUILD_TOOLS = {"clang": "clang", "gcc": "gcc", "cc": "gcc"}


def require_tool(name: str) -> str:
    """The path of `name`, or exit with a message naming what to install."""
    path = shutil.which(name)
    if path is None:
        package = BUILD_TOOLS.get(name, name)
        sys.exit(
            f"[build] building xlb needs `{name}` (Debian: apt-get install {package}); "
            "the BPF objects are compiled with clang, the binding against libbpf-dev"
        )
    return path


def multiarch_include() -> str:
    triplet = subprocess.run(
        [require_tool("gcc"), "-print-multiarch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"/usr/include/{triplet}"


def compile_bpf(
    src: Path,
    obj: Path,
    include_dirs: list[Path] | None = None,
    defines: dict[str, int] | None = None,
) -> None:
    """Compile one BPF C file with the project's flags (also used by the
    tests and the benchmarks for their own small programs)."""
    includes = [INCLUDE, BPF_SRC, *(include_dirs or [])]
    run(
        [
            require_tool("clang"),
            *CLANG_BPF_FLAGS,
            *(f"-I{d}" for d in includes),
            f"-I{multiarch_include()}",
            *(f"-D{key}={value:#x}" for key, value in (defines or {}).items()),
            "-c",
            str(src),
            "-o",
            str(obj),
        ]
    )


def compile_bpf_objects(out_dir: Path = BPF_OUT) -> list[Path]:
    """Compile every bpf/*.bpf.c whose object in `out_dir` is older than its inputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    headers_mtime = newest_mtime(bpf_dependencies())
    stale = []
    for src in bpf_sources():
        obj = out_dir / src.name.replace(".bpf.c", ".bpf.o")
        if not obj.exists() or obj.stat().st_mtime < max(src.stat().st_mtime, headers_mtime):
            stale.append((src, obj))
    for done, (src, obj) in enumerate(stale):
        progress(done, len(stale), f"clang {src.relative_to(ROOT)} -> {obj.name}")
        compile_bpf(src, obj)
    if stale:
        progress(len(stale), len(stale), f"{len(stale)} BPF objects in {out_dir}")
    return [obj for _, obj in stale]


def write_limits_module() -> bool:
    """xlb/_limits.py from the ABI header (the binding's own parse of it)."""
    inputs = [ROOT / "xlb" / "_ffi_build.py", INCLUDE / "xlb_abi.h"]
    limits = ROOT / "xlb" / "_limits.py"
    if limits.exists() and limits.stat().st_mtime >= newest_mtime(inputs):
        return False
    log("generating xlb/_limits.py from include/xlb_abi.h")
    run([str(VENV_PY), str(ROOT / "xlb" / "_ffi_build.py"), "--limits", str(limits)])
    limits.touch()  # newer than its inputs even when the text did not change
    return True


def build_cffi_extension() -> bool:
    """Build xlb/_libbpf*.so when the binding or the ABI header changed."""
    inputs = [ROOT / "xlb" / "_ffi_build.py", INCLUDE / "xlb_abi.h"]
    existing = list((ROOT / "xlb").glob("_libbpf*.so"))
    if existing and newest_mtime(existing) >= newest_mtime(inputs):
        return False
    log("building the cffi extension xlb/_libbpf")
    tmp = ROOT / "build" / "cffi"
    tmp.mkdir(parents=True, exist_ok=True)
    run([str(VENV_PY), str(ROOT / "xlb" / "_ffi_build.py"), str(tmp)])
    for so in tmp.glob("xlb/_libbpf*.so"):
        shutil.copy2(so, ROOT / "xlb" / so.name)
    return True


def report_instruction_counts() -> None:
    """Print each program's size so growth is visible from build to build."""
    if os.geteuid() != 0:
        return
    run([str(VENV_PY), "-m", "xlb._insn_report", str(BPF_OUT)])


def compile_bytecode() -> None:
    """Byte-compile the package (only what changed since): every xlb
    process, each daemon, CLI call and test subprocess, then reads the
    bytecode instead of compiling ~40 modules from source, ~0.2 s a start.
    Python writes that bytecode itself on first import, except where
    PYTHONDONTWRITEBYTECODE is set, as on some CI machines; then each
    process compiled everything again."""
    run([str(VENV_PY), "-m", "compileall", "-q", str(ROOT / "xlb")])


def build() -> None:
    built = compile_bpf_objects()
    write_limits_module()
    rebuilt_ffi = build_cffi_extension()
    compile_bytecode()
    if built or rebuilt_ffi:
        report_instruction_counts()


# ---------------------------------------------------------------- commands


def venv_run(args: list[str]) -> int:
    return subprocess.call([str(VENV_PY), *args], cwd=ROOT)


def cmd_test(extra: list[str]) -> int:
    code = venv_run(["-m", "pytest", *extra])
    if code == 5:
        log("pytest collected no tests: that is a failure")
        return 1
    return code


def cmd_dist() -> int:
    """A wheel and an sdist in dist/, with PyPA's build: the sdist first and
    the wheel from it, so a wheel here proves the sdist is complete."""
    dist = ROOT / "dist"
    # Not from the root, where this file would shadow PyPA's `build` module.
    code = subprocess.call(
        [str(VENV_PY), "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=VENV
    )
    if code == 0:
        for path in sorted(dist.iterdir()):
            log(f"dist/{path.name}")
    return code


def cmd_lint() -> int:
    bin_dir = VENV / "bin"
    c_files = [
        str(p) for p in [*BPF_SRC.glob("*.[ch]"), *INCLUDE.glob("*.h"), *ROOT.glob("bench/*.c")]
    ]
    steps = [
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "mypy")],
        ["clang-format", "--dry-run", "-Werror", *c_files],
    ]
    failed = 0
    for step in steps:
        if subprocess.call(step, cwd=ROOT) != 0:
            log(f"lint step failed: {' '.join(step[:3])}")
            failed = 1
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=["bootstrap", "build", "test", "demo", "bench", "lint", "dist", "clean"],
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the command")
    opts = parser.parse_args()

    if opts.command == "clean":
        for path in [VENV, BPF_OUT, ROOT / "build", ROOT / "dist"]:
            shutil.rmtree(path, ignore_errors=True)
        for so in (ROOT / "xlb").glob("_libbpf*.so"):
            so.unlink()
        (ROOT / "xlb" / "_limits.py").unlink(missing_ok=True)
        return 0

    bootstrap()
    if opts.command == "bootstrap":
        return 0
    build()
    if opts.command == "build":
        return 0
    if opts.command == "test":
        return cmd_test(opts.args)
    if opts.command == "demo":
        return venv_run(["-m", "xlb.lab.demo", *opts.args])
    if opts.command == "bench":
        return venv_run(["-m", "bench", *opts.args])
    if opts.command == "lint":
        return cmd_lint()
    if opts.command == "dist":
        return cmd_dist()
    return 2


if __name__ == "__main__":
    sys.exit(main())
