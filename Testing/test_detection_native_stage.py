"""The native patch stage (issue 28): dark-spot candidates, patches, the 2.5D network's files,
and the merge with the U-Net's findings."""
import json

import numpy as np
import pytest

from CMBLib.detection import dark_spots, native_stage, patch_net
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume


def sphere_volume(shape=(9, 40, 40), spacing=(0.5, 0.5, 4.0), centre_kji=(4, 20, 15), radius_mm=1.5, depth=0.6,
                  level=800.0):
    """Uniform tissue at `level` with one dark ball (signal x (1 - depth)) at `centre_kji`."""
    k, j, i = np.indices(shape)
    sp = np.asarray(spacing[::-1], float)
    d = np.sqrt(((k - centre_kji[0]) * sp[0]) ** 2 + ((j - centre_kji[1]) * sp[1]) ** 2 +
                ((i - centre_kji[2]) * sp[2]) ** 2)
    a = np.full(shape, level, np.float32)
    a[d <= radius_mm] *= 1 - depth
    return Volume(a, spacing=spacing)


def test_slice_axis_is_the_thickest():
    assert dark_spots.slice_axis((4.0, 0.5, 0.5)) == 0
    assert dark_spots.slice_axis((0.5, 0.5, 3.0)) == 2
    assert dark_spots.slice_axis((1.0, 1.0, 1.0)) == 0


def test_dip_of_a_dark_ball_is_its_depth_and_scale_free():
    vol = sphere_volume()
    brain = np.ones(vol.array.shape, bool)
    dip, level = dark_spots.dip_map(vol, brain)
    assert level == pytest.approx(800.0)
    # a 3 mm ball of 0.5 mm pixels: the 0.5-pixel smoothing leaves its centre's depth nearly whole
    assert dip[4, 20, 15] == pytest.approx(0.6, abs=0.03)
    assert dip[4, 20, 30] == pytest.approx(0.0, abs=1e-6)      # flat tissue: no dip
    assert dip[0, 20, 15] == pytest.approx(0.0, abs=1e-6)      # another slice: the ball is not there
    scaled = vol.with_array(vol.array * 1000)
    np.testing.assert_allclose(dark_spots.dip_map(scaled, brain)[0], dip, atol=1e-5)


def test_one_candidate_at_the_ball_in_ras():
    vol = sphere_volume()
    brain = np.ones(vol.array.shape, bool)
    cands = dark_spots.dark_spot_candidates(vol, brain)
    assert len(cands) == 1
    assert cands[0]["kji"] == [4, 20, 15]
    np.testing.assert_allclose(cands[0]["centre_ras"], vol.kji_to_ras(np.array([4.0, 20, 15])), atol=1e-6)
    assert dark_spots.dark_spot_candidates(vol, brain, min_dip=0.7) == []        # shallower than asked
    assert dark_spots.dark_spot_candidates(vol, np.zeros_like(brain).astype(bool) | (np.indices(brain.shape)[2] > 25)) \
        == []                                                                       # outside the brain


def test_candidates_on_a_sagittal_grid_use_its_own_slices():
    """The same ball with the thick axis along i: the top-hat works in the j-k plane."""
    vol = sphere_volume(shape=(40, 40, 9), spacing=(4.0, 0.5, 0.5), centre_kji=(15, 20, 4))
    cands = dark_spots.dark_spot_candidates(vol, np.ones(vol.array.shape, bool))
    assert [c["kji"] for c in cands] == [[15, 20, 4]]


def test_two_spots_closer_than_the_distance_are_one():
    a = np.full((5, 40, 40), 1.0, np.float32)
    a[2, 20, 10] = a[2, 20, 12] = 0.4          # 1 mm apart at 0.5 mm pixels
    a[2, 20, 30] = 0.5                         # 9 mm away
    vol = Volume(a, spacing=(0.5, 0.5, 4.0))
    cands = dark_spots.dark_spot_candidates(vol, np.ones(a.shape, bool), min_dip=0.05)
    assert len(cands) == 2
    assert {tuple(c["kji"][1:]) for c in cands} in ({(20, 10), (20, 30)}, {(20, 12), (20, 30)})


