"""Crash-safe autosave of a study's annotation state (scribbles, masks, document).

A session folder holds one sub-folder per volume, named by `volume_key` (a hash of the
grid and of a subsample of the voxels, so the same volume loaded again, from any path,
finds its session)::

    SESSIONS/<key>/annotation.json
    SESSIONS/<key>/scribbles.npz      (sparse: labelled voxels only, plus the grid)
    SESSIONS/<key>/masks.npz          (when masks were generated)
    SESSIONS/<key>/session.json       (volume name, time saved, key)

Label maps are stored sparse (index and label of each non-zero voxel), so an autosave
of a 512 x 512 x 300 study writes kilobytes, not a full volume.

The Slicer module saves incrementally (`save_segments`): one small file per finding and
layer, rewritten only when that finding's segment changed, plus the grid::

    SESSIONS/<key>/scribbles/<label>.npy   (N x 3 uint16 voxel indices [k, j, i])
    SESSIONS/<key>/masks/<label>.npy
    SESSIONS/<key>/grid.json               (shape, IJK-to-RAS)

Each file is replaced atomically and annotation.json is written last; `load` reads
either layout.

`save` writes a complete new folder beside the old one and swaps them with renames, so
a crash at any moment leaves either the previous or the new state, never a mixture.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from .document import now_utc, validate_document

SUBSAMPLE_VOXELS = 65536


def default_session_root() -> Path:
    """~/.cmb_sessions, or $CMB_SESSION_DIR when set."""
    return Path(os.environ.get("CMB_SESSION_DIR") or Path.home() / ".cmb_sessions")


def volume_key(volume: Volume) -> str:
    """16 hex digits identifying a volume: shape, spacing, origin, direction, voxel subsample."""
    h = hashlib.sha256()
    a = np.asarray(volume.array)
    h.update(repr((a.shape, str(a.dtype))).encode())
    for values in (volume.spacing, volume.origin, np.asarray(volume.direction).ravel()):
        h.update(np.round(np.asarray(values, dtype=float), 4).tobytes())
    flat = a.reshape(-1)
    step = max(1, flat.size // SUBSAMPLE_VOXELS)
    h.update(np.ascontiguousarray(flat[::step]).astype(np.float32).tobytes())
    return h.hexdigest()[:16]


class SessionStore:
    """Autosaved annotation states under one root folder, one per volume key."""

    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_session_root()

    def folder(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        """True when a complete saved state exists for `key` (recovers a half-done swap)."""
        self._recover(key)
        return (self.folder(key) / "annotation.json").is_file()

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def save(self, key: str, document: dict, scribbles: Volume, masks: Optional[Volume] = None,
             volume_name: str = "") -> Path:
        """Save the state of `key` atomically; returns its folder."""
        from ..io import make_temp_dir, write_json_atomic

        validate_document(document)
        self.root.mkdir(parents=True, exist_ok=True)
        new = make_temp_dir(self.root, f".{key}.new.")
        try:
            _save_sparse(scribbles, new / "scribbles.npz")
            if masks is not None:
                _save_sparse(masks, new / "masks.npz")
            write_json_atomic(new / "annotation.json", document)
            write_json_atomic(new / "session.json", {"key": key, "volume": volume_name, "saved": now_utc()})
            self._swap(key, new)
        finally:
            if new.exists():
                shutil.rmtree(new, ignore_errors=True)
        return self.folder(key)

    def save_segments(self, key: str, document: dict, layers: dict, shape, ijk_to_ras,
                      volume_name: str = "", validate: bool = True) -> Path:
        """Incremental save: `layers` = {"scribbles" | "masks": (changed, present)} where
        `changed` maps label -> (N, 3) integer [k, j, i] voxels (only the segments that changed)
        and `present` is the set of all labels the layer holds now (files of other labels
        are removed).  Writes only the changed labels, the grid (when new) and the document.
        `validate=False` skips the schema check (~2 ms per finding) for a caller whose every
        edit was already validated."""
        from ..io import atomic_path, write_json_atomic

        if validate:
            validate_document(document)
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        grid = {"shape": [int(v) for v in shape], "ijk_to_ras": np.asarray(ijk_to_ras, float).tolist()}
        grid_file = folder / "grid.json"
        if not grid_file.is_file() or json.loads(grid_file.read_text(encoding="utf-8")) != grid:
            write_json_atomic(folder / "grid.json", grid)
        dtype = np.uint16 if max(grid["shape"]) <= np.iinfo(np.uint16).max else np.uint32
        for layer, (changed, present) in layers.items():
            sub = folder / layer
            sub.mkdir(exist_ok=True)
            for label, kji in changed.items():
                with atomic_path(sub / f"{int(label)}.npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.asarray(kji).reshape(-1, 3).astype(dtype, copy=False))
            keep = {f"{int(v)}.npy" for v in present}
            for path in sub.glob("*.npy"):
                if path.name not in keep:
                    path.unlink()
            old = folder / f"{layer}.npz"            # the whole-volume layout of `save`
            if old.exists():
                old.unlink()
        write_json_atomic(folder / "annotation.json", document)
        write_json_atomic(folder / "session.json", {"key": key, "volume": volume_name, "saved": now_utc()})
        return folder

    def _swap(self, key: str, new: Path) -> None:
        target = self.folder(key)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{key}.old.", dir=str(self.root)))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(new, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _recover(self, key: str) -> None:
        """After a crash between the two renames of a swap, put the previous state back."""
        if self.folder(key).exists() or not self.root.is_dir():
            return
        olds = sorted(self.root.glob(f".{key}.old.*"), key=lambda p: p.stat().st_mtime)
        if olds and (olds[-1] / "annotation.json").is_file():
            os.replace(olds[-1], self.folder(key))

    def load(self, key: str):
        """(document, scribbles Volume, masks Volume or None) saved for `key`."""
        from ..io import read_json

        if not self.has(key):
            raise CMBError(f"no saved session for volume {key} in {self.root}")
        folder = self.folder(key)
        doc = read_json(folder / "annotation.json", "a saved annotation")
        validate_document(doc)
        if (folder / "grid.json").is_file():
            scribbles = _load_segments(folder, "scribbles")
            masks = _load_segments(folder, "masks")
            if masks is not None and not np.any(masks.array):
                masks = None
            return doc, scribbles, masks
        scribbles = _load_sparse(folder / "scribbles.npz")
        masks = _load_sparse(folder / "masks.npz") if (folder / "masks.npz").is_file() else None
        return doc, scribbles, masks

    def info(self, key: str) -> dict:
        """The session.json of `key` (volume name, time saved)."""
        path = self.folder(key) / "session.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def discard(self, key: str) -> None:
        """Delete the saved state of `key` (after the user declines to restore it)."""
        if self.folder(key).exists():
            shutil.rmtree(self.folder(key))


def _save_sparse(labels: Volume, path: Path) -> None:
    """Write a label map as its non-zero voxels (flat index, label) and its grid."""
    array = np.asarray(labels.array)
    # nonzero() on the few slices that hold labels: ~20x faster than on the whole volume
    per_slice = array.reshape(array.shape[0], -1)
    slices = np.flatnonzero(per_slice.any(axis=1))
    slice_size = per_slice.shape[1]
    flat = np.concatenate([k * slice_size + np.flatnonzero(per_slice[k]) for k in slices] or
                          [np.zeros(0, np.int64)]).astype(np.int64)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, shape=np.asarray(array.shape), index=flat.astype(np.int64),
                            label=array.ravel()[flat].astype(np.uint16), ijk_to_ras=labels.ijk_to_ras)


def _load_sparse(path: Path) -> Volume:
    try:
        with np.load(path) as data:
            shape = tuple(int(v) for v in data["shape"])
            array = np.zeros(shape, np.uint16)
            array.ravel()[data["index"]] = data["label"]
            m = np.asarray(data["ijk_to_ras"], dtype=float)
    except (OSError, KeyError, ValueError) as exc:
        raise CMBError(f"{path}: saved label map is unreadable ({exc})") from None
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    return Volume(array, spacing, m[:3, 3], m[:3, :3] / spacing)


def _load_segments(folder: Path, layer: str) -> Volume:
    """A label map from the per-label files of `save_segments`."""
    try:
        grid = json.loads((folder / "grid.json").read_text(encoding="utf-8"))
        shape = tuple(int(v) for v in grid["shape"])
        m = np.asarray(grid["ijk_to_ras"], dtype=float)
        array = np.zeros(shape, np.uint16)
        for path in sorted((folder / layer).glob("*.npy")) if (folder / layer).is_dir() else []:
            kji = np.load(path).astype(np.intp).reshape(-1, 3)
            array[kji[:, 0], kji[:, 1], kji[:, 2]] = int(path.stem)
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CMBError(f"{folder / layer}: saved segments are unreadable ({exc})") from None
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    return Volume(array, spacing, m[:3, 3], m[:3, :3] / spacing)
