"""Inference without MONAI: the plain-torch UNet and sliding window equal MONAI's, and
`cmb detect`'s modules do not import MONAI (it costs ~3 s of a fresh start)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai = pytest.importorskip("monai")

from CMBLib.detection.inference import count_windows, predict_probability, sliding_window  # noqa: E402
from CMBLib.detection.model_io import load_model  # noqa: E402
from CMBLib.detection.unet import UNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL_JSON = REPO / "CMBLib" / "models" / "cmb-default" / "model.json"


def _monai_unet(**kw):
    from monai.networks.nets import UNet as MonaiUNet

    return MonaiUNet(**kw)


@pytest.mark.parametrize("num_res_units", [0, 1, 2])
@pytest.mark.parametrize("norm", ["instance", "batch", ("batch", {"affine": True, "momentum": 0.2})])
@pytest.mark.parametrize("dims,dropout", [(3, 0.0), (2, 0.3)])
def test_unet_equals_monai(num_res_units, norm, dims, dropout):
    """Same module names, same random initialisation for a seed, same outputs (eval and train)."""
    kw = dict(spatial_dims=dims, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
              num_res_units=num_res_units, norm=norm, dropout=dropout)
    torch.manual_seed(3)
    ref = _monai_unet(**kw)
    torch.manual_seed(3)
    net = UNet(**kw)
    ref_state, state = ref.state_dict(), net.state_dict()
    assert list(state) == list(ref_state)
    assert all(torch.equal(state[k], ref_state[k]) for k in state)
    assert [type(m).__name__ for m in net.modules()][1:] == [type(m).__name__ for m in ref.modules()][1:]
    x = torch.randn(2, 1, *([12, 20, 28][:dims]))
    for train in (True, False):
        torch.set_grad_enabled(False)
        ref.train(train)
        net.train(train)
        torch.manual_seed(5)
        a = ref(x)
        torch.manual_seed(5)   # the same dropout draws
        b = net(x)
        assert a.shape == b.shape == (2, 2) + x.shape[2:]
        torch.set_grad_enabled(True)
        assert float((a - b).abs().max()) <= 1e-5


@pytest.fixture(scope="module")
def bundled():
    torch.set_num_threads(2)
    return load_model("default", device="cpu")


def test_bundled_weights_give_monais_logits(bundled):
    network, meta = bundled
    assert isinstance(network, UNet)
    p = meta["network"]
    ref = _monai_unet(spatial_dims=p["spatial_dims"], in_channels=p["in_channels"], out_channels=p["out_channels"],
                      channels=p["channels"], strides=p["strides"], num_res_units=p["num_res_units"],
                      norm=p["norm"], dropout=p["dropout"])
    ref.load_state_dict(network.state_dict(), strict=True)
    ref.eval()
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for shape in [(1, 1, 16, 32, 32), (2, 1, 24, 40, 56), (1, 1, 8, 72, 24)]:  # odd multiples of 8 too
            x = torch.randn(*shape, generator=gen) * 2.0
            a, b = ref(x), network(x)
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5


def _monai_predict(network, array, roi, batch, overlap, mode, mask, flip_average):
    """The former MONAI path of `predict_probability` (sliding_window_inference), as reference."""
    from monai.inferers import sliding_window_inference

    def predictor(x):
        prob = torch.zeros_like(x[:, :1])
        keep = x[:, 1].flatten(1).amax(dim=1) > 0.5
        if bool(keep.any()):
            image = x[keep][:, :1]
            p = torch.softmax(network(image), dim=1)[:, 1:2]
            if flip_average:
                p = 0.5 * (p + torch.flip(torch.softmax(network(torch.flip(image, dims=[-1])), 1)[:, 1:2], dims=[-1]))
            prob[keep] = p
        return prob

    m = np.ones(array.shape, np.float32) if mask is None else mask.astype(np.float32)
    x = torch.from_numpy(np.stack([array, m]))[None]
    with torch.inference_mode():
        out = sliding_window_inference(x, roi_size=roi, sw_batch_size=batch, predictor=predictor, overlap=overlap,
                                       mode=mode, sw_device="cpu", device="cpu")
    return out[0, 0].numpy()


@pytest.mark.parametrize("shape,roi,overlap,mode,batch", [
    ((20, 40, 70), (16, 32, 32), 0.25, "gaussian", 2),
    ((6, 30, 50), (16, 32, 32), 0.125, "gaussian", 3),     # shorter than the window: padded
    ((17, 33, 64), (16, 32, 32), 0.5, "constant", 1),
    ((8, 8, 8), (16, 16, 16), 0.1, "gaussian", 2)])
def test_sliding_window_equals_monai(shape, roi, overlap, mode, batch):
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = UNet(3, 2, 2, (4, 8), (2,), 1, "instance", 0.0).eval()

    def predictor(x):
        return torch.softmax(net(x), 1)

    x = torch.randn(1, 2, *shape)
    with torch.inference_mode():
        ref = sliding_window_inference(x, roi, batch, predictor, overlap=overlap, mode=mode, sw_device="cpu",
                                       device="cpu")
        out = sliding_window(x, roi, predictor, batch=batch, overlap=overlap, mode=mode)
    assert out.shape == ref.shape == (1, 2) + shape
    assert float((out - ref).abs().max()) <= 1e-6


def test_bundled_model_probabilities_equal_monais_path(bundled):
    """predict_probability (brain-window skipping, flip averaging) equals the MONAI path."""
    network, meta = bundled
    rng = np.random.default_rng(1)
    array = (0.3 * rng.normal(size=(40, 100, 90))).astype(np.float32)
    kk, jj, ii = np.mgrid[:40, :100, :90]
    array[((kk - 3) * 2.0) ** 2 + (jj - 15) ** 2 + (ii - 40) ** 2 <= 6] = -3.0   # a dark blob: a CMB
    mask = np.zeros(array.shape, bool)
    mask[:6, 5:30, :] = True               # windows starting at k 8 or j 36 hold no brain: skipped
    patch = (64, 64, 32)                   # (i, j, k)
    roi = list(patch)[::-1]
    assert count_windows(array.shape, roi, 0.125) == 2 * 2 * 2
    for flip in (False, True):
        prob, _ = predict_probability(network, array, patch, overlap=0.125, mask=mask, flip_average=flip)
        ref = _monai_predict(network, array, roi, 2, 0.125, "gaussian", mask, flip)
        assert float(np.abs(prob - ref).max()) <= 1e-5
        assert prob.max() > 0.5 and (prob[32:] == 0).all() and (prob[:, 64:] == 0).all()   # skipped: 0


def test_detect_does_not_import_monai(tmp_path):
    """A fresh `cmb detect` (real CLI, bundled model) never imports MONAI (python -X importtime
    lists every module imported), nor do the worker, pipeline and the network built from model.json."""
    from CMBLib.geometry import Volume
    from CMBLib.io import write_volume

    a = np.random.default_rng(0).normal(100.0, 10.0, (12, 48, 48)).astype(np.float32)
    a[2:10, 8:40, 8:40] += 400.0
    a[6, 22:25, 22:25] = 50.0
    write_volume(Volume(a, (1.0, 1.0, 2.0)), tmp_path / "scan.nii.gz")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "CMBLib", "detect", str(tmp_path / "scan.nii.gz"),
                          "--out", str(tmp_path / "out"), "--device", "cpu", "--threads", "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in cli.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "CMBLib.detection.unet" in imported     # the log is complete
    assert not [m for m in imported if m.split(".")[0] == "monai"]
    assert (tmp_path / "out" / "scan_cmb.json").is_file()

    meta = json.loads(MODEL_JSON.read_text(encoding="utf-8"))
    code = ("import sys, CMBLib.cli.worker, CMBLib.detection.pipeline, CMBLib.detection.inference\n"
            "from CMBLib.detection.network import build_network\n"
            f"build_network({meta['network']!r})\n"
            "print('MONAI:', sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MONAI: []" in out.stdout, out.stdout
