"""training/: loss, patch sampling, dataset layouts, a tiny train/resume/export round trip, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.geometry import Volume  # noqa: E402
from CMBLib.io import write_volume  # noqa: E402
from training.datasets import CaseStore, annotator_pairs, find_pairs, preprocess_pair, valdo_pairs  # noqa: E402
from training.losses import FocalTverskyCELoss, instance_balance_weights  # noqa: E402
from training.sampling import augment, sample_patch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_focal_tversky_hand_computed():
    # 4 voxels, target [1, 1, 0, 0]; p(CMB) = [1, 0.5, 0.5, 0] via logits (0, log p/(1-p))
    p = torch.tensor([0.999999, 0.5, 0.5, 1e-6])
    logits = torch.stack([torch.zeros(4), torch.log(p / (1 - p))])[None]        # (1, 2, 4)
    target = torch.tensor([[1, 1, 0, 0]])
    loss = FocalTverskyCELoss(smooth=0.0, w_ce=0.0)(logits, target)
    tp, fp, fn = 1.5, 0.5, 0.5
    ti = tp / (tp + 0.3 * fp + 0.7 * fn)
    assert float(loss) == pytest.approx((1 - ti) ** 3, rel=1e-4)
    # weighted CE alone: mean of -w log p_true weighted by class weights
    ce = FocalTverskyCELoss(w_ftl=0.0, w_ce=1.0)(logits, target)
    w = np.array([5, 5, 0.1, 0.1])
    nll = -np.log([0.999999, 0.5, 0.5, 1 - 1e-6])
    assert float(ce) == pytest.approx((w * nll).sum() / w.sum(), rel=1e-4)


def test_perfect_prediction_has_near_zero_loss():
    target = torch.zeros(1, 1, 4, 8, 8, dtype=torch.long)
    target[0, 0, 1:3, 2:5, 2:5] = 1
    logits = torch.cat([(1 - target) * 20.0, target * 20.0], dim=1).float()
    assert float(FocalTverskyCELoss()(logits, target)) < 1e-6


def test_instance_balance_weights_hand_computed():
    # 1 x 1 x 2 mm voxels: a 5 mm sphere is pi/6 * 125 / 2 = 32.7 voxels
    y = np.zeros((2, 1, 6, 12, 12), np.uint8)
    y[0, 0, 1, 1, 1] = 1                         # 1 voxel: 32.7 x, clipped to 10
    y[0, 0, 3:5, 4:8, 4:8] = 1                   # 32 voxels: 32.7 / 32 = 1.02
    y[1, 0, 2:4, 2:4, 2] = 1                     # 4 voxels: 8.18
    y[1, 0, 4, 8:10, 8:10] = 1                   # 4 voxels more, another CMB (not 26-connected)
    w = instance_balance_weights(y, (1.0, 1.0, 2.0), ref_diameter_mm=5.0, max_weight=10.0)
    ref = np.pi / 6 * 125 / 2
    assert w.shape == y.shape and w.dtype == np.float32
    assert w[0, 0, 1, 1, 1] == pytest.approx(10.0)
    assert w[0, 0, 3, 5, 5] == pytest.approx(ref / 32, rel=1e-5)
    assert w[1, 0, 2, 2, 2] == pytest.approx(ref / 4, rel=1e-5) and w[1, 0, 4, 8, 8] == pytest.approx(ref / 4, rel=1e-5)
    assert np.all(w[y == 0] == 1.0)
    # a CMB larger than the reference keeps weight 1
    big = np.zeros((8, 12, 12), np.uint8)
    big[:, 2:10, 2:10] = 1
    assert np.all(instance_balance_weights(big, (1.0, 1.0, 2.0)) == 1.0)


def test_instance_balance_brings_a_missed_small_cmb_closer_to_a_missed_large_one():
    target = torch.zeros(1, 1, 6, 12, 12, dtype=torch.long)
    target[0, 0, 1, 1, 1] = 1                    # small CMB, 1 voxel
    target[0, 0, 3:5, 4:8, 4:8] = 1              # large CMB, 32 voxels
    perfect = torch.cat([(1 - target) * 20.0, target * 20.0], dim=1).float()
    miss_small, miss_large = perfect.clone(), perfect.clone()
    miss_small[0, :, 1, 1, 1] = torch.tensor([20.0, 0.0])
    miss_large[0, :, 3:5, 4:8, 4:8] = torch.tensor([20.0, 0.0])[:, None, None, None]
    w = torch.from_numpy(instance_balance_weights(target.numpy(), (1.0, 1.0, 2.0)))
    loss = FocalTverskyCELoss()
    plain = [float(loss(m, target)) for m in (miss_small, miss_large)]
    balanced = [float(loss(m, target, weight=w)) for m in (miss_small, miss_large)]
    # measured: plain 0.040 vs 2.06 (51 x), balanced 0.342 vs 1.41 (4.1 x)
    assert balanced[0] > 5 * plain[0]
    assert plain[1] / plain[0] > 40 and balanced[1] / balanced[0] < 5


def test_training_with_instance_balance_runs(tmp_path):
    import yaml

    from training.train import main

    cfg = yaml.safe_load(_tiny_config(tmp_path, steps=2).read_text(encoding="utf-8"))
    cfg.update({"instance_balance": {"ref_diameter_mm": 5.0, "max_weight": 10.0}, "val_every": 100})
    path = tmp_path / "balanced.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    main(["--config", str(path)])
    rows = (tmp_path / "run" / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and all(np.isfinite(float(r.split(",")[1])) for r in rows[1:])


def _case(shape=(20, 40, 40), centre=(10, 20, 20)):
    img = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    cmb = np.zeros(shape, np.uint8)
    k, j, i = centre
    cmb[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 1
    img[cmb > 0] = -3
    mimic = np.zeros(shape, np.uint8)
    mimic[2:18, 5, 5] = 1
    return {"image": img, "cmb": cmb, "brain": np.ones(shape, bool), "mimic": mimic}


def test_cmb_patches_contain_the_cmb_at_random_positions():
    case = _case()
    rng = np.random.default_rng(1)
    positions = set()
    for _ in range(30):
        x, y, kind = sample_patch(case, (8, 16, 16), rng, "cmb")
        assert kind == "cmb" and x.shape == (8, 16, 16) and y.shape == (8, 16, 16)
        assert y.sum() > 0
        positions.add(tuple(np.argwhere(y)[0]))
        assert np.all(x[y > 0] == -3)
    assert len(positions) > 5                               # shifted, not always centred
    x, y, kind = sample_patch(case, (8, 16, 16), rng, "mimic")
    assert kind == "mimic"
    # a volume smaller than the patch is padded with its minimum
    x, y, _ = sample_patch(case, (32, 64, 64), rng, "background")
    assert x.shape == (32, 64, 64) and x.min() == pytest.approx(case["image"].min())
    xa, ya = augment(x, y, rng)
    assert xa.shape == x.shape and ya.sum() == y.sum()


def _write_pair(img_path, mask_path):
    a = np.random.default_rng(0).uniform(50, 100, (12, 24, 24)).astype(np.float32)
    m = np.zeros(a.shape, np.uint8)
    m[6, 10:12, 10:12] = 1
    a[m > 0] = 5
    write_volume(Volume(a, (1.0, 1.0, 2.0)), img_path)
    write_volume(Volume(m, (1.0, 1.0, 2.0)), mask_path)


def test_dataset_layouts(tmp_path):
    valdo = tmp_path / "valdo" / "sub-101"
    valdo.mkdir(parents=True)
    _write_pair(valdo / "sub-101_space-T2S_desc-masked_T2S.nii.gz", valdo / "sub-101_space-T2S_CMB.nii.gz")
    pairs = valdo_pairs(tmp_path / "valdo")
    assert [(p[0].name, p[1].name) for p in pairs] == [("sub-101_space-T2S_desc-masked_T2S.nii.gz",
                                                       "sub-101_space-T2S_CMB.nii.gz")]
    root = tmp_path / "export"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "derivatives" / "cmb-annotations" / "sub-01" / "anat").mkdir(parents=True)
    _write_pair(root / "sub-01" / "anat" / "sub-01_T2starw.nii.gz",
                root / "derivatives" / "cmb-annotations" / "sub-01" / "anat" / "sub-01_desc-cmb_dseg.nii.gz")
    pairs = annotator_pairs(root)
    assert len(pairs) == 1 and pairs[0][0].name == "sub-01_T2starw.nii.gz"
    assert find_pairs(root) == pairs and find_pairs(tmp_path / "valdo") == valdo_pairs(tmp_path / "valdo")
    arrays = preprocess_pair(*pairs[0], spacing=(1.0, 1.0, 2.0))
    assert arrays["cmb"].max() == 1 and arrays["image"].shape == arrays["cmb"].shape


def _tiny_cache(folder: Path, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = _case(centre=(10, 15 + 3 * i, 20))
        np.savez_compressed(folder / f"case_{i}.npz", image=c["image"].astype(np.float16), cmb=c["cmb"],
                            brain=c["brain"], mimic=c["mimic"])


def _tiny_config(tmp_path, steps=3):
    import yaml

    _tiny_cache(tmp_path / "cache" / "train")
    _tiny_cache(tmp_path / "cache" / "val", 1)
    cfg = {"out": str(tmp_path / "run"), "threads": 1, "spacing_mm": [1.0, 1.0, 2.0],
           "patch_size": [16, 16, 8], "inference_patch_size": [32, 32, 16], "batch_size": 2,
           "max_steps": steps, "network": {"channels": [4, 8], "strides": [2]},
           "log_every": 1, "checkpoint_every": 2, "val_every": 3, "val_cases": 1, "refresh_every": 1,
           "keep_every": 2, "sampling": {"cmb": 0.3, "insert": 0.4, "mimic": 0.1, "background": 0.2},
           "data": {"train_dirs": [str(tmp_path / "cache" / "train")],
                    "val_dirs": [str(tmp_path / "cache" / "val")]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_train_resume_export_and_load(tmp_path):
    from CMBLib.detection.model_io import load_model
    from training.export_model import export
    from training.train import main

    cfg = _tiny_config(tmp_path)
    main(["--config", str(cfg)])
    run = tmp_path / "run"
    assert (run / "checkpoint.pt").exists() and (run / "best.pt").exists()
    rows = (run / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 4
    assert "threshold" in (run / "val_log.csv").read_text(encoding="utf-8").splitlines()[0]
    main(["--config", str(cfg), "--resume", "--max-steps", "5"])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5
    kept = sorted(p.name for p in run.glob("checkpoint_*.pt"))     # keep_every: 2
    assert kept == ["checkpoint_000002.pt", "checkpoint_000004.pt"]
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["steps"] == 5
    folder = export(run / "checkpoint.pt", tmp_path / "model", name="tiny", version="0.0.1", threshold=0.7)
    net, meta = load_model(folder, device="cpu")
    assert meta["threshold"] == 0.7 and meta["patch_size"] == [16, 16, 8]
    assert meta["inference_patch_size"] == [32, 32, 16] and meta["spacing_mm"] == [1, 1, 2]
    x = torch.zeros(1, 1, 8, 16, 16)
    with torch.no_grad():
        ref = __import__("CMBLib.detection.network", fromlist=["build_network"]).build_network(meta["network"])
        ref.load_state_dict(state["model"])
        ref.eval()
        assert torch.allclose(net(x), ref(x), atol=1e-6)
    # the command line: flip averaging and the bundled model's location filter (zones by position)
    from CMBLib.detection.model_io import MODELS_DIR
    from training.export_model import main as export_main

    export_main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "model2"), "--flip-average",
                 "--location-filter-from", str(MODELS_DIR / "cmb-default")])
    _, meta2 = load_model(tmp_path / "model2", device="cpu")
    bundled = json.loads((MODELS_DIR / "cmb-default" / "model.json").read_text(encoding="utf-8"))
    assert meta2["flip_average"] is True and meta2["location_filter"] == bundled["location_filter"]
    assert "second_stage" not in meta2
    with pytest.raises(SystemExit, match="has no location_filter"):
        export_main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "model3"),
                     "--location-filter-from", str(folder)])


def test_case_store_refresh_picks_up_new_files(tmp_path):
    _tiny_cache(tmp_path / "c", 1)
    store = CaseStore([tmp_path / "c"])
    assert len(store) == 1
    _tiny_cache(tmp_path / "c", 2)
    assert store.refresh() == 2
    case = store.load(1)
    assert case["image"].dtype == np.float32 and len(case["indices"]["cmb"]) == 27


def test_case_store_refuses_a_cache_made_for_another_model_grid(tmp_path):
    """A cache of 1 x 1 x 2 mm cases must not feed a 0.5 x 0.5 x 2 mm model: the patches and the
    CMBs inserted on the fly (sized by the config's spacing) would be at the wrong scale."""
    folder = tmp_path / "c"
    folder.mkdir()
    shape = (8, 16, 16)
    for name, sp in (("a", [1.0, 1.0, 2.0]), ("b", [0.5, 0.5, 2.0])):
        np.savez_compressed(folder / f"{name}.npz", image=np.zeros(shape, np.float16), cmb=np.zeros(shape, np.uint8))
        (folder / f"{name}.json").write_text(json.dumps({"grid": {"spacing": sp}}))
    store = CaseStore([folder], spacing=[1.0, 1.0, 2.0])
    assert store.load(0)["name"] == "a"
    with pytest.raises(CMBError, match=r"b.npz is on a 0.5 x 0.5 x 2 mm grid, but the model grid .* is 1 x 1 x 2 mm"):
        store.load(1)
    assert CaseStore([folder]).load(1)["name"] == "b"          # no spacing given: not checked


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path):
    cfg = _tiny_config(tmp_path, steps=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "training.train", "--config", str(cfg)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "world size 2" in out.stdout
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 2


@pytest.mark.slow
def test_ddp_with_a_deadline_stops_all_ranks_at_the_same_step(tmp_path):
    """--max-minutes under DDP: rank 0 owns the clock and the stop decision.  With per-rank
    deadlines the ranks left the loop at different steps and one hung in all-reduce."""
    cfg = _tiny_config(tmp_path, steps=100000)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           "-m", "training.train", "--config", str(cfg), "--max-minutes", "0.1"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"]
    assert 0 < step < 100000
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == step


def test_unknown_config_keys_are_refused_by_name():
    from training.train import effective_config

    assert effective_config({"max_steps": 7})["max_steps"] == 7
    with pytest.raises(SystemExit, match="'max_step'"):
        effective_config({"max_step": 7})
    with pytest.raises(SystemExit, match="'data.train_dir'"):
        effective_config({"data": {"train_dir": ["x"]}})
    assert effective_config({"network": {"channels": [4, 8], "dropout": 0.1}})["network"]["dropout"] == 0.1


def test_training_outputs_are_not_overwritten(tmp_path):
    from training.average_checkpoints import average
    from training.train import main

    cfg = _tiny_config(tmp_path, steps=1)
    main(["--config", str(cfg)])
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["--config", str(cfg)])
    ck = tmp_path / "run" / "checkpoint.pt"
    (tmp_path / "avg.pt").write_bytes(b"keep me")
    with pytest.raises(SystemExit, match="not overwritten"):
        average([ck, ck], tmp_path / "avg.pt")
    assert (tmp_path / "avg.pt").read_bytes() == b"keep me"
    average([ck, ck], tmp_path / "avg.pt", overwrite=True)
    assert torch.load(tmp_path / "avg.pt", weights_only=False)["step"] == 1


