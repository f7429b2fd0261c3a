"""Static structure checks for ``lightning_xai``: import cycles, access to other objects' private members.

Usage (from the repository root)::

    python tools/check_structure.py

prints every import cycle of ``lightning_xai/`` (with the import statements inside it) and every access to
another object's ``_private`` member in ``lightning_xai/callbacks/`` and the CLI modules
(``lightning_xai/*cli*``: ``cli.py`` and the private ``_cli_*.py`` modules beside it), and exits 1 if either
list is non-empty. Standard library only; the package is parsed with :mod:`ast`, never imported.

Import graph (:func:`import_edges`, :func:`import_cycles`)
-----------------------------------------------------------
Nodes are the package's modules by dotted name; a package stands for its ``__init__.py``
(``lightning_xai.callbacks`` is ``lightning_xai/callbacks/__init__.py``). An edge is every ``import x``,
``from x import y`` and relative import that resolves to a module of the package, wherever it is written:
module level, under ``if TYPE_CHECKING:`` and inside functions (a lazy import is still a dependency).

* ``from pkg import name`` imports the submodule ``pkg.name`` when there is one, else ``pkg`` (its
  ``__init__``); a dotted name that is not a module falls back to its longest module prefix.
* Parent packages. Importing ``pkg.sub.mod`` runs ``pkg/__init__`` and ``pkg/sub/__init__`` first unless
  they are already (being) imported. The importer's own enclosing packages always are: Python starts a
  module's parent packages before the module, so when ``lightning_xai.callbacks.gradcam`` runs, the
  ``__init__`` of ``lightning_xai`` and of ``lightning_xai.callbacks`` are in ``sys.modules`` and importing
  through them executes nothing. So there is no implicit edge to them: an ``__init__`` importing its
  submodules, and submodules importing their siblings directly, are no cycle. An explicit import of the
  ``__init__`` itself (``import pkg``, ``from pkg import NAME`` of a name that is no submodule,
  ``from . import NAME``) is an edge back to it, and that is a real cycle: the submodule may run while its
  package is half initialised. Any *other* package's ``__init__`` on the imported path is run by the import,
  so it is an implicit edge ("parent __init__" in the report): ``callbacks.gradcam`` importing
  ``functional._cam`` depends on ``functional/__init__`` and on all it imports. ``implicit_parents=False``
  drops those edges.

Private access (:func:`private_accesses`)
-----------------------------------------
Every ``ast.Attribute`` whose ``attr`` starts with ``_``, is not a dunder (``__x__``) and whose value is not
``self``, ``cls`` or ``super()``: ``trainer.fit_loop._combined_loader``, ``other._x = 1``, ``self.store._db``.
Name-mangled ``obj.__x`` counts too. So does ``getattr``/``setattr``/``hasattr``/``delattr`` of another object
with a literal private name: ``getattr(trainer, "_x")`` is the same access spelled as a string, and without
it rewriting ``a._x`` as ``getattr(a, "_x")`` would pass the check. ``from lightning_xai.x._mod import name``
is no access: importing from private one-step modules beside a public ``__init__`` is the architecture.
There is no exception list.
"""

from __future__ import annotations

import argparse
import ast
import gc
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ImportEdge",
    "PrivateAccess",
    "import_cycles",
    "import_edges",
    "import_graph",
    "main",
    "module_index",
    "private_accesses",
    "strongly_connected_components",
]

_OWN_RECEIVERS = frozenset({"self", "cls"})
_ATTR_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


class ImportEdge(NamedTuple):
    """One dependency of module ``src`` on module ``dst`` of the package.

    ``kind`` is where the import statement is: ``"module"`` (runs on import), ``"type-checking"`` (under
    ``if TYPE_CHECKING:``) or ``"function"`` (inside a function or method: lazy); ``implicit`` is True for
    an edge to a parent package's ``__init__`` that the statement runs on the way (see the module docstring).
    """

    src: str
    dst: str
    path: Path
    line: int
    kind: str
    implicit: bool


class PrivateAccess(NamedTuple):
    """``file``, ``line`` and source ``snippet`` of one access to another object's private member."""

    file: str
    line: int
    snippet: str


# ---------------------------------------------------------------------------------------------- import graph


