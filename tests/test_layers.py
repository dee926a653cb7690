"""The package's layering, read from the source with `ast` (nothing is imported).

- The **core** (the modules in `CORE`, with their submodules) imports nothing from the
  **application** (every other `fidec_zoo` module: data, envs, train, zoo, recipes, ...), not
  even inside a function, so the building blocks can be used and tested without the I/O layers.
- The import graph of `fidec_zoo`, as Python runs it when modules are first imported, has no
  cycles.
- No `fidec_zoo` module imports another inside a function, except the lazy loads of heavy
  modules in `LAZY_IMPORTS`: such imports hide dependencies (and cycles) from the reader.
  `importlib.import_module` calls (`fidec_zoo.__getattr__`'s lazy submodules, say) are not
  import statements and are not read.

Edges: `from P import n` depends on the submodule `P.n` when there is one, and on `P` itself
(its `__init__`) unless `P` is a package the importer lives in, which Python has initialised
before it anyway (so `from . import _sibling` is no edge to the package). `import P.Q.R`
depends on `P.Q.R` and on the packages on the way that are not the importer's own.
"""

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import fidec_zoo

ROOT = Path(fidec_zoo.__file__).resolve().parent
CORE = [
    "fidec_zoo.types",
    "fidec_zoo.nn",
    "fidec_zoo.policies",
    "fidec_zoo.samplers",
    "fidec_zoo.metrics",
    "fidec_zoo.constraints",
    "fidec_zoo.critics",
    "fidec_zoo.agents",
    "fidec_zoo.dataset",
    "fidec_zoo.buffer",
    "fidec_zoo.configs",
    "fidec_zoo.updates",
    "fidec_zoo.refinement",
]  # a listed module that does not exist (yet) is skipped
# (importer, imported) -> why the import must wait for the call: heavy modules loaded lazily.
LAZY_IMPORTS = {
    ("fidec_zoo._load_shortcut", "fidec_zoo.zoo"):
        "`fidec_zoo.load` imports the zoo (Orbax) on first call so `import fidec_zoo` stays light",
    ("fidec_zoo.report", "fidec_zoo.compare"):
        "compare is built on report's readers (`read_csv`, `_expand`), so report's CLI hands "
        "`report compare` to it on call: a top-level import would be a cycle",
    ("fidec_zoo.compare", "fidec_zoo.recipes"):
        "compare reads JSON and CSV only; the recipes (JAX, Equinox) load only to name an arm",
    ("fidec_zoo.compare", "fidec_zoo.offline"):
        "compare reads JSON and CSV only; the main job's module (JAX) loads only to know which "
        "job fields a resume may change, when an online run's configuration is read",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool  # run when a function is called, not when the module is imported


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__.py`)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()
EXISTING_CORE = [m for m in CORE if m in MODULES]


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The `fidec_zoo` modules one import statement of `importer` makes Python run."""
    own = lambda m: _is_within(importer, m)  # noqa: E731 (a package the importer lives in)
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module in MODULES and not own(module):
                    yield module
        return
    if node.level:
        is_package = MODULES[importer].name == "__init__.py"
        package = importer if is_package else importer.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module
    if base not in MODULES:
        return
    names_a_module = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    yield from names_a_module
    if not own(base) or len(names_a_module) < len(node.names):
        yield base


class _Collector(ast.NodeVisitor):
    def __init__(self, importer: str):
        self.importer, self.depth, self.found = importer, 0, []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.found += [Import(self.importer, t, node.lineno, self.depth > 0)
                       for t in dict.fromkeys(_targets(self.importer, node)) if t != self.importer]

    visit_Import = visit_ImportFrom = _import


def _imports() -> list[Import]:
    found = []
    for module, path in sorted(MODULES.items()):
        collector = _Collector(module)
        collector.visit(ast.parse(path.read_text(), str(path)))
        found += collector.found
    return found


IMPORTS = _imports()


def _graph(*, include_functions: bool) -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if include_functions or not imp.in_function:
            graph[imp.importer].add(imp.imported)
    return graph


def _is_core(module: str) -> bool:
    return any(_is_within(module, core) for core in CORE)


def _application_chains(start: str, graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest chain from `start` to each application module it reaches through the core
    (breadth first)."""
    parent, queue, chains = {start: None}, deque([start]), []
    while queue:
        module = queue.popleft()
        for nxt in sorted(graph[module]):
            if nxt in parent:
                continue
            parent[nxt] = module
            if _is_core(nxt):
                queue.append(nxt)
            else:
                chain, m = [], nxt
                while m is not None:
                    chain.append(m)
                    m = parent[m]
                chains.append(chain[::-1])
    return chains


@pytest.mark.parametrize("core", EXISTING_CORE)
def test_core_imports_nothing_from_the_application(core):
    chains = _application_chains(core, _graph(include_functions=True))
    assert not chains, "the core reaches the application:\n" + "\n".join(
        " -> ".join(c) for c in chains)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module
    (Tarjan's algorithm, then a breadth-first path back to the component's first module)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:
        start = min(component)
        parent, queue = {}, deque([start])
        while start not in parent:
            v = queue.popleft()
            for w in sorted(graph[v] & component):
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
        cycle, v = [start], parent[start]
        while v != start:
            cycle.append(v)
            v = parent[v]
        cycles.append([start, *cycle[:0:-1], start])
    return sorted(cycles)


def test_module_level_imports_have_no_cycles():
    cycles = _cycles(_graph(include_functions=False))
    print("\n".join(" -> ".join(c) for c in cycles))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_function_level_imports_of_the_package():
    lazy = [i for i in IMPORTS if i.in_function]
    offenders = [i for i in lazy if (i.importer, i.imported) not in LAZY_IMPORTS]
    listed = "\n".join(f"{MODULES[i.importer].relative_to(ROOT.parent)}:{i.line}: "
                       f"{i.importer} imports {i.imported}" for i in offenders)
    print(listed)
    assert not offenders, "imports inside functions (move them up, or list them in LAZY_IMPORTS "\
                          "with a reason):\n" + listed
    assert set(LAZY_IMPORTS) <= {(i.importer, i.imported) for i in lazy}, \
        "LAZY_IMPORTS names an import that no longer exists"
