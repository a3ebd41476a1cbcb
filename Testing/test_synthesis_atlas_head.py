"""The demo's skull-on head from the shipped atlas (CMBLib.synthesis.atlas_head): CMBs where the
sites say, T2*-GRE contrast, the drawn iron dark and paired, a skull around the brain."""
import numpy as np
import pytest

from CMBLib.synthesis.atlas_head import ANATOMY, CMB_SITES, draw_anatomy, make_head_study


@pytest.fixture(scope="module")
def study():
    return make_head_study(0)


def _mean_around(vol, centre_ras, radius_mm):
    k, j, i = np.indices(vol.array.shape)
    ras = vol.voxel_to_ras(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(k.shape + (3,))
    near = np.linalg.norm(ras - np.asarray(centre_ras), axis=-1) <= radius_mm
    return float(vol.array[near].mean())


def test_cmbs_lie_at_their_sites_one_label_each(study):
    assert len(study.centres_ras) == len(CMB_SITES) == 8
    np.testing.assert_allclose(study.centres_ras, [c for _, c, _ in CMB_SITES], atol=1e-6)
    labels = np.unique(study.cmb_mask.array)
    assert labels.tolist() == list(range(9))
    for n, (_, centre, _) in enumerate(CMB_SITES, start=1):
        got = study.cmb_mask.kji_to_ras(np.argwhere(study.cmb_mask.array == n).mean(axis=0))
        assert np.linalg.norm(got - centre) <= 2.0        # the half-maximum mask's centroid, 0.9 x 0.9 x 3 mm
    assert study.cmb_sites == [s for s, _, _ in CMB_SITES]


def test_skull_on_t2s_contrast(study):
    """A skull around the brain (not a constant background), CSF brighter than brain, every CMB
    darker than its surroundings."""
    from CMBLib.detection.preprocess import has_constant_background

    img = study.image
    assert not has_constant_background(img)[0]
    brain = study.brain_mask
    from scipy import ndimage as ndi

    assert brain.sum() > 1e5
    around = ndi.binary_dilation(brain, iterations=6) & ~ndi.binary_dilation(brain, iterations=2)
    assert np.median(img.array[around]) < 0.8 * np.median(img.array[brain])   # skull and its shells, darker
    for n in range(1, 9):
        core = study.cmb_mask.array == n
        ring = ndi.binary_dilation(core, iterations=3) & ~ndi.binary_dilation(core, iterations=1) & brain
        assert img.array[core].mean() < 0.8 * img.array[ring].mean()


def test_deterministic_for_a_seed_and_different_across_seeds(study):
    again = make_head_study(0, n_cmbs=0)
    other = make_head_study(1, n_cmbs=0)
    assert again.cmb_mask.array.max() == 0 and again.image.array.shape == study.image.array.shape
    assert not np.array_equal(again.image.array, other.image.array)
    np.testing.assert_array_equal(again.image.array, make_head_study(0, n_cmbs=0).image.array)


def test_drawn_iron_is_dark_and_in_mirror_pairs():
    """draw_anatomy darkens each structure of ANATOMY on both sides by its stated fraction."""
    from CMBLib.geometry import Volume

    grid = Volume(np.ones((60, 90, 60), np.float32), (1.0, 1.0, 1.0), (-30.0, -75.0, -45.0), np.eye(3))
    out, where = draw_anatomy(grid, np.random.default_rng(0))
    for name, centre, _radii, left, pair in ANATOMY[:4]:            # the four iron-rich nuclei, all paired
        assert pair
        for side, sign in (("right", 1.0), ("left", -1.0)):
            c = (sign * centre[0], centre[1], centre[2])
            assert where[f"{name}_{side}"] == c
            v = _mean_around(out, c, 0.8)
            assert left - 0.05 <= v <= 1.0 - 0.85 * (1.0 - left) + 0.05, (name, side, v)
    assert _mean_around(out, (0.0, 10.0, 5.0), 2.0) == 1.0          # far from every structure: untouched
