"""Regression tests with the REAL bundled model (cmb-default), not a stand-in network.

A change to the weights, the preprocessing, the inference or the candidate stages that
breaks detection fails here: counts and centres on the demo study and on a small case made
from the real QSM brain (pseudo-T2* on a 0.86 x 0.86 x 4 mm grid, CMBs inserted in the test),
and training validation giving the very same probabilities as `cmb detect`.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from conftest import shared_file  # noqa: E402

from CMBLib.detection.model_io import load_model  # noqa: E402
from CMBLib.detection.pipeline import detect  # noqa: E402
from CMBLib.synthesis.demo_study import make_demo_study  # noqa: E402

TOL_MM = 3.0   # a found CMB's centre lies within this distance of the inserted one
# What cmb-default 0.3.0 finds (indices of the inserted CMBs, and how many other findings).
# A model or pipeline change that moves these must update them knowingly (and the model card).
DEMO_FOUND, DEMO_EXTRA = {2, 3, 5}, 1      # 0.2.0: {2, 4, 5}, 0
REAL_FOUND, REAL_EXTRA = {0, 1}, 1         # 0.2.0: {0, 1}, 0


@pytest.fixture(scope="module")
def bundled():
    torch.set_num_threads(2)
    return load_model("default", device="cpu")


def _matches(records, centres, tol=TOL_MM):
    """(indices of inserted CMBs found, number of records matching none)."""
    found, extra = set(), 0
    for r in records:
        d = np.linalg.norm(np.asarray(centres) - np.asarray(r["centre_ras"]), axis=1)
        if d.min() <= tol:
            found.add(int(np.argmin(d)))
        else:
            extra += 1
    return found, extra


@pytest.fixture(scope="module")
def demo_result(bundled):
    img, _, centres = make_demo_study(0)
    return img, centres, detect(img, bundled, device="cpu", keep_model_grid=True)


def test_bundled_model_on_the_demo_study(bundled, demo_result):
    _, centres, res = demo_result
    found, extra = _matches(res.records, centres)
    assert found == DEMO_FOUND and extra == DEMO_EXTRA, (found, extra, res.records)
    assert res.settings["model_version"] == bundled[1]["version"]


def test_validation_uses_the_same_inference_as_detect(bundled, demo_result):
    """training/validate.py's probability map equals detect's on the model grid (same windows,
    brain-window skipping and flip averaging): one inference path, compared by output."""
    from training.validate import predict_case

    network, meta = bundled
    _, _, res = demo_result
    pre = res.model_grid["pre"]
    prob = predict_case(network, pre.array, meta["inference_patch_size"][::-1], mask=pre.brain_mask,
                        overlap=meta["inference_overlap"], flip_average=meta["flip_average"])
    prob[~pre.brain_mask] = 0.0
    assert prob.shape == res.model_grid["probability"].shape
    assert np.abs(prob - res.model_grid["probability"]).max() < 1e-6
    assert prob.max() > 0.9   # not a trivially equal pair of empty maps


def _real_background_case():
    """The pseudo-T2* slab of the real QSM brain with three CMBs (make_real_background_case)."""
    from CMBLib.synthesis.demo_study import make_real_background_case

    return make_real_background_case(shared_file("real/qsm2016/chi_cosmos.nii.gz"),
                                     shared_file("real/qsm2016/msk.nii.gz"))


def test_bundled_model_on_a_real_background(bundled):
    vol, centres = _real_background_case()
    res = detect(vol, bundled, device="cpu")
    found, extra = _matches(res.records, centres)
    assert found == REAL_FOUND and extra <= REAL_EXTRA, (found, extra, res.records)
