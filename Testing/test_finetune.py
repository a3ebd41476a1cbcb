"""Fine-tuning on annotated studies (`python -m training.finetune`): the data, the gate (each
breakage it guards against has a test that fails), the run, the user models registry,
`cmb models` / `cmb detect --model` with a fine-tuned model, and bad input."""
import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from detection_fixtures import dark_spot_model, exact_brain_mask, phantom, tiny_model_folder  # noqa: E402

import CMBLib.location as location  # noqa: E402
from CMBLib.cli import main as cmb  # noqa: E402
from CMBLib.detection import finetune as ft  # noqa: E402
from CMBLib.detection import finetune_batches as batches  # noqa: E402
from CMBLib.detection import finetune_folder as folder  # noqa: E402
from CMBLib.detection import finetune_gate as gate  # noqa: E402
from CMBLib.detection import registry  # noqa: E402
from CMBLib.detection.finetune_data import finding_role, load_dataset, split_subjects  # noqa: E402
from CMBLib.detection.model_io import MODELS_DIR, sha256_file  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.io import read_volume, write_volume  # noqa: E402
from CMBLib.synthesis.annotated_study import export_annotated_study  # noqa: E402
from CMBLib.synthesis.demo_study import make_demo_study  # noqa: E402

FAST = ["--max-steps", "2", "--val-rounds", "1", "--threads", "2", "--device", "cpu", "--quiet"]
SPLIT = ["--val-fraction", "0.34", "--test-fraction", "0.34"]     # 3 subjects: 1 train, 1 validation, 1 test


def fake_location_step(monkeypatch, mni_of_point):
    """Replace the atlas registration behind the location filter (20 s a study) by
    `mni_of_point` (RAS -> MNI), for `cmb detect` and validation alike: the pipeline's own
    location step where it has one, else the atlas route (`locate_points`, `Locator`).
    Returns the number of records located, per call."""
    from CMBLib.detection import pipeline

    calls = []

    def found(points):
        points = np.asarray(points, float).reshape(-1, 3)
        calls.append(len(points))
        return [dict(zip(("mni_x", "mni_y", "mni_z"), map(float, mni_of_point(p)))) for p in points]

    if hasattr(pipeline, "_location_step"):
        def step(volume, labels, records, zones, location, polarity, brain, warnings, progress=None, cancel=None):
            return pipeline.suppress_in_zones(labels, records, found([r["centre_ras"] for r in records]), zones)

        monkeypatch.setattr(pipeline, "_location_step", step)
    else:
        class Atlas:
            def __init__(self, image, *args, **kwargs):
                pass

            def locate(self, points):
                return found(points)

        monkeypatch.setattr(location, "locate_points", lambda image, points, **k: found(points))
        monkeypatch.setattr(location, "Locator", Atlas)
    return calls


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
    """One fast fine-tuning run of the bundled model (2 steps) with JSON progress, the atlas
    registration faked; (model folder, JSON events, digests)."""
    before = _bundled_digests()
    out = tmp_path_factory.mktemp("models") / "site-a"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.MonkeyPatch.context() as mp:
        fake_location_step(mp, lambda p: (40.0, 0.0, 0.0))          # far from every zone
        rc = ft.main([str(dataset), "--out", str(out), "--minutes", "5", "--progress-json"] + SPLIT + FAST)
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


def test_split_by_subject_three_ways(dataset):
    _, studies = load_dataset(dataset)
    for seed in range(5):
        train, val, test = split_subjects(studies, 0.34, seed, test_fraction=0.34)
        assert len(train) == len(val) == len(test) == 1
        assert sorted(train + val + test) == ["sub-00", "sub-01", "sub-02"]        # each on one side only
    assert split_subjects(studies, 0.34, 3, test_fraction=0.34) == split_subjects(studies, 0.34, 3, test_fraction=0.34)
    assert split_subjects(studies, 0.3, 0, fixed=(["sub-01"], ["sub-00"]), test_fraction=0.3) == (
        ["sub-02"], ["sub-01"], ["sub-00"])
    # no test split without a subject to spare: the run then cannot judge
    assert split_subjects(studies, 0.34, 0)[2] == []
    assert split_subjects(studies[:2], 0.3, 0, test_fraction=0.3)[2] == []
    with pytest.raises(CMBError, match="--test-fraction"):
        split_subjects(studies, 0.5, 0, test_fraction=0.5)


