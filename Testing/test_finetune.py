"""Fine-tuning on annotated studies (`python -m training.finetune`), the user models registry,
`cmb models` / `cmb detect --model` with a fine-tuned model, and bad input."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from detection_fixtures import tiny_model_folder  # noqa: E402

from CMBLib.cli import main as cmb  # noqa: E402
from CMBLib.detection import finetune as ft  # noqa: E402
from CMBLib.detection import registry  # noqa: E402
from CMBLib.detection.finetune_data import finding_role, load_dataset, split_subjects  # noqa: E402
from CMBLib.detection.model_io import MODELS_DIR  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.io import read_volume, write_volume  # noqa: E402
from CMBLib.synthesis.annotated_study import export_annotated_study  # noqa: E402
from CMBLib.synthesis.demo_study import make_demo_study  # noqa: E402

FAST = ["--max-steps", "2", "--val-rounds", "1", "--threads", "2", "--device", "cpu", "--quiet"]


def _bundled_digests():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(MODELS_DIR.rglob("*")) if p.is_file()}


def _export(dataset, seed, n_cmbs=4, statuses=None, **extra):
    img, mask, centres = make_demo_study(seed, n_cmbs)
    export_annotated_study(dataset, f"{seed:02d}", img, mask, statuses=statuses, **extra)
    return img, mask, centres


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three exported studies: 4 CMBs each (one left unreviewed by a rater in study 0), one
    rejected detector candidate, one mimic landmark and one unreviewed detector proposal."""
    root = tmp_path_factory.mktemp("ft") / "dataset"
    for seed in range(3):
        img, mask, c = make_demo_study(seed, 4)
        statuses = ["confirmed"] * 3 + (["unreviewed"] if seed == 0 else ["confirmed"])
        export_annotated_study(root, f"{seed:02d}", img, mask, statuses=statuses,
                               rejected_ras=[c[0] + np.array([14.0, 0, 0])],
                               mimics_ras=[(c[1] + np.array([0, 14.0, 0]), "vessel_flow_void")],
                               proposed_ras=[c[2] + np.array([0, -14.0, 0])])
    return root


@pytest.fixture(scope="module")
def tuned(dataset, tmp_path_factory):
    """One fast fine-tuning run (2 steps) with JSON progress; (model folder, JSON events, digests)."""
    import contextlib
    import io

    before = _bundled_digests()
    out = tmp_path_factory.mktemp("models") / "site-a"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = ft.main([str(dataset), "--out", str(out), "--minutes", "5", "--progress-json", "--val-fraction",
                      "0.34"] + FAST)
    assert rc == 0
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    return out, events, before


# --- what is a CMB --------------------------------------------------------------------------
def test_finding_roles():
    assert finding_role({"review_status": "confirmed", "source": "detector"}) == "cmb"
    assert finding_role({"review_status": "rejected", "source": "rater"}) == "negative"
    assert finding_role({"review_status": "unreviewed", "source": "rater"}) == "cmb"
    assert finding_role({"review_status": "unreviewed", "source": "rater"}, "confirmed") == "ignore"
    assert finding_role({"review_status": "proposed", "source": "detector"}) == "ignore"
    assert finding_role({"review_status": "unreviewed", "source": "detector"}) == "ignore"


def test_dataset_labels(dataset):
    layout, studies = load_dataset(dataset)
    assert layout == "annotator" and [s.subject for s in studies] == ["sub-00", "sub-01", "sub-02"]
    s0 = studies[0]
    # 4 CMBs (3 confirmed + 1 rater-drawn unreviewed); rejected + mimic -> 2 negatives; proposal ignored
    assert s0.counts == {"confirmed": 3, "rater_unreviewed": 1, "rejected": 1, "ignored": 1, "mimics": 1, "cmbs": 4}
    assert len(np.unique(s0.positives)) - 1 == 4 and s0.negatives_ras.shape == (2, 3)
    assert s0.ignore.any() and not (s0.ignore & (s0.positives > 0)).any()
    # the proposal's centre is ignored, its voxel is not a positive
    kji = np.rint(s0.image.ras_to_voxel(s0.ignore_ras[0])[::-1]).astype(int)
    assert s0.ignore[tuple(kji)] and s0.positives[tuple(kji)] == 0
    _, strict = load_dataset(dataset, positives="confirmed")
    assert strict[0].n_cmbs == 3 and strict[0].counts["ignored"] == 2


def test_split_by_subject_keeps_cmbs_on_both_sides(dataset):
    _, studies = load_dataset(dataset)
    for seed in range(5):
        train, val = split_subjects(studies, 0.34, seed)
        assert len(val) == 1 and len(train) == 2 and not set(train) & set(val)
        assert set(train + val) == {"sub-00", "sub-01", "sub-02"}
    assert split_subjects(studies, 0.34, 3) == split_subjects(studies, 0.34, 3)
    assert split_subjects(studies, 0.5, 0, fixed_val=["sub-01"])[1] == ["sub-01"]


