"""The detection pipeline: one implementation shared by `cmb detect`, CMBDetector and training.

    image (Volume, native grid) -> validate -> preprocess onto the model grid (brain mask,
    resample, polarity, robust normalisation) -> sliding-window inference -> probability
    map back on the native grid -> candidates (connected components, size limits in mm,
    inside the brain) -> second-stage classifier -> location-based suppression (one atlas
    registration per image, shared with the location; candidates in the CSF / venous
    compartments of `location_filter`) -> per-CMB records (+ location when asked).

Every output is on the input's grid (arrays [k, j, i], RAS geometry of the input).
"""
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..progress import check_cancel, report
from ..validation import validate_image
from .candidates import find_candidates
from .location_filter import model_zones, zone_of

SEQUENCES = {"T2S": "dark", "SWI": "dark", "QSM": "bright"}
_SEQUENCE_ALIASES = {"T2*": "T2S", "T2STAR": "T2S", "GRE": "T2S", "T2S": "T2S", "SWI": "SWI", "QSM": "QSM"}


@dataclass
class DetectionResult:
    """What `detect` returns; every Volume is on the input's grid."""

    mask: Volume                       # int16 instance labels 1..N (0 = background)
    probability: Volume                # float32 CMB probability in [0, 1]
    records: list[dict]                # one dict per CMB, record i has label i + 1
    settings: dict                     # model, threshold, device, sequence, polarity, limits
    timings: dict[str, float]          # seconds per step and "total"
    warnings: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # candidates removed, by reason
    model_grid: dict = field(default_factory=dict)  # with keep_model_grid: pre, probability, all candidates
    suppressed: list[dict] = field(default_factory=list)  # candidates in a mimic zone ("suppressed_by"), not in mask


def normalise_sequence(sequence: str) -> str:
    """'T2*', 't2s', 'GRE' -> 'T2S'; 'swi' -> 'SWI'; 'qsm' -> 'QSM'; anything else -> CMBError."""
    key = str(sequence or "T2S").strip().upper().replace("-", "").replace("_", "")
    if key not in _SEQUENCE_ALIASES:
        raise CMBError(f"unknown sequence '{sequence}'; use T2S (T2*-GRE), SWI or QSM")
    return _SEQUENCE_ALIASES[key]


