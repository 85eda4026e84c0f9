"""The package's import graph: layers import only downwards, and no module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import imtalker

ROOT = Path(imtalker.__file__).parent

# Bottom to top; a module may import from its own layer and the layers before it.
LAYERS = [
    {"constants", "errors", "config"},
    {"io", "models", "metrics"},
    {"weights", "preprocess", "tracks", "features", "sampling", "export"},
    {"pipelines", "data"},
    {"evaluation", "training"},
    {"apps", "__main__"},
]


def _layer(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def _imports() -> list[tuple[str, str, list[str]]]:
    """(importing module, imported module, names) for every import of the package inside it."""
    found = []
    for path in ROOT.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("imtalker"):
                    found.append((module, target, [alias.name for alias in node.names]))
    return found


def test_no_module_imports_private_names_of_another():
    private = [(module, target, name) for module, target, names in _imports() for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_layers_import_only_downwards():
    upward = []
    for module, target, _ in _imports():
        source, imported = module.split("."), target.split(".")
        if len(source) < 2 or len(imported) < 2 or source[1] == imported[1]:
            continue  # the package root (public API) or a module of the same part
        if _layer(imported[1]) > _layer(source[1]):
            upward.append(f"{module} -> {target}")
    assert upward == []
