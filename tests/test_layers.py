"""The package's imports follow the layers of docs/DESIGN.md: down or sideways, never up.

The table is read from docs/DESIGN.md itself, so the document and the code cannot drift apart;
every ``import`` of the package is checked, those inside functions included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "compsde"
DESIGN = ROOT / "docs" / "DESIGN.md"


def layers() -> dict[str, int]:
    """``{unit: layer}`` from the rows ``| N | role | `a`, `b` |`` of the Layers table."""
    table = DESIGN.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    found = {}
    for number, units in re.findall(r"^\| (\d) \| [^|]+ \| (.+) \|$", table, flags=re.M):
        for unit in re.findall(r"`([A-Za-z_]+)`", units):
            found[unit] = int(number)
    return found


def unit_of(path: Path) -> str:
    """The top-level module or subpackage of the package that ``path`` belongs to."""
    first = path.relative_to(PACKAGE).parts[0]
    return first[:-3] if first.endswith(".py") else first


def imported_units(path: Path, source: str | None = None) -> set[str]:
    """Top-level units of the package that the module at ``path`` (its text: ``source``, else
    the file's) imports."""
    package = path.relative_to(PACKAGE.parent).parent.parts     # ("compsde", "sub", ...)
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:len(package) - node.level + 1])
            target = base + (node.module.split(".") if node.module else [])
            if len(target) > 1:
                found.add(target[1])
            else:                                   # from . import name  (inside compsde/)
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compsde."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("compsde."))
    return found


def test_the_table_names_every_unit_of_the_package():
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    table = layers()
    assert units <= set(table), f"not in docs/DESIGN.md's Layers table: {units - set(table)}"
    assert set(table) <= units, f"in the table but not in the package: {set(table) - units}"


def test_no_module_imports_a_higher_layer():
    table = layers()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = unit_of(path)
        for target in imported_units(path) - {own}:
            if target in table and table[target] > table[own]:
                upward.append(f"{path.relative_to(PACKAGE)} ({own}, layer {table[own]}) imports "
                              f"{target} (layer {table[target]})")
    assert not upward, "\n".join(upward)


def test_the_scan_sees_imports_inside_functions_and_every_form():
    """A violation planted in a module's text is found, in each import form."""
    planted = PACKAGE / "compressors" / "planted.py"
    source = ("import compsde.nn.data\nfrom compsde.cli import main\nfrom . import sign\n"
              "def f():\n    from ..distributed import register\n    return register\n")
    assert imported_units(planted, source) == {"nn", "cli", "compressors", "distributed"}
    assert layers()["distributed"] > layers()["compressors"]
