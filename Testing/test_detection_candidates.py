"""Candidates: components, size limits in mm, brain mask, centres and shape measures."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from CMBLib.detection.candidates import find_candidates, shape_measures
from CMBLib.geometry import Volume

CLINICAL = (0.86, 0.86, 4.0)


def _prob(shape_kji, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    return Volume(np.zeros(shape_kji, np.float32), spacing, origin)


def test_minimum_two_mm_on_a_thick_slice_grid_is_two_voxels():
    # one voxel = 0.86*0.86*4 = 2.958 mm^3 -> 1.78 mm; two voxels -> 2.25 mm
    p = _prob((6, 20, 20), CLINICAL)
    p.array[1, 3, 3] = 0.9                 # single voxel: dropped
    p.array[3, 10, 10:12] = 0.8            # two voxels: kept
    labels, recs, dropped = find_candidates(p, 0.5, min_diameter_mm=2.0)
    assert dropped["too_small"] == 1 and len(recs) == 1
    r = recs[0]
    assert r["voxel_count"] == 2
    assert r["volume_mm3"] == pytest.approx(2 * 0.86 * 0.86 * 4.0, abs=1e-3)
    assert r["diameter_mm"] == pytest.approx((6 * 2 * 2.9584 / np.pi) ** (1 / 3), abs=1e-2)
    assert r["centre_ijk"] == [10.5, 10.0, 3.0]
    assert r["centre_ras"] == pytest.approx([10.5 * 0.86, 10 * 0.86, 12.0], abs=1e-3)
    assert r["size_class"] == "<5mm" and r["max_probability"] == pytest.approx(0.8)
    assert labels[3, 10, 10] == 1 and labels.sum() == 2 and labels.dtype == np.int16


def test_maximum_and_brain_mask_and_ordering():
    p = _prob((30, 30, 30), origin=(5.0, -3.0, 2.0))
    p.array[2:14, 2:14, 2:14] = 0.9        # 12 mm cube: 1728 mm^3 -> 14.9 mm > 10: dropped
    p.array[20:23, 20:23, 20:23] = 0.7     # 27 voxels -> 3.72 mm: kept
    p.array[20:24, 4:8, 20:24] = 0.95      # 64 voxels -> 4.96 mm: kept, outside the brain mask?
    brain = np.ones(p.array.shape, bool)
    labels, recs, dropped = find_candidates(p, 0.5, brain_mask=brain)
    assert dropped == {"too_small": 0, "too_large": 1, "outside_brain": 0}
    assert [r["label"] for r in recs] == [1, 2]
    assert recs[0]["max_probability"] == pytest.approx(0.95)   # sorted by max probability
    assert recs[0]["centre_ijk"] == [21.5, 5.5, 21.5]
    assert recs[0]["centre_ras"] == pytest.approx([26.5, 2.5, 23.5])
    assert recs[1]["diameter_mm"] == pytest.approx((6 * 27 / np.pi) ** (1 / 3), abs=1e-3)
    brain[:, :10, :] = False               # j < 10 is outside
    labels, recs, dropped = find_candidates(p, 0.5, brain_mask=brain)
    assert dropped["outside_brain"] == 1 and len(recs) == 1 and recs[0]["centre_ijk"] == [21.0, 21.0, 21.0]
    assert set(np.unique(labels)) == {0, 1}


def test_ball_is_round_and_rod_is_vessel_like():
    grid = _prob((1, 1, 1))
    k, j, i = np.mgrid[-6:7, -6:7, -6:7]
    ball = np.argwhere(i ** 2 + j ** 2 + k ** 2 <= 25)[:, ::-1]
    elong, spher = shape_measures(ball, grid)
    assert elong == pytest.approx(1.0, abs=1e-6) and spher == pytest.approx(1.0, abs=1e-6)
    rod = np.array([[x, 0, 0] for x in range(9)])  # 9 x 1 x 1 mm: l1 = (81-1)/12 + 1/12, l3 = 1/12
    elong, spher = shape_measures(rod, grid)
    assert elong == pytest.approx(9.0, abs=1e-6) and spher < 0.7
    p = _prob((5, 5, 20))
    p.array[2, 2, 2:11] = 0.9
    _, recs, _ = find_candidates(p, 0.5, min_diameter_mm=0)
    assert recs[0]["vessel_like"] and recs[0]["elongation"] == pytest.approx(9.0, abs=1e-3)


@settings(max_examples=25, deadline=None)
@given(shift=st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 3)),
       size=st.tuples(st.integers(2, 4), st.integers(2, 4), st.integers(1, 2)))
def test_centre_and_volume_follow_the_blob(shift, size):
    spacing = (0.5, 0.7, 3.0)
    p = _prob((8, 16, 16), spacing, origin=(1.0, 2.0, 3.0))
    di, dj, dk = shift
    si, sj, sk = size
    p.array[dk:dk + sk, dj:dj + sj, di:di + si] = 0.9
    _, recs, _ = find_candidates(p, 0.5, min_diameter_mm=0.0)
    assert len(recs) == 1
    r = recs[0]
    centre = [di + (si - 1) / 2, dj + (sj - 1) / 2, dk + (sk - 1) / 2]
    assert r["centre_ijk"] == pytest.approx(centre, abs=1e-3)
    assert r["centre_ras"] == pytest.approx(p.voxel_to_ras(centre), abs=1e-3)
    assert r["volume_mm3"] == pytest.approx(si * sj * sk * 0.5 * 0.7 * 3.0, abs=1e-3)
