"""training/patch_insertion: on-the-fly CMBs in model-grid patches (hand-checked numbers)."""
import numpy as np
import pytest

from training.patch_insertion import cmb_attenuation, insert_random_cmbs


def test_attenuation_peak_half_maximum_and_slab_partial_volume():
    # Gaussian (power 2), R = 2 mm, centred on a voxel of a 1 x 1 x 2 mm grid
    a = cmb_attenuation((21, 41, 41), (1.0, 1.0, 2.0), (10, 20, 20), 2.0, power=2.0, slab_mm=2.0,
                        inplane_samples=9, slab_step_mm=0.1)
    # in-plane profile at 2 mm (= R) from the centre, averaged over its voxel: about one half
    assert a[10, 20, 22] == pytest.approx(0.5, abs=0.05)
    assert a[10, 20, 20] == a.max() and 0.85 < a.max() < 1.0
    # a 5 mm slab spreads the same dip over more slices: lower peak, same integral
    b = cmb_attenuation((21, 41, 41), (1.0, 1.0, 2.0), (10, 20, 20), 2.0, power=2.0, slab_mm=5.0,
                        inplane_samples=9, slab_step_mm=0.1)
    assert b.max() < 0.8 * a.max()
    assert b.sum() == pytest.approx(a.sum(), rel=0.02)
    # flat-topped profile (power 6) is fuller inside R than the Gaussian
    c = cmb_attenuation((21, 41, 41), (1.0, 1.0, 2.0), (10, 20, 20), 2.0, power=6.0, slab_mm=2.0)
    assert c[10, 20, 21] > a[10, 20, 21]
    # a centre outside the patch leaves it untouched
    assert cmb_attenuation((8, 8, 8), (1, 1, 2), (40, 40, 40), 2.0).sum() == 0


def test_insert_random_cmbs_labels_dips_and_keeps_existing_labels():
    rng = np.random.default_rng(3)
    x = np.zeros((16, 32, 32), np.float32)
    brain = np.zeros(x.shape, bool)
    brain[4:12, 8:24, 8:24] = True
    y = np.zeros(x.shape, np.uint8)
    y[2, 2, 2] = 1                                          # an existing CMB voxel stays labelled
    for _ in range(20):
        x2, y2, n = insert_random_cmbs(x, y, brain, rng, zero_level=(-2.0, -2.0), additive_prob=0.0)
        assert n >= 1 and y2[2, 2, 2] == 1
        new = (y2 > 0) & (y == 0)
        assert new.any() and brain[new].mean() > 0.5         # centres inside the brain mask
        # magnitude model: x' = x0 + (x - x0)(1 - a) with x = 0, x0 = -2 -> dip = 2a, a <= 0.95
        assert x2.max() <= 0 and -1.9 - 1e-5 <= x2.min() <= -0.4 + 1e-5
    for _ in range(10):  # one CMB per patch: its labelled voxels are at least half its peak dip
        x2, y2, n = insert_random_cmbs(x, y, brain, rng, n_cmbs=(1, 1), zero_level=(-2.0, -2.0),
                                       additive_prob=0.0)
        new = (y2 > 0) & (y == 0)
        assert n == 1 and x2[new].max() <= 0.5 * x2.min() + 1e-6
        assert x2[~new].min() > 0.5 * x2.min() - 1e-6          # ... and every darker voxel is labelled
    # nothing to insert into: no brain in the patch
    x3, y3, n = insert_random_cmbs(x, y, np.zeros(x.shape, bool), rng)
    assert n == 0 and np.array_equal(x3, x) and np.array_equal(y3, y)


def test_brain_edge_distance_ignores_patch_borders():
    from training.patch_insertion import brain_edge_distance

    brain = np.zeros((4, 10, 10), bool)
    brain[:, :, :6] = True                     # brain fills i < 6 and runs into the patch borders
    d = brain_edge_distance(brain, spacing_ijk=(1.0, 1.0, 2.0))
    assert d[2, 5, 5] == pytest.approx(1.0)    # next to the first outside voxel (i = 6)
    assert d[2, 5, 0] == pytest.approx(6.0)    # the patch border at i = 0 is not an edge
    assert d[0, 0, 3] == pytest.approx(3.0)    # nor the borders along k and j
    assert np.all(d[~brain] == 0)


def test_edge_prob_puts_cmb_centres_next_to_the_brain_edge():
    rng = np.random.default_rng(5)
    x = np.zeros((16, 48, 48), np.float32)
    y = np.zeros(x.shape, np.uint8)
    brain = np.zeros(x.shape, bool)
    brain[:, :, :30] = True                    # brain edge at i = 30 (1 mm voxels in-plane)
    kw = dict(n_cmbs=(1, 1), zero_level=(-2.0, -2.0), additive_prob=0.0, radius_mm=(1.0, 1.0),
              contrast=(0.9, 0.9), edge_mm=5.0)
    peaks_i = {0.0: [], 1.0: []}
    for p in peaks_i:
        for _ in range(30):
            x2, _, n = insert_random_cmbs(x, y, brain, rng, edge_prob=p, **kw)
            assert n == 1
            peaks_i[p].append(np.unravel_index(int(np.argmin(x2)), x2.shape)[2])
    # every edge CMB's darkest voxel lies within 5 mm (+ a voxel of sub-voxel jitter) of the edge
    assert min(peaks_i[1.0]) >= 30 - 6 and max(peaks_i[1.0]) <= 29
    # uniform draws (margin 4 voxels from the patch sides) mostly lie deeper
    assert np.mean(np.array(peaks_i[0.0]) < 24) > 0.5
