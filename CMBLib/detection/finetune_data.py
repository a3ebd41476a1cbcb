"""Annotated studies for fine-tuning: what is a CMB, what is a hard negative, what is unknown.

Two layouts are read without conversion:

* the annotator's export (`CMBLib.annotation.dataset`): ``derivatives/<name>/sub-<id>/anat/``
  holds the annotation document, the CMB instance mask (rejected findings already removed)
  and the scribbles; the image is ``sub-<id>/anat/sub-<id>_<seq>.nii.gz``;
* VALDO-style folders: ``sub-XXX_space-T2S_desc-masked_T2S.nii.gz`` with
  ``sub-XXX_space-T2S_CMB.nii.gz`` (every component of the mask is a CMB).

How each annotated finding is used (annotator layout):

=====================================================  =========================================
finding                                                 used as
=====================================================  =========================================
review_status "confirmed"                               CMB (positive)
drawn by the rater (source "rater"/"import"), not yet   CMB (positive) with ``positives="rater"``
reviewed ("unreviewed")                                 (default: scribbling a CMB *is* the
                                                        rater's call; the review form may be
                                                        left blank), unknown with ``"confirmed"``
review_status "rejected"                                hard negative (sampled on purpose)
mimic landmark (any type)                               hard negative
"proposed" (a detector's candidate nobody reviewed),    unknown: neither CMB nor background; its
detector findings left "unreviewed"                     mask and 4 mm around its centre are left
                                                        out of the loss and of the scores
everything else inside the brain                        background
=====================================================  =========================================
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, geometry_difference

POSITIVE_RULES = ("rater", "confirmed")
RATER_SOURCES = ("rater", "import")
IGNORE_RADIUS_MM = 4.0
SEQUENCE_POLARITY = {"T2starw": "dark", "SWI": "dark", "QSM": "bright"}


@dataclass
class LabelledStudy:
    """One study with its labels on the image grid (arrays [k, j, i])."""

    key: str                      # "<dataset>::sub-<id>" (unique)
    subject: str                  # "sub-<id>": the split unit
    dataset: str
    image: Volume
    polarity: str                 # "dark" (SWI, T2*) or "bright" (QSM)
    positives: np.ndarray         # uint16 instance labels of the CMBs trained on
    negatives_ras: np.ndarray     # (N, 3) RAS mm: rejected findings and mimic landmarks
    ignore: np.ndarray            # bool: voxels that are neither CMB nor background
    ignore_ras: np.ndarray        # (M, 3) RAS mm centres of the unknown findings
    counts: dict = field(default_factory=dict)

    @property
    def n_cmbs(self) -> int:
        return int(self.counts.get("cmbs", 0))


def find_studies(root) -> tuple[str, list]:
    """(layout, items) of a dataset folder: ("annotator", [(derivative name, subject label)])
    or ("valdo", [(image path, mask path)]).  CMBError when it is neither."""
    root = Path(root)
    if not root.is_dir():
        raise CMBError(f"{root}: not a folder (give an exported CMB dataset folder)")
    docs = sorted(root.glob("derivatives/*/sub-*/anat/sub-*_desc-cmb_annotation.json"))
    docs = [d for d in docs if not any(p.startswith(".") for p in d.relative_to(root).parts)]
    if docs:
        return "annotator", [(d.parts[-4], d.parts[-3][4:]) for d in docs]
    pairs = []
    for img in sorted(root.rglob("*_space-T2S_desc-masked_T2S.nii*")):
        sub = img.name.split("_space-T2S")[0]
        masks = sorted(img.parent.glob(sub + "_space-T2S_CMB.nii*"))
        if masks:
            pairs.append((img, masks[0]))
    if pairs:
        return "valdo", pairs
    raise CMBError(f"{root}: not a CMB dataset (no derivatives/<name>/sub-*/anat/*_desc-cmb_annotation.json "
                   "from `cmb export` / CMBScribbleAnnotator, and no VALDO *_space-T2S_CMB.nii.gz masks)")


def finding_role(finding: dict, positives: str = "rater") -> str:
    """"cmb", "negative" or "ignore" for one annotation finding (see the module table)."""
    status = finding.get("review_status")
    if status == "confirmed":
        return "cmb"
    if status == "rejected":
        return "negative"
    if status == "unreviewed" and positives == "rater" and finding.get("source", "rater") in RATER_SOURCES:
        return "cmb"
    return "ignore"


def _read(path: Path, what: str, subject: str) -> Volume:
    from ..io import read_volume

    if not path.is_file():
        raise CMBError(f"{subject}: {what} {path} is missing; fix or remove this study")
    try:
        return read_volume(path)
    except CMBError as exc:
        raise CMBError(f"{subject}: {what} cannot be read ({exc})") from None


def _same_grid(image: Volume, mask: Volume, subject: str, what: str) -> None:
    diff = geometry_difference(image, mask, tol_mm=0.01)
    if diff:
        raise CMBError(f"{subject}: the {what} grid differs from the image ({diff}); re-export the study")


def _ball_points(ras: np.ndarray, image: Volume, radius_mm: float, shape) -> np.ndarray:
    """bool [k, j, i]: voxels of `image` within `radius_mm` of any point of `ras` (N, 3)."""
    out = np.zeros(shape, bool)
    if not len(ras):
        return out
    sp = np.asarray(image.spacing)[::-1]
    half = np.ceil(radius_mm / sp).astype(int)
    m = image.ijk_to_ras[:3, :3]
    for p in np.asarray(ras, float).reshape(-1, 3):
        c = np.rint(image.ras_to_voxel(p)[::-1]).astype(int)
        lo = np.maximum(c - half, 0)
        hi = np.minimum(c + half + 1, shape)
        if np.any(hi <= lo):
            continue
        kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        ijk = np.stack([ii, jj, kk], -1).astype(float)
        d = np.linalg.norm((ijk - c[::-1]) @ m.T, axis=-1)
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= d <= radius_mm
    return out


def load_annotator_study(root, name: str, label: str, positives: str = "rater") -> LabelledStudy:
    """One subject of the annotator's export as a LabelledStudy."""
    from ..annotation.dataset import SEQUENCE_SUFFIX, sequence_name
    from ..annotation.document import load_document

    root = Path(root)
    sub = f"sub-{label}"
    deriv = root / "derivatives" / name / sub / "anat"
    try:
        doc = load_document(deriv / f"{sub}_desc-cmb_annotation.json")
    except CMBError as exc:
        raise CMBError(f"{sub}: annotation cannot be read ({exc})") from None
    seq = sequence_name(doc.get("study", {}).get("sequence") or "T2starw")
    image = _read(root / sub / "anat" / f"{sub}_{SEQUENCE_SUFFIX[seq]}.nii.gz", "image", sub)
    if np.asarray(image.array).ndim != 3:
        raise CMBError(f"{sub}: image has {np.asarray(image.array).ndim} dimensions; a 3D image is needed")
    mask = _read(deriv / f"{sub}_desc-cmb_dseg.nii.gz", "CMB mask", sub)
    _same_grid(image, mask, sub, "CMB mask")
    scribbles_path = deriv / f"{sub}_desc-scribbles_dseg.nii.gz"
    scribbles = None
    if scribbles_path.is_file():
        scribbles = _read(scribbles_path, "scribbles", sub)
        _same_grid(image, scribbles, sub, "scribbles")
    m = np.rint(np.asarray(mask.array)).astype(np.int64)
    present = set(int(v) for v in np.unique(m) if v)
    pos_labels, ignore_labels, neg, ign_ras = [], [], [], []
    counts = {"confirmed": 0, "rater_unreviewed": 0, "rejected": 0, "ignored": 0, "mimics": 0}
    for f in doc["findings"]:
        lab = int(f["label"])
        role = finding_role(f, positives)
        centre = f.get("centre_ras")
        if centre is None and lab in present:
            centre = image.kji_to_ras(np.argwhere(m == lab).mean(axis=0)).tolist()
        if centre is None and scribbles is not None and role == "negative":
            pts = np.argwhere(np.rint(np.asarray(scribbles.array)) == lab)
            centre = image.kji_to_ras(pts.mean(axis=0)).tolist() if len(pts) else None
        if role == "cmb" and lab in present:
            pos_labels.append(lab)
            counts["confirmed" if f.get("review_status") == "confirmed" else "rater_unreviewed"] += 1
        elif role == "negative":
            counts["rejected"] += 1
            if centre is not None:
                neg.append(centre)
        else:  # unknown (or a CMB without a mask: nothing to learn its extent from)
            counts["ignored"] += 1
            ignore_labels.append(lab)
            if centre is not None:
                ign_ras.append(centre)
    for mimic in doc.get("mimics") or []:
        neg.append(mimic["position_ras"])
        counts["mimics"] += 1
    positives_arr = np.where(np.isin(m, pos_labels), m, 0).astype(np.uint16)
    ign_ras_arr = np.asarray(ign_ras, float).reshape(-1, 3)
    ignore = np.isin(m, ignore_labels) | _ball_points(ign_ras_arr, image, IGNORE_RADIUS_MM, m.shape)
    ignore &= positives_arr == 0
    counts["cmbs"] = len(pos_labels)
    return LabelledStudy(f"{root}::{sub}", sub, str(root), image, SEQUENCE_POLARITY[seq], positives_arr,
                         np.asarray(neg, float).reshape(-1, 3), ignore, ign_ras_arr, counts)