def test_threshold_choice_and_comparison():
    rows = [{"threshold": 0.5, "tp": 4, "fp": 3, "fn": 0, "f1": 8 / 11, "fp_per_scan": 1.5},
            {"threshold": 0.7, "tp": 3, "fp": 0, "fn": 1, "f1": 6 / 7, "fp_per_scan": 0.0},
            {"threshold": 0.9, "tp": 3, "fp": 0, "fn": 1, "f1": 6 / 7, "fp_per_scan": 0.0}]
    assert ft.best_threshold(rows)["threshold"] == 0.9          # ties: fewer FP, then higher threshold
    assert ft.best_threshold(rows[:1] + rows[1:2], max_fp_per_scan=1.0)["threshold"] == 0.7
    assert ft.beats(rows[1], rows[0]) and not ft.beats(rows[0], rows[1])
    assert not ft.beats(rows[2], rows[1])                       # equal F1 and FP: not better
    assert ft.beats(dict(rows[0], f1=6 / 7, fp=2), dict(rows[0], f1=6 / 7, fp=3))


def test_masked_loss_ignores_weight_zero_voxels():
    import torch

    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 0] = 8.0                                  # confident background everywhere ...
    logits[:, 0, 0], logits[:, 1, 0] = 0.0, 8.0         # ... but a confident CMB on slice 0, which is background
    y = torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64)
    w = torch.ones(1, 1, 4, 4, 4)
    penalised = ft.masked_loss(logits, y, w)
    w[:, :, 0] = 0.0                                    # slice 0 unknown: no penalty left
    assert float(ft.masked_loss(logits, y, w)) < 0.01 < float(penalised)


# --- the end-to-end run ----------------------------------------------------------------------------
def test_finetune_writes_model_folder_and_detect_uses_it(tuned, tmp_path, dataset):
    out, events, before = tuned
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert {"model.json", "weights.npz", "README.md"} <= {p.name for p in out.iterdir()}
    assert meta["name"] == "site-a" and meta["parent"]["name"] == "cmb-default"
    bundled = json.loads((MODELS_DIR / "cmb-default" / "model.json").read_text(encoding="utf-8"))
    assert meta["parent"]["sha256"] == bundled["sha256"]
    ds = meta["training_datasets"][0]
    assert (ds["n_studies"], ds["n_train"], ds["n_val"], ds["n_cmbs"]) == (3, 2, 1, 12)
    assert 0 < meta["threshold"] < 1 and meta["finetune"]["steps"] == 2
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "parent as shipped" in card and "Warning:** validation is small (1 studies" in card
    # JSON progress protocol: start, parent validation, training, validation, done
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and "start" in kinds and kinds[-1] == "done"
    vals = [e for e in events if e["event"] == "val"]
    assert vals[0]["model"] == "parent" and vals[-1]["model"] == "finetuned" and vals[-1]["step"] == 2
    assert events[-1]["model_dir"] == str(out)
    assert not any(p.name.startswith(".site-a") for p in out.parent.iterdir())  # no temp / work folder left
    umask = os.umask(0)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in out.iterdir())  # shared like user files
    # detect with it, by folder
    img = tmp_path / "img.nii.gz"
    write_volume(make_demo_study(7, 3)[0], img)
    assert cmb(["detect", str(img), "--out", str(tmp_path / "det"), "--model", str(out)]) == 0
    res = json.loads((tmp_path / "det" / "img_cmb.json").read_text(encoding="utf-8"))
    assert json.dumps(res).count("site-a") >= 1
    # the bundled model is untouched
    assert _bundled_digests() == before


def test_registry_lists_and_resolves_user_models(tuned, tmp_path, monkeypatch, capsys):
    out, _, _ = tuned
    monkeypatch.setenv(registry.ENV_VAR, str(out.parent))
    assert registry.user_models_dir() == out.parent
    models = registry.list_all_models()
    assert [m["source"] for m in models][:1] == ["bundled"] and models[-1]["name"] == "site-a"
    assert registry.resolve("site-a") == out and registry.resolve("default").parent == MODELS_DIR
    assert cmb(["models"]) == 0
    text = capsys.readouterr().out
    assert "site-a" in text and "[user]" in text and "fine-tuned from cmb-default" in text
    with pytest.raises(CMBError, match="user models in"):
        registry.resolve("no-such-model")
    img = tmp_path / "img.nii.gz"
    write_volume(make_demo_study(8, 2)[0], img)
    monkeypatch.delenv(registry.ENV_VAR)
    assert cmb(["detect", str(img), "--out", str(tmp_path / "d"), "--model", "site-a",
                "--models-dir", str(out.parent)]) == 0


def test_existing_output_is_not_overwritten(tuned, dataset, capsys):
    out, _, _ = tuned
    stamp = (out / "model.json").read_bytes()
    assert ft.main([str(dataset), "--out", str(out)] + FAST) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
    assert (out / "model.json").read_bytes() == stamp