def test_split_gives_each_held_out_side_a_cmb(tmp_path):
    for seed in range(4):
        _export(tmp_path / "d", seed, n_cmbs=3 if seed < 3 else 0)
    _, studies = load_dataset(tmp_path / "d")
    assert [s.n_cmbs for s in studies] == [3, 3, 3, 0]
    for seed in range(6):
        train, val, test = split_subjects(studies, 0.25, seed, test_fraction=0.25)
        cmbs = {s.subject: s.n_cmbs for s in studies}
        assert all(sum(cmbs[s] for s in side) for side in (train, val, test)), (train, val, test)


def test_threshold_rule_and_comparison():
    rows = [{"threshold": 0.5, "tp": 4, "fp": 3, "fn": 0, "f1": 8 / 11, "fp_per_scan": 1.5},
            {"threshold": 0.7, "tp": 3, "fp": 0, "fn": 1, "f1": 6 / 7, "fp_per_scan": 0.0},
            {"threshold": 0.9, "tp": 3, "fp": 0, "fn": 1, "f1": 6 / 7, "fp_per_scan": 0.0}]
    assert gate.choose_threshold(rows)["threshold"] == 0.9          # ties: fewer FP, then higher threshold
    assert gate.choose_threshold(rows[:2])["threshold"] == 0.7
    assert gate.beats(rows[1], rows[0]) and not gate.beats(rows[0], rows[1])
    assert not gate.beats(rows[2], rows[1])                       # equal F1 and FP: not better
    assert gate.beats(dict(rows[0], f1=6 / 7, fp=2), dict(rows[0], f1=6 / 7, fp=3))


def test_gate_decisions():
    def row(f1, fp=1):
        return {"threshold": 0.5, "f1": f1, "fp": fp, "fp_per_scan": fp}

    def never():
        raise AssertionError("confirmation asked for although validation already decided")

    both = (row(0.5), row(0.6))
    assert gate.decide(row(0.5), None, False, never)["reason"] == "no_steps"
    assert gate.decide(row(0.5), row(0.9), True, never) == {"accepted": False, "reason": "identical", "test": None}
    assert gate.decide(row(0.5), row(0.5), False, never)["reason"] == "not_better"
    assert gate.decide(row(0.5), row(0.6), False, lambda: None) == {"accepted": False, "reason": "not_enough_studies",
                                                                     "test": None}
    assert gate.decide(row(0.5), row(0.6), False, lambda: None, accept_unconfirmed=True)["accepted"]
    assert gate.decide(row(0.5), row(0.6), False, lambda: (row(0.6), row(0.5)))["reason"] == "not_confirmed"
    assert gate.decide(row(0.5), row(0.6), False, lambda: (row(0.6), row(0.6)))["reason"] == "not_confirmed"
    assert gate.decide(row(0.5), row(0.6), False, lambda: both) == {"accepted": True, "reason": "confirmed",
                                                                     "test": both}
    assert set(gate.VERDICTS) == {"confirmed", "unconfirmed", "no_steps", "identical", "not_better",
                                  "not_enough_studies", "not_confirmed"}


def test_same_weights_compares_every_tensor():
    import torch

    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    assert gate.same_weights(a, {k: v.clone() for k, v in a.items()})
    assert not gate.same_weights(a, {"w": torch.zeros(3), "b": torch.tensor([1.0, 1.0 + 1e-7])})
    assert not gate.same_weights(a, {"w": torch.zeros(3)})


