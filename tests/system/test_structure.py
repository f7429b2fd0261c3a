"""tools/check_structure.py: import cycles and private access, on synthetic packages and on lightning_xai."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lightning_xai"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_structure", REPO / "tools" / "check_structure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_structure", module)
    spec.loader.exec_module(module)
    return module


cs = _load_checker()


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: source}`` under ``root``; return the first top-level package directory."""
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root / next(iter(files)).split("/")[0]


# ----------------------------------------------------------------------------------------------------- cycles


def test_two_cycle(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",  # `b` is a submodule: an import of pkg.b, not of pkg/__init__
            "pkg/b.py": "import pkg.a\n",
            "pkg/c.py": "from pkg.a import x\n",  # depends on the cycle, is not in it
        },
    )
    assert cs.import_cycles(pkg) == [["pkg.a", "pkg.b"]]


def test_three_cycle_through_type_checking(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": "import typing\nif typing.TYPE_CHECKING:\n    pass\nfrom pkg.c import C\n",
            "pkg/c.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.a import A
            else:
                import os
        """,
        },
    )
    assert cs.import_cycles(pkg) == [["pkg.a", "pkg.b", "pkg.c"]]
    back = [e for e in cs.import_edges(pkg) if e.src == "pkg.c"]
    assert [(e.dst, e.line, e.kind, e.implicit) for e in back] == [("pkg.a", 3, "type-checking", False)]


def test_cycle_through_function_local_import(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
            def f():
                from pkg.b import g
                return g()
        """,
            "pkg/b.py": "from pkg.a import f\n\ndef g():\n    return 1\n",
        },
    )
    assert cs.import_cycles(pkg) == [["pkg.a", "pkg.b"]]
    lazy = [e for e in cs.import_edges(pkg) if e.src == "pkg.a"]
    assert [(e.dst, e.line, e.kind) for e in lazy] == [("pkg.b", 2, "function")]


def test_init_importing_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nfrom . import b\nfrom .sub import thing\n"
            "import pkg.sub.n\n",
            "pkg/a.py": "from pkg.b import B\nfrom . import b\nimport pkg.b\n\nA = 1\n",
            "pkg/b.py": "B = 1\n",
            "pkg/sub/__init__.py": "from .m import thing\nfrom pkg.sub import n\n",
            "pkg/sub/m.py": "from pkg.a import A\nfrom ..b import B\nfrom pkg.sub.n import N\n\nthing = 1\n",
            "pkg/sub/n.py": "from ..b import B\nN = 1\n",
        },
    )
    graph = cs.import_graph(pkg)
    # The imports are seen (the check is not vacuous) ...
    assert graph["pkg"] == {"pkg.a", "pkg.b", "pkg.sub", "pkg.sub.n"}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.sub"] == {"pkg.sub.m", "pkg.sub.n"}
    assert graph["pkg.sub.m"] == {"pkg.a", "pkg.b", "pkg.sub.n"}
    assert graph["pkg.sub.n"] == {"pkg.b"}
    # ... but a submodule's own enclosing packages are no implicit edge back: no cycle.
    assert cs.import_cycles(pkg) == []


@pytest.mark.parametrize(
    ("importer", "back", "expected"),
    [
        ("pkg/a.py", "from pkg import VERSION", ["pkg", "pkg.a"]),
        ("pkg/a.py", "import pkg", ["pkg", "pkg.a"]),
        ("pkg/a.py", "from . import VERSION", ["pkg", "pkg.a"]),
        ("pkg/sub/helper.py", "from .. import VERSION", ["pkg", "pkg.sub", "pkg.sub.helper"]),
        ("pkg/sub/__init__.py", "from pkg import VERSION", ["pkg", "pkg.sub"]),
    ],
)
def test_submodule_importing_its_package_init_back_is_a_cycle(
    tmp_path: Path, importer: str, back: str, expected: list[str]
) -> None:
    files = {
        "pkg/__init__.py": "VERSION = 1\nfrom pkg.a import A\nfrom pkg.sub import helper\n",
        "pkg/a.py": "A = 1\n",
        "pkg/sub/__init__.py": "from .helper import h\n",
        "pkg/sub/helper.py": "h = 1\n",
    }
    files[importer] = back + "\n" + files[importer]
    pkg = write_tree(tmp_path, files)
    assert cs.import_cycles(pkg) == [expected]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from . import n\n",
            "pkg/sub/m.py": "from . import n\nfrom .n import f\nfrom ..y import z\nfrom ..y import func\n"
            "from ..y.z import *\n",
            "pkg/sub/n.py": "from ..y.z import q\n\ndef f():\n    pass\n",
            "pkg/y/__init__.py": "def func():\n    pass\n",
            "pkg/y/z.py": "from ..sub import n\nq = 1\n",
        },
    )
    graph = cs.import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.n"}
    # pkg.y is reached explicitly (`func` is no submodule) and as the parent __init__ of pkg.y.z
    assert graph["pkg.sub.m"] == {"pkg.sub.n", "pkg.y", "pkg.y.z"}
    assert graph["pkg.y.z"] == {
        "pkg.sub",
        "pkg.sub.n",
    }  # pkg.sub: the other package's __init__, run on the way
    assert cs.import_cycles(pkg) == [["pkg.sub", "pkg.sub.n", "pkg.y.z"]]
    explicit = {(e.src, e.dst) for e in cs.import_edges(pkg) if not e.implicit}
    assert ("pkg.y.z", "pkg.sub") not in explicit and ("pkg.y.z", "pkg.sub.n") in explicit


