"""The model folder a fine-tuning run writes: model.json, weights and the model card.

A rejected run writes the parent's weights file byte for byte (same SHA-256) and its
threshold; an accepted one the fine-tuned weights with the threshold chosen on
validation.  The folder is built under a temporary name beside `out` and renamed at the
end, so an interrupted run leaves no half-written model.
"""
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..errors import CMBError
from .finetune_gate import GATE_RULE, VERDICTS, fmt

COUNT_FIELDS = ("threshold", "tp", "fp", "fn", "sensitivity", "precision", "f1", "fp_per_scan")


def candidate_meta(parent_meta: dict) -> dict:
    """Metadata new weights run with (and are scored with): the parent's, without its second
    stage (a classifier of the parent's candidates); cut-offs the parent kept for running
    without it ("without_second_stage") become the top-level ones."""
    meta = {k: copy.deepcopy(v) for k, v in parent_meta.items() if k not in ("second_stage", "without_second_stage")}
    if isinstance(parent_meta.get("without_second_stage"), dict):
        meta.update(copy.deepcopy(parent_meta["without_second_stage"]))
    return meta


def _counts(row: Optional[dict]) -> Optional[dict]:
    return None if row is None else {k: row[k] for k in COUNT_FIELDS}


def model_metadata(parent_meta: dict, args, r: dict) -> dict:
    """model.json of the new folder: the parent's entries copied through (new weights: those of
    `candidate_meta`), then what changed.  `r`: the run's result (`finetune_run.finetune`)."""
    base = candidate_meta(parent_meta) if r["accepted"] else parent_meta
    meta = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("path", "sha256", "default")}
    stamp = time.strftime("%Y%m%d%H%M", time.gmtime())
    best = r.get("best") or {}
    test = r.get("test") or (None, None)
    mine_val = best["row"] if r["accepted"] else r["parent_shipped"]
    mine_test = test[1] if r["accepted"] else None
    metrics = {"rule": "valdo, 5 mm", "threshold": r["threshold"],
               "validation": {"n_cases": len(r["val"]), "n_cmbs": r["n_cmbs_val"], **_counts(mine_val)},
               "parent_validation": {"n_cases": len(r["val"]), **_counts(r["parent_val"])}}
    if mine_test is not None:
        metrics["test"] = {"n_cases": len(r["test_subjects"]), "n_cmbs": r["n_cmbs_test"], **_counts(mine_test)}
    meta.update({
        "name": args.name or Path(args.out).name,
        "version": f"{parent_meta.get('version', '0')}+ft.{stamp}",
        "threshold": r["threshold"],
        "parent": {"name": parent_meta.get("name"), "version": parent_meta.get("version"),
                   "sha256": r["parent_sha"], "path": r["parent_dir"]},
        "training_datasets": r["datasets"],
        "training_data": (f"{parent_meta.get('name')} {parent_meta.get('version')} fine-tuned on "
                          f"{sum(d['n_studies'] for d in r['datasets'])} annotated studies "
                          f"({r['n_cmbs_train']} CMBs in {len(r['train'])} fine-tuning subjects) of "
                          + ", ".join(d["path"] for d in r["datasets"])) if r["accepted"] else
        parent_meta.get("training_data", ""),
        "metrics": metrics,
        "finetune": {
            "outcome": r["outcome"], "accepted": r["accepted"], "verdict": r["verdict"],
            "confirmed": r["verdict"] == "confirmed", "steps": r["steps"], "wall_s": r["wall_s"],
            "minutes": args.minutes, "device": r["device"], "lr": args.lr, "batch_size": args.batch_size,
            "seed": args.seed, "val_fraction": args.val_fraction,
            "test_fraction": getattr(args, "test_fraction", 0.0),
            "accept_unconfirmed": bool(getattr(args, "accept_unconfirmed", False)), "positives": args.positives,
            "train_subjects": r["train"], "val_subjects": r["val"], "test_subjects": r["test_subjects"],
            "warnings": r["warnings"],
            "gate": {"rule": GATE_RULE, "verdict": r["verdict"], "identical_to_parent": r["identical"]},
            "validation": {"n_studies": len(r["val"]), "n_cmbs": r["n_cmbs_val"], "model": mine_val,
                           "parent_best": r["parent_val"], "parent_shipped": r["parent_shipped"],
                           "finetuned_best": best.get("row"), "finetuned_step": best.get("step")},
            "test": {"n_studies": len(r["test_subjects"]), "n_cmbs": r["n_cmbs_test"], "model": mine_test,
                     "parent": test[0], "finetuned": test[1]},
            "history": r["history"]},
    })
    return meta


