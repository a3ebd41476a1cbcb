"""CPU and GPU give the same detections (runs only where CUDA works)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from detection_fixtures import TINY_UNET, phantom  # noqa: E402

from CMBLib.detection.pipeline import detect  # noqa: E402

# Stated tolerance: probabilities within 1e-3; each strong CPU candidate found on the GPU within 0.5 mm.
PROB_TOL = 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cpu_and_cuda_agree():
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
