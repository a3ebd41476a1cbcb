"""Pair prediction files with reference files, and read per-CMB scores next to predictions.

A prediction pairs with a reference by, in this order:
1. the same file name (a detection output ``NAME_cmb_mask`` of the same case comes
   first, since a same-named file beside it is usually the input image);
2. the same case key: the file name without image suffix and without a trailing tag
   such as ``_cmb_mask``, ``_CMB``, ``_desc-cmb_dseg``, ``_mask``, ``_seg``, ``_pred``
   (so ``NAME_cmb_mask.nii.gz`` pairs with ``NAME.nii.gz`` or ``NAME_CMB.nii.gz``);
3. the same BIDS subject (and session, when the reference names one): ``sub-101``.
Probability maps (``*_cmb_prob*``, ``*_probseg*``, ``*_probability*``) are not
predictions themselves but score the prediction of the same case; a case with only a
probability map uses it as its prediction (binarised at the threshold).
"""
import re
from pathlib import Path
from typing import Optional

from ..errors import CMBError
from ..io import IMAGE_SUFFIXES, find_images, image_suffix, read_json, strip_image_suffix

# Trailing name tags that do not belong to the case name (lower case; longest first).
TAGS = ("_desc-cmb_probseg", "_desc-cmb_dseg", "_desc-cmb_mask", "_desc-cmb_label",
        "_cmb_probability", "_cmb_labels", "_cmb_label", "_cmb_mask", "_cmb_prob", "_cmb_seg",
        "_probability", "_prediction", "_probseg", "_labels", "_label", "_dseg", "_mask",
        "_pred", "_prob", "_seg", "_cmb", "_gt", "_ref", "_truth", "_microbleeds", "_microbleed")
SKIP_TAGS = ("_desc-scribbles",)
SCORE_MAP_TAGS = ("_desc-cmb_probseg", "_cmb_probability", "_cmb_prob", "_probability", "_probseg", "_prob")
_SUBJECT = re.compile(r"(sub-[A-Za-z0-9]+)")
_SESSION = re.compile(r"(ses-[A-Za-z0-9]+)")


def case_key(path) -> str:
    """'a/sub-1_T2S_cmb_mask.nii.gz' -> 'sub-1_T2S' (tags removed repeatedly, case kept)."""
    stem = strip_image_suffix(path)
    changed = True
    while changed:
        changed = False
        for tag in TAGS:
            if stem.lower().endswith(tag) and len(stem) > len(tag):
                stem = stem[: len(stem) - len(tag)]
                changed = True
                break
    return stem


def is_score_map(path) -> bool:
    stem = strip_image_suffix(path).lower()
    return any(stem.endswith(t) for t in SCORE_MAP_TAGS)


def subject_session(name: str) -> tuple[Optional[str], Optional[str]]:
    sub = _SUBJECT.search(name)
    ses = _SESSION.search(name)
    return (sub.group(1) if sub else None), (ses.group(1) if ses else None)


