"""Losses for training/: the thesis's focal Tversky + class-weighted cross-entropy, computed
by `CMBLib.detection.losses.focal_tversky_ce` (one implementation for training and fine-tuning).

Starting point from the thesis: alpha 0.3, beta 0.7, gamma 3, CE weights 0.1 / 5,
loss weights 1 (FTL) and 0.1 (CE).
"""
import torch

from CMBLib.detection.losses import focal_tversky_ce


class FocalTverskyCELoss(torch.nn.Module):
    def __init__(self, alpha=0.3, beta=0.7, gamma=3.0, ce_weights=(0.1, 5.0), w_ftl=1.0, w_ce=0.1,
                 smooth=1.0):
        super().__init__()
        self.params = {"alpha": float(alpha), "beta": float(beta), "gamma": float(gamma),
                       "ce_weights": tuple(float(w) for w in ce_weights), "w_ftl": float(w_ftl),
                       "w_ce": float(w_ce), "smooth": float(smooth)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, 2, ...) ; target (N, 1, ...) or (N, ...) with 0 = background, 1 = CMB."""
        return focal_tversky_ce(logits, target, **self.params)


def build_loss(params: dict) -> torch.nn.Module:
    """Loss from a config dict (keys of FocalTverskyCELoss)."""
    p = dict(params or {})
    p.pop("name", None)
    return FocalTverskyCELoss(**p)
