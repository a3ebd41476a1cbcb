"""Bundled detection models: save, verify and load without executing pickled code.

A model is a folder ``CMBLib/models/<name>/`` (or any folder given by path) holding

* ``weights.npz`` -- the network's ``state_dict`` as plain numpy arrays, one per key.
  It is read with ``np.load(..., allow_pickle=False)``: loading never runs pickled code.
* ``model.json`` -- metadata: ``name``, ``version``, ``sha256`` (of ``weights.npz``),
  ``network`` (the params for `CMBLib.detection.network.build_network`),
  ``spacing_mm`` (model grid, i, j, k), ``polarity`` ("dark" on SWI/T2*, "bright" on QSM),
  ``patch_size`` (voxels, i, j, k), ``threshold``, ``min_diameter_mm``,
  ``max_diameter_mm``, ``training_data``, ``metrics``, ``intended_input``.

The SHA-256 of ``weights.npz`` is checked against ``model.json`` *before* the weights are
read; a mismatch is refused with a one-line CMBError.

Where models live: the bundled folder (`MODELS_DIR`, read-only) and the user's folder of
fine-tuned models (`user_models_dir`: ``--models-dir``, else ``$CMB_MODELS_DIR``, else
``~/.cmb/models``).  This module is the lower layer: it imports nothing of
`CMBLib.detection.registry`, which builds the user-facing list and messages on top of it.
"""
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import CMBError
from ..io import atomic_path, read_json, write_json_atomic

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "model.json"
ENV_VAR = "CMB_MODELS_DIR"                 # the user models folder, when --models-dir is not given
DEFAULT_USER_DIR = Path("~") / ".cmb" / "models"
# Preferred bundled model when several are present (first found wins).
DEFAULT_MODEL_NAMES = ("cmb-default",)

# Metadata fields a model.json must carry (the rest have defaults below).
REQUIRED_FIELDS = ("name", "version", "sha256", "network", "spacing_mm", "patch_size")
METADATA_DEFAULTS = {
    "polarity": "dark",
    "threshold": 0.5,
    "min_diameter_mm": 2.0,
    "max_diameter_mm": 10.0,
    "intensity": "robust z-score inside the brain mask",
    "training_data": "",
    "metrics": {},
    "intended_input": "SWI or T2*-GRE magnitude, 1.5T/3T",
}
# Other spellings accepted in model.json, mapped to the names above.
ALIASES = {
    "spacing_mm": ("target_spacing_mm", "input_spacing_mm", "spacing"),
    "patch_size": ("patch_size_ijk", "roi_size"),
    "network": ("network_params",),
}


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(network, metadata: dict, folder: Union[str, os.PathLike]) -> Path:
    """Write `network`'s state_dict as ``weights.npz`` and `metadata` (+ sha256) as ``model.json``.

    Returns the folder.  `metadata` needs at least name, version, network, spacing_mm and
    patch_size; missing optional fields get their defaults.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    with atomic_path(weights) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    meta = dict(METADATA_DEFAULTS)
    meta.update(metadata)
    for name, others in ALIASES.items():
        for other in others:
            if name not in meta and other in meta:
                meta[name] = meta.pop(other)
    meta["sha256"] = sha256_file(weights)
    missing = [f for f in REQUIRED_FIELDS if f not in meta]
    if missing:
        raise CMBError(f"model metadata lacks {', '.join(missing)}")
    write_json_atomic(folder / METADATA_FILE, meta)
    return folder


def list_models(models_dir: Union[str, os.PathLike, None] = None) -> list[dict]:
    """Metadata of every bundled model (folders with a model.json), sorted by name."""
    root = Path(models_dir) if models_dir else MODELS_DIR
    out = []
    if not root.is_dir():
        return out
    for sub in sorted(p for p in root.iterdir() if (p / METADATA_FILE).is_file()):
        try:
            meta = read_metadata(sub)
        except CMBError:
            continue
        meta["path"] = str(sub)
        out.append(meta)
    return out


def user_models_dir(models_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The user models folder: `models_dir`, else $CMB_MODELS_DIR, else ~/.cmb/models (not created)."""
    text = str(models_dir) if models_dir else os.environ.get(ENV_VAR, "").strip()
    return Path(text).expanduser() if text else DEFAULT_USER_DIR.expanduser()


