"""The models a user can pick: bundled ones (read-only) plus their own fine-tuned ones.

* **Bundled** models live in ``CMBLib/models/<name>/`` inside the installed extension and
  are never written to.
* **User** models (made by ``python -m training.finetune``) live in a user models folder
  outside the extension: ``--models-dir DIR`` where a command offers it, else the
  environment variable ``CMB_MODELS_DIR``, else ``~/.cmb/models``.  One sub-folder per
  model, each with ``model.json``, ``weights.npz`` and a model card ``README.md``.
  Removing a model (or reverting to the bundled one) is deleting its folder.

`resolve` turns what a user types (a folder path, a bundled name, a user model's name or
folder name, or "default") into a model folder; bundled names win over user names.

Layers: this module builds on `model_io` (model folders, where they live, user-folder
lookup), which never imports this one (Testing/test_detection_import_graph.py).
"""
import os
from pathlib import Path
from typing import Union

from ..errors import CMBError
from . import model_io
from .model_io import find_user_model, list_models, resolve_model_folder, user_models_dir

ENV_VAR, DEFAULT_USER_DIR = model_io.ENV_VAR, model_io.DEFAULT_USER_DIR   # where the user models folder comes from
CARD_FILE = "README.md"


def _entry(meta: dict, source: str) -> dict:
    meta = dict(meta)
    meta["source"] = source
    card = Path(meta["path"]) / CARD_FILE
    meta["card"] = str(card) if card.is_file() else None
    return meta


def list_all_models(models_dir: Union[str, os.PathLike, None] = None) -> list[dict]:
    """Metadata of the bundled models, then the user's (key "source": "bundled" or "user")."""
    out = [_entry(m, "bundled") for m in list_models(model_io.MODELS_DIR)]
    user = user_models_dir(models_dir)
    if user.resolve() != model_io.MODELS_DIR.resolve():
        out += [_entry(m, "user") for m in list_models(user)]
    return out


def resolve(name_or_path: Union[str, os.PathLike] = "default",
            models_dir: Union[str, os.PathLike, None] = None) -> Path:
    """Model folder for a path, "default", a bundled name, or a user model's name."""
    try:
        return resolve_model_folder(name_or_path)
    except CMBError as exc:
        found = find_user_model(str(name_or_path), models_dir)
        if found is not None:
            return found
        users = [m["name"] for m in list_all_models(models_dir) if m["source"] == "user"]
        if users and "not found" in str(exc):
            raise CMBError(f"{exc}; user models in {user_models_dir(models_dir)}: {', '.join(users)}") from None
        raise


def card_summary(meta: dict) -> list[str]:
    """A few lines describing a fine-tuned model: parent, training data, validation figures."""
    lines = []
    ft = meta.get("finetune") or {}
    parent = meta.get("parent") or {}
    if parent:
        lines.append(f"fine-tuned from {parent.get('name')} {parent.get('version')} "
                     f"(sha256 {str(parent.get('sha256', ''))[:12]}...)")
    sets = meta.get("training_datasets") or []
    if sets:
        lines.append("trained on " + "; ".join(f"{d.get('path')} ({d.get('n_train', '?')} train + "
                                               f"{d.get('n_val', '?')} validation studies)" for d in sets))
    def fig(row):
        if not row:
            return "n/a"
        f1 = row.get("f1")
        return (f"F1 {f1:.2f}" if isinstance(f1, float) else "F1 n/a") + \
            f", {row.get('fp_per_scan', 0):.2f} FP/scan at threshold {row.get('threshold')}"

    val = ft.get("validation") or {}
    if val:   # the parent as the gate compared it: re-chosen threshold ("gate" present), else as shipped (older runs)
        parent_row = val.get("parent_best") if ft.get("gate") else val.get("parent_shipped")
        lines.append(f"validation ({val.get('n_studies')} studies, {val.get('n_cmbs')} CMBs): "
                     f"this model {fig(val.get('model'))}; parent {fig(parent_row)}")
    test = ft.get("test") or {}
    if test.get("parent"):
        lines.append(f"held-out test ({test.get('n_studies')} studies, {test.get('n_cmbs')} CMBs): "
                     f"fine-tuned {fig(test.get('finetuned'))}; parent {fig(test.get('parent'))}")
    if ft.get("outcome"):
        lines.append(f"outcome: {ft['outcome']}")
    for w in ft.get("warnings") or []:
        lines.append(f"warning: {w}")
    return lines
