"""Small synthetic CMB phantoms for engine tests and benchmarks (no data files needed).

A CMB is a sphere of radius r mm with a dark core (contrast as a fraction of the
tissue intensity), rendered with sub-voxel supersampling so partial volume on thick
slices is physical.  The ground-truth mask keeps the sphere's volume: the N voxels most
inside it, N = sphere volume / voxel volume (a "half inside" rule would leave a 3.8 mm
CMB straddling two 4 mm slices with a single voxel).  A scribble is a short in-plane stroke through the centre slice,
as a rater
draws it with the smallest brush.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from CMBLib.geometry import Volume


@dataclass
class PhantomCMB:
    centre_mm: Sequence[float]      # (x, y, z) in the phantom's voxel-aligned mm frame
    radius_mm: float
    contrast: float                 # core intensity = tissue * (1 - contrast)


def sphere_fraction(shape_kji, spacing_ijk, centre_mm, radius_mm, supersample=5):
    """Fraction of each voxel inside the sphere (frame: voxel centre (i,j,k) at (i*si, j*sj, k*sk) mm)."""
    frac = np.zeros(shape_kji)
    sp = np.asarray(spacing_ijk, dtype=float)
    c = np.asarray(centre_mm, dtype=float)
    reach = np.ceil((radius_mm + sp) / sp).astype(int)
    ci = np.round(c / sp).astype(int)
    lo = np.maximum(ci - reach, 0)
    hi = np.minimum(ci + reach + 1, np.array(shape_kji[::-1]))
    if np.any(hi <= lo):
        return frac
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    ii = (np.arange(lo[0], hi[0])[:, None] + offs[None, :]).ravel() * sp[0] - c[0]
    jj = (np.arange(lo[1], hi[1])[:, None] + offs[None, :]).ravel() * sp[1] - c[1]
    kk = (np.arange(lo[2], hi[2])[:, None] + offs[None, :]).ravel() * sp[2] - c[2]
    inside = (kk[:, None, None] ** 2 + jj[None, :, None] ** 2 + ii[None, None, :] ** 2) <= radius_mm ** 2
    n = hi - lo
    inside = inside.reshape(n[2], supersample, n[1], supersample, n[0], supersample)
    frac[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = inside.mean(axis=(1, 3, 5))
    return frac


def volume_preserving_mask(frac, radius_mm, spacing):
    """The round(sphere volume / voxel volume) voxels with the largest fraction inside."""
    n = max(1, int(round(4 / 3 * np.pi * radius_mm ** 3 / float(np.prod(spacing)))))
    flat = frac.ravel()
    order = np.argsort(-flat, kind="stable")[:n]
    mask = np.zeros(flat.shape, bool)
    mask[order[flat[order] > 0]] = True
    return mask.reshape(frac.shape)


def make_phantom(cmbs: list[PhantomCMB], shape_ijk=(48, 48, 16), spacing=(0.86, 0.86, 4.0),
                 noise=0.03, seed=0, vessel: Optional[dict] = None, edge_mm: Optional[float] = None,
                 tissue=1.0):
    """Image, ground-truth instance mask and scribbles (Volumes, labels 1..N).

    vessel: {"x_mm": .., "radius_mm": .., "contrast": ..} a dark tube along j at x.
    edge_mm: voxels with x beyond this are background 0 (a skull-stripped brain edge).
    """
    rng = np.random.default_rng(seed)
    shape_kji = tuple(shape_ijk[::-1])
    sp = np.asarray(spacing, dtype=float)
    ii = np.arange(shape_ijk[0]) * sp[0]
    jj = np.arange(shape_ijk[1]) * sp[1]
    # smooth tissue: a grey/white boundary and a gentle bias
    img = np.full(shape_kji, tissue, dtype=float)
    img *= 1.0 + 0.05 * np.sin(jj / 9.0)[None, :, None] + 0.04 * np.cos(ii / 13.0)[None, None, :]
    if vessel is not None:
        frac = np.zeros(shape_kji)
        d = np.abs(ii - vessel["x_mm"])
        frac += np.clip(vessel["radius_mm"] + 0.5 * sp[0] - d, 0, sp[0])[None, None, :] / sp[0]
        img *= 1.0 - vessel["contrast"] * np.clip(frac, 0, 1)
    truth = np.zeros(shape_kji, dtype=np.int32)
    scribbles = np.zeros(shape_kji, dtype=np.int32)
    for n, c in enumerate(cmbs, start=1):
        frac = sphere_fraction(shape_kji, sp, c.centre_mm, c.radius_mm)
        img *= 1.0 - c.contrast * frac
        truth[volume_preserving_mask(frac, c.radius_mm, sp) & (truth == 0)] = n
        _draw_scribble(scribbles, truth == n, c, sp, n)
    img += rng.normal(0.0, noise * tissue, img.shape)
    if edge_mm is not None:
        img[:, :, ii > edge_mm] = 0.0
        truth[:, :, ii > edge_mm] = 0
        scribbles[:, :, ii > edge_mm] = 0
    vol = Volume(img.astype(np.float32), spacing=tuple(sp))
    return vol, vol.with_array(truth), vol.with_array(scribbles)


def _draw_scribble(scribbles, truth_mask, cmb, sp, label):
    """A stroke along i through the centre slice covering ~60% of the in-plane diameter."""
    c = np.asarray(cmb.centre_mm, dtype=float) / sp
    k, j = int(round(c[2])), int(round(c[1]))
    half = max(0, int(np.floor(0.3 * 2 * cmb.radius_mm / sp[0])))
    i0 = int(round(c[0]))
    for i in range(i0 - half, i0 + half + 1):
        if 0 <= k < scribbles.shape[0] and 0 <= j < scribbles.shape[1] and 0 <= i < scribbles.shape[2]:
            if truth_mask[k, j, i] or i == i0:
                scribbles[k, j, i] = label


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)


def random_case(rng, spacing, shape_ijk=(40, 40, 12), kind="plain"):
    """One phantom with a single CMB of random radius (1-5 mm) and contrast (0.3-0.7)."""
    sp = np.asarray(spacing, dtype=float)
    extent = np.asarray(shape_ijk) * sp
    radius = float(rng.uniform(1.0, 5.0))
    contrast = float(rng.uniform(0.3, 0.7))
    centre = extent / 2 + rng.uniform(-0.5, 0.5, 3) * sp
    kw = {}
    if kind == "vessel":
        kw["vessel"] = {"x_mm": float(centre[0] + radius + rng.uniform(1.0, 2.5)), "radius_mm": 0.8,
                        "contrast": 0.5}
    elif kind == "edge":
        kw["edge_mm"] = float(centre[0] + radius + rng.uniform(1.0, 2.5))
    vol, truth, scr = make_phantom([PhantomCMB(tuple(centre), radius, contrast)], shape_ijk, tuple(sp),
                                   noise=float(rng.uniform(0.02, 0.06)), seed=int(rng.integers(1 << 30)),
                                   **kw)
    return vol, truth, scr, radius


def scribble_from_mask(mask: np.ndarray, centre_kji, fraction: float = 0.6) -> np.ndarray:
    """A rater-like stroke: the mask voxels on the centre slice and row, along i, covering
    `fraction` of the mask's extent on that row (always the centre voxel)."""
    k, j, i = (int(round(v)) for v in centre_kji)
    out = np.zeros(mask.shape, dtype=bool)
    row = np.flatnonzero(mask[k, j])
    if row.size:
        half = int(np.floor(fraction * (row.max() - row.min() + 1) / 2))
        lo, hi = max(row.min(), i - half), min(row.max(), i + half)
        out[k, j, lo:hi + 1] = mask[k, j, lo:hi + 1]
    out[k, j, i] = True
    return out
