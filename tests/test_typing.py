"""The lazily imported package names (charrnn.train, charrnn.sampling.sample, ...) are listed twice:
in each package's table of homes, which `__getattr__` imports from, and in its `if TYPE_CHECKING:`
imports, which type checkers read. The two lists must name the same things from the same modules."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

PACKAGES = {  # package: (the table's name, how a table entry names its module)
    "charrnn": ("_HOMES", lambda home: home),
    "charrnn.sampling": ("_HOMES", lambda home: home),
    "charrnn.training": ("_HOMES", lambda home: home),
    "charrnn.sweep": ("_EXPORTS", lambda home: f"charrnn.sweep.{home}"),
}


def type_checking_imports(package: str) -> dict[str, str]:
    """{name: module} of the package's `if TYPE_CHECKING:` imports."""
    tree = ast.parse(inspect.getsource(importlib.import_module(package)))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module is not None
                for alias in statement.names:
                    # `import x as x`: the form that re-exports a name to a strict checker
                    assert alias.asname == alias.name, f"{package}: import {alias.name} as {alias.name}"
                    found[alias.name] = statement.module
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_type_checking_imports_match_the_lazy_table(package):
    table_name, module_of = PACKAGES[package]
    table = getattr(importlib.import_module(package), table_name)
    assert type_checking_imports(package) == {name: module_of(home) for name, home in table.items()}
