"""Shared preprocessing (model grid, brain mask, polarity, intensity) and the network builder."""
import numpy as np
import pytest

from CMBLib.detection.network import build_network, divisor, probability_from_logits
from CMBLib.detection.preprocess import brain_mask_from_image, normalise, preprocess
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.synthesis.demo_study import make_demo_phantom, make_demo_study


def test_preprocess_demo_study_model_grid_and_round_trip():
    img, mask, centres = make_demo_study(0)
    pre = preprocess(img, (1.0, 1.0, 2.0), "dark")
    assert pre.grid.spacing == (1.0, 1.0, 2.0)
    np.testing.assert_allclose(pre.grid.direction, img.direction)
    assert pre.array.dtype == np.float32 and pre.array.shape == pre.brain_mask.shape
    # the grid covers the head: about 57 x 59 x 54 mm radii -> at most the input extent
    ext = np.asarray(pre.grid.shape_ijk) * np.asarray(pre.grid.spacing)
    assert np.all(ext <= np.asarray(img.shape_ijk) * np.asarray(img.spacing) + 2.0)
    # robust normalisation: median 0 inside the brain, clipped to [-4, 4]
    assert np.median(pre.array[pre.brain_mask]) == pytest.approx(0.0, abs=0.05)
    assert pre.array.min() >= -4 and pre.array.max() <= 4
    # a CMB centre stays dark on the model grid
    for c in centres:
        i, j, k = np.round(pre.grid.ras_to_voxel(c)).astype(int)
        around = pre.array[k, max(j - 6, 0):j + 7, max(i - 6, 0):i + 7]
        assert pre.array[k, j, i] < np.median(around) - 0.1
    back = pre.to_native(pre.brain_mask.astype(np.uint8), order=0)
    assert back.shape == img.array.shape
    _, brain, _ = make_demo_phantom(0)
    dice = 2 * np.count_nonzero(back.astype(bool) & brain) / (np.count_nonzero(back) + np.count_nonzero(brain))
    assert dice > 0.85


def test_bright_polarity_is_negated():
    img, _, _ = make_demo_study(1)
    dark = preprocess(img, (1.0, 1.0, 2.0), "dark")
    mask = dark.to_native(dark.brain_mask.astype(np.uint8), order=0)
    dark = preprocess(img, (1.0, 1.0, 2.0), "dark", brain_mask=mask)
    bright = preprocess(img.with_array(-img.array), (1.0, 1.0, 2.0), "bright", brain_mask=mask)
    np.testing.assert_allclose(dark.array, bright.array, atol=1e-4)


def test_to_native_of_identity_grid_is_exact_for_labels():
    a = np.zeros((20, 30, 30), np.float32)
    a[5:15, 5:25, 5:25] = 1 + np.random.default_rng(0).random((10, 20, 20))
    v = Volume(a, (1.0, 1.0, 1.0), (3.0, -2.0, 7.0))
    pre = preprocess(v, (1.0, 1.0, 1.0), brain_mask=a > 0)
    lab = np.arange(pre.array.size, dtype=np.int32).reshape(pre.array.shape)
    back = pre.to_native(lab, order=0)
    # voxel centres coincide: every model voxel maps to one native voxel
    k, j, i = np.argwhere(a > 0)[0]
    src = pre.grid.ras_to_voxel(v.voxel_to_ras([i, j, k]))
    ii, jj, kk = np.round(src).astype(int)
    assert back[k, j, i] == lab[kk, jj, ii]


def test_brain_mask_constant_background_and_whole_head():
    img, _, _ = make_demo_study(2)
    _, brain, lab = make_demo_phantom(2)
    m = brain_mask_from_image(img)   # whole head with skull: Otsu + erosion cuts the scalp
    dice = 2 * np.count_nonzero(m & brain) / (np.count_nonzero(m) + np.count_nonzero(brain))
    assert dice > 0.85
    stripped = img.with_array(np.where(brain, img.array, 0.0).astype(np.float32))
    m2 = brain_mask_from_image(stripped)
    assert np.count_nonzero(m2 ^ brain) < 0.02 * np.count_nonzero(brain)


def test_normalise_hand_computed():
    a = np.arange(101, dtype=np.float32)   # p5 = 5, p50 = 50, p95 = 95
    out = normalise(a, np.ones_like(a, bool))
    assert out[50] == pytest.approx(0.0) and out[95] == pytest.approx(0.5) and out[5] == pytest.approx(-0.5)


def test_preprocess_refuses_bad_input():
    v = Volume(np.ones((5, 5, 5), np.float32))
    with pytest.raises(CMBError):
        preprocess(v, (1, 1, 1))
    v = Volume(np.random.default_rng(0).random((5, 6, 7)).astype(np.float32))
    with pytest.raises(CMBError):
        preprocess(v, (1, 1, 1), polarity="grey")
    with pytest.raises(CMBError):
        preprocess(v, (1, 1, 1), brain_mask=np.zeros((5, 6, 7)))


@pytest.mark.parametrize("params", [{"channels": [4, 8, 16], "strides": [2, 2]},
                                    {"architecture": "BasicUNet", "features": [4, 4, 8, 8, 16, 4]}])
def test_build_network_shapes(params):
    import torch

    net = build_network(params)
    d = divisor(params)
    x = torch.zeros(1, 1, d, 2 * d, 2 * d)
    y = net(x)
    assert y.shape == (1, 2, d, 2 * d, 2 * d)
    p = probability_from_logits(y, params)
    assert p.shape == (1, 1, d, 2 * d, 2 * d)
    # channel 1 of the softmax, by hand: 1 / (1 + exp(y0 - y1))
    assert torch.allclose(p[:, 0], 1.0 / (1.0 + torch.exp(y[:, 0] - y[:, 1])), atol=1e-6)
    one = probability_from_logits(y[:, :1], dict(params, out_channels=1))
    assert torch.allclose(one, torch.sigmoid(y[:, :1]))
    with pytest.raises(CMBError):
        build_network({"architecture": "ResNet"})
