"""Train/validation split and char-rnn style batching for truncated backpropagation through time.

The training text is cut into `batch_size` contiguous streams; step k of an epoch takes the next
`seq_length` characters of every stream, with targets shifted by one, so the hidden state at the end
of one step is the right state to start the next.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import InputError


def split_train_val(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) views: validation is the last `val_frac` of the text."""
    if not 0.0 < val_frac < 1.0:
        raise InputError(f"--val-frac must be between 0 and 1, got {val_frac}")
    n_val = int(round(len(ids) * val_frac))
    if n_val < 2:
        raise InputError(f"the text ({len(ids)} characters) is too short to hold out {val_frac:.0%} for validation")
    return ids[:-n_val], ids[-n_val:]


class BatchStreams:
    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int):
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.stream_length = len(ids) // batch_size
        self.steps_per_epoch = (self.stream_length - 1) // seq_length
        if self.steps_per_epoch < 1:
            need = batch_size * (seq_length + 1)
            raise InputError(
                f"the training text ({len(ids)} characters) is too short for one batch "
                f"of {batch_size} x {seq_length + 1} characters ({need}); use a longer "
                "text or smaller --batch-size / --seq-length"
            )
        # A view, not a copy: a 100 MB corpus stays one array.
        self._streams = ids[: batch_size * self.stream_length].reshape(batch_size, self.stream_length)

    def window(self, step_in_epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets, each (batch_size, seq_length) int32, for one step of an epoch."""
        start = step_in_epoch * self.seq_length
        chunk = self._streams[:, start : start + self.seq_length + 1].astype(np.int32)  # (B, T+1)
        return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])
