"""The detection model's training loss: the thesis's focal Tversky + class-weighted
cross-entropy (004_*, sections V-VI), shared by `training/` and fine-tuning.

    TI   = TP / (TP + alpha * FP + beta * FN)          (CMB class, soft counts over the batch)
    FTL  = (1 - TI) ** gamma
    loss = w_ftl * FTL + w_ce * CE(weights = [w_bg, w_cmb])

The Tversky counts are summed over the whole batch, so patches without CMBs do not produce
an undefined index.  An optional voxel weight map (0 = unknown, e.g. a finding nobody
reviewed) leaves those voxels out of both terms; without it CE is torch's class-weighted mean.
"""


def focal_tversky_ce(logits, target, weight=None, alpha=0.3, beta=0.7, gamma=3.0, ce_weights=(0.1, 5.0),
                     w_ftl=1.0, w_ce=0.1, smooth=1.0):
    """logits (N, C, ...) with C = 2 (softmax) or 1 (sigmoid); target (N, 1, ...) or (N, ...)
    with 0 = background, > 0 = CMB; weight like target (float) or None."""
    import torch
    import torch.nn.functional as F

    if target.dim() == logits.dim():
        target = target[:, 0]
    target = (target > 0).long()
    if weight is not None and weight.dim() == logits.dim():
        weight = weight[:, 0]
    w = torch.ones_like(target, dtype=logits.dtype) if weight is None else weight.to(logits.dtype)
    t = target.to(logits.dtype)
    cw = torch.tensor([float(c) for c in ce_weights], dtype=logits.dtype, device=logits.device)
    if logits.shape[1] == 1:  # one output channel: sigmoid and binary cross-entropy
        p = torch.sigmoid(logits[:, 0])
        ce = F.binary_cross_entropy_with_logits(logits[:, 0], t, reduction="none") * cw[target]
    else:
        p = torch.softmax(logits, dim=1)[:, 1]
        ce = F.cross_entropy(logits, target, weight=cw, reduction="none")
    tp = (w * p * t).sum()
    fp = (w * p * (1 - t)).sum()
    fn = (w * (1 - p) * t).sum()
    ti = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    norm = (w * cw[target]).sum().clamp_min(1e-6)
    return w_ftl * (1 - ti) ** gamma + w_ce * (w * ce).sum() / norm