def test_masked_loss_ignores_weight_zero_voxels():
    import torch

    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 0] = 8.0                                  # confident background everywhere ...
    logits[:, 0, 0], logits[:, 1, 0] = 0.0, 8.0         # ... but a confident CMB on slice 0, which is background
    y = torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64)
    w = torch.ones(1, 1, 4, 4, 4)
    penalised = batches.masked_loss(logits, y, w)
    w[:, :, 0] = 0.0                                    # slice 0 unknown: no penalty left
    assert float(batches.masked_loss(logits, y, w)) < 0.01 < float(penalised)


# --- the gate, end to end: a tiny parent, scores from a table (no inference) ---------------------------
def _scores(tp, fp, fn, at_best=None, best=None):
    """Counts per threshold: (tp, fp, fn), or `at_best` at threshold `best`."""
    return lambda t: at_best if best is not None and abs(t - best) < 1e-9 else (tp, fp, fn)


PARENT = _scores(2, 2, 2, at_best=(2, 1, 2), best=0.99)   # F1 0.500 as shipped (0.5), 0.571 at its best (0.99)
WORSE = _scores(1, 3, 3)                                  # F1 0.250 at every threshold
BETTER = _scores(2, 2, 2, at_best=(3, 0, 1), best=0.8)    # F1 0.857 at 0.8


@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("parent") / "tiny", name="tiny")   # threshold 0.5


@pytest.fixture(scope="module")
def sides(dataset):
    """Subject -> "train" / "val" / "test" as the run splits `dataset` (seed 0, SPLIT)."""
    train, val, test = split_subjects(load_dataset(dataset)[1], 0.34, 0, test_fraction=0.34)
    return {**{s: "train" for s in train}, **{s: "val" for s in val}, **{s: "test" for s in test}}


def _gate_run(monkeypatch, capsys, tmp_path, dataset, parent, sides, val, test, *extra):
    """Fine-tune `parent` on `dataset` for 2 steps with `gate.score` replaced by tables: on each
    side, the first model scored is the parent (its table val["parent"] / test["parent"]),
    later ones are fine-tuned ("finetuned").  Returns (folder, model.json, events, score
    calls (model, side, thresholds), subjects trained on)."""
    calls, trained = [], set()

    def fake_score(network, meta, cases, device="cpu", thresholds=gate.THRESHOLDS, warnings=None):
        side = {sides[c["subject"]] for c in cases}
        assert len(side) == 1 and side != {"train"}, f"scored on {sorted(c['subject'] for c in cases)}: {side}"
        side = side.pop()
        who = "finetuned" if any(c[1] == side for c in calls) else "parent"
        calls.append((who, side, tuple(thresholds)))
        table = (val if side == "val" else test)[who]
        rows = []
        for t in thresholds:
            tp, fp, fn = table(t)
            rows.append({"threshold": float(t), "tp": tp, "fp": fp, "fn": fn, "sensitivity": tp / (tp + fn),
                         "precision": tp / (tp + fp), "f1": 2 * tp / (2 * tp + fp + fn), "fp_per_scan": fp})
        return rows

    real = batches.sample_batch

    def spy(cases, *a, **k):
        trained.update(c["subject"] for c in cases)
        return real(cases, *a, **k)

    monkeypatch.setattr(gate, "score", fake_score)
    monkeypatch.setattr(batches, "sample_batch", spy)
    out = tmp_path / "m"
    capsys.readouterr()
    assert ft.main([str(dataset), "--out", str(out), "--init", str(parent), "--progress-json"] + SPLIT + FAST
                   + list(extra)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    return out, meta, events, calls, trained


def _kept_parent(out, meta, parent) -> bool:
    """The folder holds the parent's weights file byte for byte and its threshold."""
    return (sha256_file(out / "weights.npz") == sha256_file(parent / "weights.npz") == meta["sha256"]
            and meta["threshold"] == 0.5 and not meta["finetune"]["accepted"])


def test_gate_compares_with_the_parent_at_its_rechosen_threshold(monkeypatch, capsys, tmp_path, dataset,
                                                                tiny_parent, sides):
    """The issue's case: the fine-tuned model scores exactly as the parent; only its threshold
    moved (0.5 -> 0.99).  Against the parent as shipped it would look better; it is not."""
    out, meta, events, calls, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                            {"parent": PARENT, "finetuned": PARENT}, {"parent": PARENT,
                                                                                      "finetuned": PARENT})
    run = meta["finetune"]
    assert run["verdict"] == "not_better" and _kept_parent(out, meta, tiny_parent)
    assert run["validation"]["parent_best"]["threshold"] == 0.99 == run["validation"]["finetuned_best"]["threshold"]
    assert run["validation"]["parent_shipped"]["threshold"] == 0.5
    parent_event = next(e for e in events if e["event"] == "val" and e["model"] == "parent")
    assert parent_event["threshold"] == 0.99 and parent_event["shipped_threshold"] == 0.5
    assert [c[1] for c in calls] == ["val", "val"]                   # decided on validation: no test scoring