def find_user_model(name: str, models_dir: Union[str, os.PathLike, None] = None) -> Optional[Path]:
    """Folder of the user model named `name` (model.json name or folder name), or None."""
    for meta in list_models(user_models_dir(models_dir)):
        if meta["name"] == name or Path(meta["path"]).name == name:
            return Path(meta["path"])
    return None


def default_model_name(models_dir: Union[str, os.PathLike, None] = None) -> str:
    """Name of the default bundled model; CMBError when none is bundled."""
    models = list_models(models_dir)
    if not models:
        raise CMBError("no bundled detection model is installed; pass --model PATH to a model folder")
    names = [m["name"] for m in models]
    for preferred in DEFAULT_MODEL_NAMES:
        if preferred in names:
            return preferred
    flagged = [m["name"] for m in models if m.get("default")]
    return flagged[0] if flagged else names[0]


def resolve_model_folder(name_or_path: Union[str, os.PathLike], models_dir=None) -> Path:
    """A model folder from a bundled model name, "default", a path (folder or model.json), or
    (when `models_dir` is None) the name of a user model (`find_user_model`)."""
    root = Path(models_dir) if models_dir else MODELS_DIR
    text = str(name_or_path)
    if text in ("", "default"):
        text = default_model_name(models_dir)
    path = Path(text).expanduser()
    if path.name == METADATA_FILE or path.name == WEIGHTS_FILE:
        path = path.parent
    if path.is_dir() and (path / METADATA_FILE).is_file():
        return path
    for meta in list_models(root):
        if meta["name"] == text or Path(meta["path"]).name == text:
            return Path(meta["path"])
    if models_dir is None:  # the user's fine-tuned models
        found = find_user_model(text)
        if found is not None:
            return found
    if path.exists():
        raise CMBError(f"{path}: not a model folder (needs {METADATA_FILE} and {WEIGHTS_FILE})")
    known = ", ".join(m["name"] for m in list_models(root)) or "none bundled"
    raise CMBError(f"model '{text}' not found (bundled models: {known})")


def read_metadata(folder: Union[str, os.PathLike]) -> dict:
    """Parse and check a model folder's model.json (no weights are read)."""
    path = Path(folder) / METADATA_FILE
    meta = read_json(path, "model metadata")
    if not isinstance(meta, dict):
        raise CMBError(f"{path}: model metadata must be a JSON object")
    for name, others in ALIASES.items():
        for other in others:
            if name not in meta and other in meta:
                meta[name] = meta[other]
    missing = [f for f in REQUIRED_FIELDS if f not in meta]
    if missing:
        raise CMBError(f"{path}: model metadata lacks {', '.join(missing)}")
    out = dict(METADATA_DEFAULTS)
    out.update(meta)
    return out


def load_weights(folder: Union[str, os.PathLike], expected_sha256: str) -> dict[str, np.ndarray]:
    """Check the SHA-256 of weights.npz, then read it as plain arrays (no pickle)."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CMBError(f"{path}: model weights missing")
    actual = sha256_file(path)
    if actual != str(expected_sha256).lower():
        raise CMBError(f"{path}: checksum mismatch (sha256 {actual[:12]}..., model.json says "
                       f"{str(expected_sha256)[:12]}...); the weights were changed or damaged, refusing to load")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.array(data[k]) for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CMBError(f"{path}: model weights are not plain numpy arrays ({str(exc)[:100]}); "
                       "refusing to load") from None


def load_model(name_or_path: Union[str, os.PathLike] = "default", device: str = "cpu",
               models_dir=None) -> tuple[object, dict]:
    """Load a model by bundled name, "default" or folder path -> (network in eval mode, metadata).

    The weights' checksum is verified before they are read; pickled or corrupt weights
    and state_dict mismatches are refused with a CMBError.
    """
    import torch

    from .network import build_network

    folder = resolve_model_folder(name_or_path, models_dir)
    meta = read_metadata(folder)
    arrays = load_weights(folder, meta["sha256"])
    try:
        network = build_network(dict(meta["network"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise CMBError(f"{folder}: network parameters in {METADATA_FILE} are invalid: {str(exc)[:120]}") from None
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise CMBError(f"{folder}: weights do not fit the network described in {METADATA_FILE}: "
                       f"{first[:140]}") from None
    network.to(device)
    network.eval()
    meta["path"] = str(folder)
    return network, meta