def load_valdo_study(root, image_path, mask_path) -> LabelledStudy:
    """A VALDO-style (image, CMB mask) pair: every mask component is a CMB."""
    from scipy import ndimage as ndi

    sub = Path(image_path).name.split("_space-T2S")[0]
    image = _read(Path(image_path), "image", sub)
    mask = _read(Path(mask_path), "CMB mask", sub)
    _same_grid(image, mask, sub, "CMB mask")
    lab, n = ndi.label(np.asarray(mask.array) > 0, np.ones((3, 3, 3)))
    return LabelledStudy(f"{root}::{sub}", sub, str(root), image, "dark", lab.astype(np.uint16),
                         np.zeros((0, 3)), np.zeros(lab.shape, bool), np.zeros((0, 3)),
                         {"cmbs": int(n), "confirmed": int(n)})


def load_dataset(root, positives: str = "rater") -> tuple[str, list[LabelledStudy]]:
    """(layout, studies) of one dataset folder; CMBError naming the first bad study."""
    if positives not in POSITIVE_RULES:
        raise CMBError(f"positives must be one of {', '.join(POSITIVE_RULES)}, not {positives!r}")
    layout, items = find_studies(root)
    if layout == "annotator":
        return layout, [load_annotator_study(root, name, label, positives) for name, label in items]
    return layout, [load_valdo_study(root, img, msk) for img, msk in items]