def test_a_worse_run_keeps_the_parents_weights_unchanged(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    out, meta, events, _, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                        {"parent": PARENT, "finetuned": WORSE}, {"parent": PARENT, "finetuned": WORSE})
    assert meta["finetune"]["verdict"] == "not_better" and _kept_parent(out, meta, tiny_parent)
    assert events[-1]["accepted"] is False and events[-1]["threshold"] == 0.5
    assert "parent's weights and threshold unchanged" in (out / "README.md").read_text(encoding="utf-8")


def test_better_on_validation_only_is_not_kept(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    out, meta, events, calls, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                            {"parent": PARENT, "finetuned": BETTER},
                                            {"parent": PARENT, "finetuned": WORSE})
    assert meta["finetune"]["verdict"] == "not_confirmed" and _kept_parent(out, meta, tiny_parent)
    # on the test studies each model runs at its own threshold chosen on validation
    assert [c for c in calls if c[1] == "test"] == [("parent", "test", (0.99,)), ("finetuned", "test", (0.8,))]
    assert [(e["model"], e["threshold"]) for e in events if e["event"] == "test"] == [("parent", 0.99),
                                                                                       ("finetuned", 0.8)]


def test_a_confirmed_improvement_is_kept(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    out, meta, events, _, trained = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                              {"parent": PARENT, "finetuned": BETTER},
                                              {"parent": PARENT, "finetuned": BETTER})
    run = meta["finetune"]
    assert run["verdict"] == "confirmed" and run["accepted"] and meta["threshold"] == 0.8
    assert sha256_file(out / "weights.npz") != sha256_file(tiny_parent / "weights.npz")
    assert meta["metrics"]["test"]["f1"] == pytest.approx(6 / 7) and run["test"]["parent"]["threshold"] == 0.99
    assert events[-1]["accepted"] is True and events[-1]["verdict"] == "confirmed"


def test_no_study_is_on_two_sides(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    """Trained on the fine-tuning subjects only; validation and test scored on theirs only."""
    _, meta, _, calls, trained = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                           {"parent": PARENT, "finetuned": BETTER},
                                           {"parent": PARENT, "finetuned": BETTER})
    run = meta["finetune"]
    groups = [set(run["train_subjects"]), set(run["val_subjects"]), set(run["test_subjects"])]
    assert all(groups) and sum(len(g) for g in groups) == len(set.union(*groups)) == 3
    assert trained == groups[0] == {s for s, side in sides.items() if side == "train"}
    assert {c[1] for c in calls} == {"val", "test"}           # fake_score refuses any other mix of subjects