def module_index(package_dir: str | Path) -> dict[str, Path]:
    """Map every module of ``package_dir`` to its file by dotted name (a package: its ``__init__``)."""
    root = Path(package_dir)
    if not (root / "__init__.py").is_file():
        raise ValueError(f"{root} is not a package: no __init__.py")
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        if "__pycache__" in rel.parts or not all(part.isidentifier() for part in rel.parts):
            continue
        parts = [root.name, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _parse(source: str | bytes, path: Path) -> ast.Module:
    """``ast.parse`` with the cyclic garbage collector paused.

    A parse allocates tens of thousands of nodes, each counting towards a collection, and in a process that
    holds a large heap (the test suite imports torch) those collections can cost more than the parse; an AST
    holds no reference cycles, so there is nothing for them to find.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=str(path))
    finally:
        if enabled:
            gc.enable()


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _parents(name: str) -> Iterator[str]:
    """``a.b.c`` -> ``a``, ``a.b`` (proper prefixes, outermost first)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None outside the package)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_targets(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> list[str]:
    """The package's modules that one import statement imports (``package``: the importer's package)."""
    if isinstance(node, ast.Import):
        targets = [_resolve(alias.name, modules) for alias in node.names]
        return [t for t in targets if t is not None]
    if node.level:
        parts = package.split(".")
        if node.level - 1 >= len(parts):
            return []  # above the top-level package: not ours
        base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if alias.name != "*" and submodule in modules else _resolve(base, modules))
    return [t for t in targets if t is not None]


def _statements(body: list[ast.stmt], kind: str) -> Iterator[tuple[ast.stmt, str]]:
    """Every statement under ``body`` (nested bodies too) with where it is: module, type-checking, function.

    Only statements are walked (an import is a statement; expressions cannot hold one), which keeps this fast.
    """
    for stmt in body:
        yield stmt, kind
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(stmt.body, "function")
            continue
        if isinstance(stmt, ast.If) and kind == "module" and _is_type_checking(stmt.test):
            yield from _statements(stmt.body, "type-checking")
            yield from _statements(stmt.orelse, kind)
            continue
        for _, value in ast.iter_fields(stmt):
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, ast.stmt):
                    yield from _statements([item], kind)
                elif isinstance(item, ast.excepthandler | ast.match_case):
                    yield from _statements(item.body, kind)


def import_edges(package_dir: str | Path, *, implicit_parents: bool = True) -> list[ImportEdge]:
    """Every import of a module of the package by one of its modules, sorted by importer, line and target.

    See the module docstring for what counts; a module importing itself is left out.
    """
    modules = module_index(package_dir)
    edges: set[ImportEdge] = set()
    for module, path in modules.items():
        tree = _parse(path.read_bytes(), path)
        package = module if _is_package(module, modules) else module.rpartition(".")[0]
        # The importer's enclosing packages (and itself) are already (being) imported when it runs.
        own = {module, *_parents(module)}
        for stmt, kind in _statements(tree.body, "module"):
            if not isinstance(stmt, ast.Import | ast.ImportFrom):
                continue
            for target in _import_targets(stmt, package, modules):
                if target != module:
                    edges.add(ImportEdge(module, target, path, stmt.lineno, kind, False))
                if implicit_parents:
                    for parent in _parents(target):
                        if parent in modules and parent not in own:
                            edges.add(ImportEdge(module, parent, path, stmt.lineno, kind, True))
    return sorted(edges, key=lambda e: (e.src, e.line, e.dst, e.implicit, e.kind))


def import_graph(package_dir: str | Path, *, implicit_parents: bool = True) -> dict[str, set[str]]:
    """``{module: set of modules it imports}`` for every module of the package (see :func:`import_edges`)."""
    graph: dict[str, set[str]] = {name: set() for name in module_index(package_dir)}
    for edge in import_edges(package_dir, implicit_parents=implicit_parents):
        graph[edge.src].add(edge.dst)
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``, iteratively (no recursion limit).

    Each component is sorted; the list is sorted; nodes only reached as targets count as nodes.
    """
    nodes = sorted(set(graph) | {dst for targets in graph.values() for dst in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def import_cycles(package_dir: str | Path, *, implicit_parents: bool = True) -> list[list[str]]:
    """The import cycles of the package: strongly connected components of more than one module.

    Each is a sorted list of dotted module names; the list is sorted (deterministic).
    """
    return _cycles(import_graph(package_dir, implicit_parents=implicit_parents))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [component for component in strongly_connected_components(graph) if len(component) > 1]


# -------------------------------------------------------------------------------------------- private access


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (len(name) > 4 and name.startswith("__") and name.endswith("__"))


def _is_own(receiver: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()`` (with or without arguments)."""
    if isinstance(receiver, ast.Name):
        return receiver.id in _OWN_RECEIVERS
    return (
        isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name) and receiver.func.id == "super"
    )


