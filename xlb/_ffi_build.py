"""cffi build script: out-of-line API mode binding to libbpf and the xlb ABI.

Run by `build.py build`, and by setuptools (`cffi_modules` in setup.py) when
a wheel is built. API mode means the C
compiler sees every declaration below together with the real headers, so a
struct that cffi would lay out differently from libbpf or from
include/xlb_abi.h is a compile error, not a silent corruption.

The ABI structs are not retyped here: include/xlb_abi.h is run through the C
preprocessor with XLB_CDEF defined (which leaves only the typedef-free
structs and enums) and the result is handed to cffi as-is.

The same parse gives xlb/_limits.py (`write_limits`): every enum constant of
the header as plain Python, so the pure core (model, Maglev, config) needs
neither the compiled binding nor root.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "include"
ABI_HEADER = INCLUDE / "xlb_abi.h"

# Kernel-style fixed-width names used by the ABI header.
FIXED_WIDTH_TYPES = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef unsigned long long __u64; /* as linux/types.h: int-ll64 on every arch */
typedef int32_t __s32;
typedef uint16_t __be16;
typedef uint32_t __be32;
"""

# The parts of libbpf the binding uses. `...;` lets the compiler fill in the
# rest of a struct, so only fields we touch are named.
LIBBPF_CDEF = """
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;

struct bpf_object_open_opts { size_t sz; const char *object_name; ...; };
struct bpf_test_run_opts {
    size_t sz;
    const void *data_in; void *data_out;
    __u32 data_size_in; __u32 data_size_out;
    const void *ctx_in; void *ctx_out;
    __u32 ctx_size_in; __u32 ctx_size_out;
    __u32 retval; int repeat; __u32 duration; __u32 flags; __u32 cpu;
    __u32 batch_size;
};
struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; };
struct bpf_map_create_opts { size_t sz; __u32 inner_map_fd; __u32 map_flags; ...; };
struct bpf_xdp_attach_opts { size_t sz; int old_prog_fd; ...; };
struct bpf_link_update_opts { size_t sz; __u32 flags; __u32 old_prog_fd; ...; };
struct bpf_link_create_opts { size_t sz; __u32 flags; ...; };
struct bpf_tc_hook { size_t sz; int ifindex; int attach_point; __u32 parent; ...; };
struct bpf_tc_opts { size_t sz; int prog_fd; __u32 flags; __u32 prog_id; __u32 handle;
                     __u32 priority; ...; };
struct bpf_prog_info { __u32 type; __u32 id; __u32 xlated_prog_len; __u32 jited_prog_len;
                       __u32 nr_map_ids; __u64 map_ids; __u32 nr_jited_ksyms;
                       __u64 jited_ksyms; __u32 nr_line_info; __u64 line_info;
                       __u64 jited_line_info; __u32 nr_jited_line_info;
                       __u32 line_info_rec_size; __u32 jited_line_info_rec_size;
                       __u32 verified_insns; ...; };
struct bpf_map_info { __u32 type; __u32 id; __u32 key_size; __u32 value_size;
                      __u32 max_entries; __u32 map_flags; char name[16]; ...; };

#define BPF_ANY ...
#define BPF_NOEXIST ...
#define BPF_EXIST ...
#define BPF_F_INNER_MAP ...
#define BPF_F_MMAPABLE ...
#define BPF_F_TEST_RUN_ON_CPU ...
#define BPF_F_TEST_XDP_LIVE_FRAMES ...
#define XDP_FLAGS_UPDATE_IF_NOEXIST ...
#define XDP_FLAGS_SKB_MODE ...
#define XDP_FLAGS_DRV_MODE ...
#define XDP_FLAGS_REPLACE ...
#define BPF_TC_INGRESS ...
#define BPF_TC_EGRESS ...
#define BPF_MAP_TYPE_ARRAY ...
#define BPF_MAP_TYPE_HASH ...
#define BPF_MAP_TYPE_PERCPU_ARRAY ...
#define BPF_MAP_TYPE_ARRAY_OF_MAPS ...
#define BPF_MAP_TYPE_PERCPU_HASH ...
#define BPF_MAP_TYPE_LRU_HASH ...
#define BPF_MAP_TYPE_LRU_PERCPU_HASH ...
#define BPF_XDP ...

struct bpf_object *bpf_object__open_file(const char *path,
                                         const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
                                             struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj,
                                     const struct bpf_map *map);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
                                                     const char *name);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj,
                                             const char *name);

const char *bpf_program__name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
bool bpf_program__autoload(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);
bool bpf_map__is_pinned(const struct bpf_map *map);

int bpf_link__fd(const struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);
int bpf_link__unpin(struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);
void bpf_link__disconnect(struct bpf_link *link);
struct bpf_link *bpf_link__open(const char *path);
int bpf_link__update_program(struct bpf_link *link, struct bpf_program *prog);
int bpf_link_detach(int link_fd);
int bpf_link_create(int prog_fd, int target_fd, int attach_type,
                    const struct bpf_link_create_opts *opts);
int bpf_link_update(int link_fd, int new_prog_fd, const struct bpf_link_update_opts *opts);

int bpf_map_create(int map_type, const char *map_name, __u32 key_size,
                   __u32 value_size, __u32 max_entries,
                   const struct bpf_map_create_opts *opts);
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys,
                         void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values,
                         __u32 *count, const struct bpf_map_batch_opts *opts);
int bpf_map_delete_batch(int fd, const void *keys, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags,
                   const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query_id(int ifindex, int flags, __u32 *prog_id);

int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

int libbpf_num_possible_cpus(void);

/* libbpf's print callback takes a va_list, which Python cannot; the C
 * trampoline below formats the message and calls this Python function. */
extern "Python" void xlb_libbpf_log(int level, const char *message);
void xlb_route_libbpf_print(void);
"""

