"""Sliding-window inference: window count, progress, cancel, out-of-memory fall-back, devices."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CMBLib.detection.inference import count_windows, predict_probability, select_device  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.progress import Cancelled, CancelToken  # noqa: E402


class Counting(torch.nn.Module):
    """Logit = 10 * x (so probability = sigmoid(10 x)); counts windows seen."""

    def __init__(self, oom_above=None):
        super().__init__()
        self.windows = 0
        self.oom_above = oom_above

    def forward(self, x):
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.windows += x.shape[0]
        return 10.0 * x


@pytest.mark.parametrize("shape,patch,expected", [((16, 32, 32), (32, 32, 16), 1),
                                                  ((20, 40, 70), (32, 32, 16), 2 * 2 * 3),
                                                  ((8, 8, 8), (32, 32, 16), 1)])
def test_window_count_matches_monai(shape, patch, expected):
    roi = list(patch)[::-1]
    assert count_windows(shape, roi, 0.25) == expected
    net = Counting()
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    prob, dev = predict_probability(net, x, patch, sw_batch_size=1, overlap=0.25)
    assert net.windows == expected and dev == "cpu"
    assert prob.shape == shape and prob.dtype == np.float32
    assert np.allclose(prob, 1 / (1 + np.exp(-10 * x)), atol=1e-4)


def test_progress_reaches_one_and_cancel_stops():
    x = np.zeros((20, 40, 70), np.float32)
    seen = []
    predict_probability(Counting(), x, (32, 32, 16), sw_batch_size=2, overlap=0.25,
                        progress=lambda f, m: seen.append(f))
    assert len(seen) == 6 and seen == sorted(seen) and seen[-1] == 1.0
    token = CancelToken()

    def cancel_after_first(f, m):
        token.cancel()

    net = Counting()
    with pytest.raises(Cancelled):
        predict_probability(net, x, (32, 32, 16), sw_batch_size=2, overlap=0.25, progress=cancel_after_first,
                            cancel=token)
    assert net.windows == 2


def test_out_of_memory_retries_with_fewer_windows_and_says_so():
    x = np.zeros((20, 40, 70), np.float32)
    warnings = []
    net = Counting(oom_above=1)
    prob, dev = predict_probability(net, x, (32, 32, 16), sw_batch_size=4, overlap=0.25, warnings=warnings)
    assert dev == "cpu" and prob.shape == x.shape
    assert warnings == ["cpu ran out of memory; retrying with 2 window(s) at a time",
                        "cpu ran out of memory; retrying with 1 window(s) at a time"]
    with pytest.raises(CMBError, match="out of memory on the CPU"):
        predict_probability(Counting(oom_above=0), x, (32, 32, 16), sw_batch_size=1)


def test_gpu_out_of_memory_moves_to_cpu(monkeypatch):
    """A fake 'cuda' device whose every window runs out of memory ends on the CPU."""
    import CMBLib.detection.inference as inf

    calls = []
    real_run = inf._run

    def fake_run(network, array, roi, device, batch, *rest):
        calls.append((device, batch))
        if device != "cpu":
            raise RuntimeError("CUDA out of memory")
        return real_run(network, array, roi, device, batch, *rest)

    monkeypatch.setattr(inf, "_run", fake_run)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    warnings = []
    prob, dev = inf.predict_probability(Counting(), np.zeros((8, 8, 8), np.float32), (8, 8, 8),
                                        device="cuda", sw_batch_size=2, warnings=warnings)
    assert dev == "cpu" and calls == [("cuda", 2), ("cuda", 1), ("cpu", 2)]
    assert "running on the CPU instead" in warnings[-1]


def test_windows_without_mask_voxels_are_skipped():
    x = np.random.default_rng(1).normal(size=(20, 40, 70)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[0:3, 0:5, 0:9] = True        # lies in the first window along every axis only
    net = Counting()
    prob, _ = predict_probability(net, x, (32, 32, 16), sw_batch_size=1, overlap=0.25, mask=mask)
    assert net.windows == 1
    assert np.allclose(prob[0:3, 0:5, 0:9], 1 / (1 + np.exp(-10 * x[0:3, 0:5, 0:9])), atol=1e-4)
    assert prob[:, :, 60:].max() == 0.0


def test_select_device():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(CMBError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CMBError, match="not available"):
            select_device("cuda")


class Gradient(torch.nn.Module):
    """Logit grows along i (the last axis): not mirror-symmetric, so flipping matters."""

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, 1, -1)
        return x + ramp


def test_flip_average_is_the_mean_of_the_image_and_its_mirror():
    x = np.random.default_rng(2).normal(size=(8, 16, 24)).astype(np.float32)
    plain, _ = predict_probability(Gradient(), x, (24, 16, 8), sw_batch_size=1)
    both, _ = predict_probability(Gradient(), x, (24, 16, 8), sw_batch_size=1, flip_average=True)
    ramp = np.linspace(-3, 3, 24)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    # mirror pass: the network sees x flipped, its ramp is added in flipped coordinates
    expected = 0.5 * (sig(x + ramp) + sig(x + ramp[::-1]))
    assert np.allclose(plain, sig(x + ramp), atol=1e-5)
    assert np.allclose(both, expected, atol=1e-5)
