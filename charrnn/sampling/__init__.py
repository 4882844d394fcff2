"""Sampling: the options and their checks (options), the batched sampler (batch), and the one-stream
API (api).

`charrnn.sampling.sample(model, length, prime=...)` and `stream(...)` are the calls to use. Names are
imported when first used, so that reading the options does not compile the kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charrnn._lazy import lazy_attributes

_HOMES = {
    "load": "charrnn.model.checkpoint",
    "resolve_model_dir": "charrnn.model.checkpoint",
    "iter_sample": "charrnn.sampling.api",
    "iter_samples": "charrnn.sampling.api",
    "sample": "charrnn.sampling.api",
    "sample_text": "charrnn.sampling.api",
    "stream": "charrnn.sampling.api",
    "BatchSampler": "charrnn.sampling.batch",
    "default_threads": "charrnn.sampling.batch",
    "DEFAULT_TEMPERATURE": "charrnn.sampling.options",
    "SampleOptions": "charrnn.sampling.options",
    "drop_unknown": "charrnn.sampling.options",
    "unknown_prime_message": "charrnn.sampling.options",
}

if TYPE_CHECKING:  # the same names, for type checkers (tests/test_typing.py keeps the two lists equal)
    from charrnn.model.checkpoint import load as load
    from charrnn.model.checkpoint import resolve_model_dir as resolve_model_dir
    from charrnn.sampling.api import iter_sample as iter_sample
    from charrnn.sampling.api import iter_samples as iter_samples
    from charrnn.sampling.api import sample as sample
    from charrnn.sampling.api import sample_text as sample_text
    from charrnn.sampling.api import stream as stream
    from charrnn.sampling.batch import BatchSampler as BatchSampler
    from charrnn.sampling.batch import default_threads as default_threads
    from charrnn.sampling.options import DEFAULT_TEMPERATURE as DEFAULT_TEMPERATURE
    from charrnn.sampling.options import SampleOptions as SampleOptions
    from charrnn.sampling.options import drop_unknown as drop_unknown
    from charrnn.sampling.options import unknown_prime_message as unknown_prime_message

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