C_SOURCE = r"""
#include <stdarg.h>
#include <stdio.h>
#include <linux/if_link.h>
#include <linux/bpf.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "xlb_abi.h"

static void xlb_libbpf_log(int level, const char *message);

static int xlb_print_trampoline(enum libbpf_print_level level, const char *fmt,
                                va_list ap)
{
    /* The verifier log can be long; libbpf prints it in one call. */
    char buf[16384];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    xlb_libbpf_log((int)level, buf);
    return 0;
}

static void xlb_route_libbpf_print(void)
{
    libbpf_set_print(xlb_print_trampoline);
}
"""


def abi_cdef() -> str:
    """The ABI header as cffi sees it: preprocessed with XLB_CDEF defined."""
    out = subprocess.run(
        ["cc", "-E", "-P", "-DXLB_CDEF", str(ABI_HEADER)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out


def abi_constants() -> dict[str, dict[str, int]]:
    """enum name -> {constant: value}, for every enum of the ABI header, as
    cffi (the C parser the binding uses) reads them."""
    text = abi_cdef()
    parser = FFI()
    parser.cdef(FIXED_WIDTH_TYPES + text)
    enums: dict[str, dict[str, int]] = {}
    for name in dict.fromkeys(re.findall(r"\benum\s+(\w+)\s*\{", text)):
        members = parser.typeof(f"enum {name}").relements
        enums[name] = dict(sorted(members.items(), key=lambda item: (item[1], item[0])))
    return enums


def limits_source() -> str:
    """The text of xlb/_limits.py."""
    lines = [
        '"""Every constant of include/xlb_abi.h, for the pure core (no binding).',
        "",
        "Generated from the header by xlb/_ffi_build.py at build time: do not edit.",
        '"""',
        "",
    ]
    for enum, members in abi_constants().items():
        lines += ["", f"# enum {enum}"]
        lines += [f"{name} = {value}" for name, value in members.items()]
    return "\n".join(lines) + "\n"


def write_limits(path: Path) -> bool:
    """Write xlb/_limits.py at `path` if its text changed; True if written."""
    text = limits_source()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def make_ffi() -> FFI:
    """The FFI builder for the `xlb._libbpf` extension module."""
    ffibuilder = FFI()
    ffibuilder.cdef(FIXED_WIDTH_TYPES + abi_cdef() + LIBBPF_CDEF)
    ffibuilder.set_source(
        "xlb._libbpf",
        C_SOURCE,
        libraries=["bpf"],
        include_dirs=[str(INCLUDE)],
        extra_compile_args=["-Wall", "-Werror", "-Wno-unused-function"],
        # One file name whoever builds it (build.py, an editable install, a
        # wheel): _libbpf.cpython-3XX-<arch>.so, never a second .abi3.so.
        py_limited_api=False,
    )
    return ffibuilder


def build(tmpdir: Path) -> Path:
    """Compile the extension into xlb/ and return its path."""
    ffibuilder = make_ffi()
    built = ffibuilder.compile(tmpdir=str(tmpdir), verbose=False)
    return Path(built)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--limits"]:
        write_limits(Path(sys.argv[2]))
    else:
        build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
