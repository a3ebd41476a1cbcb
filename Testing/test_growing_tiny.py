"""Tiny CMBs keep their size (issue 28): the half-dip level is corrected for the widening that
the 0.5 mm denoising Gaussian gives a dip near the voxel scale (`unsmoothed_fraction`).

Hand-computed cases on the clinical grid 0.86 x 0.86 x 4 mm: a Gaussian dip of in-plane sigma
s0 confined to one slice, truth = the voxels whose attenuation is at least half the peak's
(the synthesis's definition).  Voxel centres lie 0.86 mm (4 neighbours), 1.216 mm (diagonals)
and 1.72 mm from the centre; attenuation / peak there is exp(-d^2 / 2 s0^2):
  s0 = 0.6 mm: 0.359, 0.129, ...    -> truth is the centre voxel alone (1 voxel)
  s0 = 1.0 mm: 0.691, 0.477, 0.228  -> truth is the plus of 5 voxels
  s0 = 1.3 mm: 0.803, 0.646, 0.417  -> truth is the 3 x 3 square (9 voxels)
Without the correction the two smallest grow to 5 and 9 voxels (5x and 1.8x).
"""
import math

import numpy as np
import pytest

from CMBLib.geometry import Volume
from CMBLib.growing import grow_from_scribbles
from CMBLib.growing.interactive import unsmoothed_fraction

SPACING = (0.86, 0.86, 4.0)   # i, j, k (mm)


def _tiny_case(s0_mm, contrast=0.6, bright=False):
    a = np.ones((7, 21, 21))
    d = (np.arange(21) - 10) * 0.86
    att = contrast * np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * s0_mm ** 2))
    a[3] += att if bright else -att
    truth = np.zeros(a.shape, bool)
    truth[3] = att >= 0.5 * contrast
    scr = np.zeros(a.shape, np.int16)
    scr[3, 10, 10] = 1
    vol = Volume(a, spacing=SPACING)
    return vol, vol.with_array(scr), truth


def _plus():
    out = np.zeros((7, 21, 21), bool)
    out[3, 9:12, 10] = out[3, 10, 9:12] = True
    return out


@pytest.mark.parametrize("s0, expected", [(0.6, 1), (1.0, 5), (1.3, 9)])
def test_tiny_dip_keeps_its_true_voxels(s0, expected):
    vol, scr, truth = _tiny_case(s0)
    assert truth.sum() == expected                          # the hand count of the docstring
    grown = grow_from_scribbles(vol, scr).labels.array == 1
    assert np.array_equal(grown, truth)


def test_plus_shaped_truth_exactly():
    vol, scr, truth = _tiny_case(1.0)
    assert np.array_equal(truth, _plus())
    assert np.array_equal(grow_from_scribbles(vol, scr).labels.array == 1, _plus())


@pytest.mark.parametrize("s0, without", [(0.6, 5), (1.0, 9)])
def test_without_the_correction_tiny_dips_over_grow(s0, without):
    """What the rule fixes: the half level of the smoothed dip lies one voxel ring too far out."""
    vol, scr, truth = _tiny_case(s0)
    grown = grow_from_scribbles(vol, scr, smooth_correction=False).labels.array == 1
    assert grown.sum() == without > truth.sum()


def test_bright_tiny_dip_same_as_dark():
    """QSM: a bright CMB of the same shape gives the same mask."""
    vol, scr, truth = _tiny_case(1.0, bright=True)
    res = grow_from_scribbles(vol, scr)
    assert res.cmbs[0]["polarity"] == "bright"
    assert np.array_equal(res.labels.array == 1, truth)


def test_large_dip_level_unchanged():
    """A dip wider than 3 in-plane voxels at its half level keeps the half level (the
    Gaussian-dip model is for dips near the voxel scale; larger CMBs have a flatter core)."""
    vol, scr, _ = _tiny_case(3.0)
    assert grow_from_scribbles(vol, scr).cmbs[0]["dip"]["fraction"] == 0.5
    vol, scr, _ = _tiny_case(1.0)
    assert grow_from_scribbles(vol, scr).cmbs[0]["dip"]["fraction"] < 0.45


def test_thesis_modes_ignore_the_correction():
    vol, scr, _ = _tiny_case(1.0)
    for mode in ("seed_average", "running_average", "parent_son"):
        a = grow_from_scribbles(vol, scr, mode=mode).labels.array
        b = grow_from_scribbles(vol, scr, mode=mode, smooth_correction=False).labels.array
        assert np.array_equal(a, b)


# ---- the formula ------------------------------------------------------------------------
def test_unsmoothed_fraction_hand_computed():
    # fraction 0.5, sigma 0.5 mm, r1 = 1 mm: s0^2/s1^2 = 1 + 2 * 0.25 * ln 0.5 = 0.65343;
    # level 0.5 ** 0.65343 = 0.63577 of the peak, so 0.36423 of the depth from the minimum
    assert unsmoothed_fraction(0.5, 1.0, 0.5) == pytest.approx(0.36423, abs=1e-5)
    assert unsmoothed_fraction(0.5, 1e3, 0.5) == pytest.approx(0.5, abs=1e-6)   # large: unchanged
    # no wider than the smoothing itself (r1^2 <= 2 sigma^2 ln 2): the minimum alone
    assert unsmoothed_fraction(0.5, math.sqrt(2 * 0.25 * math.log(2)), 0.5) == pytest.approx(0.0, abs=1e-9)
    assert unsmoothed_fraction(0.5, 0.3, 0.5) == 0.0
    assert unsmoothed_fraction(0.5, 1.0, 0.0) == 0.5                                # no smoothing
    assert unsmoothed_fraction(0.5, float("inf"), 0.5) == 0.5


@pytest.mark.parametrize("s0, sigma, fraction", [(0.5, 0.5, 0.5), (1.0, 0.5, 0.5), (0.8, 0.3, 0.4), (2.0, 0.7, 0.6)])
def test_unsmoothed_fraction_recovers_the_unsmoothed_contour(s0, sigma, fraction):
    """Gaussian model, continuous: the level it returns on the smoothed dip lies at the radius
    where the unsmoothed dip has `fraction`."""
    a = 1 - fraction
    s1 = math.hypot(s0, sigma)
    r1 = math.sqrt(-2 * s1 ** 2 * math.log(a))        # the smoothed dip's radius at the level
    r0 = math.sqrt(-2 * s0 ** 2 * math.log(a))        # the unsmoothed dip's
    f = unsmoothed_fraction(fraction, r1, sigma)
    assert math.exp(-r0 ** 2 / (2 * s1 ** 2)) == pytest.approx(1 - f, rel=1e-9)