def detect(volume: Volume, model: Union[str, tuple[object, dict]] = "default", device: str = "auto",
           threshold: Optional[float] = None, polarity: Optional[str] = None, sequence: str = "T2S",
           location: bool = False, brain_mask=None, min_diameter_mm: Optional[float] = None,
           max_diameter_mm: Optional[float] = None, sw_batch_size: int = 2, overlap: Optional[float] = None,
           progress=None, cancel=None, second_stage: Optional[bool] = None,
           keep_model_grid: bool = False, location_filter: Optional[bool] = None,
           zooms=None, tta=None, skull_on: Optional[bool] = None, window: Optional[str] = None,
           first_stage: Optional[str] = None) -> DetectionResult:
    """Detect CMBs in `volume` (a 3D Volume; SWI / T2*-GRE magnitude or QSM).

    model: a bundled model name, "default", a model folder, or a loaded (network, metadata)
    pair.  device: "auto", "cuda", "mps" or "cpu".  threshold: probability cut (default:
    the model's).  sequence: "T2S", "SWI" or "QSM"; polarity ("dark" or "bright", CMBs'
    appearance) defaults from it (QSM: bright).  location: add each CMB's anatomical
    location (needs CMBLib.location).  brain_mask: optional array/Volume on the input grid.
    zooms: the model grids to run on, each a zoom (i, j, k) of the model's spacing (default:
    model.json "inference_zooms", else [[1, 1, 1]]); the probability maps are combined by
    their voxel-wise maximum on the input grid.  tta: test-time augmentation on the canonical
    model grid, a preset ("none", "mirror", "flips", "d4") or in-plane transform names
    (`inference.tta_transforms`; default: model.json "tta", else the model's per-window
    "flip_average"); the probability maps of the turned / mirrored inputs are averaged after
    mapping back.  skull_on: True finds the brain inside the skull of a skull-on scan and sets
    the rest to background (`preprocess.SKULL_ON`), False the classic brain mask with the
    head kept, None the model's "preprocess" (docs/detector.md, "Skull-on heads").  window:
    "brain" runs the network once on the brain's box, "tiles" on the model's windows over the
    whole grid (`inference.predict_probability`; default model.json "inference_window", else
    "tiles").  first_stage: "unet" (the 3D U-Net alone) or "unet+native" (plus the native patch
    stage's small dark spots at the scan's own resolution, `native_stage`, for dark CMBs; needs
    the model folder's patch network); default model.json "first_stage", else "unet".  Sizes
    are in mm.  Raises CMBError for bad input, `Cancelled` when `cancel`
    is set.
    """
    from .inference import model_tta, predict_probability, select_device, tta_swaps_axes
    from .model_io import load_model
    from .preprocess import SKULL_ON, preprocess, preprocess_options

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    validate_image(volume, "image")
    sequence = normalise_sequence(sequence)
    polarity = polarity or SEQUENCES[sequence]
    if polarity not in ("dark", "bright"):
        raise CMBError(f"polarity must be 'dark' or 'bright', not '{polarity}'")

    report(progress, 0.0, "loading model")
    t = time.perf_counter()
    dev = select_device(device)
    if isinstance(model, (tuple, list)):
        network, meta = model
        network.to(dev)
        network.eval()
    else:
        network, meta = load_model(model, device=dev)
    timings["load_model"] = time.perf_counter() - t
    stage2, meta = stages(meta, polarity, second_stage)
    zones = model_zones(meta, location_filter)
    pre_options = preprocess_options(meta, **SKULL_ON.get(skull_on, {}))
    thr = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    if not 0.0 < thr < 1.0:
        raise CMBError(f"threshold {thr} must lie between 0 and 1")
    min_d = float(meta.get("min_diameter_mm", 2.0) if min_diameter_mm is None else min_diameter_mm)
    overlap = float(meta.get("inference_overlap", 0.125) if overlap is None else overlap)
    patch = meta.get("inference_patch_size") or meta["patch_size"]
    window = str(meta.get("inference_window", "tiles") if window is None else window)
    max_d = float(meta.get("max_diameter_mm", 10.0) if max_diameter_mm is None else max_diameter_mm)
    first = _first_stage(meta, first_stage, polarity, warnings)

    check_cancel(cancel)
    zooms = inference_zooms(meta, zooms)
    flip_average, tta = model_tta(meta, tta)   # tta None: the model's per-window flip_average
    if tta_swaps_axes(tta) and any(abs(float(meta["spacing_mm"][0]) / z[0] - float(meta["spacing_mm"][1]) / z[1])
                                   > 1e-6 for z in zooms):
        raise CMBError("test-time 90-degree turns and transposes need a model grid with equal i and j "
                       "spacing; use --tta flips")
    prob, pre, prob_model, brain_native, used = None, None, None, None, "cpu"
    for n, zoom in enumerate(zooms):
        lo, hi = 0.02 + 0.88 * n / len(zooms), 0.02 + 0.88 * (n + 1) / len(zooms)
        tag = "" if len(zooms) == 1 else f" (zoom {n + 1}/{len(zooms)})"
        report(progress, lo, "preprocessing" + tag)
        t = time.perf_counter()
        spacing = tuple(float(s) / float(z) for s, z in zip(meta["spacing_mm"], zoom))
        pre_z = preprocess(volume, spacing, polarity=polarity,  # one brain mask for all zooms
                           brain_mask=brain_mask if brain_mask is not None or pre is None else brain_native,
                           **pre_options)
        timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - t

        check_cancel(cancel)
        t = time.perf_counter()

        def _inner(f, msg, lo=lo, hi=hi, tag=tag):
            report(progress, lo + 0.08 * (hi - lo) + 0.92 * (hi - lo) * f, f"detecting{tag}: {msg}")

        prob_z, used = predict_probability(network, pre_z.array, patch, device=dev,
                                           sw_batch_size=sw_batch_size, overlap=overlap, progress=_inner,
                                           cancel=cancel, warnings=warnings, mask=pre_z.brain_mask,
                                           flip_average=flip_average, tta=tta, window=window)
        prob_z[~pre_z.brain_mask] = 0.0
        timings["inference"] = timings.get("inference", 0.0) + time.perf_counter() - t
        check_cancel(cancel)
        t = time.perf_counter()
        native = np.clip(pre_z.to_native(prob_z, order=1), 0.0, 1.0).astype(np.float32)
        if pre is None:  # the model's own grid: brain mask, second-stage features, keep_model_grid
            pre, prob_model, prob = pre_z, prob_z, native
            brain_native = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0
        else:
            np.maximum(prob, native, out=prob)
        timings["candidates"] = timings.get("candidates", 0.0) + time.perf_counter() - t

    report(progress, 0.9, "finding candidates")
    t = time.perf_counter()
    prob_vol = volume.with_array(prob)
    labels, records, dropped = find_candidates(prob_vol, thr, min_d, max_d, brain_mask=brain_native)
    timings["candidates"] = timings.get("candidates", 0.0) + time.perf_counter() - t

    model_grid = {}
    if (stage2 is not None or keep_model_grid) and records:
        from .second_stage import candidate_features

        t = time.perf_counter()
        feats = candidate_features(pre.array, prob_model, pre.brain_mask, pre.grid, records)
        if keep_model_grid:
            model_grid = {"pre": pre, "probability": prob_model, "records": [dict(r) for r in records],
                          "features": feats}
        if stage2 is not None:
            labels, records, dropped["second_stage"] = apply_second_stage(stage2, feats, labels, records)
        timings["second_stage"] = time.perf_counter() - t
    elif keep_model_grid:
        model_grid = {"pre": pre, "probability": prob_model, "records": [], "features": None}

    native_added = None
    if first == "unet+native":
        check_cancel(cancel)
        report(progress, 0.93, "small dark spots at the scan's resolution")
        t = time.perf_counter()
        labels, records, native_added = _native_step(volume, brain_native, meta, labels, records, max_d)
        timings["native"] = time.perf_counter() - t

    suppressed: list[dict] = []
    if records and (location or zones):
        check_cancel(cancel)
        t = time.perf_counter()
        labels, records, suppressed = _location_step(
            volume, labels, records, zones, location, polarity, brain_native, warnings,
            progress=lambda f, m: report(progress, 0.95 + 0.05 * f, f"locating: {m}"), cancel=cancel)
        if zones:
            dropped["location"] = len(suppressed)
        timings["location"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    timings = {k: round(v, 3) for k, v in timings.items()}

    settings = {
        "model": meta.get("name", "unnamed"),
        "model_version": str(meta.get("version", "")),
        "model_sha256": meta.get("sha256", ""),
        "threshold": thr,
        "device": used,
        "device_requested": device,
        "sequence": sequence,
        "polarity": polarity,
        "min_diameter_mm": min_d,
        "max_diameter_mm": max_d,
        "model_spacing_mm": [float(s) for s in meta["spacing_mm"]],
        "patch_size": [int(p) for p in patch],
        "window": window,
        "first_stage": first,
        "native_added": native_added,
        "overlap": overlap,
        "zooms": [[float(z) for z in zoom] for zoom in zooms],
        "preprocess": pre_options,
        "tta": list(tta) if tta else None,
        "flip_average": flip_average,
        "location": bool(location),
        "location_filter": list(zones),
        "second_stage": None if stage2 is None else {"threshold": float(stage2[1]["threshold"]),
                                                     "file": str(stage2[1].get("file", ""))},
    }
    report(progress, 1.0, f"done: {len(records)} CMB candidate(s)")
    return DetectionResult(volume.with_array(labels), prob_vol, records, settings, timings, warnings, dropped,
                           model_grid, suppressed)


_STAGE2_CACHE: dict = {}


def _first_stage(meta: dict, first_stage: Optional[str], polarity: str, warnings: list) -> str:
    """The first stage to run: `first_stage`, else model.json "first_stage", else "unet";
    "unet+native" needs the model folder's patch network and dark CMBs (QSM: U-Net alone, said)."""
    from .native_stage import FIRST_STAGES

    first = str(meta.get("first_stage", "unet") if first_stage is None else first_stage)
    if first not in FIRST_STAGES:
        raise CMBError(f"first stage must be {' or '.join(FIRST_STAGES)}, not {first!r}")
    if first == "unet+native" and polarity != "dark":
        warnings.append("the native patch stage looks for dark CMBs; on this bright-CMB image the U-Net runs alone")
        return "unet"
    if first == "unet+native" and not meta.get("path"):
        raise CMBError("the native patch stage needs a model folder with patch_net.npz and patch_net.json")
    return first


def _native_step(volume: Volume, brain: np.ndarray, meta: dict, labels: np.ndarray, records: list, max_d: float):
    """Add the native patch stage's findings (farther than native_stage.MERGE_MM from the U-Net's,
    at most `max_d` mm across) to (labels, records); returns them and the number added."""
    from .native_stage import load_native, merge_findings, native_findings

    net, settings = load_native(meta["path"])
    spec = meta.get("native_stage") or {}
    if spec.get("sha256") and spec["sha256"] != settings.get("sha256"):
        raise CMBError(f"the patch network in {meta['path']} is not the one model.json names (checksum)")
    thr = float(spec.get("threshold", settings["threshold"]))
    found = [r for r in native_findings(volume, brain, net, thr) if r["diameter_mm"] <= max_d]
    n0 = len(records)
    labels, records = merge_findings(labels, records, found)
    return labels, records, len(records) - n0


def inference_zooms(meta: dict, zooms=None) -> list[list[float]]:
    """The zooms (i, j, k, each in [0.25, 4]) to run the network at: `zooms`, else
    model.json's "inference_zooms", else [[1, 1, 1]] (the model's own grid only).

    A zoom of 2 in-plane runs the network on a grid twice as fine (spacing / 2), where a
    2.5 mm CMB looks like the 5 mm ones it was trained to find; sizes stay in real mm.  The
    first zoom's grid gives the brain mask and the model-grid outputs (second-stage
    features, `keep_model_grid`).  No shipped model sets "inference_zooms" (tried for
    cmb-default 0.3.2 and not used: docs/detector.md, "Test-time zoom").
    """
    zooms = zooms if zooms is not None else meta.get("inference_zooms") or [[1.0, 1.0, 1.0]]
    zooms = [zooms] if np.isscalar(zooms) else zooms     # zooms=2: one zoom of 2 along i, j and k
    out = []
    for zoom in zooms:
        z = [float(zoom)] * 3 if np.isscalar(zoom) else [float(v) for v in zoom]
        if len(z) != 3 or not all(np.isfinite(v) and 0.25 <= v <= 4.0 for v in z):
            raise CMBError(f"inference zoom {zoom} must be one number or three (i, j, k), each in [0.25, 4]")
        out.append(z)
    if not out:
        raise CMBError("inference zooms: give at least one")
    return out


def stages(meta: dict, polarity: str, second_stage: Optional[bool] = None):
    """(second stage or None, metadata with the cut-offs that apply) for `polarity`.

    second_stage: None = the model's default (its classifier when it has one, was trained on
    this polarity and is not marked ``"default": false`` in model.json), True = require it
    (CMBError when absent), False = first stage alone.

    Cut-offs: with the classifier, the first stage uses ``second_stage.stage1_threshold`` /
    ``stage1_min_diameter_mm`` when model.json has them (0.3.2 on), else its top-level ones;
    alone, its top-level ones, overridden by ``without_second_stage`` (0.3.0-0.3.1 format).
    """
    spec = meta.get("second_stage") or {}
    if second_stage is None:  # the model's default; its classifier file is only read when it runs
        wanted = (polarity in spec.get("polarities", [polarity])   # cmb-default 0.3.0: dark CMBs only
                  and spec.get("default", True) is not False)       # 0.3.2: opt-in (not carried over to unseen brains)
    else:
        wanted = bool(second_stage)
    stage2 = _second_stage(meta) if wanted else None
    if second_stage and stage2 is None:
        raise CMBError(f"model '{meta.get('name', 'unnamed')}' has no second stage (candidate classifier)")
    if stage2 is None and isinstance(meta.get("without_second_stage"), dict):
        meta = dict(meta, **meta["without_second_stage"])  # first stage alone: its own cut-offs
    if stage2 is not None:
        spec = stage2[1]
        meta = dict(meta, threshold=float(spec.get("stage1_threshold", meta.get("threshold", 0.5))),
                    min_diameter_mm=float(spec.get("stage1_min_diameter_mm", meta.get("min_diameter_mm", 2.0))))
    return stage2, meta


def apply_second_stage(stage2, features, labels: np.ndarray, records: list[dict]):
    """Keep the candidates the classifier scores at or above its threshold.

    features: `second_stage.candidate_features` of `records` (one row each).  Returns
    (labels renumbered 1..N, kept records with "stage2_probability", number dropped).
    """
    ensemble, spec = stage2
    p2 = ensemble.probability(features)
    keep = p2 >= float(spec["threshold"])
    for rec, p in zip(records, p2):
        rec["stage2_probability"] = round(float(p), 4)
    labels, records = _keep(labels, records, keep)
    return labels, records, int((~keep).sum())


def _second_stage(meta: dict):
    """(TreeEnsemble, settings) of the model's candidate classifier, or None (cached per file)."""
    spec = meta.get("second_stage")
    if not spec or not meta.get("path"):
        return None
    key = (str(meta["path"]), str(spec.get("sha256", "")))
    if key not in _STAGE2_CACHE:
        from .second_stage import load_second_stage

        _STAGE2_CACHE[key] = load_second_stage(meta["path"], meta)[0]
    return _STAGE2_CACHE[key], dict(spec, threshold=float(spec.get("threshold", 0.5)))


def _keep(labels: np.ndarray, records: list[dict], keep) -> tuple[np.ndarray, list[dict]]:
    """Labels and records with only the records where `keep`, renumbered 1..N in order."""
    lut = np.zeros(len(records) + 1, np.int16)
    kept = []
    for rec, k in zip(records, keep):
        if k:
            kept.append(rec)
            lut[rec["label"]] = len(kept)
            rec["label"] = len(kept)
    return lut[labels], kept


def suppress_in_zones(labels: np.ndarray, records: list[dict], found: list[dict], zones) -> tuple:
    """Set aside the records whose atlas location (`found`, one dict with mni_x/y/z each) lies
    in one of `zones`.  Returns (labels renumbered, kept records, suppressed records with
    "suppressed_by" = the zone's name and label 0)."""
    mni = [[f.get("mni_x", np.nan), f.get("mni_y", np.nan), f.get("mni_z", np.nan)] for f in found]
    where = zone_of(np.array(mni, dtype=float).reshape(-1, 3), zones)
    suppressed = []
    for rec, zone in zip(records, where):
        if zone:
            rec["suppressed_by"] = zone
            suppressed.append(rec)
    labels, kept = _keep(labels, records, [z is None for z in where])
    for rec in suppressed:
        rec["label"] = 0
    return labels, kept, suppressed


NEAR_ZONE_MM = 62.0  # farther than this from the brain's centroid no candidate can be in a zone
NEAR_PAIR_MM = 118.0  # the same for the pair zones' boxes (82.5 mm from the template's centroid)


def near_zones(volume: Volume, records: list[dict], brain=None, zones=("deep_midline_veins",)) -> bool:
    """Whether a candidate could lie in a location-filter zone of `zones`: a box zone needs one
    within NEAR_ZONE_MM of the centroid of `brain` (bool [k, j, i] on `volume`'s grid; else of
    the non-zero voxels), a pair zone two within NEAR_PAIR_MM.  The box zone lies within 40.4 mm
    of the template brain's centroid, the pair boxes within 82.5 mm; 1.3 x that for a large head
    plus 10 mm for a centroid shifted by partial coverage.  When none can, the registration is
    skipped."""
    from .location_filter import ZONES, PairZone

    mask = np.asarray(brain if brain is not None else np.asarray(volume.array) != 0, bool)
    if not mask.any():
        return True
    centroid = volume.kji_to_ras(np.argwhere(mask[::2, ::2, ::2]).mean(axis=0)[None] * 2)[0]
    centres = np.array([r["centre_ras"] for r in records], dtype=float).reshape(-1, 3)
    dist = np.linalg.norm(centres - centroid, axis=1)
    pairs = any(isinstance(ZONES[z], PairZone) for z in zones)
    return bool(np.any(dist <= NEAR_ZONE_MM) or (pairs and np.count_nonzero(dist <= NEAR_PAIR_MM) >= 2))


def _location_step(volume: Volume, labels: np.ndarray, records: list[dict], zones, location: bool,
                   polarity: str, brain, warnings: list[str], progress=None, cancel=None) -> tuple:
    """Atlas location (`location`) and the location filter (`zones`) from one atlas registration
    of `volume`, cached per image (`CMBLib.location.registration_for`; skipped when only the filter
    asks and no candidate is near a zone).  A failed registration never fails the study: one
    warning "<what was not done>: <reason>"; so does a registration the filter's gate refuses
    (`registration.filter_problems`: not a brain, a slab, the zone out of view), then nothing is
    set aside.  Returns (labels, records kept, records set aside)."""
    from ..progress import Cancelled
    from .location_filter import zones_box

    if zones and not location and not near_zones(volume, records, brain, zones):
        return labels, records, []
    failure = " and ".join(m for m, on in (("location filter not applied", bool(zones)),
                                           ("location not determined", location)) if on)
    try:
        from ..location import Locator, registration_for
    except ImportError:
        raise CMBError("location module not installed (CMBLib.location); run without --location") from None
    points = np.array([r["centre_ras"] for r in records], dtype=float)
    try:
        reg = registration_for(volume, progress=progress, cancel=cancel)
        locator = Locator(volume, registration=reg)
        found = locator.locate(points) if location else None
        warnings.extend(locator.warnings)
    except Cancelled:
        raise
    except CMBError as exc:
        warnings.append(f"{failure}: {exc}")
        return labels, records, []
    except ImportError as exc:  # SimpleITK (a core requirement) missing from a broken install
        warnings.append(f"{failure}: atlas registration needs {exc.name or 'SimpleITK'}, not installed")
        return labels, records, []
    if location:
        _add_locations(records, found)
    if not zones:
        return labels, records, []
    from ..location.registration import filter_problems

    problems = filter_problems(reg, volume, zones_box(zones), polarity)
    if problems:
        warnings.append("location filter not applied: " + problems[0])
        return labels, records, []
    mni = reg.subject_to_template_ras(points)
    found = [{"mni_x": float(m[0]), "mni_y": float(m[1]), "mni_z": float(m[2])} for m in mni]
    return suppress_in_zones(labels, records, found, zones)


def _add_locations(records: list[dict], found: list) -> None:
    """Fill record["location"] (MARS region), "location_category" and "side" from `found`."""
    for rec, loc in zip(records, found):
        rec["location"] = _location_name(loc)
        if isinstance(loc, dict):
            for key, name in (("category", "location_category"), ("side", "side")):
                if loc.get(key):
                    rec[name] = str(loc[key])


def _location_name(loc) -> str:
    """A location as returned by locate_points (a name, or a dict with a name) -> str."""
    if isinstance(loc, dict):
        for key in ("location", "region", "name", "label"):
            if key in loc:
                return str(loc[key])
        return ""
    return "" if loc is None else str(loc)