def test_lr_zero_is_never_kept(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    """Weights identical to the parent's are not "kept", even when the scores say better."""
    out, meta, events, _, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides,
                                        {"parent": PARENT, "finetuned": BETTER},
                                        {"parent": PARENT, "finetuned": BETTER}, "--lr", "0")
    run = meta["finetune"]
    assert run["verdict"] == "identical" and run["gate"]["identical_to_parent"] and _kept_parent(out, meta, tiny_parent)
    assert "identical to the parent's" in run["outcome"]


def test_not_enough_studies_to_judge(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides):
    tables = ({"parent": PARENT, "finetuned": BETTER}, {"parent": PARENT, "finetuned": BETTER})
    out, meta, events, calls, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides, *tables,
                                            "--test-fraction", "0")
    run = meta["finetune"]
    assert run["verdict"] == "not_enough_studies" and _kept_parent(out, meta, tiny_parent)
    assert run["outcome"].startswith("not enough studies to judge") and run["test_subjects"] == []
    assert any(e["event"] == "warning" and e["message"].startswith("not enough studies to judge") for e in events)
    # asked for: the unconfirmed weights are kept, and the card says so
    shutil.rmtree(out)
    out, meta, events, _, _ = _gate_run(monkeypatch, capsys, tmp_path, dataset, tiny_parent, sides, *tables,
                                        "--test-fraction", "0", "--accept-unconfirmed")
    assert meta["finetune"]["verdict"] == "unconfirmed" and meta["finetune"]["accepted"]
    assert "NOT CONFIRMED" in meta["finetune"]["outcome"] and meta["threshold"] == 0.8


def test_validation_runs_the_steps_of_cmb_detect(monkeypatch):
    """Scoring labels the study exactly as `cmb detect` does, location filter included."""
    from CMBLib.detection.pipeline import detect

    exact_brain_mask(monkeypatch)
    vol, centres = phantom([((30, 40, 10), 1.6), ((60, 55, 13), 3.5)])
    small = np.asarray(centres[0])
    # the small spot lies in the CSF between the thalami: the filter sets it aside
    calls = fake_location_step(monkeypatch, lambda p: (0.0, -20.0, 12.0) if np.linalg.norm(p - small) < 3
                               else (30.0, -20.0, 12.0))
    net, meta = dark_spot_model(location_filter={"zones": ["deep_midline_veins"]})
    ref = np.zeros(vol.array.shape, np.uint16)
    case = {"subject": "sub-x", "volume": vol, "ref": vol.with_array(ref), "ignore": np.zeros(ref.shape, bool),
            "polarity": "dark", "n_cmbs": 0}
    thresholds = (0.5, 0.9)
    labels = gate.case_labels(net, meta, case, thresholds)
    assert calls == [2, 2]                                       # validation ran the location step
    for t, mine in zip(thresholds, labels):
        res = detect(vol, (net, meta), device="cpu", threshold=t)
        assert len(res.suppressed) == 1 and np.array_equal(mine, np.asarray(res.mask.array))
    rows = gate.score(net, meta, [case], "cpu", thresholds)
    assert [r["fp"] for r in rows] == [1, 1]                     # two spots, one suppressed: one false positive


