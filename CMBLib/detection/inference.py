"""Sliding-window inference of a CMB probability map, with progress, cancel and device fall-back.

Arrays are indexed [k, j, i] (model grid); the network maps a (B, 1, z, y, x) float
tensor to (B, 1, z, y, x) logits (one CMB channel; two channels are read as softmax
background/CMB).  The result is a probability map in [0, 1].
"""
import math
from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..progress import check_cancel, report


def available_devices() -> list[str]:
    """Devices torch can use here, best first (e.g. ['cuda', 'cpu'])."""
    import torch

    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def select_device(device: str = "auto") -> str:
    """'auto' -> the first working GPU ('cuda', then 'mps'), else 'cpu'.

    An explicit 'cuda' or 'mps' that is not available raises CMBError.
    """

    device = (device or "auto").lower()
    if device not in ("auto", "cuda", "mps", "cpu") and not device.startswith("cuda:"):
        raise CMBError(f"unknown device '{device}'; use auto, cuda, mps or cpu")
    if device == "cpu":
        return "cpu"
    avail = available_devices()
    if device == "auto":
        for cand in avail:
            if cand == "cpu" or _device_works(cand):
                return cand
        return "cpu"
    base = device.split(":")[0]
    if base not in avail or not _device_works(device):
        raise CMBError(f"device '{device}' is not available here (available: {', '.join(avail)})")
    return device


def _device_works(device: str) -> bool:
    import torch

    try:
        (torch.ones(2, device=device) * 2).sum().item()
        return True
    except Exception:  # a GPU that is present but broken (driver, arch) is skipped
        return False


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of length `size` (MONAI's
    `dense_patch_slices` with `_get_scan_interval`): step int(roi * (1 - overlap)) (at least 1),
    the last window moved back to end at the edge.  `roi` > `size` is padded first (one window)."""
    size, roi = int(size), int(roi)
    if size <= roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    num = int(math.ceil(float(size) / interval))
    n = next((d for d in range(num) if d * interval + roi >= size), 0) + 1
    return [idx * interval - max(idx * interval + roi - size, 0) for idx in range(n)]


def count_windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of sliding windows for `shape` (same rule as MONAI's dense_patch_slices)."""
    n = 1
    for size, roi in zip(shape, roi_size):
        n *= len(window_starts(size, roi, overlap))
    return n


def importance_map(roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125):
    """Blending weights of one window (torch float32, shape `roi`), as MONAI's
    `compute_importance_map`: 'constant' ones, or 'gaussian' exp(-x^2 / (2 sigma^2)) per axis
    with x measured from the window centre and sigma = sigma_scale * size, clamped at 1e-3."""
    import torch

    mode = str(mode).lower()
    if mode == "constant":
        w = torch.ones(tuple(int(r) for r in roi), dtype=torch.float)
    elif mode == "gaussian":
        w = None
        for i, n in enumerate(int(r) for r in roi):
            sigma = n * float(sigma_scale)
            x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float)
            x = torch.exp(x ** 2 / (-2 * sigma ** 2))
            w = w.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    else:
        raise CMBError(f"unknown blending mode '{mode}'; use gaussian or constant")
    return torch.clamp_(w, min=max(torch.min(w).item(), 1e-3))


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or "out of memory" in str(exc).lower()


WINDOWS = ("tiles", "brain")
BRAIN_MARGIN = (8, 16, 16)          # voxels (k, j, i) of real context around the brain's box
MAX_WINDOW_VOXELS = 8_000_000       # a larger brain box is tiled with the model's windows (memory)
_WINDOW_MULTIPLE = 8                # the U-Net halves the grid three times


