"""Skull-on images: brain extraction of whole heads and slabs, brain-restricted normalisation,
the model.json preprocessing options (CMBLib.detection.preprocess)."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from CMBLib.detection.preprocess import (
    brain_mask_from_image,
    head_brain_mask,
    preprocess,
    preprocess_options,
)
from CMBLib.errors import CMBError
from CMBLib.synthesis.demo_study import make_demo_phantom, make_demo_study
from CMBLib.synthesis.head_shells import add_head, crop_slices

NEW = {"brain_extraction": "head", "outside": "background"}
MIN_DICE_HEAD = 0.90       # whole synthetic heads (measured 0.92-0.96 on the demo brain)
MIN_DICE_SLAB = 0.90       # 8-slice slabs of them (measured 0.96)


def dice(a, b) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def demo_brain():
    img, brain, _ = make_demo_phantom(0)
    return img.with_array(np.where(brain, img.array, 0.0).astype(np.float32)), brain


@pytest.fixture(scope="module", params=[0, 1])
def head(request, demo_brain):
    img, brain = demo_brain
    return add_head(img, brain, request.param, pad_mm=30)


def test_whole_head_brain_mask(head):
    m = head_brain_mask(head.image)
    assert dice(m, head.brain_mask) >= MIN_DICE_HEAD
    assert dice(brain_mask_from_image(head.image), head.brain_mask) < 0.6   # the old mask keeps the head


def test_slab_brain_mask(head):
    ks = np.flatnonzero(head.brain_mask.any(axis=(1, 2)))
    k0 = int(ks.min() + 0.4 * (ks.max() - ks.min()))
    slab = crop_slices(head.image, k0, k0 + 8)
    assert dice(head_brain_mask(slab), head.brain_mask[k0:k0 + 8]) >= MIN_DICE_SLAB


def test_normalisation_does_not_depend_on_the_head(demo_brain):
    """The network input inside the brain is the same with and without a skull around it."""
    img, brain = demo_brain
    h = add_head(img, brain, 1, pad_mm=30, air=False)      # no air: no blooming into the brain
    (k0, _), (j0, _), (i0, _) = h.pad
    diffs = {}
    for name, opts in (("old", {}), ("new", NEW)):
        ps, ph = preprocess(img, (1, 1, 2), **opts), preprocess(h.image, (1, 1, 2), **opts)
        box = (slice(k0, k0 + brain.shape[0]), slice(j0, j0 + brain.shape[1]), slice(i0, i0 + brain.shape[2]))
        on_head = ph.to_native(ph.array)[box]
        found = (ph.to_native(ph.brain_mask.astype(np.uint8), order=0) > 0)[box]
        core = ndi.binary_erosion(brain, iterations=2) & ndi.binary_erosion(found, iterations=1)   # both brains
        diffs[name] = np.abs(on_head - ps.to_native(ps.array))[core]
    assert np.median(diffs["new"]) <= 0.05 and np.percentile(diffs["new"], 95) <= 0.15
    assert np.median(diffs["old"]) > 0.1           # normalised over the whole head, it did depend on it
    # outside the brain the new input looks skull-stripped: the clipped background, as in training
    ph = preprocess(h.image, (1, 1, 2), **NEW)
    far = ~ndi.binary_dilation(ph.brain_mask, iterations=3)
    assert np.all(ph.array[far] == ph.array[far].min())


def test_skull_stripped_input_is_unchanged_by_the_new_options():
    """Constant background: the same mask and the same network input, bit for bit."""
    img, _, _ = make_demo_study(0)
    _, brain, _ = make_demo_phantom(0)
    stripped = img.with_array(np.where(brain, img.array, 0.0).astype(np.float32))
    a, b = preprocess(stripped, (1, 1, 2)), preprocess(stripped, (1, 1, 2), **NEW)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.brain_mask, b.brain_mask)
    np.testing.assert_array_equal(head_brain_mask(stripped), brain_mask_from_image(stripped))


def test_preprocess_options_from_model_json():
    assert preprocess_options({}) == {"brain_extraction": "classic", "outside": "keep"}
    assert preprocess_options({"preprocess": NEW}) == NEW
    assert preprocess_options({"preprocess": NEW}, outside="keep")["outside"] == "keep"
    with pytest.raises(CMBError, match="unknown preprocessing option"):
        preprocess_options({"preprocess": {"skull": "off"}})
    with pytest.raises(CMBError, match="brain_extraction must be one of"):
        preprocess_options({"preprocess": {"brain_extraction": "bet"}})


def test_detect_uses_the_models_preprocessing(head):
    """model.json "preprocess" reaches `detect`: the brain mask it uses on a skull-on head is the
    brain, and its settings say which preprocessing ran."""
    from detection_fixtures import dark_spot_model

    from CMBLib.detection.pipeline import detect

    for meta, want, dice_range in (({}, "classic", (0.0, 0.6)), ({"preprocess": NEW}, "head", (MIN_DICE_HEAD, 1.0))):
        r = detect(head.image, dark_spot_model(**meta), device="cpu", second_stage=False, location_filter=False,
                   keep_model_grid=True)
        pre = r.model_grid["pre"]
        d = dice(pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0, head.brain_mask)
        assert r.settings["preprocess"]["brain_extraction"] == want
        assert dice_range[0] <= d <= dice_range[1]


def test_skull_on_overrides_the_models_preprocessing(head):
    """detect(skull_on=True / False) overrides model.json "preprocess" both ways; None keeps it."""
    from detection_fixtures import dark_spot_model

    from CMBLib.detection.pipeline import detect

    for meta, skull_on, want in (({}, True, "head"), ({"preprocess": NEW}, False, "classic"),
                                 ({"preprocess": NEW}, None, "head"), ({}, None, "classic")):
        r = detect(head.image, dark_spot_model(**meta), device="cpu", second_stage=False, location_filter=False,
                   keep_model_grid=True, skull_on=skull_on)
        pre = r.model_grid["pre"]
        d = dice(pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0, head.brain_mask)
        assert r.settings["preprocess"]["brain_extraction"] == want
        assert (d >= MIN_DICE_HEAD) == (want == "head")


def test_skull_on_reaches_detect_from_the_cli_and_the_worker(monkeypatch, tmp_path):
    """`cmb detect --skull-on` and the worker's "skull_on" key pass True to detect; absent / null
    pass None (the model's choice); a worker value other than true / false / null is refused."""
    import io
    import json

    from CMBLib.cli import worker
    from CMBLib.detection import model_io, pipeline
    from CMBLib.io import write_volume

    img, _, _ = make_demo_study(0)
    write_volume(img, tmp_path / "img.nii.gz")
    seen = []
    real = pipeline.detect

    def spy(*a, **k):
        seen.append(k.get("skull_on"))
        return real(*a, **dict(k, location_filter=False, second_stage=False))

    from detection_fixtures import dark_spot_model

    monkeypatch.setattr(pipeline, "detect", spy)
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model())
    from CMBLib.cli import main
    for flags, want in ((["--skull-on"], True), ([], None)):
        seen.clear()
        assert main(["detect", str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / f"o{len(flags)}"),
                     "--device", "cpu", *flags]) == 0
        assert seen == [want]
    seen.clear()
    jobs = [{"id": "on", "skull_on": True}, {"id": "off", "skull_on": False}, {"id": "null", "skull_on": None},
            {"id": "bad", "skull_on": "yes"}]
    lines = [json.dumps(dict(j, image=str(tmp_path / "img.nii.gz"), out=str(tmp_path / j["id"]), device="cpu"))
             for j in jobs]
    events = []
    worker.serve(io.StringIO("\n".join(lines) + "\n"), events.append)
    answers = {e["id"]: e for e in events if e["event"] in ("result", "error")}
    assert seen == [True, False, None]
    assert answers["bad"]["event"] == "error" and "skull_on must be true, false or null" in answers["bad"]["message"]
