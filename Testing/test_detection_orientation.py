"""The detector's findings do not depend on the order the scan's voxels are stored in.

The same scan with its slice order reversed, a mirrored in-plane axis, or its in-plane axes
swapped (geometry adjusted, so every voxel keeps its world position) must give the same
CMBs: preprocessing brings every scan to one canonical voxel order (RAS), exactly.
"""
from itertools import permutations, product

import numpy as np
import pytest

from CMBLib.detection.preprocess import canonical_orientation, canonical_volume, from_canonical, to_canonical
from CMBLib.geometry import Volume


def stored_as(volume: Volume, axes, flips) -> Volume:
    """The same scan stored with voxel axis c = old axis axes[c], reversed when flips[c]
    (array [k, j, i]); every voxel keeps its world (RAS) position."""
    a = np.transpose(volume.array, [2 - axes[2], 2 - axes[1], 2 - axes[0]])
    for c in range(3):
        if flips[c]:
            a = np.flip(a, 2 - c)
    n = volume.shape_ijk
    corner = np.zeros(3)
    for c in range(3):
        corner[axes[c]] = n[axes[c]] - 1 if flips[c] else 0
    d = np.stack([volume.direction[:, axes[c]] * (-1 if flips[c] else 1) for c in range(3)], axis=1)
    return Volume(np.ascontiguousarray(a), tuple(volume.spacing[a_] for a_ in axes),
                  tuple(volume.voxel_to_ras(corner)), d)


def _oblique(deg=(7.0, -5.0, 3.0)):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", deg, degrees=True).as_matrix()


@pytest.mark.parametrize("axes,flips", list(product(permutations(range(3)), product([False, True], repeat=3))))
def test_every_storage_order_has_the_same_canonical_volume(axes, flips):
    rng = np.random.default_rng(0)
    ref = Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), (0.8, 0.9, 3.0), (-10.2, 20.7, -3.3), _oblique())
    vol = stored_as(ref, axes, flips)
    canon, orient = canonical_volume(vol)
    assert np.array_equal(canon.array, ref.array)              # RAS-like input: canonical = the reference
    assert canon.spacing == ref.spacing and np.allclose(canon.direction, ref.direction, atol=0)
    assert np.abs(np.asarray(canon.origin) - ref.origin).max() < 1e-5
    assert np.array_equal(from_canonical(canon.array, *orient), vol.array)
    idx = np.array([[1, 2, 3], [6, 5, 4], [0, 0, 0]])              # i, j, k in the canonical grid
    world = canon.voxel_to_ras(idx)
    back = np.rint(vol.ras_to_voxel(world)).astype(int)            # the same voxel, in the stored grid
    assert np.allclose(vol.voxel_to_ras(back), world, atol=1e-4)
    assert [vol.array[k, j, i] for i, j, k in back] == [canon.array[k, j, i] for i, j, k in idx]


@pytest.mark.parametrize("axes,flips", list(product(permutations(range(3)), product([False, True], repeat=3))))
def test_a_sagittal_thick_slice_scan_keeps_its_slice_axis_as_k(axes, flips):
    """Sagittal T2* (0.86 x 0.86 in plane, 4 mm slices along R-L): in every storage order the
    canonical k axis is the 4 mm one (the through-plane axis of the axial training data),
    i and j are A and S, and all orders give the same canonical volume."""
    rng = np.random.default_rng(1)
    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) @ np.eye(3)   # i->A, j->S, k->R
    ref = Volume(rng.normal(size=(4, 6, 5)).astype(np.float32), (0.86, 0.86, 4.0), (1.0, 2.0, 3.0),
                 _oblique((2.0, -3.0, 1.0)) @ sagittal)
    canon_ref, _ = canonical_volume(ref)
    assert canon_ref.spacing == (0.86, 0.86, 4.0)
    assert np.argmax(np.abs(canon_ref.direction[:, 2])) == 0          # k along R-L
    canon, orient = canonical_volume(stored_as(ref, axes, flips))
    assert np.array_equal(canon.array, canon_ref.array) and canon.spacing == canon_ref.spacing
    assert np.allclose(canon.direction, canon_ref.direction, atol=0)
    assert np.abs(np.asarray(canon.origin) - canon_ref.origin).max() < 1e-5


def test_canonical_orientation_of_common_storages():
    lps = np.diag([-1.0, -1.0, 1.0])                  # DICOM-like: i to the left, j to the back
    assert canonical_orientation(lps) == ((0, 1, 2), (True, True, False))
    lia = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # FreeSurfer conformed: i left, j inferior, k anterior
    assert canonical_orientation(lia) == ((0, 2, 1), (True, False, True))
    a = np.arange(24).reshape(2, 3, 4)
    for axes, flips in [((0, 2, 1), (True, False, True)), ((2, 0, 1), (False, True, False))]:
        assert np.array_equal(from_canonical(to_canonical(a, axes, flips), axes, flips), a)


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def demo_and_reference():
    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.synthesis.demo_study import make_demo_study

    torch.set_num_threads(2)
    model = load_model("default", device="cpu")
    img, _, _ = make_demo_study(0)
    return model, img, detect(img, model, device="cpu")


@pytest.mark.parametrize("name,axes,flips", [("slices reversed (k)", (0, 1, 2), (False, False, True)),
                                             ("rows reversed (j)", (0, 1, 2), (False, True, False)),
                                             ("in-plane transposed", (1, 0, 2), (False, False, False)),
                                             ("LPS, slices reversed", (1, 0, 2), (True, True, True))])
def test_bundled_model_finds_the_same_cmbs_in_any_storage_order(demo_and_reference, name, axes, flips):
    from CMBLib.detection.pipeline import detect

    model, img, ref = demo_and_reference
    assert len(ref.records) >= 3
    vol = stored_as(img, axes, flips)
    res = detect(vol, model, device="cpu")
    assert len(res.records) == len(ref.records), name
    for r in ref.records:
        d = [np.linalg.norm(np.subtract(q["centre_ras"], r["centre_ras"])) for q in res.records]
        q = res.records[int(np.argmin(d))]
        assert min(d) <= 0.1, (name, r, q)
        assert abs(q["max_probability"] - r["max_probability"]) <= 1e-4
        assert q["volume_mm3"] == pytest.approx(r["volume_mm3"], abs=1e-6)
        ijk = np.rint(vol.ras_to_voxel(q["centre_ras"])).astype(int)       # records in the input's own voxels
        assert res.mask.array[ijk[2], ijk[1], ijk[0]] == q["label"]
    # the probability map on the input grid is the reference's, stored the same way
    assert np.abs(res.probability.array - stored_as(ref.probability, axes, flips).array).max() <= 1e-4
