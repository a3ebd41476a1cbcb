"""Second stage: a candidate classifier that removes look-alikes the U-Net keeps.

The first stage (the U-Net) marks dark foci; veins cut across by a thick slice, the
internal cerebral veins between the thalami, flow voids, calcification and the dark
skull base look like that too.  What tells them apart is the *shape of the dark
structure around the candidate* in 3D, which the U-Net sees only through its windows:

* the **dark region** grown from the candidate's darkest voxel (voxels darker than half
  way to the local background, inside a 24 x 24 x 24 mm box): its volume, its principal
  extents (mm) and elongation, how many slices it spans, whether it reaches the box
  (a vessel that continues);
* **continuation across slices**: how dark the candidate's neighbourhood stays 2 and 4 mm
  above and below (CMBs fade, veins crossing the slice stay dark);
* **Hessian** eigenvalues at 1 and 2 mm (a dark blob has three large positive
  curvatures, a tube two, a sheet one);
* **dip contrast** against the local background (robust z-score), the first stage's
  maximum / mean probability and component size, the distance to the brain's edge;
* **in-plane shape** (cmb-default 0.3.1 on), for veins running within the slice such as the
  internal cerebral veins between the thalami: the 2D Hessian of the candidate's slice at
  1 and 2 mm (a dot: two equal curvatures, a line: one), and the darkness 3 and 6 mm away
  along the best and the worst in-plane direction (``line*_max``: a vessel continues on
  both sides along its axis; ``line*_min``: a diffuse dark area is dark in every direction;
  a CMB is dark in none).

All features are computed on the model grid (the preprocessed, normalised image; CMBs
dark), so they mean the same on every input grid.  The classifier is a small gradient-
boosted tree ensemble stored as plain JSON (`candidate_classifier.json` in the model
folder, its SHA-256 in model.json under ``second_stage``), evaluated here with numpy:
no pickle, no scikit-learn at inference.
"""
import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError

FEATURE_NAMES = (
    "max_probability", "mean_probability", "log_component_mm3", "component_elongation",
    "contrast", "contrast_z", "dark_log_mm3", "dark_extent1_mm", "dark_extent2_mm", "dark_extent3_mm",
    "dark_elongation", "dark_slices", "dark_touches_box", "core_log_mm3", "core_extent1_mm",
    "core_elongation", "cont_2mm", "cont_4mm", "inplane_ring_dark",
    "hess1_ratio_min", "hess1_ratio_mid", "hess1_strength", "hess2_ratio_min", "hess2_ratio_mid",
    "hess2_strength", "edge_distance_mm", "prob_log_mm3", "prob_elongation",
    # 0.3.1: in-plane shape
    "hess2d1_ratio", "hess2d2_ratio", "hess2d2_strength", "line3_max", "line3_min", "line6_max", "line6_min",
)
N_ANGLES = 8        # in-plane directions (0-180 degrees) of the line features
BOX_MM = 12.0       # half-size of the analysis box
FILE_NAME = "candidate_classifier.json"


def _crop(a: np.ndarray, centre, half) -> tuple:
    sl = tuple(slice(max(0, c - h), min(s, c + h + 1)) for c, h, s in zip(centre, half, a.shape))
    return sl, tuple(c - s.start for c, s in zip(centre, sl))


def _extents(pts_mm: np.ndarray, spacing_kji) -> np.ndarray:
    """sqrt of the covariance eigenvalues (mm, descending) of voxel boxes at pts_mm."""
    cov = np.cov(pts_mm.T, bias=True) if len(pts_mm) > 1 else np.zeros((3, 3))
    cov = cov + np.diag(np.asarray(spacing_kji, float) ** 2 / 12.0)
    return np.sqrt(np.sort(np.clip(np.linalg.eigvalsh(cov), 1e-9, None))[::-1])


def _region(box: np.ndarray, seed, level: float, mask: np.ndarray):
    from scipy import ndimage as ndi

    lab, _ = ndi.label((box <= level) & mask, structure=np.ones((3, 3, 3)))
    v = lab[seed]
    return (lab == v) if v else np.zeros(box.shape, bool)


