"""The house's layout rules, read from the source with ``ast`` (nothing is imported):

* no import cycles between modules of ``src/dgm`` (imports inside functions count: a lazy import that closes a circle
  is still a circle, it is only hidden from the interpreter), nor between its packages (``vi/`` and ``vae/``);
* no private name (``_name``) imported from another module (``from dgm.x import _helper``);
* the library never imports an experiment or the command line (``dgm.experiments``, ``dgm.cli``): only
  ``dgm.experiments`` itself and ``dgm.cli`` may.

Each test names every violation it finds. Checked by hand that each fails: adding ``from dgm.driver import sample``
to ``dgm/runtime/engine.py`` makes a cycle (driver -> engine -> driver); ``from dgm.runtime.engine import
_over_leading`` in ``dgm/result.py`` is a private import; ``import dgm.cli`` in ``dgm/methods.py`` an upward arrow.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "dgm"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str):
    """``(imported module, imported names or None, line)`` for every import in module ``name`` (relative imports
    resolved), restricted to modules of ``dgm``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == ROOT:
                yield target, [alias.name for alias in node.names], node.lineno


def _edges() -> dict[str, set]:
    """Module -> the ``dgm`` modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``). The root
    package ``dgm`` (a lazy facade, PEP 562) is not an edge: ``import dgm`` loads none of the library."""
    graph = {name: set() for name in MODULES}
    for name in MODULES:
        for target, names, _ in _imports(name):
            found = set()
            for imported in names or []:
                if f"{target}.{imported}" in MODULES:
                    found.add(f"{target}.{imported}")
            if not found or any(f"{target}.{n}" not in MODULES for n in names or []):
                while target not in MODULES and "." in target:
                    target = target.rpartition(".")[0]
                if target in MODULES:
                    found.add(target)
            graph[name] |= {t for t in found if t != ROOT and t != name}
    return graph


def _cycles(graph: dict[str, set]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _in(name: str, area: str) -> bool:
    return name == area or name.startswith(area + ".")


def import_cycles() -> list[list[str]]:
    return _cycles(_edges())


def package_cycles() -> list[list[str]]:
    """Cycles between the floors of the house: each module counted as its top-level package or module under ``dgm``
    (``dgm.vi.flows`` as ``dgm.vi``), so ``vi/`` importing ``vae/`` while ``vae/`` imports ``vi/`` is a cycle even
    when no two modules import each other."""
    def floor(name):
        return ".".join(name.split(".")[:2])

    graph = {}
    for name, targets in _edges().items():
        graph.setdefault(floor(name), set()).update(floor(t) for t in targets if floor(t) != floor(name))
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, set())
    return _cycles(graph)


def private_imports() -> list[str]:
    found = []
    for name in MODULES:
        for target, names, line in _imports(name):
            for imported in names or []:
                private = imported.startswith("_") and not imported.startswith("__")
                if private and target != name:
                    found.append(f"{name}:{line} imports {imported} from {target}")
    return found


def upward_imports() -> list[str]:
    """Library modules importing an experiment or the command line."""
    upper = ("dgm.experiments", "dgm.cli")
    found = []
    for name in MODULES:
        if any(_in(name, area) for area in upper):
            continue
        for target, names, line in _imports(name):
            targets = [target] + [f"{target}.{n}" for n in names or []]
            if any(_in(t, area) for t in targets for area in upper):
                found.append(f"{name}:{line} imports {target}")
    return found


def test_the_checks_see_the_source():
    graph = _edges()
    assert "dgm.runtime.engine" in graph["dgm.driver"]  # the parser resolves imports
    assert len(MODULES) > 50
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_packages():
    cycles = package_cycles()
    assert not cycles, "import cycles between packages: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    found = private_imports()
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_library_never_imports_experiments_or_the_cli():
    found = upward_imports()
    assert not found, "library modules importing experiments or the CLI:\n" + "\n".join(found)