def test_bad_input_is_refused():
    vol = sphere_volume()
    with pytest.raises(ValueError, match="same 3D grid"):
        dark_spots.dip_map(vol, np.ones((2, 2, 2), bool))
    bad = vol.array.copy()
    bad[4, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dark_spots.dip_map(vol.with_array(bad), np.ones(bad.shape, bool))
    with pytest.raises(ValueError, match="empty"):
        dark_spots.dip_map(vol, np.zeros(vol.array.shape, bool))


def test_plane_offsets():
    np.testing.assert_allclose(patch_net.plane_offsets_vox((4.0, 0.86, 0.86)), [-1, 0, 1])   # neighbouring slices
    np.testing.assert_allclose(patch_net.plane_offsets_vox((1.0, 0.5, 0.5)), [-2, 0, 2])     # 2 mm on thin slices


def test_patch_samples_a_ramp_at_0_6_mm():
    """Image = 100 + column index i (0.3 mm pixels): a patch column steps 2 pixels = 2 units;
    divided by the brain's median and centred on the middle plane's median."""
    shape = (5, 60, 60)
    a = (100.0 + np.indices(shape)[2]).astype(np.float32)
    vol = Volume(a, spacing=(0.3, 0.3, 3.0))
    brain = np.ones(shape, bool)
    level = float(np.median(a))
    x = patch_net.sample_patches(vol, brain, [[2, 30, 30]])
    assert x.shape == (1, 3, patch_net.PATCH_PX, patch_net.PATCH_PX)
    expected_cols = (np.arange(patch_net.PATCH_PX) - (patch_net.PATCH_PX - 1) / 2) * 2.0 / level
    for plane in range(3):
        np.testing.assert_allclose(x[0, plane, 5], expected_cols, atol=1e-5)   # every row the same ramp
    np.testing.assert_allclose(x[0, :, :, 0], -x[0, :, :, -1], atol=1e-5)


def test_patch_planes_are_the_neighbouring_slices():
    a = np.zeros((5, 30, 30), np.float32)
    for k in range(5):
        a[k] = 100.0 * (1 + 0.1 * k)
    vol = Volume(a, spacing=(0.6, 0.6, 4.0))
    x = patch_net.sample_patches(vol, np.ones(a.shape, bool), [[2, 15, 15]], level=100.0)
    np.testing.assert_allclose(x[0, :, 10, 10], [-0.1, 0.0, 0.1], atol=1e-5)


def test_network_size_and_flip_average():
    torch = pytest.importorskip("torch")
    net = patch_net.build_network(16)
    n = sum(p.numel() for p in net.parameters())
    assert 30_000 < n < 80_000
    torch.manual_seed(0)
    sym = np.random.default_rng(0).normal(size=(2, 3, 24, 24)).astype(np.float32)
    sym = sym + sym[:, :, ::-1] + sym[:, :, :, ::-1] + sym[:, :, ::-1, ::-1]     # symmetric under both flips
    np.testing.assert_allclose(patch_net.predict(net, sym, flips=True), patch_net.predict(net, sym, flips=False),
                               atol=1e-5)


def test_save_load_and_refusals(tmp_path):
    torch = pytest.importorskip("torch")
    net = patch_net.build_network(8)
    patch_net.save_patch_net(net, tmp_path, {"width": 8, "threshold": 0.9})
    back, meta = patch_net.load_patch_net(tmp_path)
    assert meta["threshold"] == 0.9
    x = np.zeros((1, 3, 24, 24), np.float32)
    np.testing.assert_allclose(patch_net.predict(back, x), patch_net.predict(net.eval(), x), atol=1e-6)
    meta_file = tmp_path / patch_net.SETTINGS
    bad = json.loads(meta_file.read_text())
    bad["patch_mm"] = 1.0
    meta_file.write_text(json.dumps(bad))
    with pytest.raises(CMBError, match="other patches"):
        patch_net.load_patch_net(tmp_path)
    with pytest.raises(CMBError, match="no patch network"):
        patch_net.load_patch_net(tmp_path / "nowhere")
    del torch


class CentreDarkness:
    """A stand-in network: logit = 40 x (-0.2 - the centre pixel of the middle plane), so a
    spot darker than 0.2 below its surroundings scores near 1."""

    def eval(self):
        return self

    def __call__(self, x):
        c = patch_net.PATCH_PX // 2
        return 40.0 * (-0.2 - x[:, 1, c - 1:c + 1, c - 1:c + 1].mean(dim=(1, 2)))[:, None]


def test_native_findings_of_a_ball():
    pytest.importorskip("torch")
    vol = sphere_volume(shape=(9, 60, 60), centre_kji=(4, 30, 30))
    brain = np.ones(vol.array.shape, bool)
    found = native_stage.native_findings(vol, brain, CentreDarkness(), threshold=0.5)
    assert len(found) == 1
    rec = found[0]
    assert rec["stage"] == "native"
    np.testing.assert_allclose(rec["centre_ras"], vol.kji_to_ras(np.array([4.0, 30, 30])), atol=1e-3)
    # the ball (radius 1.5 mm) on its one 4 mm slice: 3.0 mm across in-plane, about 29 pixels
    assert 20 <= rec["voxel_count"] <= 40
    assert native_stage.native_findings(vol, brain, CentreDarkness(), threshold=1.01) == []


def test_eroded_brain_only_in_plane():
    brain = np.zeros((5, 20, 20), bool)
    brain[1:4, 5:15, 5:15] = True
    vol = Volume(brain.astype(np.float32), spacing=(1.0, 1.0, 4.0))
    inner = native_stage.eroded_brain(vol, brain, erode_mm=2.0)
    assert inner[1:4, 7:13, 7:13].all() and inner.sum() == 3 * 6 * 6      # 2 pixels off each side, slices kept


def test_merge_keeps_unet_and_adds_far_native_findings():
    vol = Volume(np.zeros((5, 20, 20), np.float32), spacing=(1.0, 1.0, 1.0))
    labels = np.zeros((5, 20, 20), np.int32)
    labels[2, 5, 5] = 1
    unet = [{"label": 1, "centre_ras": list(vol.kji_to_ras(np.array([2.0, 5, 5])))}]
    region = np.ones((1, 2, 2), bool)

    def native(kji):
        return {"label": 0, "stage": "native", "centre_ras": list(vol.kji_to_ras(np.array(kji, float))),
                "region": region, "slices": (slice(kji[0], kji[0] + 1), slice(kji[1], kji[1] + 2),
                                              slice(kji[2], kji[2] + 2))}

    out_labels, recs = native_stage.merge_findings(labels, unet, [native([2, 5, 8]), native([2, 15, 15]),
                                                                  native([2, 15, 17])])
    assert [r.get("stage") for r in recs] == [None, "native"]          # 3 mm from the U-Net's: same CMB
    assert recs[1]["label"] == 2 and "region" not in recs[1]
    assert np.argwhere(out_labels == 2).tolist() == [[2, 15, 15], [2, 15, 16], [2, 16, 15], [2, 16, 16]]
    assert labels.max() == 1                                            # the input is not changed


def test_detect_adds_native_findings_and_says_so(monkeypatch):
    """detect(first_stage="unet+native"): spots the U-Net path drops (here: smaller than its
    8 mm minimum) come back from the native stage; spots both find are not doubled."""
    pytest.importorskip("torch")
    from detection_fixtures import dark_spot_model, phantom

    from CMBLib.detection import pipeline

    vol, centres = phantom(spots=[((30, 40, 12), 1.5), ((60, 50, 12), 1.5)])
    monkeypatch.setattr(native_stage, "load_native", lambda folder: (CentreDarkness(), {"threshold": 0.5}))
    model = dark_spot_model(path="a model folder")
    common = dict(device="cpu", location_filter=False, second_stage=False)
    base = pipeline.detect(vol, model, min_diameter_mm=8.0, **common)
    assert base.records == [] and base.settings["first_stage"] == "unet" and base.settings["native_added"] is None
    res = pipeline.detect(vol, model, min_diameter_mm=8.0, first_stage="unet+native", **common)
    assert res.settings["first_stage"] == "unet+native" and res.settings["native_added"] == 2
    got = np.array(sorted(r["centre_ras"] for r in res.records))
    np.testing.assert_allclose(got, np.array(sorted(map(list, centres))), atol=1.0)
    assert all(r["stage"] == "native" for r in res.records)
    assert sorted(np.unique(res.mask.array))[1:] == [r["label"] for r in res.records] == [1, 2]
    both = pipeline.detect(vol, model, min_diameter_mm=1.0, first_stage="unet+native", **common)
    unet = pipeline.detect(vol, model, min_diameter_mm=1.0, **common)
    assert len(unet.records) == 2 and both.settings["native_added"] == 0 and len(both.records) == 2


def test_first_stage_choices():
    from CMBLib.detection.pipeline import _first_stage

    warnings = []
    assert _first_stage({}, None, "dark", warnings) == "unet"
    assert _first_stage({"first_stage": "unet+native", "path": "m"}, None, "dark", warnings) == "unet+native"
    assert _first_stage({"first_stage": "unet+native", "path": "m"}, "unet", "dark", warnings) == "unet"
    assert warnings == []
    assert _first_stage({"path": "m"}, "unet+native", "bright", warnings) == "unet"
    assert "dark CMBs" in warnings[0]
    with pytest.raises(CMBError, match="first stage must be unet or unet\\+native, not 'frst'"):
        _first_stage({}, "frst", "dark", [])
    with pytest.raises(CMBError, match="needs a model folder"):
        _first_stage({}, "unet+native", "dark", [])


def test_first_stage_reaches_detect_from_the_cli_and_the_worker(monkeypatch, tmp_path):
    import io

    from detection_fixtures import dark_spot_model

    from CMBLib.cli import main, worker
    from CMBLib.detection import model_io, pipeline
    from CMBLib.io import write_volume
    from CMBLib.synthesis.demo_study import make_demo_study

    img, _, _ = make_demo_study(0)
    write_volume(img, tmp_path / "img.nii.gz")
    seen = []
    real = pipeline.detect

    def spy(*a, **k):
        seen.append(k.get("first_stage"))
        return real(*a, **dict(k, location_filter=False, second_stage=False, first_stage="unet"))

    monkeypatch.setattr(pipeline, "detect", spy)
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model())
    for flags, want in ((["--first-stage", "unet+native"], "unet+native"), ([], None)):
        seen.clear()
        assert main(["detect", str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / f"o{want}"),
                     "--device", "cpu", *flags]) == 0
        assert seen == [want]
    seen.clear()
    jobs = [{"id": "n", "first_stage": "unet+native"}, {"id": "bad", "first_stage": "frst"}]
    lines = [json.dumps(dict(j, image=str(tmp_path / "img.nii.gz"), out=str(tmp_path / j["id"]), device="cpu"))
             for j in jobs]
    events = []
    worker.serve(io.StringIO("\n".join(lines) + "\n"), events.append)
    answers = {e["id"]: e for e in events if e["event"] in ("result", "error")}
    assert seen == ["unet+native"]
    assert answers["bad"]["event"] == "error" and "first_stage must be unet, unet+native or null" in \
        answers["bad"]["message"]


