"""Losses for training/: the thesis's focal Tversky + class-weighted cross-entropy, computed
by `CMBLib.detection.losses.focal_tversky_ce` (one implementation for training and fine-tuning).

Starting point from the thesis: alpha 0.3, beta 0.7, gamma 3, CE weights 0.1 / 5,
loss weights 1 (FTL) and 0.1 (CE).

`instance_balance_weights` (optional, config key ``instance_balance``) gives each labelled
CMB a voxel weight inversely proportional to its volume, so that a 2 mm CMB of 3 voxels
counts about as much as a 5 mm one of 30 (issue 13, item 2: small CMBs).
"""
import numpy as np
import torch

from CMBLib.detection.losses import focal_tversky_ce


class FocalTverskyCELoss(torch.nn.Module):
    def __init__(self, alpha=0.3, beta=0.7, gamma=3.0, ce_weights=(0.1, 5.0), w_ftl=1.0, w_ce=0.1,
                 smooth=1.0):
        super().__init__()
        self.params = {"alpha": float(alpha), "beta": float(beta), "gamma": float(gamma),
                       "ce_weights": tuple(float(w) for w in ce_weights), "w_ftl": float(w_ftl),
                       "w_ce": float(w_ce), "smooth": float(smooth)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        """logits (N, 2, ...) ; target (N, 1, ...) or (N, ...) with 0 = background, 1 = CMB;
        weight: optional voxel weights shaped like target."""
        return focal_tversky_ce(logits, target, weight=weight, **self.params)


def instance_balance_weights(labels: np.ndarray, spacing_ijk, ref_diameter_mm: float = 5.0,
                             max_weight: float = 10.0) -> np.ndarray:
    """Voxel weights (float32, shape of `labels`) for a batch or one patch of CMB labels.

    labels: (..., k, j, i) with > 0 = CMB, on a grid of voxel size `spacing_ijk` (i, j, k) mm.
    Each connected CMB (26-connected, per patch) of V voxels gets weight
    clip(V_ref / V, 1, max_weight) on its voxels, V_ref being the voxel count of a sphere of
    `ref_diameter_mm`; background voxels get 1.  CMBs at least that large keep weight 1."""
    from scipy import ndimage

    from CMBLib.metrics.components import structure

    lab = np.asarray(labels) > 0
    voxel_mm3 = float(np.prod(np.asarray(spacing_ijk, float)))
    ref_voxels = np.pi / 6.0 * float(ref_diameter_mm) ** 3 / voxel_mm3
    out = np.ones(lab.shape, np.float32)
    patches = lab.reshape((-1,) + lab.shape[-3:])
    weights = out.reshape(patches.shape)
    for n, patch in enumerate(patches):
        comp, count = ndimage.label(patch, structure=structure(26))
        if not count:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        per_comp = np.clip(ref_voxels / sizes, 1.0, float(max_weight)).astype(np.float32)
        weights[n][comp > 0] = per_comp[comp[comp > 0] - 1]
    return out


def build_loss(params: dict) -> torch.nn.Module:
    """Loss from a config dict (keys of FocalTverskyCELoss)."""
    p = dict(params or {})
    p.pop("name", None)
    return FocalTverskyCELoss(**p)