def list_images(paths) -> list[Path]:
    """Image files named, or found in the given folders (searched recursively when a folder
    holds no image directly, e.g. a BIDS derivatives tree).  Scribble maps
    (``_desc-scribbles``) are skipped, and of files differing only by their image suffix
    (``X.nii.gz`` and ``X.seg.nrrd``) the first in `IMAGE_SUFFIXES` order is kept.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = find_images(p)
            if not found:
                found = sorted(q for q in p.rglob("*") if q.is_file() and image_suffix(q)
                               and not any(part.startswith(".") for part in q.relative_to(p).parts))
            out.extend(q for q in found if not any(t in q.name.lower() for t in SKIP_TAGS))
        elif p.is_file():
            if not image_suffix(p):
                raise CMBError(f"{p}: not an image file (.nii.gz, .nii, .nrrd, .seg.nrrd)")
            out.append(p)
        else:
            raise CMBError(f"{p}: no such file or folder")
    best: dict[tuple[Path, str], Path] = {}
    for p in out:
        key = (p.parent.resolve(), strip_image_suffix(p))
        if key not in best or _suffix_rank(p) < _suffix_rank(best[key]):
            best[key] = p
    kept = set(best.values())
    seen, unique = set(), []
    for p in out:
        if p in kept and p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _suffix_rank(path: Path) -> int:
    return IMAGE_SUFFIXES.index(image_suffix(path))


def pair_files(pred_files: list[Path], ref_files: list[Path], explicit: bool = False):
    """Returns (cases, unpaired_predictions).

    cases: list of dicts {'case', 'ref', 'pred' (Path or None), 'scores' (Path or None)}
    in reference order; unpaired_predictions: prediction files no reference took.
    `explicit`: the user named exactly these files (one prediction, one reference);
    they pair with each other whatever their names.
    """
    if explicit and len(pred_files) == 1 and len(ref_files) == 1:
        pred, ref = Path(pred_files[0]), Path(ref_files[0])
        return [{"case": case_key(ref), "ref": ref, "pred": pred,
                 "scores": pred if is_score_map(pred) else None}], []
    masks = [p for p in pred_files if not is_score_map(p)]
    maps = [p for p in pred_files if is_score_map(p)]
    cases, used = [], {}
    for ref in ref_files:
        case = case_key(ref)
        pred = _find(ref, masks, "prediction")
        score_map = _find(pred if pred is not None else ref, maps, "probability map")
        if pred is None and score_map is not None:
            pred = score_map
        if pred is not None:
            if pred in used:
                raise CMBError(f"prediction {pred.name} pairs with two references: "
                               f"{used[pred].name} and {ref.name}; rename one")
            used[pred] = ref
        cases.append({"case": case, "ref": ref, "pred": pred, "scores": score_map})
    names = [c["case"] for c in cases]
    for c in cases:
        if names.count(c["case"]) > 1:
            c["case"] = strip_image_suffix(c["ref"])
    unpaired = [p for p in pred_files if p not in used and not any(p == c["scores"] for c in cases)]
    return cases, unpaired


def _find(ref: Path, candidates: list[Path], what: str) -> Optional[Path]:
    if not candidates:
        return None
    key = case_key(ref).lower()
    # A detection output NAME_cmb_mask beats a same-named file (often the input image).
    same = [p for p in candidates if case_key(p).lower() == key
            and strip_image_suffix(p).lower().endswith("_cmb_mask")]
    if len(same) == 1:
        return same[0]
    same = [p for p in candidates if p.name == ref.name]
    if same:
        return same[0]
    same = [p for p in candidates if case_key(p).lower() == key]
    if same:
        return _pick(ref, same, what, "match it")
    sub, ses = subject_session(ref.name)
    if sub is None:
        return None
    same = []
    for p in candidates:
        psub, pses = subject_session(p.name)
        if psub == sub and (ses is None or pses is None or pses == ses):
            same.append(p)
    if same:
        return _pick(ref, same, what, f"share subject {sub}")
    return None


def _pick(ref: Path, same: list[Path], what: str, how: str) -> Path:
    """The one candidate, or the one carrying a mask / prediction tag; else refuse."""
    if len(same) == 1:
        return same[0]
    tagged = [p for p in same if case_key(p) != strip_image_suffix(p)]
    if len(tagged) == 1:
        return tagged[0]
    raise CMBError(f"{ref.name}: several {what}s {how} ({', '.join(p.name for p in same)}); "
                   "name them like the references")


SCORE_KEYS = ("max_probability", "probability_max", "prob_max", "probability", "score", "confidence")
UNKNOWN_LOCATIONS = ("unreviewed", "unknown", "none", "")
RECORD_KEYS = ("cmbs", "findings", "records", "candidates", "detections")


def read_sidecar(mask_path: Optional[Path]) -> tuple[dict[int, float], dict[int, str]]:
    """Per-label scores and locations from the JSON written beside a mask, if any.

    Looks for ``KEY_cmb.json``, ``KEY_desc-cmb_annotation.json`` and ``STEM.json`` next
    to the mask (detection output ``NAME_cmb_mask.nii.gz`` has ``NAME_cmb.json``; an
    exported annotation ``sub-X_desc-cmb_dseg.nii.gz`` has ``sub-X_desc-cmb_annotation.json``).
    Records need a ``label``; the
    score is the first of max_probability / probability / score found; the location
    is ``location`` (a name, or a dict with a name).
    """
    if mask_path is None:
        return {}, {}
    mask_path = Path(mask_path)
    folder = mask_path.parent
    key = case_key(mask_path)
    for name in (key + "_cmb.json", key + "_desc-cmb_annotation.json", strip_image_suffix(mask_path) + ".json"):
        path = folder / name
        if path.is_file():
            return _parse_sidecar(path)
    return {}, {}


def _parse_sidecar(path: Path) -> tuple[dict[int, float], dict[int, str]]:
    data = read_json(path, "a CMB sidecar JSON")
    records = data
    if isinstance(data, dict):
        records = next((data[k] for k in RECORD_KEYS if isinstance(data.get(k), list)), [])
    scores, locations = {}, {}
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or "label" not in rec:
            continue
        try:
            label = int(rec["label"])
        except (TypeError, ValueError):
            continue
        for k in SCORE_KEYS:
            if isinstance(rec.get(k), (int, float)):
                scores[label] = float(rec[k])
                break
        loc = rec.get("location")
        if isinstance(loc, dict):
            loc = loc.get("name") or loc.get("region") or loc.get("label")
        if loc and str(loc).lower() not in UNKNOWN_LOCATIONS:
            locations[label] = str(loc)
    return scores, locations

