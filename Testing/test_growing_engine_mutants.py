"""Hand-computed cases for the region-growing engine (CMBLib/growing/engine.py) written against the
mutants that survived a complete run of `scripts/mutation_test.py --module growing` (docs/developer.md,
"Mutation testing"): where a point seeds its CMB (`_snap_seed`: the radius in mm per axis, the ball,
dark or bright, the local median that decides it), the checks of `grow_from_points`, and the JSON of
a result."""
import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.growing.engine import (
    GrowResult,
    GrowSettings,
    _contrast_to_noise,
    _seed_lists,
    _snap_seed,
    grow_from_points,
    grow_from_scribbles,
    intensity_scale,
)
from CMBLib.progress import Cancelled, CancelToken


def _snap(array, kji, spacing_ijk=(1.0, 1.0, 1.0), radius=1.0):
    return tuple(int(v) for v in _snap_seed(np.asarray(array), np.array(kji), spacing_ijk, radius))


def test_the_darkest_voxel_within_the_radius_in_mm_per_axis():
    # spacing (i, j, k) = (0.5, 1, 2) mm, radius 1.5 mm: 3 voxels along i, 1 along j, none along k
    a = np.full((9, 9, 9), 100.0)
    a[4, 4, 4] = 50.0                                   # the point: dark against its surroundings
    a[4, 4, 7] = 10.0                                   # i + 3: exactly 1.5 mm, inside (the darkest there)
    a[4, 5, 4] = 20.0                                   # j + 1: 1 mm
    a[4, 4, 8] = 0.0                                    # i + 4: 2 mm, outside
    a[5, 4, 4] = 5.0                                    # k + 1: 2 mm, outside
    a[4, 5, 6] = 1.0                                    # j + 1, i + 2: sqrt(2) mm... inside: the darkest
    assert _snap(a, (4, 4, 4), (0.5, 1.0, 2.0), 1.5) == (4, 5, 6)
    a[4, 5, 6] = 100.0
    assert _snap(a, (4, 4, 4), (0.5, 1.0, 2.0), 1.5) == (4, 4, 7)
    a[4, 4, 7] = 100.0
    assert _snap(a, (4, 4, 4), (0.5, 1.0, 2.0), 1.5) == (4, 5, 4)


def test_the_ball_is_round():
    # 1 mm voxels, radius 1.5 mm: the face and edge neighbours (1, 1.41 mm) are in, the corners (1.73 mm) out
    a = np.full((7, 7, 7), 100.0)
    a[3, 3, 3] = 50.0
    a[4, 4, 4] = 0.0                                    # a corner
    a[4, 4, 3] = 30.0                                   # an edge neighbour
    assert _snap(a, (3, 3, 3), radius=1.5) == (4, 4, 3)
    a[4, 4, 3] = 100.0
    assert _snap(a, (3, 3, 3), radius=1.5) == (3, 3, 3)
    # a radius below one voxel, or none, keeps the point
    a[3, 3, 4] = 0.0
    assert _snap(a, (3, 3, 3), radius=0.9) == (3, 3, 3)
    assert _snap(a, (3, 3, 3), radius=0.0) == (3, 3, 3)
    assert _snap(a, (3, 3, 3), radius=1.0) == (3, 3, 4)


def test_a_point_at_the_edge_of_the_image():
    a = np.full((5, 5, 5), 100.0)
    a[0, 0, 0] = 10.0
    assert _snap(a, (0, 0, 0), radius=1.0) == (0, 0, 0)
    a[0, 0, 0] = 50.0
    a[0, 1, 0] = 10.0
    assert _snap(a, (0, 0, 0), radius=1.0) == (0, 1, 0)


def test_a_bright_point_takes_the_brightest_voxel_even_in_unsigned_images():
    a = np.full((7, 7, 7), 100, np.uint16)
    a[3, 3, 3] = 400                                    # brighter than the median around it: bright
    a[3, 4, 3] = 900
    a[3, 2, 3] = 0
    assert _snap(a, (3, 3, 3)) == (3, 4, 3)