def _hessian_eigs(box: np.ndarray, seed, sigma_mm: float, spacing_kji) -> np.ndarray:
    """Eigenvalues (ascending) of the Hessian (per mm^2, scale-normalised) at `seed`."""
    from scipy import ndimage as ndi

    sig = [sigma_mm / s for s in spacing_kji]
    h = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            d = ndi.gaussian_filter(box, sig, order=order, mode="nearest")[seed]
            h[a, b] = h[b, a] = d / (spacing_kji[a] * spacing_kji[b])
    return np.linalg.eigvalsh(h * sigma_mm ** 2)


def _hessian2d_eigs(plane: np.ndarray, seed, sigma_mm: float, spacing_ji) -> np.ndarray:
    """Eigenvalues (ascending) of the in-plane Hessian (per mm^2, scale-normalised) at `seed`
    (j, i) of one slice."""
    from scipy import ndimage as ndi

    sig = [sigma_mm / s for s in spacing_ji]
    h = np.zeros((2, 2))
    for a in range(2):
        for b in range(a, 2):
            order = [0, 0]
            order[a] += 1
            order[b] += 1
            d = ndi.gaussian_filter(plane, sig, order=order, mode="nearest")[seed]
            h[a, b] = h[b, a] = d / (spacing_ji[a] * spacing_ji[b])
    return np.linalg.eigvalsh(h * sigma_mm ** 2)


def _line_darkness(plane: np.ndarray, seed, r_mm: float, spacing_ji, bg: float, contrast: float) -> tuple:
    """(max, min) over in-plane directions of the darkness (relative to the dip) at both
    points `r_mm` away along that direction, the lighter of the two counted."""
    from scipy import ndimage as ndi

    th = np.arange(N_ANGLES) * np.pi / N_ANGLES
    dj, di = np.sin(th) * r_mm / spacing_ji[0], np.cos(th) * r_mm / spacing_ji[1]
    pts = np.array([np.r_[seed[0] + dj, seed[0] - dj], np.r_[seed[1] + di, seed[1] - di]])
    v = ndi.map_coordinates(plane, pts, order=1, mode="nearest")
    dark = (bg - v) / max(contrast, 1e-3)
    both = np.minimum(dark[:N_ANGLES], dark[N_ANGLES:])
    return float(both.max()), float(both.min())


