"""Fine-tuning data on the model grid: one study as arrays, random patch batches, the loss.

Training studies become `train_case` dicts (image, target, loss weight and the points
patches are centred on, on the parent's grid); validation and test studies stay on their
own grid as `eval_case` dicts, because they are scored through `cmb detect`'s own steps
(`finetune_gate.score`).
"""
import numpy as np


def train_case(study, meta: dict) -> dict:
    """Arrays on the model grid ([k, j, i]) for training on one LabelledStudy."""
    from scipy import ndimage as ndi

    from .preprocess import preprocess, resample_to

    pre = preprocess(study.image, tuple(meta["spacing_mm"]), polarity=study.polarity)
    grid, shape = pre.grid, pre.grid.shape_ijk
    img = study.image
    pos = (study.positives > 0).astype(np.uint8)
    frac = resample_to(img.with_array(pos.astype(np.float32)), grid, shape, order=1)
    # partial volume: a voxel a quarter covered is CMB; nearest neighbour keeps CMBs thinner than a voxel
    target = (frac >= 0.25) | (resample_to(img.with_array(pos), grid, shape, order=0) > 0)
    ignore = resample_to(img.with_array(study.ignore.astype(np.float32)), grid, shape, order=1) > 0
    ignore &= ~target
    neg = []
    for p in study.negatives_ras:
        kji = np.rint(grid.ras_to_voxel(p)[::-1]).astype(int)
        if np.all(kji >= 0) and np.all(kji < pre.array.shape):
            neg.append(kji)
    far = ~ndi.binary_dilation(ignore | target, iterations=3)
    rng = np.random.default_rng(0)
    bg = np.argwhere(pre.brain_mask & far)
    if len(bg) > 20000:
        bg = bg[rng.choice(len(bg), 20000, replace=False)]
    return {"key": study.key, "subject": study.subject, "image": pre.array.astype(np.float32),
            "target": target.astype(np.uint8), "weight": (~ignore).astype(np.float32),
            "cmb_idx": np.argwhere(target), "neg_idx": np.asarray(neg, int).reshape(-1, 3), "bg_idx": bg,
            "n_cmbs": study.n_cmbs}


def eval_case(study) -> dict:
    """One LabelledStudy for scoring, on its own grid: the image, the CMBs (reference) and the
    unknown findings' voxels (left out of the scores)."""
    return {"key": study.key, "subject": study.subject, "volume": study.image,
            "ref": study.image.with_array(study.positives), "ignore": np.asarray(study.ignore, bool),
            "polarity": study.polarity, "n_cmbs": study.n_cmbs}


def _patch(a: np.ndarray, start, size, fill):
    pad = [(max(0, -s), max(0, s + n - d)) for s, n, d in zip(start, size, a.shape)]
    sl = tuple(slice(max(0, s), min(d, s + n)) for s, n, d in zip(start, size, a.shape))
    return np.pad(a[sl], pad, constant_values=fill)


def sample_batch(cases: list, patch_kji, rng, batch_size: int, sampling: dict, intensity: float, noise: float):
    """(x (B,1,k,j,i) float32, y (B,1,...) int64, w (B,1,...) float32, kinds) from `train_case`s."""
    kinds = list(sampling)
    p = np.asarray([sampling[k] for k in kinds], float)
    xs, ys, ws, used = [], [], [], []
    size = np.asarray(patch_kji, int)
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        pts = {"cmb": case["cmb_idx"], "negative": case["neg_idx"], "background": case["bg_idx"]}
        if not len(pts.get(kind, [])):
            kind = "background" if len(case["bg_idx"]) else "random"
        if kind == "random":
            centre = np.array([rng.integers(0, d) for d in case["image"].shape])
        else:
            centre = pts[kind][int(rng.integers(len(pts[kind])))]
        margin = np.minimum(8, size // 4)
        start = centre - np.array([rng.integers(m, n - m) for m, n in zip(margin, size)])
        x = _patch(case["image"], start, size, float(case["image"].min()))
        y = _patch(case["target"], start, size, 0)
        w = _patch(case["weight"], start, size, 1.0)
        for ax in (1, 2):  # in-plane flips; the slice axis keeps its orientation
            if rng.random() < 0.5:
                x, y, w = np.flip(x, ax), np.flip(y, ax), np.flip(w, ax)
        x = x * (1 + rng.uniform(-intensity, intensity)) + rng.uniform(-intensity, intensity)
        if noise:
            x = x + rng.normal(0, rng.uniform(0, noise), x.shape)
        xs.append(np.ascontiguousarray(x, np.float32))
        ys.append(np.ascontiguousarray(y, np.int64))
        ws.append(np.ascontiguousarray(w, np.float32))
        used.append(kind)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], np.stack(ws)[:, None], used


def masked_loss(logits, target, weight, **params):
    """The parent's loss (CMBLib.detection.losses), voxels of weight 0 (unknown findings) left out."""
    from .losses import focal_tversky_ce

    params = {k: v for k, v in params.items() if k != "name"}  # a training config may name the loss
    return focal_tversky_ce(logits, target, weight, **params)
