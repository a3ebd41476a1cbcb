"""Patch sampling with a CMB / hard-negative / background proportion and random shifts.

A case is a dict of arrays on the model grid ([k, j, i]): ``image`` (float), ``cmb``
(instance labels), ``brain`` (bool) and optionally ``mimic`` (mimic type ids).  A patch
is ``patch_kji`` voxels.  For a CMB patch a random CMB voxel is placed at a random
position inside the patch (at least `margin` voxels from the border), as in the thesis's
sampling ("the position of the CMB inside a CMB patch is randomly shifted"); mimic
patches are centred (with a shift) on a mimic voxel; background patches on a random
brain voxel.  Volumes smaller than a patch are padded with the image minimum.
"""
from collections.abc import Sequence
from typing import Optional

import numpy as np


def _crop(a: np.ndarray, start, size, fill) -> np.ndarray:
    out = np.full(tuple(size), fill, dtype=a.dtype)
    src = []
    dst = []
    for s, n, dim in zip(start, size, a.shape):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out[tuple(dst)] = a[tuple(src)]
    return out


def patch_start(centre_kji, patch_kji, rng, shift: bool, margin: int = 4) -> np.ndarray:
    """Start index so that `centre_kji` falls at a random (shift) or central patch position."""
    centre = np.asarray(centre_kji, int)
    size = np.asarray(patch_kji, int)
    if shift:
        pos = np.array([rng.integers(min(margin, n // 2), max(min(margin, n // 2) + 1, n - margin)) for n in size])
    else:
        pos = size // 2
    return centre - pos


def sample_patch(case: dict[str, np.ndarray], patch_kji: Sequence[int], rng, kind: str = "random",
                 indices: Optional[dict[str, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(image patch float32, target patch uint8 0/1, kind actually used) from one case.

    kind: "cmb", "mimic", "background" or "random" (background anywhere in the volume).
    `indices`: optional precomputed {"cmb": (N,3), "mimic": (M,3), "brain": (B,3)} voxel lists.
    """
    start, kind = choose_start(case, patch_kji, rng, kind, indices)
    x, y = patch_at(case, start, patch_kji)
    return x, y, kind


def patch_at(case: dict[str, np.ndarray], start, patch_kji: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(image patch float32, target patch uint8 0/1) of `case` starting at `start` [k, j, i]."""
    img = case["image"]
    x = _crop(img, start, patch_kji, float(img.min())).astype(np.float32)
    y = (_crop(case["cmb"], start, patch_kji, 0) > 0).astype(np.uint8)
    return x, y


def choose_start(case: dict[str, np.ndarray], patch_kji: Sequence[int], rng, kind: str = "random",
                 indices: Optional[dict[str, np.ndarray]] = None) -> tuple[np.ndarray, str]:
    """(patch start index [k, j, i], kind actually used) for a patch of `kind` (see `sample_patch`)."""
    img = case["image"]
    idx = indices or case_indices(case)
    if kind == "cmb" and len(idx["cmb"]) == 0:
        kind = "mimic"
    if kind == "mimic" and len(idx["mimic"]) == 0:
        kind = "background"
    if kind == "background" and len(idx["brain"]) == 0:
        kind = "random"
    if kind in ("cmb", "mimic", "background"):
        pts = idx[kind if kind != "background" else "brain"]
        c = pts[rng.integers(len(pts))]
        start = patch_start(c, patch_kji, rng, shift=True)
    else:
        start = np.array([rng.integers(-n // 4, max(1, d - 3 * n // 4)) for n, d in zip(patch_kji, img.shape)])
    return start, kind


def case_indices(case: dict[str, np.ndarray], max_points: int = 20000, rng=None) -> dict[str, np.ndarray]:
    """Voxel lists used for sampling (brain voxels subsampled to `max_points`)."""
    rng = np.random.default_rng(rng)
    out = {"cmb": np.argwhere(case["cmb"] > 0)}
    mim = case.get("mimic")
    out["mimic"] = np.argwhere(mim > 0) if mim is not None else np.zeros((0, 3), int)
    brain = np.argwhere(case["brain"]) if "brain" in case else np.zeros((0, 3), int)
    if len(brain) > max_points:
        brain = brain[rng.choice(len(brain), max_points, replace=False)]
    out["brain"] = brain
    for k in ("mimic",):
        if len(out[k]) > max_points:
            out[k] = out[k][rng.choice(len(out[k]), max_points, replace=False)]
    return out


def choose_kind(rng, proportions: dict[str, float]) -> str:
    """Draw a patch kind from {"cmb": p, "mimic": p, "background": p}."""
    kinds = list(proportions)
    p = np.asarray([proportions[k] for k in kinds], float)
    return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]


def augment(x: np.ndarray, y: np.ndarray, rng, flip_axes=(1, 2), intensity: float = 0.1,
            noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Random in-plane flips, intensity scale/shift and Gaussian noise (patch arrays [k, j, i])."""
    for ax in flip_axes:
        if rng.random() < 0.5:
            x = np.flip(x, ax)
            y = np.flip(y, ax)
    if intensity:
        x = x * (1 + rng.uniform(-intensity, intensity)) + rng.uniform(-intensity, intensity)
    if noise:
        x = x + rng.normal(0, rng.uniform(0, noise), x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)