def brain_box(mask: np.ndarray, margin: Sequence[int] = BRAIN_MARGIN) -> tuple:
    """Slices (k, j, i) of the box around the True voxels of `mask`, grown by `margin` voxels
    on each side and then to a multiple of 8 voxels along each axis (both sides alike), clipped
    to the array (an axis shorter than that keeps its full length).  An empty mask gives the
    whole array."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for axis, n in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(hit[0]) - int(margin[axis]), int(hit[-1]) + 1 + int(margin[axis])
        grow = (-(hi - lo)) % _WINDOW_MULTIPLE
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > n:
            lo, hi = max(lo - (hi - n), 0), n
        out.append(slice(lo, hi))
    return tuple(out)


def predict_probability(network, array: np.ndarray, patch_size: Sequence[int], device: str = "cpu",
                        sw_batch_size: int = 2, overlap: float = 0.125, mode: str = "gaussian",
                        progress=None, cancel=None, warnings: Optional[list] = None,
                        mask: Optional[np.ndarray] = None, flip_average: bool = False,
                        tta: Optional[Sequence[str]] = None, window: str = "tiles",
                        margin: Sequence[int] = BRAIN_MARGIN,
                        max_window_voxels: int = MAX_WINDOW_VOXELS) -> tuple[np.ndarray, str]:
    """Probability map (float32, same shape as `array` [k, j, i]) and the device actually used.

    `patch_size` is (i, j, k) voxels (as stored in model metadata).  Windows run in
    batches of `sw_batch_size`; progress is reported and `cancel` checked after each
    batch.  `mask` (bool, same shape): windows holding no mask voxel are not computed
    (probability 0 there).  On out-of-memory the batch is halved, then one large window
    (window "brain") gives way to the model's windows, then a GPU job moves to the CPU; each
    fall-back is appended to `warnings` (a list of strings).
    `flip_average`: test-time augmentation, the mean of the probabilities of each window
    and of its mirror image along i (twice the computation).
    `tta`: test-time augmentation of the whole array: names of `TTA_TRANSFORMS` (see
    `tta_transforms`); the sliding window runs once on each transformed array (the head
    turned or mirrored in-plane, windows laid out on the turned array as for a scan that
    arrived turned) and the probability maps, mapped back, are averaged (len(tta) times the
    computation).  The set is a group for the presets, so the average is the same for a head
    turned by any of its members.
    `window`: "tiles" -- windows of `patch_size` laid over the whole array; "brain" -- the
    array is cropped to the box of `mask` (no mask: the whole array) grown by `margin` voxels
    (k, j, i) and to sizes of multiples of 8,
    and that box runs as one window when it holds at most `max_window_voxels` voxels (else
    windows of `patch_size` tile the box); zero outside the box (`brain_box`).
    """
    if window not in WINDOWS:
        raise CMBError(f"unknown inference window '{window}'; use {' or '.join(WINDOWS)}")
    warnings = warnings if warnings is not None else []
    transforms = list(tta) if tta else ["identity"]
    out = None
    for n, name in enumerate(transforms):
        def _sub(f, msg, n=n, name=name):
            tag = "" if len(transforms) == 1 else f"{name} ({n + 1}/{len(transforms)}): "
            report(progress, (n + f) / len(transforms), tag + msg)

        inp = tta_apply(array, name)
        m = None if mask is None else tta_apply(np.asarray(mask), name)
        box, roi, shape = None, patch_size, inp.shape
        if window == "brain":
            box = brain_box(np.ones(inp.shape, bool) if m is None else m, margin)
            size = [-(-(s.stop - s.start) // _WINDOW_MULTIPLE) * _WINDOW_MULTIPLE for s in box]
            if int(np.prod(size)) <= int(max_window_voxels):
                roi = size[::-1]  # one window (zero-padded where the array is shorter), (i, j, k)
            inp, m = inp[box], None if m is None else m[box]
        p, device = _predict_once(network, inp, roi, device, sw_batch_size, overlap, mode,
                                  _sub if progress is not None else None, cancel, warnings, m, flip_average,
                                  tiles=patch_size)
        if box is not None:
            full = np.zeros(shape, np.float32)
            full[box] = p
            p = full
        p = tta_invert(p, name)
        out = p.astype(np.float32) if out is None else out + p
    if len(transforms) > 1:
        out /= np.float32(len(transforms))
    return np.ascontiguousarray(out, dtype=np.float32), device


# In-plane transforms of a [k, j, i] array (the D4 group of the square): 90-degree turns,
# mirrors and transposes.  Each is its own inverse except rot90 / rot270.
TTA_TRANSFORMS = ("identity", "mirror_i", "mirror_j", "rot180", "rot90", "rot270", "transpose", "antitranspose")
TTA_PRESETS = {"none": ("identity",), "mirror": ("identity", "mirror_i"),
               "flips": ("identity", "mirror_i", "mirror_j", "rot180"), "d4": TTA_TRANSFORMS}
_SWAPS_IJ = frozenset({"rot90", "rot270", "transpose", "antitranspose"})


def tta_transforms(spec) -> Optional[list]:
    """Test-time augmentation as a list of `TTA_TRANSFORMS` names, or None (not given).

    `spec`: None or "" -> None (the model's default); False, "off" or "none" -> ["identity"];
    a preset ("mirror": identity + mirror along i; "flips": + mirror along j and the 180-degree
    turn, the group of in-plane mirrors; "d4": + the 90-degree turns and transposes, all 8);
    or transform names (a list, or one string separated by commas).  CMBError for anything else.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if spec is False:
        return ["identity"]
    names = [v.strip().lower() for v in spec.split(",")] if isinstance(spec, str) else \
        [str(v).strip().lower() for v in spec] if isinstance(spec, (list, tuple)) else None
    if names is None:
        raise CMBError(f"test-time augmentation {spec!r}: give a preset ({', '.join(TTA_PRESETS)}) or "
                       f"transform names ({', '.join(TTA_TRANSFORMS)})")
    if len(names) == 1 and names[0] in ("off", "none"):
        return ["identity"]
    if len(names) == 1 and names[0] in TTA_PRESETS:
        return list(TTA_PRESETS[names[0]])
    bad = [v for v in names if v not in TTA_TRANSFORMS]
    if bad or not names:
        raise CMBError(f"unknown test-time augmentation '{', '.join(bad) or spec}': use a preset "
                       f"({', '.join(TTA_PRESETS)}) or transform names ({', '.join(TTA_TRANSFORMS)})")
    if len(set(names)) != len(names):
        raise CMBError(f"test-time augmentation lists a transform twice: {', '.join(names)}")
    return names


def model_tta(meta: dict, tta=None) -> tuple:
    """(flip_average, tta transforms or None) with which `detect` runs a model: `tta` when given,
    else model.json "tta"; with a TTA set the per-window "flip_average" is not applied (a model
    folder keeps "flip_average" for older code that does not read "tta")."""
    transforms = tta_transforms(meta.get("tta") if tta is None else tta)
    flip_average = bool(meta.get("flip_average", False)) if transforms is None else False
    return flip_average, transforms


def tta_swaps_axes(transforms) -> bool:
    """Whether any of `transforms` swaps the in-plane axes (needs equal i and j spacing)."""
    return any(t in _SWAPS_IJ for t in (transforms or ()))


def tta_apply(array: np.ndarray, name: str) -> np.ndarray:
    """`array` [k, j, i] (3D, or any array whose last two axes are j, i) turned by `name`."""
    a = np.asarray(array)
    j, i = a.ndim - 2, a.ndim - 1
    if name == "identity":
        return a
    if name == "mirror_i":
        return np.flip(a, i)
    if name == "mirror_j":
        return np.flip(a, j)
    if name == "rot180":
        return np.flip(a, (j, i))
    if name == "rot90":
        return np.rot90(a, 1, axes=(j, i))
    if name == "rot270":
        return np.rot90(a, -1, axes=(j, i))
    if name == "transpose":
        return np.swapaxes(a, j, i)
    if name == "antitranspose":
        return np.flip(np.swapaxes(a, j, i), (j, i))
    raise CMBError(f"unknown test-time transform '{name}'")


def tta_invert(array: np.ndarray, name: str) -> np.ndarray:
    """Inverse of `tta_apply(., name)`."""
    return tta_apply(array, {"rot90": "rot270", "rot270": "rot90"}.get(name, name))


def _predict_once(network, array, patch_size, device, sw_batch_size, overlap, mode, progress, cancel,
                  warnings, mask, flip_average, tiles=None) -> tuple[np.ndarray, str]:
    """One sliding-window pass; on out-of-memory fewer windows at a time, then the model's
    windows `tiles` (i, j, k) instead of one large window, then the CPU."""
    import torch

    array = np.ascontiguousarray(array)
    mask = None if mask is None else np.ascontiguousarray(mask)
    roi = [int(p) for p in list(patch_size)[::-1]]  # (k, j, i) to match the array
    tiles = None if tiles is None else [int(p) for p in list(tiles)[::-1]]
    batch = max(int(sw_batch_size), 1)
    while True:
        try:
            return _run(network, array, roi, device, batch, overlap, mode, progress, cancel, mask,
                        flip_average), device
        except Exception as exc:  # only out-of-memory is retried
            if not _is_oom(exc):
                raise
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            if batch > 1:
                batch //= 2
                warnings.append(f"{device} ran out of memory; retrying with {batch} window(s) at a time")
            elif tiles is not None and roi != tiles:
                roi = tiles
                batch = max(int(sw_batch_size), 1)
                warnings.append(f"{device} ran out of memory with one window on the brain; "
                                "retrying with the model's windows")
            elif device != "cpu":
                warnings.append(f"{device} ran out of memory even with one window; running on the CPU instead")
                device = "cpu"
                network.to("cpu")
                batch = max(int(sw_batch_size), 1)
            else:
                raise CMBError("out of memory on the CPU during inference; close other programs "
                               "or use a machine with more memory") from None


def _run(network, array, roi, device, batch, overlap, mode, progress, cancel, mask=None,
         flip_average=False) -> np.ndarray:
    import torch

    network.to(device)

    def cmb_probability(image):
        logits = network(image)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1:2]

    def predictor(x):
        # x: (B, 2, z, y, x) = image and brain mask of B windows
        prob = torch.zeros_like(x[:, :1])
        keep = x[:, 1].flatten(1).amax(dim=1) > 0.5
        if bool(keep.any()):
            image = x[keep][:, :1]
            p = cmb_probability(image)
            if flip_average:
                p = 0.5 * (p + torch.flip(cmb_probability(torch.flip(image, dims=[-1])), dims=[-1]))
            prob[keep] = p
        return prob

    m = np.ones(array.shape, np.float32) if mask is None else np.asarray(mask, dtype=np.float32)
    x = torch.from_numpy(np.stack([np.asarray(array, dtype=np.float32), m]))[None]
    with torch.inference_mode():
        out = sliding_window(x, roi, predictor, batch=batch, overlap=overlap, mode=mode, device=device,
                             progress=progress, cancel=cancel)
    return out[0, 0].float().numpy().astype(np.float32, copy=False)


