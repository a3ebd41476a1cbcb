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


# --- The head turned or mirrored in-plane (world geometry changed, not the storage order) ---

from CMBLib.detection.inference import (  # noqa: E402
    TTA_PRESETS,
    TTA_TRANSFORMS,
    predict_probability,
    tta_apply,
    tta_invert,
    tta_transforms,
)
from CMBLib.errors import CMBError  # noqa: E402

P_TOL, MM_TOL = 0.1, 2.0   # real head, TTA on: same count, centres within 2 mm, probabilities within 0.1


def turned(volume: Volume, name: str) -> Volume:
    """The head turned in-plane by `name` (a `TTA_TRANSFORMS` name) inside the same scanner
    grid: the array is turned, origin and direction stay, so the anatomy moves in the world."""
    swap = name in ("rot90", "rot270", "transpose", "antitranspose")
    sp = (volume.spacing[1], volume.spacing[0], volume.spacing[2]) if swap else volume.spacing
    return Volume(np.ascontiguousarray(tta_apply(volume.array, name)), sp, volume.origin, volume.direction)


def mapped_back(volume: Volume, name: str, ras) -> np.ndarray:
    """A point (RAS mm) of `turned(volume, name)` -> the same anatomical point in `volume`."""
    tv = turned(volume, name)
    ni, nj = volume.shape_ijk[:2]
    ti, tj = (tta_apply(a, name) for a in np.meshgrid(np.arange(ni), np.arange(nj)))  # original i, j per voxel

    def at(i, j):
        return np.array([ti[j, i], tj[j, i]], float)

    ijk = tv.ras_to_voxel(np.asarray(ras, float))
    ij = at(0, 0) + (at(1, 0) - at(0, 0)) * ijk[0] + (at(0, 1) - at(0, 0)) * ijk[1]   # the map is affine
    return volume.voxel_to_ras([ij[0], ij[1], ijk[2]])


def _same_findings(ref, res, volume, name, mm, p):
    assert len(res.records) == len(ref.records), (name, ref.records, res.records)
    for r in ref.records:
        d = [np.linalg.norm(mapped_back(volume, name, q["centre_ras"]) - r["centre_ras"]) for q in res.records]
        q = res.records[int(np.argmin(d))]
        assert min(d) <= mm, (name, r, q)
        assert abs(q["max_probability"] - r["max_probability"]) <= p, (name, r, q)


def _compose(a, b):
    """The TTA_TRANSFORMS name of 'first a, then b', found by its action on a 2 x 3 array."""
    x = np.arange(6).reshape(1, 2, 3)
    y = tta_apply(tta_apply(x, a), b)
    return next(n for n in TTA_TRANSFORMS if tta_apply(x, n).shape == y.shape and np.array_equal(tta_apply(x, n), y))


def test_tta_transforms_invert_and_the_presets_are_groups():
    x = np.random.default_rng(0).normal(size=(3, 4, 5))
    for name in TTA_TRANSFORMS:
        assert np.array_equal(tta_invert(tta_apply(x, name), name), x), name
    assert len({tta_apply(np.arange(6).reshape(1, 2, 3), n).tobytes() + bytes(tta_apply(
        np.arange(6).reshape(1, 2, 3), n).shape) for n in TTA_TRANSFORMS}) == 8       # 8 distinct transforms
    for preset, names in TTA_PRESETS.items():
        for a in names:
            for b in names:
                assert _compose(a, b) in names, (preset, a, b)


def test_tta_names():
    assert tta_transforms(None) is None and tta_transforms("") is None
    assert tta_transforms("off") == tta_transforms("none") == tta_transforms(False) == ["identity"]
    assert tta_transforms("flips") == ["identity", "mirror_i", "mirror_j", "rot180"]
    assert tta_transforms("d4") == list(TTA_TRANSFORMS)
    assert tta_transforms("identity, rot180") == ["identity", "rot180"] == tta_transforms(["identity", "ROT180"])
    for bad in ("spin", "identity,identity", True, 3, []):
        with pytest.raises(CMBError):
            tta_transforms(bad)


class Lopsided(torch.nn.Module):
    """A network whose answer depends on where in its window a voxel lies and how the head is
    turned (logit = 2 x intensity + ramps along i and j of the window): no symmetry at all."""

    def forward(self, x):
        ri = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, 1, -1)
        rj = torch.linspace(0, 2, x.shape[-2]).view(1, 1, 1, -1, 1)
        return 2 * x + ri + rj * ri


@pytest.mark.parametrize("preset,turns", [("flips", ["mirror_i", "mirror_j", "rot180"]),
                                          ("d4", ["rot90", "transpose", "antitranspose"])])
def test_tta_probabilities_turn_with_the_input(preset, turns):
    """Averaged over a group, the map of a turned input is the turned map (windows, blending
    and brain-window skipping included), exactly; one pass is not."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 40, 52)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[2:9, 5:30, 4:45] = True
    kw = dict(patch_size=(24, 24, 8), sw_batch_size=3, mask=mask)
    ref, _ = predict_probability(Lopsided(), x, tta=tta_transforms(preset), **kw)
    for name in turns:
        out, _ = predict_probability(Lopsided(), tta_apply(x, name), tta=tta_transforms(preset),
                                     **dict(kw, mask=tta_apply(mask, name)))
        assert np.abs(tta_invert(out, name) - ref).max() <= 1e-5, name
        one, _ = predict_probability(Lopsided(), tta_apply(x, name), **dict(kw, mask=tta_apply(mask, name)))
        plain, _ = predict_probability(Lopsided(), x, **kw)
        assert np.abs(tta_invert(one, name) - plain).max() > 0.05, name
    single, _ = predict_probability(Lopsided(), x, tta=["identity"], **kw)
    assert np.array_equal(single, predict_probability(Lopsided(), x, **kw)[0])


class LopsidedDarkSpot(torch.nn.Module):
    """The fixtures' dark-spot network minus a ramp of 0-30 along the window's i axis: a spot
    in the window's right part is not seen, so the findings depend on how the head lies."""

    def __init__(self):
        super().__init__()
        from detection_fixtures import dark_spot_network

        self.base = dark_spot_network()

    def forward(self, x):
        return self.base(x) - torch.linspace(0, 30, x.shape[-1]).view(1, 1, 1, 1, -1)


