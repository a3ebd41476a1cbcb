"""The native patch stage (issue 28): a small 2.5D network scoring dark-spot candidates on
patches sampled from the scan as acquired, not from the U-Net's 1 x 1 x 2 mm grid.

Patch: `PATCH_PX` x `PATCH_PX` in-plane samples every `PATCH_MM` mm (linear interpolation;
0.6 mm is at or below the in-plane spacing of clinical SWI / T2*, so nothing is averaged
away) on three planes parallel to the slices: the candidate's own and one each side at
``max(slice spacing, MIN_PLANE_STEP_MM)`` (on 4-5 mm slices, the neighbouring slices
themselves).  Intensities are divided by the brain's median and the centre plane's median is
subtracted (tissue about 0, a CMB negative), clipped to +-`CLIP`.  The three planes are the
network's channels (Ferrer et al.'s 2.5D idea at native resolution).

    x = sample_patches(volume, brain_mask, [c["kji"] for c in cands])
    p = predict(net, x)                                          # probability per candidate

The model folder holds ``patch_net.npz`` (the state dict as plain numpy arrays, read with
``allow_pickle=False``, as the U-Net's weights: loading never runs pickled code) and
``patch_net.json`` (its settings, threshold and the weights' sha256); `load_patch_net` checks both.
"""
import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..geometry import Volume
from .dark_spots import brain_median, slice_axis
from .model_io import sha256_file

PATCH_PX = 24
PATCH_MM = 0.6
MIN_PLANE_STEP_MM = 2.0
CLIP = 2.0
WEIGHTS = "patch_net.npz"
SETTINGS = "patch_net.json"


def plane_offsets_vox(spacing_kji) -> np.ndarray:
    """Offsets (voxels along the slice axis) of the three planes: -d, 0, +d."""
    sp = np.asarray(spacing_kji, float)
    s = sp[slice_axis(sp)]
    d = max(s, MIN_PLANE_STEP_MM) / s
    return np.array([-d, 0.0, d])


def sample_patches(volume: Volume, brain_mask: np.ndarray, kji, level: Optional[float] = None,
                   jitter_vox=None) -> np.ndarray:
    """(N, 3, PATCH_PX, PATCH_PX) float32 patches centred on voxels `kji` ([k, j, i], may be
    fractional), rows along the first in-plane array axis, columns along the second."""
    from scipy import ndimage as ndi

    a = np.asarray(volume.array, np.float32)
    kji = np.asarray(kji, float).reshape(-1, 3)
    if jitter_vox is not None:
        kji = kji + jitter_vox
    if level is None:
        level = brain_median(a, np.asarray(brain_mask, bool))
    sp = np.asarray(volume.spacing[::-1], float)
    ax = slice_axis(sp)
    inplane = [d for d in range(3) if d != ax]
    half = (PATCH_PX - 1) / 2.0
    g = (np.arange(PATCH_PX) - half) * PATCH_MM
    rows = g / sp[inplane[0]]
    cols = g / sp[inplane[1]]
    offs = plane_offsets_vox(sp)
    n = len(kji)
    coords = np.zeros((3, n, 3, PATCH_PX, PATCH_PX), np.float32)
    for c, (o) in enumerate(offs):
        coords[ax, :, c] = (kji[:, ax] + o)[:, None, None]
        coords[inplane[0], :, c] = kji[:, inplane[0], None, None] + rows[None, :, None]
        coords[inplane[1], :, c] = kji[:, inplane[1], None, None] + cols[None, None, :]
    out = ndi.map_coordinates(a, coords.reshape(3, -1), order=1, mode="nearest").reshape(n, 3, PATCH_PX, PATCH_PX)
    out /= level
    centre = np.median(out[:, 1].reshape(n, -1), axis=1)
    out -= centre[:, None, None, None]
    return np.clip(out, -CLIP, CLIP).astype(np.float32)


def build_network(width: int = 16):
    """A 2.5D CNN: 3 planes in, one logit out (35 377 parameters at width 16)."""
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(*block(3, w), *block(w, w), nn.MaxPool2d(2),
                         *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                         *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * w, 1))


def predict(net, patches: np.ndarray, batch: int = 512, flips: bool = True) -> np.ndarray:
    """Probability per patch; with `flips`, the mean over the 4 in-plane flips (the network
    was trained with flips and 90-degree turns, so its answer should not depend on them)."""
    import torch

    net.eval()
    out = np.zeros(len(patches), np.float32)
    views = ((), (2,), (3,), (2, 3)) if flips else ((),)
    with torch.no_grad():
        for s in range(0, len(patches), batch):
            x = torch.from_numpy(np.ascontiguousarray(patches[s:s + batch]))
            p = 0.0
            for dims in views:
                p = p + torch.sigmoid(net(torch.flip(x, dims) if dims else x)[:, 0])
            out[s:s + batch] = (p / len(views)).numpy()
    return out


def save_patch_net(net, folder, settings: dict) -> None:
    """Write the weights and a settings file (patch geometry, threshold, training data)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / WEIGHTS, **{k: v.detach().cpu().numpy() for k, v in net.state_dict().items()})
    meta = dict(settings, patch_px=PATCH_PX, patch_mm=PATCH_MM, min_plane_step_mm=MIN_PLANE_STEP_MM, clip=CLIP,
                sha256=sha256_file(folder / WEIGHTS))
    (folder / SETTINGS).write_text(json.dumps(meta, indent=1))


def load_patch_net(folder) -> tuple:
    """(network, settings) from `folder`; a clear error when a file is missing, the weights'
    checksum is not the one in the settings, or the patch geometry it was trained with is not
    this code's."""
    import torch

    from ..errors import CMBError

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() or not (folder / SETTINGS).is_file():
        raise CMBError(f"no patch network in {folder} (needs {WEIGHTS} and {SETTINGS})")
    meta = json.loads((folder / SETTINGS).read_text())
    mine = {"patch_px": PATCH_PX, "patch_mm": PATCH_MM, "min_plane_step_mm": MIN_PLANE_STEP_MM, "clip": CLIP}
    diff = {k: (meta.get(k), v) for k, v in mine.items() if meta.get(k) != v}
    if diff:
        raise CMBError(f"the patch network in {folder} was trained with other patches: {diff}")
    if meta.get("sha256") and sha256_file(folder / WEIGHTS) != meta["sha256"]:
        raise CMBError(f"{folder / WEIGHTS}: checksum does not match {SETTINGS} (a damaged or replaced file)")
    net = build_network(int(meta.get("width", 16)))
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as z:
            state = {k: torch.from_numpy(z[k]) for k in z.files}
        net.load_state_dict(state)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as e:
        raise CMBError(f"cannot read {folder / WEIGHTS}: {e}") from None
    net.eval()
    return net, meta
