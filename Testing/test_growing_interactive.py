"""Mask engine v2: the interactive API (Grower / GrownCMB), leak cases, held-out Dice.

Truth in the leak cases is the definition of CMBLib.synthesis: the voxels with at least
half the CMB's peak attenuation (insert_cmbs' mask).
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file
from phantoms import PhantomCMB, dice, make_phantom

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.growing import Grower, GrownCMB, GrowSettings, grow_from_scribbles
from CMBLib.synthesis.cmb_insertion import CMBSpec, insert_cmbs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _study(seed=3):
    cmbs = [PhantomCMB((10.0, 10.0, 8.0), 2.5, 0.6), PhantomCMB((26.0, 24.0, 12.0), 3.0, 0.5),
            PhantomCMB((12.0, 28.0, 14.0), 2.0, 0.7)]
    return make_phantom(cmbs, (40, 36, 12), (0.9, 0.9, 2.0), noise=0.03, seed=seed)


def _seeds(scr, lab):
    return np.argwhere(scr.array == lab)


# ---- interactive API ------------------------------------------------------------------------
def test_auto_mask_equals_batch_result():
    vol, _, scr = _study()
    batch = grow_from_scribbles(vol, scr).labels.array
    grower = Grower(vol)
    for lab in (1, 2, 3):
        cmb = grower.grow(lab, _seeds(scr, lab))
        assert isinstance(cmb, GrownCMB) and cmb.label == lab
        full = np.zeros(vol.array.shape, bool)
        full[cmb.box] = cmb.mask()
        np.testing.assert_array_equal(full, batch == lab)
    lm = grower.label_map()
    assert lm.dtype == np.uint16
    np.testing.assert_array_equal(lm, batch)


def test_mask_is_monotone_in_tolerance_and_curve_matches():
    vol, _, scr = _study()
    cmb = Grower(vol, GrowSettings(closing_iterations=0, fill_holes=False)).grow(2, _seeds(scr, 2))
    tols, sizes = cmb.curve()
    assert np.all(np.diff(tols) > 0) and np.all(np.diff(sizes) > 0)
    lo, hi = cmb.tolerance_range()
    assert lo == 0 and hi > cmb.tolerance > 0
    prev = None
    for t in np.linspace(lo, hi, 25):
        m = cmb.mask(float(t))
        assert m.shape == tuple(s.stop - s.start for s in cmb.box)
        if prev is not None:
            assert np.all(m[prev]), "a larger tolerance never loses a voxel"
        prev = m
    # without refinement the mask size at a curve step is the curve's size (below the cap)
    for t, n in zip(tols[:10], sizes[:10]):
        assert cmb.mask(float(t)).sum() == n


def test_regrowing_one_cmb_leaves_the_others_unchanged():
    vol, _, scr = _study()
    grower = Grower(vol)
    for lab in (1, 2, 3):
        grower.grow(lab, _seeds(scr, lab))
    before = grower.label_map()
    grower.grow(2, _seeds(scr, 2)[:1])           # a shorter scribble for CMB 2
    grower[3].tolerance = grower[3].tolerance * 0.5  # the slider moved for CMB 3
    after = grower.label_map()
    np.testing.assert_array_equal(after == 1, before == 1)
    assert (after == 3).sum() < (before == 3).sum()
    grower.remove(2)
    assert 2 not in np.unique(grower.label_map())
    np.testing.assert_array_equal(grower.label_map() == 1, before == 1)


def test_grower_refuses_bad_input_in_one_line():
    vol, _, scr = _study()
    a = vol.array.copy()
    a[0, 0, 0] = np.nan
    with pytest.raises(CMBError, match="NaN"):
        Grower(vol.with_array(a))
    grower = Grower(vol)
    with pytest.raises(CMBError, match="outside the image"):
        grower.grow(1, np.array([[0, 0, 99]]))
    with pytest.raises(CMBError, match="has no voxels"):
        grower.grow(1, np.zeros((0, 3), int))


def test_mask_at_a_new_tolerance_reuses_the_join_map(monkeypatch):
    """The slider re-thresholds the kept join map: no path search runs again (the 1 ms
    target itself is measured by benchmarks/bench_grow.py, not here)."""
    import CMBLib.growing.interactive as interactive

    vol, _, scr = _study()
    cmb = Grower(vol).grow(2, _seeds(scr, 2))
    sizes = []

    def no_search(*args, **kwargs):
        raise AssertionError("join map recomputed for a new tolerance")

    monkeypatch.setattr(interactive, "join_tolerances", no_search)
    monkeypatch.setattr(interactive, "minimax_vertex", no_search)
    for t in np.linspace(*cmb.tolerance_range(), 40):
        sizes.append(int(cmb.mask(float(t)).sum()))
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0] >= 0


# ---- leak cases (truth = half of the peak dip, as CMBLib.synthesis defines it) ----------------
def _insert(background: Volume, centres_ras, radii, contrast=0.6, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    specs = [CMBSpec(np.asarray(c, float), r, contrast, halo_weight=0.2) for c, r in zip(centres_ras, radii)]
    ins = insert_cmbs(background, specs=specs)
    img = ins.image.array + rng.normal(0, noise, ins.image.array.shape).astype(np.float32)
    truth = ins.mask.array
    scr = np.zeros(truth.shape, np.uint8)
    for lab in range(1, len(specs) + 1):
        k, j, i = np.round(background.ras_to_voxel(centres_ras[lab - 1])[::-1]).astype(int)
        scr[k, j, i] = lab
    return background.with_array(img), truth, background.with_array(scr)


def _background(shape_kji, spacing):
    return Volume(np.ones(shape_kji, np.float32), spacing)


def test_cmb_one_voxel_from_a_vein_stays_out_of_the_vein():
    sp = (0.86, 0.86, 4.0)
    bg = _background((8, 40, 40), sp)
    a = bg.array
    # a vein along j, 2 voxels wide, darker than the CMB's half-dip level, at i = 26-27
    a[:, :, 26:28] = 0.45
    centre = bg.voxel_to_ras([20, 20, 4])   # CMB radius 2 mm: its half-dip edge ~ i = 22-23
    img, truth, scr = _insert(bg.with_array(a), [centre], [2.0])
    assert not truth[:, :, 24:].any(), "the test needs a gap between CMB and vein"
    got = grow_from_scribbles(img, scr).labels.array == 1
    assert not got[:, :, 26:].any(), "leaked into the vein"
    assert dice(got, truth == 1) >= 0.75


def test_cmb_touching_a_sulcus_on_4mm_slices():
    sp = (0.86, 0.86, 4.0)
    bg = _background((8, 40, 40), sp)
    a = bg.array
    a[:, :, 24:] = 0.6   # dark cortex / sulcus beyond i = 24, touching the CMB's edge
    centre = bg.voxel_to_ras([20.5, 20, 4])
    img, truth, scr = _insert(bg.with_array(a), [centre], [2.2], contrast=0.7)
    got = grow_from_scribbles(img, scr).labels.array == 1
    assert got.sum() <= 1.5 * (truth == 1).sum(), "ran along the sulcus"
    assert dice(got, truth == 1) >= 0.7


def test_two_cmbs_3mm_apart_stay_apart():
    sp = (0.86, 0.86, 4.0)
    bg = _background((8, 40, 40), sp)
    c1, c2 = bg.voxel_to_ras([18.0, 20, 4]), bg.voxel_to_ras([18.0 + 3.0 / 0.86, 20, 4])
    img, truth, scr = _insert(bg, [c1, c2], [1.2, 1.2], contrast=0.7)
    out = grow_from_scribbles(img, scr).labels.array
    for lab in (1, 2):
        assert dice(out == lab, truth == lab) >= 0.7, lab
        assert np.all(out[scr.array == lab] == lab)


# ---- held-out Dice on real backgrounds ---------------------------------------------------------
def test_held_out_dice_on_a_real_brain():
    """Defaults on CMBs inserted into the QSM brain's pseudo-T2* on a 0.86 x 0.86 x 4 mm grid,
    seed 7 (tuning used seeds 1000; benchmarks/eval_grow.py --set heldout is the full set)."""
    shared_file("real/qsm2016/chi_cosmos.nii.gz")
    eval_grow = pytest.importorskip("eval_grow")
    cases = eval_grow.make_cases("qsm_t2s", 7, eval_grow.GRIDS.index((0.86, 0.86, 4.0)), 1)
    rows, _ = eval_grow.score(cases)
    s = eval_grow.summary(rows)
    assert s["n"] >= 5
    # measured 0.783 mean, 0.578 min, volume ratio 0.85 (the thesis's seed_average: 0.672, 0.381, 1.77)
    assert s["mean"] >= 0.75 and s["below_0.5"] == 0, s
    assert 0.75 <= s["vol_ratio_median"] <= 1.25, s


# ---- background slope (half_dip, background_slope=True) -----------------------------------------
def test_shell_slope_recovers_a_planar_background_despite_a_vein():
    from CMBLib.growing.interactive import _shell_slope

    sp = np.array([4.0, 0.86, 0.86])
    kk, jj, ii = np.indices((5, 30, 30))
    v = 1.0 + 0.01 * kk * sp[0] - 0.03 * jj * sp[1] + 0.02 * ii * sp[2]
    v[:, :, 24:26] = 0.2                       # a vein crossing the shell: outliers
    centre = (2.0, 15.0, 15.0)
    d = np.sqrt(((kk - 2) * sp[0]) ** 2 + ((jj - 15) * sp[1]) ** 2 + ((ii - 15) * sp[2]) ** 2)
    shell = (d > 2) & (d <= 10)
    full = tuple(slice(0, n) for n in v.shape)
    np.testing.assert_allclose(_shell_slope(v, full, shell, centre, sp), [0.01, -0.03, 0.02], atol=1e-9)


def test_shell_slope_on_one_slice_has_no_through_plane_slope():
    """5 mm slices: the shell can lie on one slice (not the centre's); no slope can be
    measured through plane there, and none may be invented."""
    from CMBLib.growing.interactive import _shell_slope

    sp = np.array([5.0, 0.5, 0.5])
    kk, jj, ii = np.indices((3, 30, 30))
    v = 2.0 + 0.05 * jj * sp[1] + 0.0 * kk
    shell = np.zeros(v.shape, bool)
    shell[2, 5:25, 5:25] = True
    shell[2, 10:20, 10:20] = False
    full = tuple(slice(0, n) for n in v.shape)
    np.testing.assert_allclose(_shell_slope(v, full, shell, (1.0, 15.0, 15.0), sp), [0.0, 0.05, 0.0], atol=1e-9)


def test_cmb_on_a_background_ramp_is_not_pulled_to_the_dark_side():
    """Truth is half the CMB's own dip (a shape, symmetric here); on a steep ramp (grey to white
    matter, a bias field) a flat background level takes more of the dark side.  With the
    fitted slope the mask's centre is nearer the truth's (measured: 0.09-0.17 voxel off
    instead of 0.29-0.5; the Dice of this smooth phantom is not the point, it is within one voxel)."""
    sp = (0.86, 0.86, 4.0)
    bg = _background((8, 40, 40), sp)
    i = np.arange(40, dtype=np.float32)
    a = bg.array * (0.7 + 1.0 * i / 39)[None, None, :]          # 0.7 -> 1.7 across 34 mm
    centre = bg.voxel_to_ras([20, 20, 4])
    offsets = {True: [], False: []}
    for seed in range(4):
        img, truth, scr = _insert(bg.with_array(a), [centre], [2.5], contrast=0.6, noise=0.01, seed=seed)
        for slope in (True, False):
            got = grow_from_scribbles(img, scr, background_slope=slope).labels.array == 1
            assert dice(got, truth == 1) >= 0.7
            offsets[slope].append(abs(np.argwhere(got)[:, 2].mean() - np.argwhere(truth == 1)[:, 2].mean()))
    assert max(offsets[True]) < min(offsets[False]), offsets


def test_masked_out_background_is_blocked_but_a_core_clipped_to_that_value_is_not(monkeypatch):
    """Skull-stripped image (0 outside the brain): a CMB whose darkest voxels are clipped to 0
    is grown through them; a CMB at the brain's edge never grows into the outside; the
    whole-image labelling runs only for the box whose background reaches its faces."""
    vol, truth, scr = make_phantom([PhantomCMB((14.0, 14.0, 8.0), 2.0, 0.9), PhantomCMB((5.0, 14.0, 8.0), 1.5, 0.6)],
                                   (32, 28, 8), (0.9, 0.9, 2.0), noise=0.02, seed=5)
    a = np.asarray(vol.array, np.float32).copy()
    a[:, :, :4] = 0.0                            # outside the brain mask, > 5 % of the image
    core = np.asarray(truth.array) == 1
    deepest = a <= np.percentile(a[core], 20)
    a[core & deepest] = 0.0                      # the first CMB's core clipped to the background value
    image = vol.with_array(a)
    calls = []
    real = Grower._background_mask
    monkeypatch.setattr(Grower, "_background_mask", lambda self: calls.append(1) or real(self))
    grower = Grower(image)
    first = grower.grow(1, np.argwhere(np.asarray(scr.array) == 1))
    assert calls == []                           # its box holds only the enclosed, clipped core
    assert first.mask()[core[first.box] & deepest[first.box]].all()
    assert dice(grower.label_map() == 1, core) > 0.6
    second = grower.grow(2, np.argwhere(np.asarray(scr.array) == 2))
    assert calls                                 # the edge CMB's box reaches the outside
    assert not (a[second.box] == 0)[second.mask()].any()
