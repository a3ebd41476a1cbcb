"""CMBLib.validation.label_boxes gives scipy.ndimage.find_objects' boxes (property test, hand case)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from CMBLib.validation import label_boxes


@settings(max_examples=80, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 9)] * 3), seed=st.integers(0, 10_000), fill=st.floats(0.0, 0.5),
       n_labels=st.integers(1, 7), dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32]))
def test_boxes_equal_find_objects(shape, seed, fill, n_labels, dtype):
    rng = np.random.default_rng(seed)
    array = np.where(rng.random(shape) < fill, rng.integers(1, n_labels + 1, shape), 0).astype(dtype)
    expected = {v + 1: box for v, box in enumerate(ndimage.find_objects(array)) if box is not None}
    assert label_boxes(array) == expected


def test_hand_made_boxes_and_bad_input():
    array = np.zeros((4, 5, 6), np.uint16)
    array[1, 2, 3] = 7
    array[0:2, 4, 0:6:5] = 2            # two voxels far apart: one box around both
    assert label_boxes(array) == {2: (slice(0, 2), slice(4, 5), slice(0, 6)),
                                  7: (slice(1, 2), slice(2, 3), slice(3, 4))}
    assert label_boxes(np.zeros((3, 3, 3), np.uint8)) == {}
    with pytest.raises(ValueError, match="3D"):
        label_boxes(np.zeros((3, 3), np.uint8))
