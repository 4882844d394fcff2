import numpy as np
import pytest

from charrnn.errors import InputError
from charrnn.training.batches import BatchStreams, split_train_val


def test_validation_is_the_end_of_the_text():
    ids = np.arange(100)
    train, val = split_train_val(ids, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))


def test_streams_are_contiguous_and_targets_shift_by_one():
    ids = np.arange(2 * 25, dtype=np.uint8)  # two streams of 25
    streams = BatchStreams(ids, batch_size=2, seq_length=4)
    assert streams.steps_per_epoch == 6  # (25 - 1) // 4
    x0, y0 = streams.window(0)
    x1, _ = streams.window(1)
    np.testing.assert_array_equal(x0, [[0, 1, 2, 3], [25, 26, 27, 28]])
    np.testing.assert_array_equal(y0, [[1, 2, 3, 4], [26, 27, 28, 29]])
    np.testing.assert_array_equal(x1, [[4, 5, 6, 7], [29, 30, 31, 32]])  # continues each stream
    assert x0.dtype == np.int32 and x0.flags.c_contiguous and y0.flags.c_contiguous
    last_x, last_y = streams.window(5)
    assert last_y[0, -1] == 24 and last_y[1, -1] == 49


def test_text_too_short_for_one_batch_is_refused():
    with pytest.raises(InputError, match="too short for one batch"):
        BatchStreams(np.arange(40), batch_size=4, seq_length=10)
    with pytest.raises(InputError, match="too short"):
        split_train_val(np.arange(5), 0.1)
