"""Input checks name the argument; Sequences pads and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probgen.core.data import Sequences, as_sequences, as_tensor, check_positive_int
from probgen.core.errors import DataError


def test_sequences_of_different_lengths_are_padded_with_mask():
    batch = as_sequences([np.ones((2, 3)), np.ones((4, 3))], event_shape=(3,))
    assert batch.values.shape == (2, 4, 3)
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]
    assert [s.shape[0] for s in batch.unpad()] == [2, 4]


def test_three_dimensional_array_with_lengths():
    batch = as_sequences(np.zeros((3, 5, 2)), event_shape=(2,), lengths=[5, 2, 1])
    assert batch.lengths.tolist() == [5, 2, 1]
    assert isinstance(batch[1:], Sequences) and batch[1:].max_length == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "empty"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], r"sequences\[1\] has length 0"),
        ([np.zeros((3, 2)), np.zeros((3, 5))], r"sequences\[1\] has 5 features, the model has 2"),
        ([np.array([[np.nan, 0.0]])], "NaN"),
        ([np.array([[np.inf, 0.0]])], "infinite"),
    ],
)
def test_sequence_errors_name_the_sequence(data, message):
    with pytest.raises(DataError, match=message):
        as_sequences(data, event_shape=(2,))


def test_nan_allowed_when_asked():
    batch = as_sequences([np.array([[np.nan, 1.0]])], event_shape=(2,), allow_nan=True)
    assert torch.isnan(batch.values).any()


def test_integer_and_range_checks():
    with pytest.raises(DataError, match="whole numbers"):
        as_tensor([0.5, 1.0], "x", integer=True)
    with pytest.raises(DataError, match="above the largest allowed 3"):
        as_tensor([0, 4], "symbols", max_value=3)
    with pytest.raises(DataError, match="must hold numbers"):
        as_tensor(["a", "b"], "x")


def test_positive_int():
    assert check_positive_int(3, "n_states") == 3
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(DataError, match="n_states"):
            check_positive_int(bad, "n_states")
