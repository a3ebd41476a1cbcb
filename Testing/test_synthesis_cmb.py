"""Synthetic CMBs: physical sub-voxel rendering, masks, centres, polarity; demo study."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from CMBLib.geometry import Volume
from CMBLib.synthesis.cmb_insertion import CMBSpec, insert_cmbs, render_cmb
from CMBLib.synthesis.demo_study import make_demo_study


def _flat(shape_kji, spacing, value=100.0):
    return Volume(np.full(shape_kji, value, np.float32), spacing)


def _spec(centre, radius=2.0, contrast=0.8, halo_weight=0.0):
    return CMBSpec(np.asarray(centre, float), radius, contrast, halo_weight=halo_weight)


def test_centre_voxel_of_a_large_cmb_reaches_the_contrast():
    v = _flat((40, 40, 40), (0.5, 0.5, 0.5))
    c = v.voxel_to_ras([20, 20, 20])
    res = insert_cmbs(v, specs=[_spec(c, radius=2.0, contrast=0.8)])
    # the centre voxel (0.5 mm cube) averages a Gaussian of HWHM 2 mm (sigma 1.699 mm):
    # mean r^2 = 3 * 0.5^2 / 12 = 0.0625 mm^2 -> attenuation 0.8 * exp(-0.0625 / (2 * 1.699^2)) = 0.7914
    assert res.image.array[20, 20, 20] == pytest.approx(100 * (1 - 0.7914), abs=0.3)
    assert res.mask.array[20, 20, 20] == 1
    assert res.image.array[0, 0, 0] == pytest.approx(100.0)
    np.testing.assert_allclose(res.centres_ras, [c])


def test_mask_is_the_half_maximum_extent():
    # no halo: attenuation >= half peak <=> r <= HWHM = radius (2 mm) -> a ball of ~33.5 mm^3
    v = _flat((40, 40, 40), (0.5, 0.5, 0.5))
    res = insert_cmbs(v, specs=[_spec(v.voxel_to_ras([20.0, 20.0, 20.0]), radius=2.0)])
    vol_mm3 = np.count_nonzero(res.mask.array) * 0.125
    assert vol_mm3 == pytest.approx(4 / 3 * np.pi * 2.0 ** 3, rel=0.1)


def test_thick_slices_lose_contrast_but_keep_the_dark_mass():
    """Partial volume is physical: the integral of the dip (mm^3) does not depend on the grid."""
    spec = _spec((10.0, 10.0, 10.0), radius=1.2, contrast=0.9, halo_weight=0.2)
    fine = _flat((40, 40, 40), (0.5, 0.5, 0.5))
    thick = _flat((5, 40, 40), (0.5, 0.5, 4.0))
    masses, peaks = [], []
    for v in (fine, thick):
        box, att = render_cmb(v, spec)
        masses.append(att.sum() * v.voxel_volume_mm3)
        peaks.append(att.max())
    assert peaks[1] < 0.7 * peaks[0]
    assert masses[1] == pytest.approx(masses[0], rel=0.05)


def test_bright_polarity_adds_and_dark_multiplies():
    v = _flat((20, 20, 20), (1.0, 1.0, 1.0), value=10.0)
    c = v.voxel_to_ras([10, 10, 10])
    dark = insert_cmbs(v, specs=[_spec(c)], polarity="dark").image.array
    bright = insert_cmbs(v, specs=[_spec(c)], polarity="bright", brain_mask=np.ones((20, 20, 20), bool)).image.array
    assert dark.max() <= 10.0 + 1e-5 and dark.min() < 5
    assert bright.min() >= 10.0 - 1e-5 and bright.max() > 10.0


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(1.0, 1.0, 1.0), (0.5, 0.5, 5.0), (0.86, 0.86, 4.0)]))
def test_random_insertion_properties(seed, spacing):
    v = _flat((12, 40, 40), spacing)
    rng = np.random.default_rng(seed)
    res = insert_cmbs(v, n=3, rng=rng, brain_mask=np.pad(np.ones((8, 30, 30), bool), ((2, 2), (5, 5), (5, 5))),
                      min_distance_mm=8.0)
    n = len(res.centres_ras)
    labels = res.mask.array
    assert set(np.unique(labels)) <= set(range(n + 1))
    assert len(np.unique(labels)) == n + 1          # every CMB has at least its peak voxel
    assert res.image.array.max() <= 100.0 + 1e-4
    for a in range(n):
        for b in range(a + 1, n):
            assert np.linalg.norm(res.centres_ras[a] - res.centres_ras[b]) >= 8.0


def test_demo_study_is_deterministic_and_consistent():
    img, mask, centres = make_demo_study(3)
    img2, _, centres2 = make_demo_study(3)
    np.testing.assert_array_equal(img.array, img2.array)
    np.testing.assert_allclose(centres, centres2)
    assert img.array.shape == (40, 128, 128) and img.spacing == (0.9, 0.9, 3.0)
    assert mask.same_geometry(img)
    assert mask.array.max() == len(centres) == 6
    for n, c in enumerate(centres, start=1):
        i, j, k = np.round(img.ras_to_voxel(c)).astype(int)
        assert mask.array[k, j, i] == n
        # the CMB is darker than its surroundings
        assert img.array[k, j, i] < np.median(img.array[k, max(j - 8, 0):j + 8, max(i - 8, 0):i + 8])
