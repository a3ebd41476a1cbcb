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
"""
import os
from pathlib import Path
from typing import Optional, Union

from ..errors import CMBError

ENV_VAR = "CMB_MODELS_DIR"
DEFAULT_USER_DIR = Path("~") / ".cmb" / "models"
CARD_FILE = "README.md"


def user_models_dir(models_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The user models folder: `models_dir`, else $CMB_MODELS_DIR, else ~/.cmb/models (not created)."""
    text = str(models_dir) if models_dir else os.environ.get(ENV_VAR, "").strip()
    return Path(text).expanduser() if text else DEFAULT_USER_DIR.expanduser()


def _entry(meta: dict, source: str) -> dict:
    meta = dict(meta)
    meta["source"] = source
    card = Path(meta["path"]) / CARD_FILE
    meta["card"] = str(card) if card.is_file() else None
    return meta


def list_all_models(models_dir: Union[str, os.PathLike, None] = None) -> list[dict]:
    """Metadata of the bundled models, then the user's (key "source": "bundled" or "user")."""
    from .model_io import MODELS_DIR, list_models

    out = [_entry(m, "bundled") for m in list_models(MODELS_DIR)]
    user = user_models_dir(models_dir)
    if user.resolve() != MODELS_DIR.resolve():
        out += [_entry(m, "user") for m in list_models(user)]
    return out


def find_user_model(name: str, models_dir: Union[str, os.PathLike, None] = None) -> Optional[Path]:
    """Folder of the user model named `name` (model.json name or folder name), or None."""
    from .model_io import list_models

    for meta in list_models(user_models_dir(models_dir)):
        if meta["name"] == name or Path(meta["path"]).name == name:
            return Path(meta["path"])
    return None


def resolve(name_or_path: Union[str, os.PathLike] = "default",
            models_dir: Union[str, os.PathLike, None] = None) -> Path:
    """Model folder for a path, "default", a bundled name, or a user model's name."""
    from .model_io import resolve_model_folder

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
    val = ft.get("validation") or {}
    if val:
        def fig(row):
            if not row:
                return "n/a"
            f1 = row.get("f1")
            return (f"F1 {f1:.2f}" if isinstance(f1, float) else "F1 n/a") + \
                f", {row.get('fp_per_scan', 0):.2f} FP/scan at threshold {row.get('threshold')}"
        lines.append(f"validation ({val.get('n_studies')} studies, {val.get('n_cmbs')} CMBs): "
                     f"this model {fig(val.get('model'))}; parent {fig(val.get('parent_shipped'))}")
    if ft.get("outcome"):
        lines.append(f"outcome: {ft['outcome']}")
    for w in ft.get("warnings") or []:
        lines.append(f"warning: {w}")
    return lines
