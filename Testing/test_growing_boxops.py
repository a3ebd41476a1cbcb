"""CMBLib.growing.boxops gives what the scipy.ndimage calls it replaces give (property tests)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from CMBLib.growing import boxops

shapes = st.tuples(*[st.integers(1, 12)] * 3)


def random_mask(seed, shape, fill):
    return np.random.default_rng(seed).random(shape) < fill


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), fill=st.floats(0.02, 0.8), connectivity=st.sampled_from([6, 26]))
def test_dilation_components_and_hole_filling_equal_scipy(shape, seed, fill, connectivity):
    mask = random_mask(seed, shape, fill)
    st_ = ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    np.testing.assert_array_equal(boxops.structure(connectivity), st_)
    for footprint in (st_, np.ones((1, 3, 3), bool), ndimage.generate_binary_structure(3, 2), np.ones((5, 3, 1), bool)):
        expected = ndimage.binary_dilation(mask, structure=footprint)
        np.testing.assert_array_equal(boxops.dilate(mask, footprint), expected)
    np.testing.assert_array_equal(boxops.fill_holes(mask, connectivity), ndimage.binary_fill_holes(mask, structure=st_))
    seeds = random_mask(seed + 1, shape, 0.05)
    labels, n = ndimage.label(mask | seeds, structure=st_)
    keep = np.zeros(n + 1, bool)
    keep[labels[seeds]] = True
    keep[0] = False
    np.testing.assert_array_equal(boxops.components_holding(mask, seeds, connectivity), keep[labels])
    if mask.any():
        assert boxops.bounding_box(mask) == ndimage.find_objects(mask.view(np.uint8))[0]
    else:
        assert boxops.bounding_box(mask) is None


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), spacing=st.tuples(*[st.floats(0.3, 5.0)] * 3),
       max_mm=st.floats(0.5, 10.0))
def test_distance_equals_scipy_edt_up_to_max_and_exceeds_it_beyond(shape, seed, spacing, max_mm):
    mask = random_mask(seed, shape, 0.1)
    mask.flat[seed % mask.size] = True
    expected = ndimage.distance_transform_edt(~mask, sampling=spacing)
    np.testing.assert_allclose(boxops.distance_to(mask, spacing), expected, rtol=0, atol=1e-12)
    capped = boxops.distance_to(mask, spacing, max_mm)
    near = expected <= max_mm
    np.testing.assert_allclose(capped[near], expected[near], rtol=0, atol=1e-12)
    assert np.all(capped[~near] > max_mm)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), sigma=st.tuples(*[st.floats(0.0, 2.5)] * 3))
def test_gaussian_is_scipys_to_the_last_bit(shape, seed, sigma):
    values = np.random.default_rng(seed).normal(size=shape)
    expected = ndimage.gaussian_filter(values, sigma, mode="nearest")
    np.testing.assert_array_equal(boxops.gaussian(values, sigma), expected)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_bilinear_in_plane_equals_map_coordinates_on_every_slice(shape, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape)
    jj = rng.uniform(-2, shape[1] + 1, (4, 7))    # positions outside the plane are clamped
    ii = rng.uniform(-2, shape[2] + 1, (4, 7))
    got = boxops.bilinear_in_plane(values, jj, ii)
    assert got.shape == (shape[0], 4, 7)
    for k in range(shape[0]):
        expected = ndimage.map_coordinates(values[k], [jj.ravel(), ii.ravel()], order=1, mode="nearest")
        np.testing.assert_allclose(got[k].ravel(), expected, rtol=0, atol=1e-12)


def test_hand_computed_cases():
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    mask[2, 2, 2] = False                      # a one-voxel hole inside a cube
    assert boxops.fill_holes(mask)[2, 2, 2]
    flat = mask[2:3].copy()                    # one slice: the same voxel touches the border (3D)
    assert not boxops.fill_holes(flat)[0, 2, 2]
    line = np.zeros((1, 1, 5), bool)
    line[0, 0, 0] = True
    np.testing.assert_allclose(boxops.distance_to(line, (4.0, 1.0, 0.5))[0, 0], [0, 0.5, 1.0, 1.5, 2.0])
    plane = np.arange(4.0).reshape(1, 2, 2)     # [[0, 1], [2, 3]]
    assert boxops.bilinear_in_plane(plane, np.array([0.5]), np.array([0.5]))[0, 0] == 1.5