def _accesses_private(node: ast.AST) -> bool:
    """``other._x`` (read, write or delete) or ``getattr(other, "_x")`` (and setattr, hasattr, delattr)."""
    if isinstance(node, ast.Attribute):
        return _is_private(node.attr) and not _is_own(node.value)
    if not (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _ATTR_FUNCTIONS
    ):
        return False
    if (
        len(node.args) < 2
        or not isinstance(node.args[1], ast.Constant)
        or not isinstance(node.args[1].value, str)
    ):
        return False
    return _is_private(node.args[1].value) and not _is_own(node.args[0])


def _python_files(paths: Iterable[str | Path]) -> list[Path]:
    files: set[Path] = set()
    for entry in map(Path, paths):
        if entry.is_dir():
            files.update(p for p in entry.rglob("*.py") if "__pycache__" not in p.parts)
        elif entry.is_file():
            files.add(entry)
        else:
            raise FileNotFoundError(entry)
    return sorted(files)


def _snippet(lines: list[bytes], node: ast.expr) -> str:
    """The source of ``node``, whitespace collapsed (``ast.get_source_segment`` splits the file per call)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    end = node.end_col_offset if node.end_col_offset is not None else len(lines[last])
    if first == last:
        text = lines[first][node.col_offset : end]
    else:
        text = b"".join([lines[first][node.col_offset :], *lines[first + 1 : last], lines[last][:end]])
    return " ".join(text.decode("utf-8").split())


def private_accesses(paths: Iterable[str | Path]) -> list[tuple[str, int, str]]:
    """Every access to another object's private member in the files and directories ``paths`` (recursively).

    Returns ``(file, line, snippet)`` sorted by file and line, ``file`` as given or as found under a given
    directory: ``("lightning_xai/callbacks/_shap_background.py", 76, "trainer.fit_loop._combined_loader")``.
    An expression holding two private accesses (``a._b._c``) is reported twice, once for each.
    """
    found: list[PrivateAccess] = []
    for path in _python_files(paths):
        source = path.read_bytes()
        lines = source.splitlines(keepends=True)  # ast's col_offset counts UTF-8 bytes
        for node in ast.walk(_parse(source, path)):
            if _accesses_private(node):
                found.append(PrivateAccess(str(path), node.lineno, _snippet(lines, node)))
    return sorted(found, key=lambda a: (a.file, a.line, a.snippet))


# ------------------------------------------------------------------------------------------------------ main


def private_access_paths(package_dir: Path) -> list[Path]:
    """Where :func:`main` looks for private access: the package's ``callbacks/`` and ``*cli*`` modules."""
    callbacks = package_dir / "callbacks"
    return [*([callbacks] if callbacks.is_dir() else []), *sorted(package_dir.glob("*cli*"))]


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def report(package_dir: Path, base: Path) -> tuple[list[str], int, int]:
    """The report's lines (paths relative to ``base``), the numbers of import cycles and private accesses."""
    lines: list[str] = []
    edges = import_edges(package_dir)  # parsed once: the cycles come from the same edges
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.src, set()).add(edge.dst)
    cycles = _cycles(graph)
    lines.append(f"import cycles in {_relative(package_dir, base)}/: {len(cycles)}")
    for number, cycle in enumerate(cycles, 1):
        members = set(cycle)
        lines.append(f"  [{number}] {len(cycle)} modules: {', '.join(cycle)}")
        for edge in edges:
            if edge.src in members and edge.dst in members:
                how = edge.kind + (", parent __init__" if edge.implicit else "")
                lines.append(
                    f"      {edge.src} -> {edge.dst}  ({_relative(edge.path, base)}:{edge.line}, {how})"
                )
    scanned = private_access_paths(package_dir)
    accesses = private_accesses(scanned)
    where = (
        " ".join(_relative(p, base) + ("/" if p.is_dir() else "") for p in scanned)
        or "(no callbacks/, no *cli*)"
    )
    lines.append(f"private accesses in {where}: {len(accesses)}")
    for file, line, snippet in accesses:
        lines.append(f"  {_relative(Path(file), base)}:{line}: {snippet}")
    return lines, len(cycles), len(accesses)


def main(argv: Sequence[str] | None = None) -> int:
    """Print both checks over the repository's package; return the exit status, 1 if either found anything."""
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description="Import cycles and private access in a package.")
    parser.add_argument(
        "package", nargs="?", type=Path, default=repo / "lightning_xai", help="package directory"
    )
    args = parser.parse_args(argv)
    lines, cycles, accesses = report(args.package, Path.cwd())
    print("\n".join(lines))
    return 1 if cycles or accesses else 0


if __name__ == "__main__":
    sys.exit(main())
