"""CPU and GPU give the same detections (runs only where CUDA works).

Neither MONAI nor (for the network alone) SimpleITK is needed: `detect` resamples with
SimpleITK, so the tests that call it skip without it.  benchmarks/check_devices.py measures
the same agreement with timings for the model card (docs/detector.md, "CPU and GPU agreement").
"""
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detection_fixtures import TINY_UNET, phantom  # noqa: E402

from CMBLib.detection.pipeline import detect  # noqa: E402

# Stated tolerance: probabilities within 1e-3; each strong CPU candidate found on the GPU within 0.5 mm.
PROB_TOL = 1e-3
# The bundled model with torch's default CUDA settings (cuDNN may use TF32 for convolutions):
# the same records (count; centres within 0.5 mm; max_probability within 0.01).  With TF32
# off the maps agree within PROB_TOL.
RECORD_PROB_TOL_DEFAULT = 1e-2
CENTRE_TOL_MM = 0.5

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
needs_sitk = pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None,
                                reason="SimpleITK not installed (detect resamples with it)")


@pytest.fixture
def tf32_off():
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope="module")
def bundled_pair():
    """The bundled model loaded twice: (on the CPU, on CUDA)."""
    from CMBLib.detection.model_io import load_model

    return load_model("default", device="cpu"), load_model("default", device="cuda")


@pytest.fixture(scope="module")
def demo_study():
    from CMBLib.synthesis.demo_study import make_demo_study

    return make_demo_study(0)[0]


@needs_cuda
@needs_sitk
def test_cpu_and_cuda_agree(tf32_off):
    """A tiny random network: flat probabilities near the threshold, so with TF32 on (torch's
    default for cuDNN) a 7.5e-4 change moved a component's centre by 0.58 mm on an H200
    (measured 2026-11-29); the fp32 path is what this test pins."""
    from CMBLib.detection.network import build_network

    torch.manual_seed(0)
    net = build_network(TINY_UNET).eval()
    meta = {"name": "tiny", "version": "0", "spacing_mm": [1, 1, 2], "patch_size": [32, 32, 16],
            "threshold": 0.5}
    vol, _ = phantom([((30, 40, 10), 1.6), ((60, 55, 13), 3.5)])
    cpu = detect(vol, (net, meta), device="cpu")
    gpu = detect(vol, (net, meta), device="cuda")
    assert gpu.settings["device"] == "cuda"
    assert np.abs(cpu.probability.array - gpu.probability.array).max() < PROB_TOL
    strong = [r for r in cpu.records if r["max_probability"] > 0.5 + 2 * PROB_TOL]
    for r in strong:
        d = min(np.linalg.norm(np.subtract(r["centre_ras"], g["centre_ras"])) for g in gpu.records)
        assert d < 0.5


def _assert_same_records(cpu, gpu, prob_tol):
    assert len(gpu) == len(cpu), (cpu, gpu)
    assert cpu, "the demo study gives findings (else nothing is compared)"
    for r in cpu:
        d = [np.linalg.norm(np.subtract(r["centre_ras"], g["centre_ras"])) for g in gpu]
        g = gpu[int(np.argmin(d))]
        assert min(d) <= CENTRE_TOL_MM, (r, g)
        assert abs(r["max_probability"] - g["max_probability"]) <= prob_tol, (r, g)


@needs_cuda
@needs_sitk
def test_bundled_model_on_the_demo_study_cpu_and_cuda(bundled_pair, demo_study):
    on_cpu, on_gpu = bundled_pair
    cpu = detect(demo_study, on_cpu, device="cpu")
    gpu = detect(demo_study, on_gpu, device="cuda")
    assert gpu.settings["device"] == "cuda"
    _assert_same_records(cpu.records, gpu.records, RECORD_PROB_TOL_DEFAULT)


@needs_cuda
@needs_sitk
def test_bundled_model_without_tf32_agrees_within_prob_tol(bundled_pair, demo_study, tf32_off):
    on_cpu, on_gpu = bundled_pair
    cpu = detect(demo_study, on_cpu, device="cpu", keep_model_grid=True)
    gpu = detect(demo_study, on_gpu, device="cuda", keep_model_grid=True)
    assert np.abs(cpu.model_grid["probability"] - gpu.model_grid["probability"]).max() < PROB_TOL
    assert np.abs(cpu.probability.array - gpu.probability.array).max() < PROB_TOL
    _assert_same_records(cpu.records, gpu.records, PROB_TOL)


@needs_cuda
def test_bundled_network_cpu_and_cuda_without_simpleitk(bundled_pair, demo_study, tf32_off):
    """The network and sliding window alone (no resampling, so no SimpleITK): the demo image
    normalised on its own grid gives the same probabilities on both devices."""
    from CMBLib.detection.inference import predict_probability
    from CMBLib.detection.preprocess import brain_mask_from_image, normalise

    mask = brain_mask_from_image(demo_study)
    arr = normalise(np.asarray(demo_study.array, np.float32), mask)
    probs = []
    for device, (network, meta) in zip(("cpu", "cuda"), bundled_pair):
        prob, used = predict_probability(network, arr, meta["inference_patch_size"], device=device,
                                         overlap=meta["inference_overlap"], mask=mask,
                                         flip_average=meta["flip_average"])
        assert used == device
        probs.append(prob)
    assert probs[0].max() > 0.9   # the demo CMBs light up: not two empty maps
    assert np.abs(probs[0] - probs[1]).max() < PROB_TOL
