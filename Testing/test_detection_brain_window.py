"""Inference window "brain": the brain's box as one window (issue 26, item 5)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CMBLib.detection.inference import brain_box, count_windows, predict_probability, tta_transforms  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402


class Counting(torch.nn.Module):
    """Logit = 10 * x; records the spatial shape of every window batch; out-of-memory above
    `oom_voxels` voxels per window."""

    def __init__(self, oom_voxels=None):
        super().__init__()
        self.shapes = []
        self.oom_voxels = oom_voxels

    def forward(self, x):
        if self.oom_voxels is not None and int(np.prod(x.shape[2:])) > self.oom_voxels:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")
        self.shapes += [tuple(x.shape[2:])] * x.shape[0]
        return 10.0 * x


def sig(v):
    return 1 / (1 + np.exp(-10 * v))


def test_brain_box_grows_by_the_margin_and_to_multiples_of_eight():
    mask = np.zeros((20, 40, 70), bool)
    mask[5:7, 10:12, 30:33] = True
    # k: 5..6 -> 3..9 (6) -> 2..10 (8); j: 10..11 -> 6..16 (10) -> 3..19 (16); i: 30..32 -> 26..37 (11) -> 24..40
    assert brain_box(mask, (2, 4, 4)) == (slice(2, 10), slice(3, 19), slice(24, 40))


def test_brain_box_at_the_edge_and_on_short_axes():
    mask = np.zeros((6, 40, 70), bool)
    mask[0, 0, 66:70] = True
    # k: the axis is shorter than 8 -> all of it; j: -4..5 -> 16 long, moved inside; i: 62..74 -> 56..72 -> 54..70
    assert brain_box(mask, (2, 4, 4)) == (slice(0, 6), slice(0, 16), slice(54, 70))
    assert brain_box(np.zeros((6, 9, 10), bool)) == (slice(0, 6), slice(0, 9), slice(0, 10))


def test_brain_window_runs_the_box_once_and_is_zero_outside():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 40, 70)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[5:12, 10:30, 20:50] = True
    net = Counting()
    prob, _ = predict_probability(net, x, (32, 32, 16), sw_batch_size=2, overlap=0.25, mask=mask,
                                  window="brain", margin=(2, 4, 4))
    box = brain_box(mask, (2, 4, 4))
    # k 5..11 -> 3..14 (11) -> 1..17; j 10..29 -> 6..34 (28) -> 4..36; i 20..49 -> 16..54 (38) -> 15..55
    assert box == (slice(1, 17), slice(4, 36), slice(15, 55))
    assert net.shapes == [(16, 32, 40)]                  # one window instead of 2 x 2 x 3 tiles
    assert np.allclose(prob[box], sig(x[box]), atol=1e-5)
    outside = np.ones(x.shape, bool)
    outside[box] = False
    assert prob[outside].max() == 0.0
    tiles = Counting()
    predict_probability(tiles, x, (32, 32, 16), sw_batch_size=2, overlap=0.25, mask=mask)
    assert len(tiles.shapes) == count_windows(x.shape, (16, 32, 32), 0.25) == 12


def test_brain_window_pads_a_scan_shorter_than_the_box():
    x = np.random.default_rng(1).normal(size=(5, 30, 30)).astype(np.float32)
    net = Counting()
    prob, _ = predict_probability(net, x, (32, 32, 16), window="brain", margin=(0, 0, 0))
    assert net.shapes == [(8, 32, 32)]                   # zero-padded to multiples of 8, cropped back
    assert np.allclose(prob, sig(x), atol=1e-5)


def test_brain_window_with_flips_maps_back_each_pass():
    x = np.random.default_rng(2).normal(size=(10, 24, 40)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[2:8, 3:20, 5:25] = True                           # off-centre: each flip crops a different box
    net = Counting()
    prob, _ = predict_probability(net, x, (32, 32, 16), mask=mask, window="brain", margin=(1, 2, 2),
                                  tta=tta_transforms("flips"))
    assert len(net.shapes) == 4
    box = brain_box(mask, (1, 2, 2))
    assert np.allclose(prob[box], sig(x[box]), atol=1e-5)  # Counting is equivariant: the mean is the map


def test_a_box_above_the_voxel_cap_is_tiled():
    x = np.random.default_rng(3).normal(size=(20, 40, 70)).astype(np.float32)
    net = Counting()
    prob, _ = predict_probability(net, x, (32, 32, 16), overlap=0.25, window="brain", margin=(0, 0, 0),
                                  max_window_voxels=1000)
    assert set(net.shapes) == {(16, 32, 32)} and len(net.shapes) == 12
    assert np.allclose(prob, sig(x), atol=1e-4)


def test_out_of_memory_with_one_window_falls_back_to_the_model_windows():
    x = np.random.default_rng(4).normal(size=(20, 40, 70)).astype(np.float32)
    warnings = []
    net = Counting(oom_voxels=16 * 32 * 32)
    prob, dev = predict_probability(net, x, (32, 32, 16), sw_batch_size=1, overlap=0.25, window="brain",
                                    warnings=warnings)
    assert dev == "cpu" and set(net.shapes) == {(16, 32, 32)}
    assert warnings == ["cpu ran out of memory with one window on the brain; retrying with the model's windows"]
    assert np.allclose(prob, sig(x), atol=1e-4)


def test_unknown_window_is_refused():
    with pytest.raises(CMBError, match="unknown inference window 'whole'"):
        predict_probability(Counting(), np.zeros((8, 8, 8), np.float32), (8, 8, 8), window="whole")


def test_window_reaches_detect_from_the_cli_and_the_worker(monkeypatch, tmp_path):
    """`cmb detect --window brain|tiles` and the worker's "window" key reach detect (absent / null:
    None, the model's choice); detect records the window it used; a bad worker value is refused."""
    import io
    import json

    from detection_fixtures import dark_spot_model

    from CMBLib.cli import main, worker
    from CMBLib.detection import model_io, pipeline
    from CMBLib.io import write_volume
    from CMBLib.synthesis.demo_study import make_demo_study

    img, _, _ = make_demo_study(0)
    write_volume(img, tmp_path / "img.nii.gz")
    seen, used = [], []
    real = pipeline.detect

    def spy(*a, **k):
        seen.append(k.get("window"))
        result = real(*a, **dict(k, location_filter=False, second_stage=False))
        used.append(result.settings["window"])
        return result

    from CMBLib.detection import inference

    ran, real_predict = [], inference.predict_probability

    def predict_spy(*a, **k):
        ran.append(k.get("window"))
        return real_predict(*a, **k)

    monkeypatch.setattr(pipeline, "detect", spy)
    monkeypatch.setattr(inference, "predict_probability", predict_spy)
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model())
    for flags, want in ((["--window", "brain"], "brain"), (["--window", "tiles"], "tiles"), ([], None)):
        seen.clear()
        used.clear()
        ran.clear()
        assert main(["detect", str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / f"o{want}"),
                     "--device", "cpu", *flags]) == 0
        assert seen == [want] and used == ran == [want or "tiles"]   # the fixture model names no window
    seen.clear()
    jobs = [{"id": "b", "window": "brain"}, {"id": "n", "window": None}, {"id": "bad", "window": "whole"}]
    lines = [json.dumps(dict(j, image=str(tmp_path / "img.nii.gz"), out=str(tmp_path / j["id"]), device="cpu"))
             for j in jobs]
    events = []
    worker.serve(io.StringIO("\n".join(lines) + "\n"), events.append)
    answers = {e["id"]: e for e in events if e["event"] in ("result", "error")}
    assert seen == ["brain", None]
    assert answers["bad"]["event"] == "error" and "window must be tiles, brain or null" in answers["bad"]["message"]