def test_a_damaged_weights_file_is_refused(tmp_path):
    pytest.importorskip("torch")
    patch_net.save_patch_net(patch_net.build_network(8), tmp_path, {"width": 8, "threshold": 0.9})
    w = tmp_path / patch_net.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CMBError, match="checksum does not match"):
        patch_net.load_patch_net(tmp_path)


def blurred_ball(radius_mm=1.5, depth=0.6, seed=0):
    """A 0.86 x 0.86 x 4 mm slab of tissue (3 % noise) with one dark ball blurred in-plane by
    about one pixel, as a scanner's point spread blurs a CMB."""
    from scipy import ndimage as ndi

    vol = sphere_volume(shape=(9, 120, 120), spacing=(0.86, 0.86, 4.0), centre_kji=(4, 60, 60),
                        radius_mm=radius_mm, depth=depth)
    a = ndi.gaussian_filter(vol.array, (0, 1.0, 1.0))
    a = a * (1 + 0.03 * np.random.default_rng(seed).standard_normal(a.shape))
    return vol.with_array(a.astype(np.float32))


@pytest.mark.parametrize("radius_mm", [1.0, 1.5, 2.5])
def test_the_bundled_patch_network_finds_a_small_ball_and_nothing_else(radius_mm):
    """At the threshold model.json gives it, cmb-default's patch network finds a 2-5 mm dark ball
    on noisy tissue, and none of the noise dips around it."""
    pytest.importorskip("torch")
    from CMBLib.detection.model_io import resolve_model_folder

    folder = resolve_model_folder("cmb-default")
    spec = json.loads((folder / "model.json").read_text())["native_stage"]
    net, _ = native_stage.load_native(folder)
    vol = blurred_ball(radius_mm)
    found = native_stage.native_findings(vol, np.ones(vol.array.shape, bool), net, spec["threshold"])
    assert len(found) == 1
    np.testing.assert_allclose(found[0]["centre_ras"], vol.kji_to_ras(np.array([4.0, 60, 60])), atol=1.0)


