"""Names a package offers but imports only when first used (PEP 562), so that importing it stays
light: `__getattr__ = lazy_attributes(__name__, {"name": "module.it.lives.in", ...})`."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    return __getattr__
