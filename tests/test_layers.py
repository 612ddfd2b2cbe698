"""The library's dependencies run one way: the layers written in autoresearch/__init__.py's docstring hold for
every import (those inside functions too), and no modules import each other around a loop."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import autoresearch

PACKAGE = Path(autoresearch.__file__).resolve().parent
LAYER_HEADING = re.compile(r"^Layer (\d+),")
MODULE_LINE = re.compile(r"^    ([a-z_]+)\s{2,}\S")


def layers() -> dict[str, int]:
    """Module -> layer, as the package docstring's map says."""
    found, layer = {}, None
    for line in (autoresearch.__doc__ or "").splitlines():
        heading = LAYER_HEADING.match(line)
        if heading:
            layer = int(heading.group(1))
            continue
        entry = MODULE_LINE.match(line)
        if entry and layer is not None:
            assert entry.group(1) not in found, f"{entry.group(1)} is listed twice"
            found[entry.group(1)] = layer
    return found


def imports_of(path: Path) -> set[str]:
    """The autoresearch modules `path` imports anywhere in its text (module level, functions, branches)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "autoresearch":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("autoresearch."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # a relative import: `from . import x`
            names |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("autoresearch.")}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and str(target.value).startswith("autoresearch."):
                names.add(str(target.value).split(".")[1])
    return names


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: imports_of(PACKAGE / f"{m}.py") & modules - {m} for m in modules}


def test_the_map_lists_every_module_and_nothing_else():
    on_disk = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    mapped = set(layers())
    assert on_disk - mapped == set(), "modules missing from the map in autoresearch/__init__.py"
    assert mapped - on_disk == set(), "the map lists modules that do not exist"


def test_no_module_imports_a_higher_layer():
    layer = layers()
    upward = [
        f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})"
        for m, deps in sorted(graph().items())
        for d in sorted(deps)
        if layer[d] > layer[m]
    ]
    assert upward == []


def test_no_import_cycles():
    deps = graph()
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for d in sorted(deps[module]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d) :] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[module] = "done"

    for module in sorted(deps):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The cycle newtask <-> taskfiles hid behind an import inside a function: such imports must count."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from autoresearch import newtask\n    import autoresearch.loop\n")
    assert imports_of(source) == {"newtask", "loop"}


def test_user_facing_import_paths_stay():
    """prepare.py files written by users and by new-task import these: they are an interface."""
    from autoresearch.data import DataError, resolve  # noqa: F401
    from autoresearch.lm import LMTask  # noqa: F401
    from autoresearch.lm import main as lm_main  # noqa: F401
    from autoresearch.tabular import TabularTask, main  # noqa: F401