@pytest.mark.parametrize("axis, sign", [(0, 1), (0, -1), (1, 1), (1, -1)])
def test_the_median_of_the_box_three_radii_wide_decides_dark_or_bright(axis, sign):
    """An intensity ramp along one axis: the point's value is the median of the box 3 voxels either side
    of it (dark, `<=`: the lower neighbour along the ramp), and any other box tips the decision."""
    kji = (8, 6, 10)
    grid = np.indices((16, 16, 20))[axis].astype(float)
    a = 200.0 + sign * 10.0 * grid
    low = list(kji)
    low[axis] -= sign                                   # the darker neighbour along the ramp
    assert _snap(a, kji) == tuple(low)


def test_grow_from_points_refuses_what_it_cannot_seed():
    vol = Volume(np.random.default_rng(0).normal(100, 5, (8, 8, 8)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(CMBError, match="no points given"):
        grow_from_points(vol, [])
    with pytest.raises(CMBError, match="NaN or infinite"):
        grow_from_points(vol, [[None, 2.0, 2.0]])                # a missing coordinate
    flat = Volume(np.full((8, 8, 8), 5.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(CMBError, match="^image: image is constant"):
        grow_from_points(flat, [[2.0, 2.0, 2.0]])


def test_the_json_of_a_result():
    res = GrowResult(Volume(np.zeros((2, 2, 2), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), [{"label": 1}],
                     {"mode": "half_dip"})
    assert res.to_json() == {"format": "cmb-grow", "format_version": "1.0", "settings": {"mode": "half_dip"},
                             "cmbs": [{"label": 1}]}


def test_intensity_scale_of_a_small_image_uses_every_voxel():
    a = np.arange(1000.0).reshape(10, 10, 10)
    # 0.5th and 99.5th percentiles of 0..999: 4.995 and 994.005
    assert intensity_scale(a) == pytest.approx(989.01)
    # without the background value 0: of 1..999, 5.99 and 994.01
    assert intensity_scale(a, background_value=0.0) == pytest.approx(988.02)
    assert intensity_scale(np.zeros((4, 4, 4)), background_value=0.0) == 1.0          # nothing but background
    assert intensity_scale(np.full((4, 4, 4), 7.0)) == 1.0                            # no range at all


def test_intensity_scale_of_a_large_image_samples_every_third_voxel():
    # 2e6 voxels: step ceil((2e6 / 2e5) ** (1/3)) = ceil(2.15) = 3, so slices k = 0, 3, 6... are read; each
    # slice holds one value: 0 at k = 0, 300 at k = 3, 100 elsewhere except at k = 1, 2, 4, 5 (read with
    # steps 1, 2, 4, 5); each sampled slice is 1.5 % of the sample, so the percentiles are 0 and 300
    values = np.full(200, 100.0, np.float32)
    values[[0, 1, 2, 3, 4, 5]] = [0.0, 1000.0, 500.0, 300.0, 400.0, 250.0]
    a = np.broadcast_to(values[:, None, None], (200, 100, 100))
    assert intensity_scale(a) == 300.0


def test_seed_lists_keep_the_raster_order_within_each_label():
    # 40 voxels of two labels, interleaved (more than numpy's small-array sorts, which are stable anyway)
    s = np.zeros((2, 4, 5), np.int16)
    s.ravel()[:] = np.tile([1, 2], 20)
    seeds = _seed_lists(s)
    assert sorted(seeds) == [1, 2]
    for lab, start in ((1, 0), (2, 1)):
        flat = np.ravel_multi_index(tuple(seeds[lab].T), s.shape)
        assert flat.tolist() == list(range(start, 40, 2))
    # a label map stored as floats: integer labels, the same seeds
    f = _seed_lists(s.astype(np.float32))
    assert sorted(f) == [1, 2] and all(isinstance(k, int) for k in f)
    assert all(np.array_equal(f[k], seeds[k]) for k in (1, 2))
    assert _seed_lists(np.zeros((2, 2, 2), np.float32)) == {}


def test_grow_from_scribbles_names_the_input_it_refuses():
    flat = Volume(np.full((8, 8, 8), 5.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    scribbles = flat.with_array(np.zeros((8, 8, 8), np.int16))
    with pytest.raises(CMBError, match="^image: image is constant"):
        grow_from_scribbles(flat, scribbles)
    image = flat.with_array(np.random.default_rng(1).normal(100, 5, (8, 8, 8)))
    with pytest.raises(CMBError, match="^scribbles: label map has negative labels"):
        grow_from_scribbles(image, image.with_array(np.full((8, 8, 8), -1, np.int16)))


SIGMA_OF_DIFFERENCES = 0.6745 * np.sqrt(2.0)      # MAD of a difference of two N(0, s) voxels, in s


def test_contrast_to_noise_hand_computed():
    # values 10 at even i, 0 at odd i: the median of all is 5, neighbour differences are all 10
    a = np.zeros((2, 4, 6))
    a[..., ::2] = 10.0
    contrast, noise = _contrast_to_noise(a, 1.0)
    assert contrast == 4.0 and noise == pytest.approx(10.0 / SIGMA_OF_DIFFERENCES)
    assert noise == pytest.approx(10.48342, abs=1e-5)
    # one voxel along i: no neighbour difference, no noise
    contrast, noise = _contrast_to_noise(np.arange(9.0).reshape(3, 3, 1), 1.0)
    assert (contrast, noise) == (3.0, 0.0)


def test_contrast_to_noise_subsamples_large_boxes():
    # 16384 voxels: every second one is read (flat order), i.e. the even i: all 10, and their differences
    a = np.zeros((4, 64, 64))
    a[..., ::2] = 10.0
    contrast, noise = _contrast_to_noise(a, 1.0)
    assert contrast == 9.0 and noise == pytest.approx(10.0 / SIGMA_OF_DIFFERENCES)
    small = np.zeros((2, 64, 64))                     # 8192 voxels: all read, median 5
    small[..., ::2] = 10.0
    assert _contrast_to_noise(small, 1.0)[0] == 4.0


def _plus(spacing=(0.55, 0.55, 1.1)):
    """7x7x7 of 100 with a dark path: 10 at the centre, 20, 30, 40 along +i, a side branch of 24 along +j."""
    a = np.full((7, 7, 7), 100.0)
    a[3, 3, 3:7] = [10.0, 20.0, 30.0, 40.0]
    a[3, 4, 3] = 24.0
    vol = Volume(a, spacing=spacing)
    scr = np.zeros(a.shape, dtype=np.int16)
    scr[3, 3, 3] = 5
    return vol, vol.with_array(scr)


def test_metadata_of_a_hand_grown_cmb():
    # seed average 10, tolerance 15 in intensity: the seed, 20 (i + 1) and 24 (j + 1): 3 voxels of
    # 0.55 x 0.55 x 1.1 = 0.33275 mm3
    vol, scr = _plus()
    m = grow_from_scribbles(vol, scr, mode="seed_average", tolerance=15.0, closing_iterations=0, fill_holes=False,
                            relative=False).cmbs[0]
    m.pop("curve")
    volume = 3 * 0.55 * 0.55 * 1.1                                     # 0.99825
    diameter = (6 * volume / np.pi) ** (1 / 3)                         # 1.23993
    assert m == {
        "label": 5, "tolerance": 15.0, "tolerance_units": "intensity", "tolerance_auto": False,
        "runaway_tolerance": None, "voxel_count": 3, "volume_mm3": round(volume, 3), "diameter_mm": round(diameter, 3),
        "size_class": "<5mm", "centre_ras": [round(10 / 3 * 0.55, 3), round(10 / 3 * 0.55, 3), 3.3],
        "centre_ijk": [3.333, 3.333, 3.0], "seed_count": 1, "polarity": "dark", "cap_voxels": m["cap_voxels"],
        "cap_hit": False, "warnings": [], "mode": "seed_average", "connectivity": 6}
    assert (m["volume_mm3"], m["diameter_mm"], m["centre_ras"][0]) == (0.998, 1.24, 1.833)
    auto = grow_from_scribbles(vol, scr, mode="seed_average", closing_iterations=0, fill_holes=False).cmbs[0]
    assert auto["tolerance_units"] == "fraction of intensity range" and auto["tolerance_auto"] is True


def test_progress_messages_and_cancelling():
    vol, scr = _plus((1.0, 1.0, 1.0))
    two = scr.array.copy()
    two[3, 3, 6] = 7
    seen = []
    res = grow_from_scribbles(vol, scr.with_array(two), mode="seed_average", tolerance=15.0, relative=False,
                              progress=lambda f, msg: seen.append((f, msg)))
    assert [c["label"] for c in res.cmbs] == [5, 7]
    assert seen == [(0.0, "growing CMB 5 (1/2)"), (0.5, "growing CMB 7 (2/2)"),
                    (1.0, "resolving contacts between CMBs"), (1.0, "grew 2 CMB mask(s)")]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        grow_from_scribbles(vol, scr, cancel=token)
    with pytest.raises(Cancelled):
        grow_from_points(vol, [[3.0, 3.0, 3.0]], cancel=token)


def test_settings_check_reads_tolerances_and_refuses_impossible_ones():
    assert GrowSettings(tolerance="0.3").check().tolerance == 0.3                 # a number given as text
    assert GrowSettings(tolerance="auto").check().tolerance == "auto"
    for bad in ("abc", float("inf"), float("nan"), -0.1):
        with pytest.raises(CMBError, match="tolerance"):
            GrowSettings(tolerance=bad).check()
    assert GrowSettings(max_diameter_mm=0.5).check().max_diameter_mm == 0.5       # small, but positive
    for bad in (0.0, -1.0):
        with pytest.raises(CMBError, match="must be positive"):
            GrowSettings(max_diameter_mm=bad).check()


def test_points_at_the_first_and_last_voxel_and_just_outside():
    vol, _ = _plus((1.0, 1.0, 1.0))
    a = vol.array.copy()
    a[0, 0, 0] = a[6, 6, 6] = 5.0
    vol = vol.with_array(a)
    seen = []
    res = grow_from_points(vol, [[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]], mode="seed_average", tolerance=15.0,
                           relative=False, snap_points_mm=0.0, progress=lambda f, msg: seen.append(msg))
    assert [c["centre_ijk"] for c in res.cmbs] == [[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]]
    assert seen[0] == "growing CMB 1 (1/2)" and seen[-1] == "grew 2 CMB mask(s)"
    assert res.settings["cap_voxels"] == res.cmbs[0]["cap_voxels"] > 0 and res.settings["spacing_mm"] == [1.0] * 3
    for outside in ([7.0, 3.0, 3.0], [-1.0, 3.0, 3.0], [3.0, 3.0, 7.0]):
        with pytest.raises(CMBError, match="lies outside the image"):
            grow_from_points(vol, [outside])


def test_metadata_rounding_and_polarity():
    # 0.5 x 0.5 x 1.1 mm: 3 voxels of 0.275 mm3, an equivalent diameter of 1.16353 mm, printed 1.164
    vol, scr = _plus((0.5, 0.5, 1.1))
    m = grow_from_scribbles(vol, scr, mode="seed_average", tolerance=15.0, relative=False).cmbs[0]
    assert m["voxel_count"] == 3 and m["diameter_mm"] == round((6 * 0.825 / np.pi) ** (1 / 3), 3) == 1.164
    bright = grow_from_scribbles(vol.with_array(200.0 - vol.array), scr, mode="seed_average", tolerance=15.0,
                                 relative=False).cmbs[0]
    assert bright["polarity"] == "bright" and bright["voxel_count"] == 3
    # relative tolerances and the measured dip: 6 decimals
    auto = grow_from_scribbles(vol, scr).cmbs[0]
    values = list(auto["dip"].values()) + [auto["runaway_tolerance"] or 0.0]
    assert all(round(v, 6) == v for v in values)
    assert any(round(v, 5) != v for v in values)


def test_intensity_scale_below_one_is_kept():
    assert intensity_scale(np.arange(1000.0).reshape(10, 10, 10) / 1000.0) == pytest.approx(0.98901)