def test_interrupted_run_leaves_no_model_and_resumes(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m"
    real = ft.sample_batch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft, "sample_batch", flaky)
    parent = tiny_model_folder(tmp_path / "tiny", name="tiny")   # a tiny parent: fast
    args = [str(dataset), "--out", str(out), "--minutes", "5", "--max-steps", "3", "--val-rounds", "1",
            "--device", "cpu", "--progress-json", "--val-fraction", "0.34", "--init", str(parent)]
    assert ft.main(args) == 130
    assert not out.exists() and (tmp_path / ".m.finetune-work" / "checkpoint.pt").is_file()
    capsys.readouterr()
    monkeypatch.setattr(ft, "sample_batch", real)
    assert ft.main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["step"] for e in events if e["event"] == "resume"] == [1]
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["finetune"]["steps"] == 3
    assert not (tmp_path / ".m.finetune-work").exists()


# --- bad input -----------------------------------------------------------------------------------------
def _error(capsys, args) -> str:
    assert ft.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_not_a_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "not a CMB dataset" in _error(capsys, [str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    (tmp_path / "f.txt").write_text("x", encoding="utf-8")
    assert "not a folder" in _error(capsys, [str(tmp_path / "f.txt"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_study_without_image_and_mask_on_other_grid(dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    image = bad / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    kept = image.read_bytes()
    image.unlink()
    assert _error(capsys, [str(bad), "--out", str(tmp_path / "o")]).startswith(
        "finetune: error: sub-01: image ")
    image.write_bytes(kept)
    mask_path = bad / "derivatives" / "cmb_annotation" / "sub-02" / "anat" / "sub-02_desc-cmb_dseg.nii.gz"
    mask = read_volume(mask_path)
    write_volume(mask.__class__(mask.array, (1.0, 1.0, 1.0), mask.origin, mask.direction), mask_path)
    assert "sub-02: the CMB mask grid differs from the image" in _error(capsys, [str(bad), "--out",
                                                                                  str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_refuses_too_few_cmbs(tmp_path, capsys):
    for seed in range(2):
        _export(tmp_path / "few", seed, n_cmbs=1)
    msg = _error(capsys, [str(tmp_path / "few"), "--out", str(tmp_path / "o")])
    assert "only 2 confirmed or rater-drawn CMBs in 2 studies; fine-tuning needs at least 3" in msg
    one = tmp_path / "one"
    _export(one, 5, n_cmbs=4)
    assert "only 1 annotated subject" in _error(capsys, [str(one), "--out", str(tmp_path / "o")])


def test_user_models_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    assert registry.user_models_dir() == Path(os.path.expanduser("~/.cmb/models"))
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    assert registry.user_models_dir() == tmp_path
    assert registry.user_models_dir(tmp_path / "x") == tmp_path / "x"


def test_valdo_layout(tmp_path):
    for seed in range(2):
        img, mask, _ = make_demo_study(seed, 3)
        sub = tmp_path / "valdo" / f"sub-{seed:03d}"
        write_volume(img, sub / f"sub-{seed:03d}_space-T2S_desc-masked_T2S.nii.gz")
        write_volume(mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8)),
                     sub / f"sub-{seed:03d}_space-T2S_CMB.nii.gz")
    layout, studies = load_dataset(tmp_path / "valdo")
    assert layout == "valdo" and [s.subject for s in studies] == ["sub-000", "sub-001"]
    assert [s.n_cmbs for s in studies] == [3, 3] and not studies[0].ignore.any()


def test_new_weights_leave_out_the_parents_candidate_classifier(tmp_path):
    """The parent's second stage classifies the parent's candidates: a folder with new
    weights must not carry it (nor its file); with the parent's weights kept, it stays."""
    from types import SimpleNamespace

    from CMBLib.detection.model_io import load_model, read_metadata

    parent_dir = MODELS_DIR / "cmb-default"
    parent = dict(read_metadata(parent_dir), path=str(parent_dir))
    stage2_file = parent["second_stage"]["file"]
    args = SimpleNamespace(name="site-b", out=str(tmp_path / "site-b"), minutes=1, lr=1e-4, batch_size=2, seed=0,
                           val_fraction=0.3, positives=0.5)
    row = {"threshold": 0.5, "tp": 1, "fp": 0, "fn": 0, "sensitivity": 1.0, "precision": 1.0, "f1": 1.0,
           "fp_per_scan": 0.0}
    r = {"accepted": True, "outcome": "", "threshold": 0.5, "steps": 1, "wall_s": 1.0, "parent_rows": [row],
         "parent_shipped": row, "parent_best": row, "best": {"rows": [row]}, "history": [], "warnings": [],
         "datasets": [{"n_studies": 1, "path": "x"}], "train": ["a"], "val": ["b"], "n_cmbs_train": 1,
         "n_cmbs_val": 1, "device": "cpu", "parent_dir": str(parent_dir), "parent_sha": "0" * 64}
    net, _ = load_model(parent_dir, device="cpu")
    for accepted in (True, False):
        meta = ft.model_metadata(parent, args, dict(r, accepted=accepted))
        out = tmp_path / f"accepted-{accepted}"
        ft.write_model_folder(net, meta, parent_dir, out, "card")
        names = {p.name for p in out.iterdir()}
        assert ("second_stage" in meta) is (not accepted) and (stage2_file in names) is (not accepted)
        assert meta["location_filter"] == parent["location_filter"]     # the filter does not depend on weights
