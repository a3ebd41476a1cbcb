"""The native patch stage as a detector step (issue 28): dark-spot candidates at the scan's own
resolution (`dark_spots`), scored by the 2.5D patch network (`patch_net`), each kept one
turned into a CMB record like the U-Net's (`candidates.component_properties`), and merged with
the U-Net's findings: a native finding within `MERGE_MM` of a U-Net finding is the same CMB
and is dropped (the U-Net's mask and probability stay).

Brain: the detector's brain mask on the input grid, eroded `ERODE_MM` in-plane (vessels of the
brain surface).  The region of a native finding is the connected part of its dip (at least
half the candidate's dip) within `REGION_MM` of its centre; sizes in mm, centres in RAS mm.

    found = native_findings(volume, brain, net, threshold=0.9)    # records, with "region"
    labels, records = merge_findings(labels, records, found)
"""
import numpy as np

from ..geometry import Volume
from .candidates import component_properties
from .dark_spots import dark_spot_candidates, dip_map, slice_axis
from .patch_net import predict, sample_patches

ERODE_MM = 2.0
MERGE_MM = 5.0        # the VALDO distance: closer than this, two findings are one CMB
REGION_MM = 3.0
FLIP_FROM = 0.2       # candidates scoring at least this get the 4-flip average


FIRST_STAGES = ("unet", "unet+native")
_NETS: dict = {}


def load_native(folder) -> tuple:
    """(network, settings) of the patch network in a model folder, loaded once per file."""
    from pathlib import Path

    from .patch_net import SETTINGS, load_patch_net

    f = Path(folder) / SETTINGS
    key = (str(f), f.stat().st_mtime_ns if f.is_file() else None)
    if key not in _NETS:
        _NETS[key] = load_patch_net(folder)
    return _NETS[key]


def eroded_brain(volume: Volume, brain: np.ndarray, erode_mm: float = ERODE_MM) -> np.ndarray:
    """`brain` eroded by `erode_mm` in the slice plane (not through it)."""
    from scipy import ndimage as ndi

    sp = np.asarray(volume.spacing[::-1], float)
    ax = slice_axis(sp)
    inplane = [d for d in range(3) if d != ax]
    it = int(round(erode_mm / float(np.mean(sp[inplane]))))
    if it <= 0:
        return np.asarray(brain, bool)
    st = ndi.generate_binary_structure(3, 1)       # the 6-neighbour cross, less its through-plane arms
    for v in (0, 2):
        st[tuple(v if d == ax else 1 for d in range(3))] = False
    return ndi.binary_erosion(np.asarray(brain, bool), structure=st, iterations=it)


def candidates(volume: Volume, brain: np.ndarray, top_k: int = 3000) -> tuple:
    """(candidates, eroded brain, dip map, tissue level): the dark-spot candidates of `brain`
    eroded ERODE_MM in-plane, as the detector and the patch network's training both take them
    (dip map None when the eroded brain is empty)."""
    inner = eroded_brain(volume, brain)
    if not inner.any():
        return [], inner, None, 1.0
    dip, level = dip_map(volume, inner)
    return dark_spot_candidates(volume, inner, top_k=top_k, dip=dip), inner, dip, level


def score(volume: Volume, brain: np.ndarray, net, top_k: int = 3000) -> tuple:
    """(candidates, probabilities, dip map): every candidate (`candidates`) with its
    patch-network probability (flip-averaged from FLIP_FROM up)."""
    cands, inner, dip, level = candidates(volume, brain, top_k)
    if not cands:
        return [], np.zeros(0, np.float32), dip
    patches = sample_patches(volume, inner, [c["kji"] for c in cands], level=level)
    p = predict(net, patches, flips=False)
    again = np.flatnonzero(p >= FLIP_FROM)
    if again.size:
        p[again] = predict(net, patches[again], flips=True)
    return cands, p, dip


def _region(volume: Volume, dip: np.ndarray, kji) -> tuple:
    """(bool box, slices) of the dip's connected part around `kji` (at least half its dip),
    within REGION_MM in-plane and one slice each side."""
    from scipy import ndimage as ndi

    sp = np.asarray(volume.spacing[::-1], float)
    half = np.maximum(np.round(REGION_MM / sp).astype(int), 1)
    half[slice_axis(sp)] = 1
    sl = tuple(slice(max(int(c) - h, 0), min(int(c) + h + 1, n)) for c, h, n in zip(kji, half, dip.shape))
    box = dip[sl]
    seed = tuple(int(c) - s.start for c, s in zip(kji, sl))
    lab, _ = ndi.label(box >= 0.5 * box[seed])
    return lab == lab[seed], sl


def native_findings(volume: Volume, brain: np.ndarray, net, threshold: float, top_k: int = 3000) -> list:
    """CMB records (as `find_candidates` gives them, plus ``stage`` "native", ``dip`` and the
    boolean ``region`` with its ``slices``) of the candidates scoring at least `threshold`."""
    cands, p, dip = score(volume, brain, net, top_k)
    out = []
    for c, prob in zip(cands, p):
        if prob < threshold:
            continue
        comp, sl = _region(volume, dip, c["kji"])
        rec = component_properties(comp, sl, np.full(comp.shape, prob, np.float32), volume)
        rec.update(stage="native", dip=round(float(c["dip"]), 4), centre_ras=[round(v, 3) for v in c["centre_ras"]],
                   region=comp, slices=sl)
        out.append(rec)
    return out


def merge_findings(labels: np.ndarray, records: list, native: list, merge_mm: float = MERGE_MM) -> tuple:
    """(labels, records) with every native finding farther than `merge_mm` from all U-Net
    findings (and from the native ones already added) added as a new label."""
    labels = labels.copy()
    records = [dict(r) for r in records]
    pts = [np.asarray(r["centre_ras"], float) for r in records]
    nxt = len(records) + 1          # as detect: record i has label i + 1
    for rec in native:
        c = np.asarray(rec["centre_ras"], float)
        if pts and np.min(np.linalg.norm(np.array(pts) - c, axis=1)) < merge_mm:
            continue
        r = {k: v for k, v in rec.items() if k not in ("region", "slices")}
        free = rec["region"] & (labels[rec["slices"]] == 0)
        labels[rec["slices"]][free] = nxt
        r["label"] = nxt
        records.append(r)
        pts.append(c)
        nxt += 1
    return labels, records
