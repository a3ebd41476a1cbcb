"""Skull-on heads around a brain (CMBLib.synthesis.head_shells): shell order, thickness, seeds, slabs."""
import numpy as np
import pytest

from CMBLib.synthesis.demo_study import make_demo_phantom
from CMBLib.synthesis.head_shells import (
    LABELS,
    SHELLS,
    THICKNESS_MM,
    add_head,
    crop_slices,
    padded_grid,
    random_slab,
)

RANK = {LABELS["brain"]: 0, **{LABELS[s]: n + 1 for n, s in enumerate(SHELLS)}, LABELS["background"]: len(SHELLS) + 1}


def stripped_demo(spacing=(1.5, 1.5, 4.0), shape_kji=(16, 64, 64)):
    """The demo phantom's brain alone (0 outside), and its mask (a small, coarse one by default)."""
    img, brain, _ = make_demo_phantom(0, shape_kji=shape_kji, spacing=spacing)
    return img.with_array(np.where(brain, img.array, 0.0).astype(np.float32)), brain


@pytest.fixture(scope="module")
def plain_head():
    """Shells only (no air, eyes or neck), on a 0.9 x 0.9 x 3 mm grid."""
    img, brain = stripped_demo((0.9, 0.9, 3.0), (20, 110, 110))
    return img, brain, add_head(img, brain, 3, pad_mm=32, air=False, eyes=False, neck=False)


def test_shells_run_from_the_brain_outwards(plain_head):
    _, _, h = plain_head
    lab = h.labels.array
    k = lab.shape[0] // 2
    c = np.argwhere(lab[k] == LABELS["brain"]).mean(axis=0)
    checked = 0
    for ang in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        steps = np.arange(0, 200, 0.25)
        jj = np.round(c[0] + steps * np.sin(ang)).astype(int)
        ii = np.round(c[1] + steps * np.cos(ang)).astype(int)
        ok = (jj >= 0) & (jj < lab.shape[1]) & (ii >= 0) & (ii < lab.shape[2])
        ray = lab[k, jj[ok], ii[ok]]
        last_brain = np.flatnonzero(ray == LABELS["brain"]).max()
        ranks = [RANK[v] for v in ray[last_brain:]]
        assert all(b >= a for a, b in zip(ranks, ranks[1:])), f"shells out of order along the ray at {ang:.2f} rad"
        assert set(ranks) == set(range(len(SHELLS) + 2)), "a shell is missing along the ray"
        checked += 1
    assert checked == 24


def test_shell_thickness_stays_in_its_range(plain_head):
    from scipy import ndimage as ndi

    _, _, h = plain_head
    k = h.labels.array.shape[0] // 2
    lab = h.labels.array[k - 3:k + 4]         # around the equator (enough: distances of <= 25 mm)
    sp = np.asarray(h.labels.spacing)[::-1]
    rank = np.full(lab.shape, len(SHELLS) + 1)
    for v, r in RANK.items():
        rank[lab == v] = r
    tol = float(max(sp)) + 0.5     # one voxel of partial volume either side
    for n, s in enumerate(SHELLS):
        lo, hi = THICKNESS_MM[s]
        drawn = h.info["thickness"][s]
        assert lo <= drawn["min_mm"] <= drawn["max_mm"] <= hi
        if s == "csf":            # also fills the sulci: its extent is not its thickness
            continue
        d = ndi.distance_transform_edt(rank > n, sampling=sp)       # distance to the shells inside it
        shell = rank == n + 1
        outer = shell & ndi.binary_dilation(rank > n + 1)           # its outer face
        assert d[shell].max() <= hi + tol, s
        assert np.median(d[outer]) >= lo - tol, s
        assert np.median(d[outer]) <= hi + tol, s


def test_the_same_seed_gives_the_same_head_and_another_seed_another():
    img, brain = stripped_demo()
    a = add_head(img, brain, 11, pad_mm=25)
    b = add_head(img, brain, 11, pad_mm=25)
    c = add_head(img, brain, 12, pad_mm=25)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.info == b.info
    assert not np.array_equal(a.image.array, c.image.array)
    # the brain's voxels are the input's (no blooming without air near them), at the padded place
    (k0, _), (j0, _), (i0, _) = a.pad
    inner = a.image.array[k0:k0 + img.array.shape[0], j0:j0 + img.array.shape[1], i0:i0 + img.array.shape[2]]
    assert a.brain_mask.sum() == brain.sum()
    np.testing.assert_allclose(np.median(inner[brain]), np.median(img.array[brain]), rtol=0.02)
    # dark skull, air and sinuses, bright CSF: mean per label, relative to the brain
    ref = np.median(img.array[brain])
    for name, lo, hi in (("inner_table", 0.0, 0.4), ("csf", 0.9, 2.2), ("background", 0.0, 0.15)):
        sel = a.labels.array == LABELS[name]
        assert lo <= a.image.array[sel].mean() / ref <= hi, name
    assert any(p["kind"] in ("sinus_air", "mastoid_air") for p in a.info["air"] + c.info["air"])


def test_geometry_of_the_padded_grid_and_slabs():
    img, brain = stripped_demo()
    pad = ((2, 3), (4, 5), (6, 7))
    g = padded_grid(img, pad)
    assert g.array.shape == tuple(n + a + b for n, (a, b) in zip(img.array.shape, pad))
    np.testing.assert_allclose(g.voxel_to_ras([6, 4, 2]), img.voxel_to_ras([0, 0, 0]))
    for seed in range(20):
        k0, k1 = random_slab(brain, seed, (7, 20))
        assert 7 <= k1 - k0 <= 20 and brain[k0:k1].any()
    s = crop_slices(img, 5, 12)
    assert s.array.shape[0] == 7
    np.testing.assert_allclose(s.voxel_to_ras([3, 4, 0]), img.voxel_to_ras([3, 4, 5]))
    # partial coverage: a slab keeps its slices (padded in plane only), the input's voxels in place
    fine = img.with_array(brain.astype(np.uint8))
    h = add_head(s, brain[5:12], 5, fine_mask=fine, pad_mm=25, keep_slices=True)
    assert h.image.array.shape[0] == 7 and h.pad[0] == (0, 0)
    np.testing.assert_array_equal(h.brain_mask, h.padded(brain[5:12]))
    np.testing.assert_allclose(h.image.voxel_to_ras([h.pad[2][0], h.pad[1][0], 0]), s.voxel_to_ras([0, 0, 0]))
    ring = np.isin(h.labels.array, [LABELS["inner_table"], LABELS["outer_table"]])
    assert ring.any(axis=(1, 2)).all()                       # a skull around the brain in every slice
    assert not (ring & h.brain_mask).any()