def sliding_window(inputs, roi: Sequence[int], predictor, batch: int = 2, overlap: float = 0.125,
                   mode: str = "gaussian", device: str = "cpu", progress=None, cancel=None):
    """`predictor` over overlapping windows of `inputs` (torch (1, C, z, y, x) on the CPU),
    blended: the same windows, batches, weights and sums as MONAI's
    `sliding_window_inference(inputs, roi, batch, predictor, overlap, mode, sw_device=device,
    device="cpu")` (Testing/test_detection_torch_unet.py compares them), without importing MONAI.

    An axis shorter than the window is zero-padded on both sides (and cropped back).  Windows
    run `batch` at a time on `device`; `progress` gets the fraction done and `cancel` is
    checked before each batch.  Returns a CPU tensor (1, C_out, z, y, x).
    """
    import torch
    import torch.nn.functional as F

    size_in = [int(n) for n in inputs.shape[2:]]
    roi = [int(r) for r in roi]
    pad = []
    for k in range(len(size_in) - 1, -1, -1):  # F.pad order: last axis first
        diff = max(roi[k] - size_in[k], 0)
        pad.extend([diff // 2, diff - diff // 2])
    if any(pad):
        inputs = F.pad(inputs, pad=pad, mode="constant", value=0.0)
    size = [max(n, r) for n, r in zip(size_in, roi)]
    starts = [window_starts(n, r, overlap) for n, r in zip(size, roi)]
    grid = np.meshgrid(*starts, indexing="ij")
    corners = np.stack([g.ravel() for g in grid], axis=1)
    slices = [tuple(slice(int(c), int(c) + r) for c, r in zip(corner, roi)) for corner in corners]
    weight = importance_map(roi, mode).to(dtype=inputs.dtype, device=device)[None, None]
    weight_cpu = weight.to("cpu")
    out, count = None, torch.zeros([1, 1] + size, dtype=inputs.dtype)
    n_calls = max(1, math.ceil(len(slices) / batch))
    for call, first in enumerate(range(0, len(slices), batch)):
        check_cancel(cancel)
        group = slices[first:first + batch]
        win = torch.cat([inputs[(slice(0, 1), slice(None)) + s] for s in group]) if batch > 1 \
            else inputs[(slice(0, 1), slice(None)) + group[0]]
        pred = predictor(win.to(device))
        if out is None:
            out = torch.zeros([1, int(pred.shape[1])] + size, dtype=inputs.dtype)
            for s in slices:
                count[(slice(None), slice(None)) + s] += weight_cpu
        pred = (pred * weight).to("cpu")
        for s, p in zip(group, pred):
            out[(slice(0, 1), slice(None)) + s] += p
        report(progress, min((call + 1) / n_calls, 1.0), f"window batch {call + 1}/{n_calls}")
    out /= count
    if any(pad):
        crop = [slice(None), slice(None)]
        for d, n in enumerate(size_in):
            lo = pad[2 * (len(size_in) - 1 - d)]
            crop.append(slice(lo, lo + n))
        out = out[tuple(crop)]
    return out
