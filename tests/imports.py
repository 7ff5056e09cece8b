"""Import boundaries: what each module of a package imports, read from its source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(package: Path) -> dict[str, set[str]]:
    """``file -> modules it imports`` for every module of ``package`` (lazy imports included)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module or "")
        found[str(path.relative_to(package.parent))] = names
    return found


def violations(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    """``file imports module`` for each import of a forbidden module or one of its submodules."""
    return [
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in sorted(names)
        if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    ]