def candidate_features(image: np.ndarray, prob: np.ndarray, brain: np.ndarray, grid,
                       records: list[dict], edge_mm: Optional[np.ndarray] = None) -> np.ndarray:
    """Feature matrix (n_records, len(FEATURE_NAMES)) float32 for `records` (from
    `find_candidates`, centres in RAS mm), on the model grid: `image` the preprocessed array
    (CMBs dark), `prob` the first stage's probability, `brain` its brain mask (all [k, j, i]);
    `grid` a Volume with the model grid's geometry."""
    from scipy import ndimage as ndi

    image = np.asarray(image, np.float32)
    sp = np.asarray(grid.spacing, float)[::-1]  # k, j, i mm
    if edge_mm is None:
        edge_mm = ndi.distance_transform_edt(brain, sampling=sp)
    half = [int(np.ceil(BOX_MM / s)) for s in sp]
    out = np.zeros((len(records), len(FEATURE_NAMES)), np.float32)
    for n, rec in enumerate(records):
        ijk = grid.ras_to_voxel(rec["centre_ras"])
        c = [int(np.clip(round(float(v)), 0, s - 1)) for v, s in zip(ijk[::-1], image.shape)]
        # darkest voxel within 2 mm of the centre (1 slice of 2 mm)
        r = [max(1, int(round(2.0 / s))) for s in sp]
        sl0, _ = _crop(image, c, r)
        sub = ndi.gaussian_filter(image[sl0], 0.5)
        m = np.unravel_index(int(np.argmin(sub)), sub.shape)
        p0 = [s.start + int(v) for s, v in zip(sl0, m)]
        sl, seed = _crop(image, p0, half)
        box = image[sl]
        bmask = brain[sl]
        zz, yy, xx = np.meshgrid(*[(np.arange(s.stop - s.start) - q) * d for s, q, d in zip(sl, seed, sp)],
                                 indexing="ij")
        dist = np.sqrt(zz ** 2 + yy ** 2 + xx ** 2)
        shell = bmask & (dist >= 4.0) & (dist <= 10.0)
        vals = box[shell] if shell.sum() > 10 else box[bmask] if bmask.any() else box.ravel()
        bg = float(np.median(vals))
        mad = float(np.median(np.abs(vals - bg))) * 1.4826 + 1e-3
        smooth = ndi.gaussian_filter(box, 0.5)
        i0 = float(smooth[seed])
        contrast = bg - i0
        feats = {"max_probability": rec.get("max_probability", 0.0),
                 "mean_probability": rec.get("mean_probability", 0.0),
                 "log_component_mm3": np.log1p(rec.get("volume_mm3", 0.0)),
                 "component_elongation": rec.get("elongation", 1.0),
                 "contrast": contrast, "contrast_z": contrast / mad}
        pts = np.stack([zz, yy, xx], -1)
        vmm = float(np.prod(sp))
        for tag, frac in (("dark", 0.5), ("core", 0.25)):
            reg = _region(box, seed, i0 + frac * max(contrast, 1e-3), bmask | (dist < 3.0))
            e = _extents(pts[reg], sp) if reg.any() else np.array([0.0, 0.0, 0.0])
            feats[f"{tag}_log_mm3"] = np.log1p(reg.sum() * vmm)
            feats[f"{tag}_extent1_mm"] = e[0]
            feats[f"{tag}_elongation"] = e[0] / max(e[2], 1e-3)
            if tag == "dark":
                feats["dark_extent2_mm"], feats["dark_extent3_mm"] = e[1], e[2]
                feats["dark_slices"] = float(reg.any(axis=(1, 2)).sum()) * sp[0]
                edge = np.zeros(reg.shape, bool)
                edge[[0, -1], :, :] = edge[:, [0, -1], :] = edge[:, :, [0, -1]] = True
                feats["dark_touches_box"] = float((reg & edge).sum()) / max(float(reg.sum()), 1.0) * 100.0
        # continuation across slices: darkness (relative to the dip) near the axis, above and below
        inplane = (yy ** 2 + xx ** 2) <= 2.0 ** 2
        for tag, dz in (("cont_2mm", 2.0), ("cont_4mm", 4.0)):
            vals_z = []
            for sgn in (-1, 1):
                sel = inplane & (np.abs(zz - sgn * dz) < sp[0] / 2 + 1e-6)
                if sel.any():
                    vals_z.append((bg - float(box[sel].min())) / max(contrast, 1e-3))
            feats[tag] = float(np.mean(vals_z)) if vals_z else 0.0
        ring = (np.abs(zz) < sp[0] / 2 + 1e-6) & (np.sqrt(yy ** 2 + xx ** 2) >= 3.0) & \
               (np.sqrt(yy ** 2 + xx ** 2) <= 6.0) & bmask
        feats["inplane_ring_dark"] = (float((box[ring] < i0 + 0.5 * contrast).mean()) if ring.any() else 0.0)
        for tag, s_mm in (("hess1", 1.0), ("hess2", 2.0)):
            ev = _hessian_eigs(box, seed, s_mm, sp)  # ascending; dark blob: all > 0
            top = max(abs(ev[2]), 1e-6)
            feats[f"{tag}_ratio_min"] = ev[0] / top
            feats[f"{tag}_ratio_mid"] = ev[1] / top
            feats[f"{tag}_strength"] = ev[2] / mad
        plane = box[seed[0]]
        for tag, s_mm in (("hess2d1", 1.0), ("hess2d2", 2.0)):
            ev = _hessian2d_eigs(plane, seed[1:], s_mm, sp[1:])  # ascending; dark dot: both > 0
            top = max(abs(ev[1]), 1e-6)
            feats[f"{tag}_ratio"] = ev[0] / top
            if tag == "hess2d2":
                feats["hess2d2_strength"] = ev[1] / mad
        for r_mm in (3.0, 6.0):
            feats[f"line{r_mm:.0f}_max"], feats[f"line{r_mm:.0f}_min"] = _line_darkness(
                smooth[seed[0]], seed[1:], r_mm, sp[1:], bg, contrast)
        feats["edge_distance_mm"] = float(edge_mm[tuple(p0)])
        preg = _region(-prob[sl], seed, -0.1, np.ones(box.shape, bool)) if prob[tuple(p0)] >= 0.1 else \
            np.zeros(box.shape, bool)
        ep = _extents(pts[preg], sp) if preg.any() else np.array([0.0, 0.0, 0.0])
        feats["prob_log_mm3"] = np.log1p(preg.sum() * vmm)
        feats["prob_elongation"] = ep[0] / max(ep[2], 1e-3)
        out[n] = [float(feats[k]) for k in FEATURE_NAMES]
    return np.nan_to_num(out, nan=0.0, posinf=1e3, neginf=-1e3)


