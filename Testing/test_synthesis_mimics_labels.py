"""Mimics (labelled negatives) and domain-randomised images from label maps."""
import numpy as np
import pytest

from CMBLib.geometry import Volume
from CMBLib.synthesis.label_synthesis import CLASSES, class_map, random_clinical_spacing, synthesize_case
from CMBLib.synthesis.mimics import MIMIC_TYPES, add_mimics, render_tube


def _ball_labels(spacing=(2.0, 2.0, 2.0), n=48):
    """A small brain-like FreeSurfer label map: WM (2) in GM (3), ventricles (4), pallidum (13/52)."""
    k, j, i = np.meshgrid(*(np.arange(n) - n / 2 + 0.5,) * 3, indexing="ij")
    r = np.sqrt(i ** 2 + j ** 2 + (k * 1.2) ** 2) * spacing[0]
    lab = np.zeros((n, n, n), np.int16)
    lab[r < 40] = 3
    lab[r < 32] = 2
    lab[(np.abs(i * spacing[0]) < 4) & (np.abs(j * spacing[0]) < 12) & (np.abs(k * spacing[0]) < 8)] = 4
    lab[((i * spacing[0] - 14) ** 2 + (j * spacing[0]) ** 2 + (k * spacing[0]) ** 2) < 16] = 13
    lab[((i * spacing[0] + 14) ** 2 + (j * spacing[0]) ** 2 + (k * spacing[0]) ** 2) < 16] = 52
    return Volume(lab, spacing, (-n, -n, -n))


def test_tube_occupancy_is_one_on_the_axis_and_falls_off():
    v = Volume(np.zeros((30, 30, 30), np.float32), (0.5, 0.5, 0.5))
    pts = np.array([v.voxel_to_ras([15, 15, 2]), v.voxel_to_ras([15, 15, 27])])
    box, occ = render_tube(v, pts, radius_mm=1.0)
    full = np.zeros(v.array.shape, np.float32)
    full[box] = occ
    assert full[15, 15, 15] > 0.95
    assert full[15, 15, 17] == pytest.approx(0.5, abs=0.12)      # 1 mm from the axis = HWHM
    assert full[15, 15, 25] < 0.01


def test_mimics_are_labelled_dark_and_bilateral_calcification():
    lab = _ball_labels()
    img = Volume(np.full(lab.array.shape, 100.0, np.float32), lab.spacing, lab.origin)
    brain = lab.array > 0
    deep = np.isin(lab.array, (13, 52))
    res = add_mimics(img, brain, rng=0, deep_gm_mask=deep, n_veins=6, n_flow_voids=3, cavernoma=True)
    types = set(np.unique(res.labels.array)) - {0}
    assert types <= set(MIMIC_TYPES)
    assert res.counts["vein"] > 0 and res.counts["calcification"] == 2
    assert res.image.array.max() <= 100.0 + 1e-4 and res.image.array.min() < 80
    calc = np.argwhere(res.labels.array == 3)
    x = res.labels.kji_to_ras(calc)[:, 0]
    assert (x < -2).any() and (x > 2).any()          # both hemispheres
    # QSM polarity: calcification is the opposite sign of a CMB (darker than background)
    q = Volume(np.zeros(lab.array.shape, np.float32), lab.spacing, lab.origin)
    resq = add_mimics(q, brain, rng=0, polarity="bright", deep_gm_mask=deep, n_veins=2, n_flow_voids=0,
                      air_bone=False)
    assert resq.image.array[resq.labels.array == 3].mean() < 0
    assert resq.image.array[resq.labels.array == 1].mean() > 0


def test_class_map_groups_freesurfer_labels():
    fs = np.array([0, 2, 41, 3, 42, 11101, 12150, 4, 13, 52, 16, 999])
    names = [CLASSES[c] for c in class_map(fs)]
    assert names == ["background", "wm", "wm", "gm", "gm", "gm", "gm", "csf", "pallidum", "pallidum",
                     "brainstem", "gm"]


def test_clinical_spacings_cover_thick_and_fine_grids():
    rng = np.random.default_rng(0)
    sp = np.array([random_clinical_spacing(rng) for _ in range(400)])
    assert sp[:, 0].min() < 0.5 and sp[:, 0].max() <= 1.0
    assert sp[:, 2].max() > 4.5 and sp[:, 2].min() < 1.2
    assert np.all(sp[:, 0] == sp[:, 1])


@pytest.mark.parametrize("invert", [0.0, 1.0])
def test_synthesize_case_on_a_requested_clinical_grid(invert):
    lab = _ball_labels()
    case = synthesize_case(lab, rng=1, spacing=(0.5, 0.5, 5.0), n_cmbs=(3, 3), invert_prob=invert,
                           head_prob=0.0)
    img = case.image
    assert img.spacing == pytest.approx((0.5, 0.5, 5.0))
    assert case.cmb_mask.same_geometry(img) and case.mimic_labels.same_geometry(img)
    assert case.polarity == ("bright" if invert else "dark")
    n = len(case.centres_ras)
    assert 1 <= n <= 3 and case.cmb_mask.array.max() == n
    assert np.isfinite(img.array).all()
    inside = img.array[case.cmb_mask.array > 0].mean()
    brain = img.array[(img.array > 0) & (case.cmb_mask.array == 0)]
    if invert:
        assert inside > np.median(brain)
    else:
        assert inside < np.median(brain)
