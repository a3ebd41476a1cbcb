"""The detection pipeline on synthetic phantoms with a fixed dark-spot network."""
import numpy as np
import pytest

pytest.importorskip("torch")

from detection_fixtures import dark_spot_model, exact_brain_mask, oblique, phantom  # noqa: E402

from CMBLib.detection.pipeline import detect, normalise_sequence  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.progress import Cancelled, CancelToken  # noqa: E402

SPOTS = [((30, 40, 10), 1.6), ((60, 55, 13), 3.5)]  # (centre i, j, k), radius mm


@pytest.fixture(autouse=True)
def _true_brain(monkeypatch):
    exact_brain_mask(monkeypatch)


@pytest.mark.parametrize("direction", [None, oblique(25.0)])
def test_finds_the_spots_on_the_input_grid(direction):
    vol, centres = phantom(SPOTS, direction=direction)
    res = detect(vol, dark_spot_model(), device="cpu")
    assert len(res.records) == 2
    assert res.mask.same_geometry(vol) and res.probability.same_geometry(vol)
    assert res.mask.array.dtype == np.int16 and res.probability.array.dtype == np.float32
    by_size = sorted(res.records, key=lambda r: r["diameter_mm"])
    for rec, truth, r_mm in zip(by_size, centres, [s[1] for s in SPOTS]):
        assert np.linalg.norm(np.subtract(rec["centre_ras"], truth)) < 1.0
        # measured diameter within a voxel's worth of partial volume of the truth
        assert abs(rec["diameter_mm"] - 2 * r_mm) < 1.6
    assert [r["size_class"] for r in by_size] == ["<5mm", "5-10mm"]
    # centres in the records are the centroids of the mask labels
    for rec in res.records:
        kji = np.argwhere(res.mask.array == rec["label"]).mean(axis=0)
        assert rec["centre_ijk"] == pytest.approx(kji[::-1], abs=1e-3)
        assert rec["centre_ras"] == pytest.approx(vol.kji_to_ras(kji), abs=1e-3)
    assert res.settings["device"] == "cpu" and res.settings["threshold"] == 0.5
    assert set(res.timings) >= {"preprocess", "inference", "candidates", "total"}


def test_qsm_spots_are_bright():
    vol, _ = phantom(SPOTS, bright=True)
    assert len(detect(vol, dark_spot_model(), sequence="QSM").records) == 2
    assert len(detect(vol, dark_spot_model(), sequence="T2S").records) == 0
    assert len(detect(vol, dark_spot_model(), sequence="T2S", polarity="bright").records) == 2


def test_threshold_and_size_limits_are_applied():
    vol, _ = phantom(SPOTS)
    res = detect(vol, dark_spot_model(), min_diameter_mm=5.0)
    assert len(res.records) == 1 and res.dropped["too_small"] >= 1
    res = detect(vol, dark_spot_model(), max_diameter_mm=5.0)
    assert len(res.records) == 1 and res.records[0]["diameter_mm"] < 5.0
    with pytest.raises(CMBError, match="between 0 and 1"):
        detect(vol, dark_spot_model(), threshold=1.5)


def test_progress_is_monotonic_and_cancel_works():
    vol, _ = phantom(SPOTS)
    seen = []
    detect(vol, dark_spot_model(), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert seen[-1][1] == "done: 2 CMB candidate(s)"
    token = CancelToken()

    def cancel_in_inference(f, m):
        if m.startswith("detecting"):
            token.cancel()

    with pytest.raises(Cancelled):
        detect(vol, dark_spot_model(), progress=cancel_in_inference, cancel=token)


def test_bad_volumes_are_refused():
    vol, _ = phantom()
    nan = vol.with_array(np.full(vol.array.shape, np.nan, np.float32))
    with pytest.raises(CMBError, match="NaN"):
        detect(nan, dark_spot_model())
    with pytest.raises(CMBError, match="constant"):
        detect(vol.with_array(np.zeros(vol.array.shape, np.float32)), dark_spot_model())
    with pytest.raises(CMBError, match="unknown sequence"):
        detect(vol, dark_spot_model(), sequence="FLAIR")


def test_sequence_names():
    assert [normalise_sequence(s) for s in ("t2*", "T2S", "gre", "swi", "Qsm")] == \
        ["T2S", "T2S", "T2S", "SWI", "QSM"]


def test_location_is_added_or_refused(monkeypatch):
    import sys
    import types

    vol, _ = phantom(SPOTS)
    monkeypatch.setitem(sys.modules, "CMBLib.location", None)
    with pytest.raises(CMBError, match="location module not installed"):
        detect(vol, dark_spot_model(), location=True)
    fake = types.ModuleType("CMBLib.location")
    fake.locate_points = lambda image, pts, progress=None, cancel=None: [
        "left " + ("deep" if p[0] > 0 else "lobar") for p in pts]
    monkeypatch.setitem(sys.modules, "CMBLib.location", fake)
    res = detect(vol, dark_spot_model(), location=True)
    assert sorted(r["location"] for r in res.records) == sorted(
        "left " + ("deep" if r["centre_ras"][0] > 0 else "lobar") for r in res.records)

    def located(image, pts, progress=None, cancel=None):
        return [{"region": "thalamus", "category": "deep", "side": "left"} for _ in pts]

    fake.locate_points = located
    res = detect(vol, dark_spot_model(), location=True)
    assert [(r["location"], r["location_category"], r["side"]) for r in res.records] == \
        [("thalamus", "deep", "left")] * 2

    def failing(image, pts, progress=None, cancel=None):
        raise CMBError("atlas registration failed")

    fake.locate_points = failing
    res = detect(vol, dark_spot_model(), location=True)
    assert len(res.records) == 2 and "location" not in res.records[0]
    assert res.warnings == ["location not determined: atlas registration failed"]


def test_windows_are_the_models_own_never_fitted():
    import torch

    from CMBLib.detection.network import build_network

    params = {"architecture": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0,
              "norm": "batch", "out_channels": 2}
    torch.manual_seed(0)
    meta = {"name": "bn", "version": "0", "spacing_mm": [1, 1, 2], "patch_size": [160, 160, 64],
            "threshold": 0.5, "network": params}
    vol, _ = phantom(SPOTS)
    res = detect(vol, (build_network(params), meta))
    assert res.mask.same_geometry(vol)
    # model grid 87 x 87 x 36 voxels (i, j, k): the model's window, not one fitted to the grid
    # (fitted windows changed the probabilities by up to 0.165 with cmb-default 0.2.0)
    assert res.settings["patch_size"] == [160, 160, 64]