def test_average_checkpoints_means_floats_keeps_last_integer_buffers(tmp_path):
    from training.average_checkpoints import average

    def ck(name, w, n):
        p = tmp_path / name
        torch.save({"model": {"w": torch.tensor(w), "bn.num_batches_tracked": torch.tensor(n)},
                    "config": {"c": name}, "step": n}, p)
        return p

    a, b = ck("a.pt", [0.0, 2.0], 3), ck("b.pt", [2.0, 4.0], 5)
    st = average([a, b], tmp_path / "swa.pt")
    loaded = torch.load(tmp_path / "swa.pt", weights_only=False)
    assert torch.equal(loaded["model"]["w"], torch.tensor([1.0, 3.0]))
    assert int(loaded["model"]["bn.num_batches_tracked"]) == 5 and loaded["config"] == {"c": "b.pt"}
    assert st["averaged_from"] == ["a.pt (step 3)", "b.pt (step 5)"]
    torch.save({"model": {"other": torch.zeros(2)}, "config": {}}, tmp_path / "c.pt")
    with pytest.raises(SystemExit, match="different network"):
        average([a, tmp_path / "c.pt"], tmp_path / "x.pt")


def test_average_checkpoints_can_re_estimate_batch_norm_statistics(tmp_path):
    from training.average_checkpoints import average
    from training.train import main

    main(["--config", str(_tiny_config(tmp_path, steps=4))])
    run = tmp_path / "run"
    cks = [run / "checkpoint_000002.pt", run / "checkpoint_000004.pt"]
    plain = average(cks, tmp_path / "swa.pt")["model"]
    bn = average(cks, tmp_path / "swa_bn.pt", bn_batches=3)["model"]
    again = average(cks, tmp_path / "swa_bn2.pt", bn_batches=3)["model"]
    stats = [k for k in bn if k.endswith("running_mean")]
    weights = [k for k in bn if k.endswith(".weight") or k.endswith(".bias")]
    assert stats and weights
    assert all(torch.equal(bn[k], plain[k]) for k in weights)          # weights: the mean, untouched
    assert any(not torch.allclose(bn[k], plain[k]) for k in stats)      # statistics: re-estimated
    assert all(int(v) == 3 for k, v in bn.items() if k.endswith("num_batches_tracked"))
    assert all(torch.equal(bn[k], again[k]) for k in bn)                # same batches, same result
    assert torch.load(tmp_path / "swa_bn.pt", weights_only=False)["bn_batches"] == 3