def test_the_bundled_native_stage_is_described_and_off():
    from CMBLib.detection.model_io import resolve_model_folder

    folder = resolve_model_folder("cmb-default")
    meta = json.loads((folder / "model.json").read_text())
    spec, settings = meta["native_stage"], json.loads((folder / patch_net.SETTINGS).read_text())
    assert spec["sha256"] == settings["sha256"] == patch_net.sha256_file(folder / patch_net.WEIGHTS)
    assert spec["threshold"] == settings["threshold"] and spec["default"] is False
    assert meta.get("first_stage", "unet") == "unet"                 # the rule failed: not a default


def test_a_patch_network_model_json_does_not_name_is_refused(monkeypatch):
    pytest.importorskip("torch")
    from detection_fixtures import dark_spot_model, phantom

    from CMBLib.detection import pipeline

    vol, _ = phantom(spots=[((30, 40, 12), 1.5)])
    monkeypatch.setattr(native_stage, "load_native", lambda folder: (CentreDarkness(), {"threshold": 0.5,
                                                                                         "sha256": "b" * 64}))
    model = dark_spot_model(path="m", native_stage={"sha256": "a" * 64, "threshold": 0.5})
    with pytest.raises(CMBError, match="not the one model.json names"):
        pipeline.detect(vol, model, device="cpu", location_filter=False, second_stage=False, first_stage="unet+native")


