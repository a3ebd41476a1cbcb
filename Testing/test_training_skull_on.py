"""Skull-on training data: a cached skull-on case, a few training steps with
training/configs/skull_on.yaml's preprocessing, exported into model.json."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
NEW = {"brain_extraction": "head", "outside": "background"}


def test_skull_on_config_is_valid_and_asks_for_the_skull_on_preprocessing():
    from training.train import effective_config, load_config

    cfg = effective_config(load_config(REPO / "training" / "configs" / "skull_on.yaml"))
    assert cfg["preprocess"] == NEW
    assert any("cache_skull_on" in d for d in cfg["data"]["train_dirs"])
    assert effective_config({})["preprocess"] == {"brain_extraction": "classic", "outside": "keep"}   # off


def test_a_skull_on_case_trains_and_the_model_says_how_to_preprocess(tmp_path):
    from CMBLib.detection.model_io import load_model
    from CMBLib.synthesis.cmb_insertion import insert_cmbs
    from CMBLib.synthesis.demo_study import make_demo_phantom
    from training.export_model import export
    from training.generate_cache import save_case, skull_on_case
    from training.train import main

    img, brain, _ = make_demo_phantom(0, shape_kji=(16, 64, 64), spacing=(1.5, 1.5, 4.0))
    img = img.with_array(np.where(brain, img.array, 0.0).astype(np.float32))
    centre = img.kji_to_ras(np.argwhere(brain).mean(axis=0)[None])
    ins = insert_cmbs(img, centres_ras=centre, rng=0, polarity="dark", radius_mm=(2.5, 2.5), contrast=(0.9, 0.9))
    for i, slab in enumerate((0.0, 1.0)):           # a whole head and a slab
        pre, arrays, info = skull_on_case(ins.image, brain, ins.specs, np.random.default_rng(i), (1.0, 1.0, 2.0),
                                          slab_prob=slab)
        assert (info["slab"] is None) == (slab == 0.0)
        outside = arrays["image"][~arrays["brain"]]      # one value (0 before normalisation) far outside
        assert arrays["brain"].any() and (outside == outside.min()).mean() > 0.8
        save_case(tmp_path / "cache" / "train", f"train_{i:04d}", pre, arrays, {"source": "test"}, ins.specs)
    assert arrays["cmb"].any() or info["slab"] is not None
    cfg = {"out": str(tmp_path / "run"), "threads": 1, "patch_size": [16, 16, 8],
           "inference_patch_size": [32, 32, 16], "batch_size": 2, "max_steps": 3,
           "network": {"channels": [4, 8], "strides": [2]}, "log_every": 1, "checkpoint_every": 3,
           "val_every": 1000, "val_cases": 0, "refresh_every": 1, "preprocess": NEW,
           "sampling": {"cmb": 0.3, "insert": 0.4, "mimic": 0.1, "background": 0.2},
           "data": {"train_dirs": [str(tmp_path / "cache" / "train")], "val_dirs": []}}
    path = tmp_path / "skull.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    main(["--config", str(path)])
    folder = export(tmp_path / "run" / "checkpoint.pt", tmp_path / "model", name="tiny", version="0.0.1")
    _, meta = load_model(folder, device="cpu")
    assert meta["preprocess"] == NEW
