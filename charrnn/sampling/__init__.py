"""Sampling: the options and their checks (options), the batched sampler (batch), and the one-stream
API (api).

`charrnn.sampling.sample(model, length, prime=...)` and `stream(...)` are the calls to use. Names are
imported when first used, so that reading the options does not compile the kernels.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "load": "charrnn.model.checkpoint", "resolve_model_dir": "charrnn.model.checkpoint",
    "iter_sample": "charrnn.sampling.api", "iter_samples": "charrnn.sampling.api",
    "sample": "charrnn.sampling.api", "sample_text": "charrnn.sampling.api", "stream": "charrnn.sampling.api",
    "BatchSampler": "charrnn.sampling.batch", "default_threads": "charrnn.sampling.batch",
    "DEFAULT_TEMPERATURE": "charrnn.sampling.options", "SampleOptions": "charrnn.sampling.options",
    "drop_unknown": "charrnn.sampling.options", "unknown_prime_message": "charrnn.sampling.options",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'charrnn.sampling' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