def _spots_volume(spots, shape=(5, 60, 90), spacing=(0.5, 0.5, 4.0)):
    """Tissue 1.0 with single-voxel dark spots: [(k, j, i, depth)]."""
    a = np.ones(shape, np.float32)
    for k, j, i, depth in spots:
        a[k, j, i] = 1 - depth
    return Volume(a, spacing=spacing)


def test_candidates_come_deepest_first_and_top_k_cuts_the_list():
    vol = _spots_volume([(2, 30, 10, 0.3), (2, 30, 40, 0.6), (2, 30, 70, 0.45)])
    brain = np.ones(vol.array.shape, bool)
    cands = dark_spots.dark_spot_candidates(vol, brain, min_dip=0.05)
    assert [c["kji"][2] for c in cands] == [40, 70, 10]
    assert [c["dip"] for c in cands] == sorted((c["dip"] for c in cands), reverse=True)
    one = dark_spots.dark_spot_candidates(vol, brain, min_dip=0.05, top_k=1)
    assert isinstance(one, list) and [c["kji"][2] for c in one] == [40]
    assert len(dark_spots.dark_spot_candidates(vol, brain, min_dip=0.05, top_k=2)) == 2


def test_suppression_distance_is_in_mm():
    """Spots 1.6 mm apart (4 pixels of 0.4 mm) stay two at 1.5 mm, become one at 1.7 mm (each pair
    on its own; a spot two slices away, 8 mm, stays)."""
    spots = [(2, 30, 40, 0.6), (2, 30, 44, 0.5), (4, 30, 40, 0.4), (0, 10, 10, 0.4), (0, 10, 14, 0.3)]
    vol = _spots_volume(spots, spacing=(0.4, 0.4, 4.0))
    brain = np.ones(vol.array.shape, bool)
    kept = {tuple(c["kji"]) for c in dark_spots.dark_spot_candidates(vol, brain, min_dip=0.05, min_distance_mm=1.5)}
    assert kept == {(2, 30, 40), (2, 30, 44), (4, 30, 40), (0, 10, 10), (0, 10, 14)}
    kept = {tuple(c["kji"]) for c in dark_spots.dark_spot_candidates(vol, brain, min_dip=0.05, min_distance_mm=1.7)}
    assert kept == {(2, 30, 40), (4, 30, 40), (0, 10, 10)}


