"""Sliding-window inference of a CMB probability map, with progress, cancel and device fall-back.

Arrays are indexed [k, j, i] (model grid); the network maps a (B, 1, z, y, x) float
tensor to (B, 1, z, y, x) logits (one CMB channel; two channels are read as softmax
background/CMB).  The result is a probability map in [0, 1].
"""
import math
import warnings as _warnings
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


def count_windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI uses for `shape` (same rule as dense_patch_slices)."""
    n = 1
    for size, roi in zip(shape, roi_size):
        roi = min(int(roi), int(size))
        if size <= roi:
            continue
        interval = max(int(roi * (1 - overlap)), 1)
        num = int(math.ceil(float(size) / interval))
        starts = {min(interval * s, size - roi) for s in range(num)}
        n *= len(starts)
    return n


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or "out of memory" in str(exc).lower()


def predict_probability(network, array: np.ndarray, patch_size: Sequence[int], device: str = "cpu",
                        sw_batch_size: int = 2, overlap: float = 0.125, mode: str = "gaussian",
                        progress=None, cancel=None, warnings: Optional[list] = None,
                        mask: Optional[np.ndarray] = None, flip_average: bool = False) -> tuple[np.ndarray, str]:
    """Probability map (float32, same shape as `array` [k, j, i]) and the device actually used.

    `patch_size` is (i, j, k) voxels (as stored in model metadata).  Windows run in
    batches of `sw_batch_size`; progress is reported and `cancel` checked after each
    batch.  `mask` (bool, same shape): windows holding no mask voxel are not computed
    (probability 0 there).  On CUDA out-of-memory the batch is halved, then the job
    moves to the CPU; each fall-back is appended to `warnings` (a list of strings).
    `flip_average`: test-time augmentation, the mean of the probabilities of each window
    and of its mirror image along i (twice the computation).
    """
    import torch

    warnings = warnings if warnings is not None else []
    roi = [int(p) for p in list(patch_size)[::-1]]  # (k, j, i) to match the array
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
    from monai.inferers import sliding_window_inference

    total_calls = max(1, math.ceil(count_windows(array.shape, roi, overlap) / batch))
    done = {"n": 0}
    network.to(device)

    def cmb_probability(image):
        logits = network(image)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1:2]

    def predictor(x):
        # x: (B, 2, z, y, x) = image and brain mask of B windows
        check_cancel(cancel)
        prob = torch.zeros_like(x[:, :1])
        keep = x[:, 1].flatten(1).amax(dim=1) > 0.5
        if bool(keep.any()):
            image = x[keep][:, :1]
            p = cmb_probability(image)
            if flip_average:
                p = 0.5 * (p + torch.flip(cmb_probability(torch.flip(image, dims=[-1])), dims=[-1]))
            prob[keep] = p
        done["n"] += 1
        report(progress, min(done["n"] / total_calls, 1.0), f"window batch {done['n']}/{total_calls}")
        return prob

    m = np.ones(array.shape, np.float32) if mask is None else np.asarray(mask, dtype=np.float32)
    x = torch.from_numpy(np.stack([np.asarray(array, dtype=np.float32), m]))[None]
    with torch.inference_mode(), _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        out = sliding_window_inference(x.to(device), roi_size=roi,
                                       sw_batch_size=batch, predictor=predictor, overlap=overlap,
                                       mode=mode, sw_device=device, device="cpu")
    return out[0, 0].float().numpy().astype(np.float32, copy=False)