def test_detect_with_tta_finds_the_same_cmbs_in_a_turned_head(monkeypatch):
    """Phantom on a 1 x 1 x 2 mm grid (= the model grid, so a turned head is sampled exactly
    alike; one window): with flips the findings of the head turned 180 degrees or mirrored,
    mapped back, are the same (0.01 mm, 1e-4); without TTA they are not.  (d4 and 90-degree
    turns: exactly, on the probability maps above.)"""
    from detection_fixtures import META, exact_brain_mask, phantom

    from CMBLib.detection.pipeline import detect

    exact_brain_mask(monkeypatch)
    spots = [((20, 20, 8), 2.5), ((50, 40, 12), 3.0), ((34, 52, 6), 2.5), ((56, 14, 16), 2.5)]
    vol, _ = phantom(spots, spacing=(1.0, 1.0, 2.0), shape_kji=(24, 64, 72))
    model = (LopsidedDarkSpot().eval(), dict(META, name="lopsided", sha256="", threshold=0.3,
                                             patch_size=[64, 64, 32]))
    none = detect(vol, model, tta="none")
    assert none.settings["tta"] == ["identity"] and none.settings["flip_average"] is False
    with pytest.raises(AssertionError):
        _same_findings(none, detect(turned(vol, "rot180"), model, tta="none"), vol, "rot180", 1.0, 0.1)
    ref = detect(vol, (model[0], dict(model[1], tta="flips")))          # model.json "tta" is the default
    assert len(ref.records) == 4 and ref.settings["tta"] == list(TTA_PRESETS["flips"])
    for name in ("rot180", "mirror_i"):
        _same_findings(ref, detect(turned(vol, name), model, tta="flips"), vol, name, 0.01, 1e-4)
    with pytest.raises(CMBError, match="equal i and j"):
        detect(vol, (model[0], dict(model[1], spacing_mm=[1.0, 1.5, 2.0])), tta="d4")


def test_bundled_model_with_tta_finds_the_same_cmbs_in_a_real_head_turned_or_mirrored():
    """The real QSM brain as pseudo-T2* (0.86 x 0.86 x 4 mm, 3 CMBs inserted), a 72 x 72 mm
    in-plane crop of the deep grey matter slab, turned 180 degrees in-plane and mirrored
    left-right: with the bundled model and `tta="flips"` the same findings (count; centres
    within MM_TOL mm and probabilities within P_TOL once mapped back).  Not exact: the
    turned head's model grid samples the anatomy up to a model voxel differently."""
    from conftest import shared_file

    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.synthesis.demo_study import make_real_background_case

    vol, centres = make_real_background_case(shared_file("real/qsm2016/chi_cosmos.nii.gz"),
                                             shared_file("real/qsm2016/msk.nii.gz"))
    ci, cj, _ = np.rint(vol.ras_to_voxel(centres.mean(axis=0))).astype(int)
    r = 42
    crop = Volume(np.ascontiguousarray(vol.array[:, cj - r:cj + r, ci - r:ci + r]), vol.spacing,
                  tuple(vol.voxel_to_ras([ci - r, cj - r, 0])), vol.direction)
    torch.set_num_threads(2)
    model = load_model("default", device="cpu")
    ref = detect(crop, model, device="cpu", tta="flips", location_filter=False)
    assert len(ref.records) >= 2
    for name in ("rot180", "mirror_i"):
        res = detect(turned(crop, name), model, device="cpu", tta="flips", location_filter=False)
        _same_findings(ref, res, crop, name, MM_TOL, P_TOL)


def test_cli_and_worker_take_a_tta_set(tmp_path, dark_model, monkeypatch, capsys):
    import json

    from detection_fixtures import exact_brain_mask, phantom

    from CMBLib.cli import main
    from CMBLib.cli.worker import _tta
    from CMBLib.io import write_volume

    exact_brain_mask(monkeypatch)
    vol, _ = phantom([((30, 40, 10), 1.6), ((60, 55, 13), 3.5)])
    write_volume(vol, tmp_path / "s.nii.gz")
    assert main(["detect", str(tmp_path / "s.nii.gz"), "--out", str(tmp_path / "o"), "--model", dark_model,
                 "--tta", "mirror"]) == 0
    out = json.loads((tmp_path / "o" / "s_cmb.json").read_text())
    assert out["settings"]["tta"] == ["identity", "mirror_i"] and len(out["cmbs"]) == 2
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "s.nii.gz"), "--out", str(tmp_path / "o2"), "--model", dark_model,
                 "--tta", "spin"]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--tta" in err[0] and "flips" in err[0], err
    assert _tta(None) is None and _tta("d4") == list(TTA_TRANSFORMS) and _tta(["identity", "rot180"]) == [
        "identity", "rot180"]
    with pytest.raises(CMBError):
        _tta(True)