def test_other_package_init_on_the_path_is_a_real_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x.a imports y.m, which runs y/__init__, which imports y.other, which needs x.a's A: a real cycle."""
    name = "cs_implicit_pkg"
    pkg = write_tree(
        tmp_path,
        {
            f"{name}/__init__.py": "",
            f"{name}/x/__init__.py": f"from {name}.x.a import A\n",
            f"{name}/x/a.py": f"from {name}.y.m import f\n\nA = 1\n",
            f"{name}/y/__init__.py": f"from {name}.y.m import f\nfrom {name}.y.other import o\n",
            f"{name}/y/m.py": "def f():\n    pass\n",
            f"{name}/y/other.py": f"from {name}.x.a import A\n\no = A\n",
        },
    )
    # y.other also runs x/__init__ on its way to x.a
    assert cs.import_cycles(pkg) == [[f"{name}.x", f"{name}.x.a", f"{name}.y", f"{name}.y.other"]]
    assert cs.import_cycles(pkg, implicit_parents=False) == []
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ImportError, match="partially initialized"):
            importlib.import_module(f"{name}.x.a")
    finally:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def test_components_are_sorted_deterministic_and_iterative() -> None:
    graph = {"d": {"c"}, "c": {"d"}, "b": {"a"}, "a": {"b", "c"}, "e": {"e"}}
    assert cs.strongly_connected_components(graph) == [["a", "b"], ["c", "d"], ["e"]]
    ring = {str(i): {str((i + 1) % 5000)} for i in range(5000)}  # deeper than the recursion limit
    (component,) = cs.strongly_connected_components(ring)
    assert len(component) == 5000 and component == sorted(component)


def test_self_import_and_outside_imports_are_no_cycle(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.a\nimport os\nfrom other.pkg import b\nfrom ... import far\n",
            "pkg/b.py": "import other.a\n",
        },
    )
    assert cs.import_graph(pkg) == {"pkg": set(), "pkg.a": set(), "pkg.b": set()}
    assert cs.import_cycles(pkg) == []


# -------------------------------------------------------------------------------------------- private access

PRIVATE_SOURCE = """\
from pkg._mod import _name, public
import pkg._other as other_mod


class A(Base):
    def m(self, other, obj):
        self._x = other._x
        cls._x
        super()._x
        super(A, self)._y
        obj.__dict__, obj.__class__.__name__
        self.peer._y
        trainer.fit_loop._combined_loader.flattened
        del other._gone
        other._z = 1
        getattr(other, "_w"), hasattr(self, "_ok"), getattr(other, "public"), getattr(other, "__doc__")
        _name(other_mod.public), obj.__mangled

    @classmethod
    def c(cls):
        return cls._registry
"""

PRIVATE_EXPECTED = [
    (7, "other._x"),
    (12, "self.peer._y"),
    (13, "trainer.fit_loop._combined_loader"),
    (14, "other._gone"),
    (15, "other._z"),
    (16, 'getattr(other, "_w")'),
    (17, "obj.__mangled"),
]


def test_private_access_flagged_and_own_members_not(tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text(PRIVATE_SOURCE, encoding="utf-8")
    assert cs.private_accesses([path]) == [(str(path), line, snippet) for line, snippet in PRIVATE_EXPECTED]


def test_private_access_walks_directories_and_files(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pkg/callbacks/__init__.py": "",
            "pkg/callbacks/one.py": "def f(cb):\n    return cb._state\n",
            "pkg/callbacks/sub/two.py": "x = (\n    y\n    ._hidden\n)\n",
            "pkg/cli.py": "def main(a):\n    return a._b._c\n",
            "pkg/clean.py": "print(other._x)\n",  # not scanned
        },
    )
    found = cs.private_accesses([tmp_path / "pkg" / "callbacks", tmp_path / "pkg" / "cli.py"])
    assert [(Path(f).relative_to(tmp_path).as_posix(), line, s) for f, line, s in found] == [
        ("pkg/callbacks/one.py", 2, "cb._state"),
        ("pkg/callbacks/sub/two.py", 2, "y ._hidden"),
        ("pkg/cli.py", 2, "a._b"),
        ("pkg/cli.py", 2, "a._b._c"),
    ]
    with pytest.raises(FileNotFoundError):
        cs.private_accesses([tmp_path / "missing"])


# ------------------------------------------------------------------------------------------------------ main


def test_main_exit_status_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write_tree(
        tmp_path / "clean", {"pkg/__init__.py": "from pkg.a import A\n", "pkg/a.py": "A = 1\n"}
    )
    assert cs.main([str(clean)]) == 0
    assert "import cycles in" in capsys.readouterr().out
    bad = write_tree(
        tmp_path / "bad",
        {
            "pkg/__init__.py": "from pkg.a import A\n",
            "pkg/a.py": "from pkg import VERSION\nA = 1\n",
            "pkg/callbacks/__init__.py": "",
            "pkg/callbacks/x.py": "def f(cb):\n    return cb._state\n",
            "pkg/_cli_extra.py": "def f(t):\n    return t._loop\n",
        },
    )
    assert cs.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert ": 1\n  [1] 2 modules: pkg, pkg.a\n" in out
    assert "pkg/a.py:1, module)" in out
    assert ": 2\n" in out and "x.py:2: cb._state" in out and "_cli_extra.py:2: t._loop" in out


# --------------------------------------------------------------------------------------- the real package

def test_no_import_cycle_in_lightning_xai() -> None:
    assert cs.import_cycles(PACKAGE) == []


def test_no_private_access_in_callbacks_and_cli() -> None:
    assert cs.private_accesses(cs.private_access_paths(PACKAGE)) == []
