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
    fake = types.ModuleType("CMBLib.location")     # the registration once per image, then a Locator

    class Locator:
        answer = None

        def __init__(self, image, registration=None, **kwargs):
            assert registration == "registered"
            self.warnings = []          # as the real Locator: none for a fit that did not drift

        def locate(self, pts):
            return Locator.answer(pts)

    fake.Locator = Locator
    fake.registration_for = lambda image, progress=None, cancel=None: "registered"
    Locator.answer = lambda pts: ["left " + ("deep" if p[0] > 0 else "lobar") for p in pts]
    monkeypatch.setitem(sys.modules, "CMBLib.location", fake)
    res = detect(vol, dark_spot_model(), location=True)
    assert sorted(r["location"] for r in res.records) == sorted(
        "left " + ("deep" if r["centre_ras"][0] > 0 else "lobar") for r in res.records)

    Locator.answer = lambda pts: [{"region": "thalamus", "category": "deep", "side": "left"} for _ in pts]
    res = detect(vol, dark_spot_model(), location=True)
    assert [(r["location"], r["location_category"], r["side"]) for r in res.records] == \
        [("thalamus", "deep", "left")] * 2

    def failing(image, progress=None, cancel=None):
        raise CMBError("atlas registration failed")

    fake.registration_for = failing
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


def _wide_spot_model():
    """The dark-spot network, blind to spots narrower than 3 voxels in-plane on its grid (an
    in-plane 3 x 3 erosion of the dark voxels, then dilation back): like the real U-Net, which
    does not respond to CMBs of under 3 mm on its 1 x 1 x 2 mm grid."""
    import torch

    base, meta = dark_spot_model()

    class WideSpot(torch.nn.Module):
        def forward(self, x):
            pool = torch.nn.functional.max_pool3d
            dark = (base(x) > 0).float()
            wide = -pool(-dark, (1, 3, 3), stride=1, padding=(0, 1, 1))
            wide = pool(wide, (1, 3, 3), stride=1, padding=(0, 1, 1))
            return torch.where(wide > 0, torch.full_like(x, 6.0), torch.full_like(x, -6.0))

    return WideSpot().eval(), meta


def test_a_zoom_finds_a_spot_too_small_for_the_models_own_grid():
    """A 2.2 mm spot is 2 voxels across on the 1 x 1 x 2 mm grid (the network misses it) and
    4 on the grid zoomed 2 x in-plane (0.5 x 0.5 x 2 mm; found); sizes stay in real mm and
    the 7 mm spot is found either way."""
    vol, centres = phantom([((70, 80, 16), 1.1), ((120, 110, 19), 3.5)], spacing=(0.45, 0.45, 2.0),
                           shape_kji=(36, 192, 192))
    plain = detect(vol, _wide_spot_model(), min_diameter_mm=1.0)
    zoomed = detect(vol, _wide_spot_model(), min_diameter_mm=1.0, zooms=[[1, 1, 1], [2, 2, 1]])
    assert [r["diameter_mm"] > 5 for r in plain.records] == [True]
    assert len(zoomed.records) == 2
    small = min(zoomed.records, key=lambda r: r["diameter_mm"])
    assert np.linalg.norm(np.subtract(small["centre_ras"], centres[0])) < 1.0
    assert 1.0 < small["diameter_mm"] < 3.5
    assert zoomed.settings["zooms"] == [[1.0, 1.0, 1.0], [2.0, 2.0, 1.0]]
    assert plain.settings["zooms"] == [[1.0, 1.0, 1.0]]
    # the maps are combined by their maximum: the zoomed map is never below the plain one
    assert (zoomed.probability.array >= plain.probability.array - 1e-6).all()


def test_zooms_come_from_model_json_and_repeat_exactly():
    vol, _ = phantom(SPOTS)
    plain = detect(vol, dark_spot_model())
    twice = detect(vol, dark_spot_model(inference_zooms=[[1, 1, 1], [1, 1, 1]]))
    assert twice.settings["zooms"] == [[1.0, 1.0, 1.0]] * 2
    np.testing.assert_array_equal(twice.probability.array, plain.probability.array)
    assert len(twice.records) == len(plain.records) == 2
    from CMBLib.detection.pipeline import inference_zooms

    assert inference_zooms({}, 2) == [[2.0, 2.0, 2.0]] and inference_zooms({}) == [[1.0, 1.0, 1.0]]
    assert inference_zooms({}, [1.5, [2, 2, 1]]) == [[1.5] * 3, [2.0, 2.0, 1.0]]


@pytest.mark.parametrize("zooms", [[[0, 1, 1]], [[2, 2]], [], [[float("nan"), 1, 1]], [[8, 8, 1]]])
def test_bad_zooms_are_refused(zooms):
    vol, _ = phantom(SPOTS)
    with pytest.raises(CMBError, match="zoom"):
        detect(vol, dark_spot_model(), zooms=zooms)
