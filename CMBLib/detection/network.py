"""The detection network, built from a plain dict of parameters (stored in model.json).

The network maps one channel (the preprocessed image, CMBs dark, see `preprocess.py`)
to `out_channels` logits.  With ``out_channels == 2`` (the default) channel 1 is the CMB
class and the probability is ``softmax(logits)[:, 1]``; with ``out_channels == 1`` it is
``sigmoid(logits)``.  Use `probability_from_logits` so callers need not care.

Input spatial size must be divisible by ``prod(strides)`` (sliding-window inference
with a patch size that is a multiple of it takes care of that).
"""
import copy

DEFAULT_PARAMS = {
    "architecture": "UNet",       # "UNet" (MONAI's UNet, built in plain torch: unet.py) or "BasicUNet"
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
    "dropout": 0.0,
}


def network_params(params=None) -> dict:
    """DEFAULT_PARAMS updated with `params` (a new dict; unknown keys are kept)."""
    out = copy.deepcopy(DEFAULT_PARAMS)
    out.update(copy.deepcopy(dict(params or {})))
    return out


def build_network(params: dict):
    """A freshly initialised torch.nn.Module from `params` (see DEFAULT_PARAMS).

    "UNet" is built by `unet.UNet` (MONAI's UNet in plain torch: same module names, outputs
    and initialisation, no MONAI import; a norm it does not cover falls back to MONAI);
    "BasicUNet" (older models) still comes from MONAI.
    """
    p = network_params(params)
    arch = str(p["architecture"])
    if arch == "UNet":
        from . import unet

        try:
            unet.norm_spec(p["norm"])
            cls = unet.UNet
        except ValueError:
            from monai.networks.nets import UNet as cls
        return cls(
            spatial_dims=int(p["spatial_dims"]),
            in_channels=int(p["in_channels"]),
            out_channels=int(p["out_channels"]),
            channels=tuple(int(c) for c in p["channels"]),
            strides=tuple(int(s) for s in p["strides"]),
            num_res_units=int(p["num_res_units"]),
            norm=p["norm"],
            dropout=float(p["dropout"]),
        )
    if arch == "BasicUNet":
        from monai.networks.nets import BasicUNet

        feats = tuple(int(c) for c in p.get("features", (8, 16, 32, 64, 128, 8)))
        return BasicUNet(
            spatial_dims=int(p["spatial_dims"]),
            in_channels=int(p["in_channels"]),
            out_channels=int(p["out_channels"]),
            features=feats,
            norm=p["norm"],
            dropout=float(p["dropout"]),
        )
    from ..errors import CMBError

    raise CMBError(f"unknown network architecture {arch!r}; expected 'UNet' or 'BasicUNet'")


def divisor(params: dict) -> int:
    """Patch sizes must be multiples of this (product of the down-sampling strides)."""
    p = network_params(params)
    if p["architecture"] == "BasicUNet":
        return 16
    n = 1
    for s in p["strides"]:
        n *= int(s)
    return n


def probability_from_logits(logits, params: dict):
    """CMB probability (N, 1, ...) from network output (N, C, ...) (torch tensors)."""
    import torch

    if int(network_params(params)["out_channels"]) == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]