@pytest.mark.parametrize("width_px, deep", [(12, True), (13, False)])
def test_the_top_hat_fills_what_is_narrower_than_its_footprint(width_px, deep):
    """0.5 mm pixels: the footprint is 2 x round(3 / 0.5) + 1 = 13 pixels.  A dark stripe (depth
    0.5) 12 pixels wide is a dip: 0.447 at its centre (0.5 less the 0.053 by which the half-pixel
    smoothing lifts its edge pixels, where the closing's dilation reads); one of 13 pixels is as
    wide as the footprint and only that edge lift, 0.053, remains."""
    a = np.ones((3, 40, 60), np.float32)
    a[:, :, 20:20 + width_px] = 0.5
    vol = Volume(a, spacing=(0.5, 0.5, 4.0))
    dip, _ = dark_spots.dip_map(vol, np.ones(a.shape, bool))
    centre = dip[1, 20, 20 + width_px // 2]
    assert centre == pytest.approx(0.447 if deep else 0.053, abs=0.005)


def test_the_footprint_is_at_least_three_pixels_and_one_slice():
    """2.5 mm pixels: round(3 / 2.5) = 1, footprint 3 pixels: a 3-pixel stripe is not a spot.  A wide
    dark square on one slice is not a spot either: the footprint does not reach the next slice."""
    a = np.ones((3, 20, 20), np.float32)
    a[:, :, 8:11] = 0.5
    vol = Volume(a, spacing=(2.5, 2.5, 4.0))
    assert dark_spots.dip_map(vol, np.ones(a.shape, bool))[0][1, 10, 9] < 0.06      # the edge lift only
    b = np.ones((3, 40, 40), np.float32)
    b[1, 5:35, 5:35] = 0.5
    dip, _ = dark_spots.dip_map(Volume(b, spacing=(0.5, 0.5, 4.0)), np.ones(b.shape, bool))
    assert dip[1, 20, 20] < 0.06


def test_the_dip_of_a_spot_does_not_depend_on_the_brain_mask():
    """The closing works on the mask's box grown by the footprint: a spot at the mask's edge is
    measured against the tissue around it, as with a mask covering everything."""
    rng = np.random.default_rng(1)
    a = (1 + 0.05 * rng.standard_normal((3, 60, 60))).astype(np.float32)
    a[1, 29:32, 29:32] = 0.4
    vol = Volume(a, spacing=(0.5, 0.5, 4.0))
    full, level_full = dark_spots.dip_map(vol, np.ones(a.shape, bool))
    brain = np.zeros(a.shape, bool)
    brain[1, 30, 30:40] = True
    part, level_part = dark_spots.dip_map(vol, brain)
    scale = level_full / level_part        # dips are fractions of the mask's median tissue
    assert part[1, 30, 30] * (1 / scale) == pytest.approx(full[1, 30, 30], rel=1e-4)
    assert part[1, 30, 30] > 0.5


def test_tissue_level_falls_back_to_the_mean_magnitude():
    """Dips are fractions of the brain's median; a median of 0 or below (a phase-like or QSM-like
    image) uses the mean absolute value, and an all-zero brain 1.0 (no division by zero)."""
    mask = np.ones(4, bool)
    assert dark_spots.brain_median(np.array([2.0, 3.0, 5.0, 7.0]), mask) == 4.0
    assert dark_spots.brain_median(np.array([-1.0, -1.0, 1.0, 3.0]), mask) == 1.5
    assert dark_spots.brain_median(np.array([-3.0, -1.0, 0.0, 0.0]), mask) == 1.0
    assert dark_spots.brain_median(np.zeros(4), mask) == 1.0


def test_the_csv_says_which_stage_found_each_cmb():
    from CMBLib.detection.outputs import CSV_COLUMNS, records_csv

    rec = {"label": 1, "centre_ras": [1.0, 2.0, 3.0], "centre_ijk": [4.0, 5.0, 6.0], "voxel_count": 9,
           "volume_mm3": 27.0, "diameter_mm": 3.7, "size_class": "<5mm", "max_probability": 0.9,
           "mean_probability": 0.8, "elongation": 1.1, "sphericity": 0.9, "vessel_like": False}
    rows = records_csv([rec, dict(rec, label=2, stage="native", dip=0.4)]).splitlines()
    assert CSV_COLUMNS[-1] == "stage" and rows[0].endswith(",stage")
    assert rows[1].endswith(",unet") and rows[2].endswith(",native")
