"""Bundled-model files: round trip, checksum before loading, no pickled code, listing."""
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detection_fixtures import META, TINY_UNET, tiny_model_folder  # noqa: E402

from CMBLib.detection import model_io  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402


def test_round_trip_gives_the_same_network_output(tmp_path):
    folder = tiny_model_folder(tmp_path / "m", seed=3)
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert meta["sha256"] == model_io.sha256_file(folder / "weights.npz")
    assert meta["network"] == TINY_UNET and meta["patch_size"] == META["patch_size"]
    net, loaded = model_io.load_model(folder)
    torch.manual_seed(3)
    from CMBLib.detection.network import build_network

    ref = build_network(TINY_UNET).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)
    assert loaded["name"] == "test-model" and loaded["version"] == "0.0-test"
    assert not net.training


def test_checksum_mismatch_is_refused_before_reading(tmp_path, monkeypatch):
    folder = tiny_model_folder(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    meta["sha256"] = "0" * 64
    (folder / "model.json").write_text(json.dumps(meta), encoding="utf-8")

    def no_load(*a, **k):
        raise AssertionError("weights were read before the checksum was checked")

    monkeypatch.setattr(model_io.np, "load", no_load)
    with pytest.raises(CMBError, match="checksum mismatch") as exc:
        model_io.load_model(folder)
    assert "\n" not in str(exc.value)


def test_changed_weights_are_refused(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    data = bytearray((folder / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(CMBError, match="checksum mismatch"):
        model_io.load_model(folder)


class _Payload:
    """Unpickling this would create a file: proof that pickled code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _with_matching_checksum(folder):
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    meta["sha256"] = model_io.sha256_file(folder / "weights.npz")
    (folder / "model.json").write_text(json.dumps(meta), encoding="utf-8")


def test_pickled_weights_are_refused_and_never_executed(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    marker = tmp_path / "pwned"
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(str(marker))
    np.savez(folder / "weights.npz", evil=obj)
    _with_matching_checksum(folder)  # an attacker can update the checksum too
    with pytest.raises(CMBError, match="not plain numpy arrays"):
        model_io.load_model(folder)
    assert not marker.exists()
    # a raw pickle named weights.npz is refused as well
    (folder / "weights.npz").write_bytes(pickle.dumps({"w": _Payload(str(marker))}))
    _with_matching_checksum(folder)
    with pytest.raises(CMBError):
        model_io.load_model(folder)
    assert not marker.exists()


def test_corrupt_or_mismatched_weights_are_refused(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    (folder / "weights.npz").write_bytes(b"PK\x03\x04 truncated zip")
    _with_matching_checksum(folder)
    with pytest.raises(CMBError):
        model_io.load_model(folder)
    # plain arrays that do not fit the network
    np.savez(folder / "weights.npz", foo=np.zeros(3, np.float32))
    _with_matching_checksum(folder)
    with pytest.raises(CMBError, match="do not fit"):
        model_io.load_model(folder)


def test_metadata_problems_are_one_line_errors(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    (folder / "model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CMBError, match="cannot be read as model metadata"):
        model_io.load_model(folder)
    (folder / "model.json").write_text(json.dumps({"name": "x"}), encoding="utf-8")
    with pytest.raises(CMBError, match="lacks version"):
        model_io.load_model(folder)
    with pytest.raises(CMBError, match="not found"):
        model_io.load_model(tmp_path / "nowhere")


def test_list_and_default_models(tmp_path):
    root = tmp_path / "models"
    with pytest.raises(CMBError, match="no bundled detection model"):
        model_io.default_model_name(root)
    tiny_model_folder(root / "b-model", name="b-model")
    tiny_model_folder(root / "a-model", name="a-model", default=True)
    names = [m["name"] for m in model_io.list_models(root)]
    assert names == ["a-model", "b-model"]
    assert model_io.default_model_name(root) == "a-model"
    net, meta = model_io.load_model("b-model", models_dir=root)
    assert meta["name"] == "b-model"
    net, meta = model_io.load_model("default", models_dir=root)
    assert meta["name"] == "a-model"


def test_bundled_models_verify(tmp_path):
    """Every model shipped in CMBLib/models loads with a matching checksum (and cmb-default is one)."""
    models = model_io.list_models()
    assert "cmb-default" in [m["name"] for m in models]
    for meta in models:
        net, loaded = model_io.load_model(meta["path"])
        assert loaded["sha256"] == model_io.sha256_file(f"{meta['path']}/weights.npz")
