"""Where the files that ship with charrnn are: the corpus catalog and the bundled model.

In an installed wheel they are the data packages `charrnn.bundled_corpora` and
`charrnn.bundled_models`; in a source checkout they are `corpora/` and `models/` at its top.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(package: str, checkout_dir: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            return Path(location)
    return _REPO_ROOT / checkout_dir


def catalog_path() -> Path:
    return _data_dir("charrnn.bundled_corpora", "corpora") / "catalog.json"


DEFAULT_MODEL = "shakespeare-lstm"  # what `charrnn sample` uses when given no model: the best bundled one


def bundled_models_root() -> Path:
    return _data_dir("charrnn.bundled_models", "models")


def bundled_model_names() -> list[str]:
    """Names of the models that ship with charrnn (each a directory holding meta.json), sorted."""
    root = bundled_models_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())


def bundled_model_dir(name: str = DEFAULT_MODEL) -> Path:
    return bundled_models_root() / name