class TreeEnsemble:
    """Gradient-boosted regression trees (log-odds), as exported by `export_sklearn_gbc`."""

    def __init__(self, spec: dict):
        self.features = list(spec["features"])
        self.init = float(spec["init"])
        self.rate = float(spec["learning_rate"])
        self.trees = [{k: np.asarray(t[k]) for k in ("left", "right", "feature", "threshold", "value")}
                      for t in spec["trees"]]
        unknown = [f for f in self.features if f not in FEATURE_NAMES]
        if unknown:
            raise CMBError(f"candidate classifier uses features this CMBLib does not compute ({unknown[0]}, ...); "
                           "update CMBLib or the model")
        # a classifier made for an older, shorter feature list reads its own columns
        self.columns = np.array([FEATURE_NAMES.index(f) for f in self.features], int)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Log-odds for a feature matrix with the columns of `FEATURE_NAMES` (all of them), or
        with exactly this classifier's own columns."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if x.shape[1] == len(FEATURE_NAMES):
            x = x[:, self.columns]
        elif x.shape[1] != len(self.features):
            raise CMBError(f"candidate classifier needs {len(self.features)} features, got {x.shape[1]}")
        raw = np.full(len(x), self.init)
        for t in self.trees:
            node = np.zeros(len(x), int)
            for _ in range(64):
                leaf = t["left"][node] < 0
                if leaf.all():
                    break
                go_left = x[np.arange(len(x)), np.maximum(t["feature"][node], 0)] <= t["threshold"][node]
                nxt = np.where(go_left, t["left"][node], t["right"][node])
                node = np.where(leaf, node, nxt)
            raw += self.rate * t["value"][node]
        return raw

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(x)))


def export_sklearn_gbc(clf, threshold: float, features=FEATURE_NAMES) -> dict:
    """A fitted sklearn GradientBoostingClassifier (binary, default loss) on the columns
    `features` -> JSON-able dict."""
    p = float(clf.init_.class_prior_[1])
    trees = []
    for est in clf.estimators_[:, 0]:
        t = est.tree_
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": t.feature.tolist(), "threshold": [float(v) for v in t.threshold],
                      "value": [float(v) for v in t.value[:, 0, 0]]})
    return {"kind": "gradient_boosted_trees", "features": list(features), "init": float(np.log(p / (1 - p))),
            "learning_rate": float(clf.learning_rate), "threshold": float(threshold), "trees": trees}


def load_second_stage(folder, meta: dict) -> Optional[tuple]:
    """(TreeEnsemble, settings) from the model folder when model.json has ``second_stage``,
    else None.  The file's SHA-256 is checked before it is read."""
    spec = meta.get("second_stage")
    if not spec:
        return None
    from .model_io import sha256_file

    path = Path(folder) / str(spec.get("file", FILE_NAME))
    if not path.is_file():
        raise CMBError(f"{path}: candidate classifier missing (model.json names it)")
    actual = sha256_file(path)
    if actual != str(spec.get("sha256", "")).lower():
        raise CMBError(f"{path}: checksum mismatch (sha256 {actual[:12]}...); the candidate classifier "
                       "was changed or damaged, refusing to load")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TreeEnsemble(data), dict(spec, threshold=float(spec.get("threshold", data.get("threshold", 0.5))))
    except (ValueError, KeyError, TypeError) as exc:
        raise CMBError(f"{path}: not a candidate classifier ({str(exc)[:100]})") from None
