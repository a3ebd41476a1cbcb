"""The detection pipeline: one implementation shared by `cmb detect`, CMBDetector and training.

    image (Volume, native grid) -> validate -> preprocess onto the model grid (brain mask,
    resample, polarity, robust normalisation) -> sliding-window inference -> probability
    map back on the native grid -> candidates (connected components, size limits in mm,
    inside the brain) -> per-CMB records (+ location when asked).

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
           progress=None, cancel=None) -> DetectionResult:
    """Detect CMBs in `volume` (a 3D Volume; SWI / T2*-GRE magnitude or QSM).

    model: a bundled model name, "default", a model folder, or a loaded (network, metadata)
    pair.  device: "auto", "cuda", "mps" or "cpu".  threshold: probability cut (default:
    the model's).  sequence: "T2S", "SWI" or "QSM"; polarity ("dark" or "bright", CMBs'
    appearance) defaults from it (QSM: bright).  location: add each CMB's anatomical
    location (needs CMBLib.location).  brain_mask: optional array/Volume on the input grid.
    Sizes are in mm.  Raises CMBError for bad input, `Cancelled` when `cancel` is set.
    """
    from .inference import fit_window, predict_probability, select_device
    from .model_io import load_model
    from .preprocess import preprocess

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
    thr = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    if not 0.0 < thr < 1.0:
        raise CMBError(f"threshold {thr} must lie between 0 and 1")
    min_d = float(meta.get("min_diameter_mm", 2.0) if min_diameter_mm is None else min_diameter_mm)
    overlap = float(meta.get("inference_overlap", 0.125) if overlap is None else overlap)
    window = meta.get("inference_patch_size") or meta["patch_size"]
    max_d = float(meta.get("max_diameter_mm", 10.0) if max_diameter_mm is None else max_diameter_mm)

    check_cancel(cancel)
    report(progress, 0.02, "preprocessing")
    t = time.perf_counter()
    pre = preprocess(volume, tuple(meta["spacing_mm"]), polarity=polarity, brain_mask=brain_mask)
    timings["preprocess"] = time.perf_counter() - t

    check_cancel(cancel)
    t = time.perf_counter()

    def _inner(f, msg):
        report(progress, 0.1 + 0.8 * f, f"detecting: {msg}")

    if _window_invariant(meta):  # fewer, tighter windows: same result, less computation
        from .network import divisor

        window = fit_window(pre.array.shape[::-1], window, divisor(meta.get("network") or {}), overlap)
    prob_model, used = predict_probability(network, pre.array, window, device=dev,
                                           sw_batch_size=sw_batch_size, overlap=overlap, progress=_inner,
                                           cancel=cancel, warnings=warnings, mask=pre.brain_mask,
                                           flip_average=bool(meta.get("flip_average", False)))
    prob_model[~pre.brain_mask] = 0.0
    timings["inference"] = time.perf_counter() - t

    check_cancel(cancel)
    report(progress, 0.9, "finding candidates")
    t = time.perf_counter()
    prob = np.clip(pre.to_native(prob_model, order=1), 0.0, 1.0).astype(np.float32)
    brain_native = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0
    prob_vol = volume.with_array(prob)
    labels, records, dropped = find_candidates(prob_vol, thr, min_d, max_d, brain_mask=brain_native)
    timings["candidates"] = time.perf_counter() - t

    if location and records:
        check_cancel(cancel)
        t = time.perf_counter()
        _add_locations(volume, records, warnings,
                       progress=lambda f, m: report(progress, 0.95 + 0.05 * f, f"locating: {m}"), cancel=cancel)
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
        "patch_size": [int(p) for p in window],
        "overlap": overlap,
        "location": bool(location),
    }
    report(progress, 1.0, f"done: {len(records)} CMB candidate(s)")
    return DetectionResult(volume.with_array(labels), prob_vol, records, settings, timings, warnings, dropped)


def _window_invariant(meta: dict) -> bool:
    """True when the network's output does not depend on the window size: no instance norm
    (batch norm in eval mode uses fixed statistics).  model.json "inference_window":
    "fit" or "fixed" overrides."""
    choice = str(meta.get("inference_window", "")).lower()
    if choice in ("fit", "fixed"):
        return choice == "fit"
    net = meta.get("network")
    if not isinstance(net, dict):
        return False
    from .network import network_params

    norm = network_params(net).get("norm")
    name = norm[0] if isinstance(norm, (list, tuple)) and norm else norm
    return str(name).lower() in ("batch", "none")


def _add_locations(volume: Volume, records: list[dict], warnings: list[str], progress=None, cancel=None) -> None:
    """Fill record["location"] (MARS region), "location_category" and "side" from CMBLib.location.

    A failed location (e.g. the atlas registration) becomes a warning, not a failed study.
    """
    try:
        from ..location import locate_points
    except ImportError:
        raise CMBError("location module not installed (CMBLib.location); run without --location") from None
    from ..progress import Cancelled

    points = np.array([r["centre_ras"] for r in records], dtype=float)
    try:
        found = locate_points(volume, points, progress=progress, cancel=cancel)
    except TypeError:  # a locate_points without progress/cancel
        found = locate_points(volume, points)
    except Cancelled:
        raise
    except CMBError as exc:
        warnings.append(f"location not determined: {exc}")
        return
    for rec, loc in zip(records, list(found)):
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