def test_insert_patches_carry_fresh_cmbs(tmp_path):
    import random

    from training.train import effective_config, make_batch

    (tmp_path / "c").mkdir()
    shape = (20, 40, 40)                                    # flat brain, no cached CMB
    np.savez_compressed(tmp_path / "c" / "flat.npz", image=np.zeros(shape, np.float16),
                        cmb=np.zeros(shape, np.uint8), brain=np.ones(shape, bool), mimic=np.zeros(shape, np.uint8))
    store = CaseStore([tmp_path / "c"])
    cfg = effective_config({"patch_size": [16, 16, 8], "batch_size": 6, "sampling": {"insert": 1.0},
                            "insertion": {"n_cmbs": [1, 1]}, "augment": {"intensity": 0, "noise": 0}})
    x, y, kinds = make_batch(store, cfg, np.random.default_rng(0), random.Random(0))
    assert x.shape == (6, 1, 8, 16, 16) and kinds == ["insert"] * 6   # sampling replaced, not merged
    for b in range(6):
        assert y[b].sum() > 0                              # every patch has a labelled CMB
        # a dark dip: labelled voxels have >= half the peak attenuation (peak >= min_peak 0.2)
        assert x[b].max() <= 1e-6 and x[b][y[b] > 0].max() < -0.05
