"""The package's import graph: no cycle, and every import points down.

Layers, lowest first (a module may import its own layer and those below):

    0 pure core   model, Maglev, flow hash, limits, errors, config, host facts
    1 binding     the cffi binding and the ABI packers
    2 data plane  Balancer and what it is made of, the decap program
    3 service     health checks, the daemon, metrics
    4 CLI         the `xlb` command, doctor, real-setup
    5 on top      the lab (and its demo), the pytest plugin and helpers

Cycles count every import but those in `if TYPE_CHECKING:` blocks. Layers
count the imports a module runs when it is imported: an import inside a
function may reach up, on purpose (`xlb lab` in the CLI hands over to the
lab; `xlb serve` loads the daemon only past `--check`). The pure core may
not import the binding at all, not even inside a function: it must work
where the binding is not built.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xlb"

LAYERS: dict[str, int] = {
    "xlb": 0,  # the facade: public names load lazily (importlib), only _version at import
    "xlb._version": 0,
    "xlb._limits": 0,
    "xlb.errors": 0,
    "xlb.model": 0,
    "xlb.maglev": 0,
    "xlb.flowhash": 0,
    "xlb.quiclb": 0,
    "xlb.pins": 0,
    "xlb.xdp": 0,
    "xlb.host": 0,
    "xlb.netns": 0,
    "xlb.config": 0,
    "xlb.serve": 0,
    "xlb.migrate": 0,  # keepalived.conf and ipvsadm-save into a Config
    "xlb._ffi_build": 1,
    "xlb._bpf": 1,
    "xlb._abi": 1,
    "xlb._insn_report": 1,
    "xlb._libbpf": 1,
    "xlb.balancer": 2,
    "xlb.rings": 2,
    "xlb.prevring": 2,
    "xlb.ids": 2,
    "xlb.stats": 2,
    "xlb.synflood": 2,
    "xlb.flows": 2,
    "xlb.testrun": 2,
    "xlb.vipaddrs": 2,
    "xlb.serverids": 2,
    "xlb.events": 2,
    "xlb.decap": 2,
    "xlb.health": 3,
    "xlb.announce": 3,
    "xlb.service": 3,
    "xlb.control": 3,
    "xlb.sdnotify": 3,
    "xlb.metrics": 3,
    "xlb.quic": 3,
    "xlb.cli": 4,
    "xlb.cli.top": 4,  # the live view; rich only inside functions (an optional extra)
    "xlb.lab": 5,
    "xlb.testing": 5,
}
PURE = 0
BINDING = {"xlb._bpf", "xlb._abi", "xlb._libbpf"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The layer of the longest prefix of `module` that LAYERS names."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):  # "xlb" alone names only the package itself
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    if module in LAYERS:
        return LAYERS[module]
    raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The xlb modules an `from ... import ...` names (a name that is a
    submodule counts as that submodule)."""
    if node.level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if not target.startswith("xlb"):
        return []
    known = modules()
    found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return found or [target]


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(imports run at import time, imports anywhere) of one module."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    at_import: set[str] = set()
    anywhere: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names if a.name.startswith("xlb")]
                else:
                    names = resolve(module, is_package, child)
                anywhere.update(names)
                if top:
                    at_import.update(names)
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, top and not inner)

    visit(tree, True)
    return at_import - {module}, anywhere - {module}


GRAPH = {name: imports(name, path) for name, path in modules().items()}


def test_every_module_has_a_layer() -> None:
    for name in GRAPH:
        layer_of(name)


def test_no_import_cycle() -> None:
    """Counting imports inside functions too: a cycle that only a lazy
    import keeps from failing is still two modules that need each other."""
    edges = {name: {t for t in anywhere if t in GRAPH} for name, (_, anywhere) in GRAPH.items()}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(edges[name]):
            walk(target, [*path, name])
        done.add(name)

    for name in sorted(edges):
        walk(name, [])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    at_import, _ = GRAPH[module]
    up = [t for t in sorted(at_import) if layer_of(t) > layer_of(module)]
    assert not up, f"{module} (layer {layer_of(module)}) imports higher layers: {up}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer_of(m) == PURE))
def test_the_pure_core_never_imports_the_binding(module: str) -> None:
    _, anywhere = GRAPH[module]
    assert not anywhere & BINDING, f"{module} imports {sorted(anywhere & BINDING)}"