def write_model_folder(network, meta: dict, parent_dir: Path, out: Path, card: str, overwrite: bool = False) -> Path:
    """Build the model folder under a temporary name beside `out`, then rename it into place.

    network: the weights to write, or None to copy the parent's weights file unchanged (its
    SHA-256 stays the parent's).  Files of the parent folder other than the weights,
    model.json and its card are copied through, except the parent's second-stage
    classifier when `meta` has none.
    """
    from ..io import honour_umask, write_json_atomic, write_text_atomic
    from .model_io import METADATA_FILE, WEIGHTS_FILE, read_metadata, save_model, sha256_file

    skip = {WEIGHTS_FILE, METADATA_FILE, "README.md"}
    parent_stage2 = read_metadata(parent_dir).get("second_stage") or {}
    if parent_stage2.get("file") and not meta.get("second_stage"):
        skip.add(parent_stage2["file"])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=str(out.parent)))
    try:
        for f in sorted(Path(parent_dir).iterdir()):
            if f.is_file() and f.name not in skip and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
        if network is None:
            shutil.copyfile(Path(parent_dir) / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
            write_json_atomic(tmp / METADATA_FILE, dict(meta, sha256=sha256_file(tmp / WEIGHTS_FILE)))
        else:
            save_model(network, meta, tmp)
        write_text_atomic(tmp / "README.md", card)
        for f in [*tmp.iterdir(), tmp]:  # temporary files are private; the model is shared like any file
            honour_umask(f)
        if out.exists():
            if not overwrite:
                raise CMBError(f"--out {out}: appeared while training; not overwritten")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _table(rows) -> list[str]:
    lines = ["| model | threshold | TP | FP | FN | sensitivity | precision | F1 | FP/scan |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows:
        if row is not None:
            lines.append(f"| {name} | {row['threshold']} | {row['tp']} | {row['fp']} | {row['fn']} | "
                         f"{fmt(row['sensitivity'])} | {fmt(row['precision'])} | {fmt(row['f1'])} | "
                         f"{row['fp_per_scan']:.2f} |")
    return lines


def model_card(meta: dict, r: dict) -> str:
    """README.md of the fine-tuned model: what, from what, both models' figures side by side."""
    ft = meta["finetune"]
    parent = meta["parent"]
    val, test = ft["validation"], ft["test"]
    lines = [f"# {meta['name']} {meta['version']} — model card", "",
             f"**What it is.** {parent['name']} {parent['version']} (sha256 `{parent['sha256']}`) fine-tuned on "
             f"this site's annotated studies with `python -m training.finetune` "
             f"({ft['steps']} steps, {ft['wall_s']:.0f} s on {ft['device']}, learning rate {ft['lr']:g}, "
             f"batch-norm statistics frozen).", "",
             f"**Outcome.** {ft['outcome']}.", "",
             f"**The gate** ({VERDICTS.get(ft['verdict'], ft['verdict'])}): {GATE_RULE}.", ""]
    for w in ft["warnings"]:
        lines += [f"> **Warning:** {w}.", ""]
    lines += ["**Training data.**", ""]
    for d in meta["training_datasets"]:
        lines.append(f"* `{d['path']}` ({d['layout']} layout): {d['n_studies']} studies, {d['n_cmbs']} CMBs; "
                     f"{d['n_train']} for fine-tuning, {d['n_val']} for validation, {d.get('n_test', 0)} for test")
    lines += ["", f"Fine-tuning subjects: {', '.join(ft['train_subjects'])}.  Validation subjects (never trained "
              f"on): {', '.join(ft['val_subjects'])}.  Test subjects (never trained or tuned on): "
              f"{', '.join(ft['test_subjects']) or 'none'}.  CMBs are the confirmed findings"
              + (" and the ones drawn by the rater and not yet reviewed" if ft["positives"] == "rater" else "")
              + "; rejected findings and mimic landmarks were sampled as hard negatives; detector proposals "
              "nobody reviewed were left out.", "",
              f"**Validation** ({val['n_studies']} studies, {val['n_cmbs']} CMBs; VALDO rule, 5 mm; the same "
              "steps as `cmb detect`; thresholds and the fine-tuned state were chosen on these studies, so "
              "these figures are optimistic):", ""]
    lines += _table([(f"this folder ({meta['name']})", val["model"]),
                     ("parent, threshold chosen on validation", val["parent_best"]),
                     ("parent as shipped", val["parent_shipped"]),
                     (f"fine-tuned, step {val['finetuned_step']}" + ("" if r["accepted"] else " (not kept)"),
                      val["finetuned_best"])])
    if test["parent"] is not None:
        lines += ["", f"**Held-out test** ({test['n_studies']} studies, {test['n_cmbs']} CMBs; no model was "
                  "trained or tuned on them; each model at its threshold chosen on validation):", ""]
        lines += _table([("fine-tuned" + ("" if r["accepted"] else " (not kept)"), test["finetuned"]),
                         ("parent", test["parent"])])
    lines += ["", "**Use.** `cmb detect --model <this folder or its name> IMAGE --out DIR`.  To revert, delete "
              "this folder; the bundled model was not changed.", ""]
    return "\n".join(lines)