def split_subjects(studies: list[LabelledStudy], val_fraction: float, seed: int = 0,
                   fixed: Optional[tuple] = None, test_fraction: float = 0.0) -> tuple[list, list, list]:
    """(fine-tuning, validation, test subjects): whole subjects, never patches; no subject
    is on two sides.

    Validation (picks each model's threshold and the best fine-tuned state):
    ``round(val_fraction * subjects)``, at least 1.  Test (confirms the decision; no model
    was trained or tuned on it): ``round(test_fraction * subjects)``, at least 1 when
    `test_fraction` > 0, and none when that would leave no subject to fine-tune on (fewer
    than 3 subjects).  Drawn with `seed`; when possible every side holds a CMB.  `fixed`:
    (validation, test) subject lists to use again (a resumed run).
    """
    subjects = sorted({s.subject for s in studies})
    cmbs = {s: sum(t.n_cmbs for t in studies if t.subject == s) for s in subjects}
    if len(subjects) < 2:
        raise CMBError(f"only {len(subjects)} annotated subject; fine-tuning needs at least 2 "
                       "(one is kept aside to check the new model)")
    if not 0.0 < float(val_fraction) < 1.0:
        raise CMBError(f"--val-fraction {val_fraction}: must lie between 0 and 1")
    if not 0.0 <= float(test_fraction) < 1.0 or float(val_fraction) + float(test_fraction) >= 1.0:
        raise CMBError(f"--test-fraction {test_fraction}: must lie between 0 and 1 and leave subjects to "
                       f"fine-tune on beside --val-fraction {val_fraction}")
    if fixed:
        val = [s for s in subjects if s in set(fixed[0])]
        test = [s for s in subjects if s in set(fixed[1] or ()) and s not in set(val)]
    else:
        n = len(subjects)
        order = list(np.random.default_rng(seed).permutation(subjects))
        n_val = min(n - 1, max(1, int(math.floor(val_fraction * n + 0.5))))
        n_test = max(1, int(math.floor(test_fraction * n + 0.5))) if test_fraction > 0 else 0
        n_test = max(0, min(n_test, n - 1 - n_val))
        val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
        for side in (val, test):   # a side without CMBs takes one from the fine-tuning subjects
            if side and not any(cmbs[s] for s in side):
                for i, s in enumerate(train):
                    if cmbs[s] and sum(cmbs[t] for t in train) - cmbs[s] > 0:
                        side[0], train[i] = s, side[0]
                        break
    held = set(val) | set(test)
    train = [s for s in subjects if s not in held]
    return train, sorted(val), sorted(test)