# --- the end-to-end run ----------------------------------------------------------------------------
def test_finetune_writes_model_folder_and_detect_uses_it(tuned, tmp_path, dataset):
    out, events, before = tuned
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert {"model.json", "weights.npz", "README.md"} <= {p.name for p in out.iterdir()}
    assert meta["name"] == "site-a" and meta["parent"]["name"] == "cmb-default"
    bundled = json.loads((MODELS_DIR / "cmb-default" / "model.json").read_text(encoding="utf-8"))
    assert meta["parent"]["sha256"] == bundled["sha256"]
    ds = meta["training_datasets"][0]
    assert (ds["n_studies"], ds["n_train"], ds["n_val"], ds["n_test"], ds["n_cmbs"]) == (3, 1, 1, 1, 12)
    run = meta["finetune"]
    assert 0 < meta["threshold"] < 1 and run["steps"] == 2 and run["verdict"] in gate.VERDICTS
    assert len(set(run["train_subjects"]) | set(run["val_subjects"]) | set(run["test_subjects"])) == 3
    if not run["accepted"]:                       # the parent's weights file, byte for byte
        assert sha256_file(out / "weights.npz") == meta["parent"]["sha256"] == meta["sha256"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "parent as shipped" in card and "Warning:** validation is small (1 studies" in card
    assert "parent, threshold chosen on validation" in card and "**The gate**" in card
    # JSON progress protocol: start, parent validation, training, validation, (test), done
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and "start" in kinds and kinds[-1] == "done"
    start = next(e for e in events if e["event"] == "start")
    assert (len(start["train"]), len(start["val"]), len(start["test"])) == (1, 1, 1)
    vals = [e for e in events if e["event"] == "val"]
    assert vals[0]["model"] == "parent" and vals[-1]["model"] == "finetuned" and vals[-1]["step"] == 2
    assert vals[0]["threshold"] == run["validation"]["parent_best"]["threshold"]       # re-chosen, not as shipped
    assert vals[0]["shipped_threshold"] == 0.7
    assert events[-1]["model_dir"] == str(out) and events[-1]["reason"] == gate.VERDICTS[run["verdict"]]
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
    real = batches.sample_batch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batches, "sample_batch", flaky)
    parent = tiny_model_folder(tmp_path / "tiny", name="tiny")   # a tiny parent: fast
    args = [str(dataset), "--out", str(out), "--minutes", "5", "--max-steps", "3", "--val-rounds", "1",
            "--device", "cpu", "--progress-json", "--init", str(parent)] + SPLIT
    assert ft.main(args) == 130
    assert not out.exists() and (tmp_path / ".m.finetune-work" / "checkpoint.pt").is_file()
    capsys.readouterr()
    monkeypatch.setattr(batches, "sample_batch", real)
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
                           val_fraction=0.3, test_fraction=0.3, positives="rater")
    row = {"threshold": 0.5, "tp": 1, "fp": 0, "fn": 0, "sensitivity": 1.0, "precision": 1.0, "f1": 1.0,
           "fp_per_scan": 0.0}
    r = {"accepted": True, "verdict": "confirmed", "outcome": "", "threshold": 0.5, "steps": 1, "wall_s": 1.0,
         "parent_rows": [row], "parent_shipped": row, "parent_val": row, "best": {"step": 1, "row": row},
         "test": (row, row), "identical": False, "history": [], "warnings": [],
         "datasets": [{"n_studies": 1, "path": "x", "layout": "annotator", "n_cmbs": 1, "n_train": 1, "n_val": 0}],
         "train": ["a"], "val": ["b"], "test_subjects": ["c"], "n_cmbs_train": 1, "n_cmbs_val": 1, "n_cmbs_test": 1,
         "device": "cpu", "parent_dir": str(parent_dir), "parent_sha": "0" * 64}
    net, _ = load_model(parent_dir, device="cpu")
    for accepted in (True, False):
        meta = folder.model_metadata(parent, args, dict(r, accepted=accepted))
        out = tmp_path / f"accepted-{accepted}"
        folder.write_model_folder(net if accepted else None, meta, parent_dir, out,
                                  folder.model_card(meta, dict(r, accepted=accepted)))
        names = {p.name for p in out.iterdir()}
        assert ("second_stage" in meta) is (not accepted) and (stage2_file in names) is (not accepted)
        assert meta["location_filter"] == parent["location_filter"]     # the filter does not depend on weights
        if not accepted:                                                # the parent's file, byte for byte
            assert sha256_file(out / "weights.npz") == parent["sha256"] == load_model(out)[1]["sha256"]
        assert ("test" in meta["metrics"]) is accepted and read_metadata(out)["threshold"] == 0.5
