"""Imports go down the layers of ARCHITECTURE.md: read from the source (ast), no imports run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "l5assets"
# layer of each top-level module / folder; a module may import its own layer and those below
LAYERS = {
    "paths": 0,
    "components": 0,
    "rng": 0,
    "storage": 0,
    "params": 0,
    "sweep": 0,  # grids of params files
    "science": 1,
    "cell": 2,
    "network": 2,
    "simulation": 2,
    "graph": 3,
    "layout": 3,
    "lineage": 4,
    "preflight": 4,
    "defs": 5,
    "definitions": 5,
    "cli": 6,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Top-level l5assets units a module imports (absolute and relative imports)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = path.relative_to(PKG).parent.parts[
                    : len(path.relative_to(PKG).parts) - node.level
                ]
                names = [".".join(("l5assets", *base, node.module or ""))]
                if node.module is None:
                    names = [f"l5assets.{'.'.join(base)}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "l5assets":
                    names = [f"l5assets.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "l5assets" and len(parts) > 1 and parts[1]:
                out.add(parts[1])
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if _unit(p) in LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_down_the_layers(path: Path) -> None:
    own = LAYERS[_unit(path)]
    upward = sorted(u for u in _imports(path) if u in LAYERS and LAYERS[u] > own)
    assert not upward, f"{path.relative_to(PKG)} imports from a higher layer: {upward}"


def test_every_module_has_a_layer() -> None:
    units = {_unit(p) for p in PKG.rglob("*.py")} - {"__init__", "__main__"}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))
