"""Losses: the thesis's focal Tversky + class-weighted cross-entropy (004_*, sections V-VI).

    TI   = TP / (TP + alpha * FP + beta * FN)          (CMB class, soft counts over the batch)
    FTL  = (1 - TI) ** gamma
    loss = w_ftl * FTL + w_ce * CE(weights = [w_bg, w_cmb])

Starting point from the thesis: alpha 0.3, beta 0.7, gamma 3, CE weights 0.1 / 5,
loss weights 1 (FTL) and 0.1 (CE).  The Tversky counts are summed over the whole batch,
so patches without CMBs do not produce an undefined index.
"""
import torch
import torch.nn.functional as F


class FocalTverskyCELoss(torch.nn.Module):
    def __init__(self, alpha=0.3, beta=0.7, gamma=3.0, ce_weights=(0.1, 5.0), w_ftl=1.0, w_ce=0.1,
                 smooth=1.0):
        super().__init__()
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.register_buffer("ce_weights", torch.tensor([float(w) for w in ce_weights]))
        self.w_ftl, self.w_ce, self.smooth = float(w_ftl), float(w_ce), float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, 2, ...) ; target (N, 1, ...) or (N, ...) with 0 = background, 1 = CMB."""
        if target.dim() == logits.dim():
            target = target[:, 0]
        target = (target > 0).long()
        p = torch.softmax(logits, dim=1)[:, 1]
        t = target.float()
        tp = (p * t).sum()
        fp = (p * (1 - t)).sum()
        fn = ((1 - p) * t).sum()
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        ftl = (1 - ti) ** self.gamma
        ce = F.cross_entropy(logits, target, weight=self.ce_weights.to(logits.dtype))
        return self.w_ftl * ftl + self.w_ce * ce


def build_loss(params: dict) -> torch.nn.Module:
    """Loss from a config dict (keys of FocalTverskyCELoss)."""
    p = dict(params or {})
    p.pop("name", None)
    return FocalTverskyCELoss(**p)
