"""MONAI's residual UNet (`monai.networks.nets.UNet`, MONAI 1.5-1.6) in plain torch.

Importing MONAI costs about 3 s of a fresh `cmb detect`; inference needs only this network.
The modules carry MONAI's names (``model.0.conv.unit0.conv``, ``...adn.N``, ``...adn.A``,
``model.1.submodule...``) and are created in MONAI's order, so

* a state_dict saved from MONAI's UNet loads here with ``strict=True`` and the reverse,
* the outputs equal MONAI's (Testing/test_detection_torch_unet.py compares them), and
* with the same torch seed the random initialisation equals MONAI's (training is unchanged).

Supported (what `network.build_network` passes): any spatial_dims, channels, strides,
num_res_units, dropout (a probability), norm "instance" or "batch" (or ``[name, {kwargs}]``),
kernel size 3, PReLU activation, bias, ADN order "NDA" (MONAI's defaults).
"""
from collections.abc import Sequence

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {"instance": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
         "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}}


def norm_spec(norm) -> tuple:
    """("instance" | "batch", kwargs) from "instance", "BATCH", ("batch", {...}) or ["batch", {...}];
    ValueError for anything else (e.g. "group": build that network with MONAI)."""
    if isinstance(norm, str):
        name, kwargs = norm, {}
    elif isinstance(norm, (tuple, list)) and len(norm) == 2 and isinstance(norm[0], str) \
            and isinstance(norm[1], dict):
        name, kwargs = norm[0], dict(norm[1])
    else:
        raise ValueError(f"unsupported norm {norm!r}")
    name = name.lower()
    if name not in _NORM:
        raise ValueError(f"unsupported norm {norm!r}")
    return name, kwargs


class ADN(nn.Sequential):
    """Norm (N), dropout (D), activation (A), in that order (MONAI's ADN with ordering "NDA")."""

    def __init__(self, channels: int, spatial_dims: int, norm, dropout) -> None:
        super().__init__()
        name, kwargs = norm_spec(norm)
        kwargs.setdefault("num_features", channels)
        self.add_module("N", _NORM[name][spatial_dims](**kwargs))
        if dropout is not None:  # MONAI: a float (even 0.0) adds nn.Dropout (dropout_dim 1)
            self.add_module("D", nn.Dropout(p=float(dropout)))
        self.add_module("A", nn.PReLU())


class Convolution(nn.Sequential):
    """conv (+ ADN unless conv_only); transposed with output_padding = stride - 1 when asked."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, strides: int, norm, dropout,
                 conv_only: bool = False, is_transposed: bool = False) -> None:
        super().__init__()
        if is_transposed:
            conv = _CONV_T[spatial_dims](in_channels, out_channels, kernel_size=3, stride=strides, padding=1,
                                         output_padding=strides - 1, groups=1, bias=True, dilation=1)
        else:
            conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size=3, stride=strides, padding=1,
                                       dilation=1, groups=1, bias=True)
        self.add_module("conv", conv)
        if not conv_only:
            self.add_module("adn", ADN(out_channels, spatial_dims, norm, dropout))


class ResidualUnit(nn.Module):
    """`subunits` Convolutions plus a residual path (strided 3-conv, 1-conv for a channel change, or identity)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, strides: int, subunits: int,
                 norm, dropout, last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.residual = nn.Identity()
        schannels, sstrides = in_channels, strides
        subunits = max(1, subunits)
        for su in range(subunits):
            self.conv.add_module(f"unit{su:d}", Convolution(
                spatial_dims, schannels, out_channels, sstrides, norm, dropout,
                conv_only=last_conv_only and su == subunits - 1))
            schannels, sstrides = out_channels, 1
        if strides != 1 or in_channels != out_channels:
            kernel, padding = (3, 1) if strides != 1 else (1, 0)
            self.residual = _CONV[spatial_dims](in_channels, out_channels, kernel, strides, padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        return self.conv(x) + res


class SkipConnection(nn.Module):
    """cat([x, submodule(x)], dim=1)."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    """MONAI's UNet with kernel 3, PReLU, bias and ADN order "NDA" (see the module docstring)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], num_res_units: int = 0, norm="instance", dropout: float = 0.0) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("the length of `channels` should be no less than 2.")
        if len(strides) < len(channels) - 1:
            raise ValueError("the length of `strides` should equal to `len(channels) - 1`.")
        if int(spatial_dims) not in _CONV:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, not {spatial_dims}")
        norm_spec(norm)
        self.dimensions, self.num_res_units = int(spatial_dims), int(num_res_units)
        self.norm, self.dropout = norm, dropout
        self.model = self._block(int(in_channels), int(out_channels), [int(c) for c in channels],
                                 [int(s) for s in strides], True)

    def _block(self, inc: int, outc: int, channels: list, strides: list, is_top: bool) -> nn.Module:
        # MONAI's order of creation (deepest block first, then down, then up): same random initialisation
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            subblock, upc = self._block(c, c, channels[1:], strides[1:], False), c * 2
        else:
            subblock, upc = self._down(c, channels[1], 1), c + channels[1]
        down = self._down(inc, c, s)
        up = self._up(upc, outc, s, is_top)
        return nn.Sequential(down, SkipConnection(subblock), up)

    def _down(self, inc: int, outc: int, strides: int) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(self.dimensions, inc, outc, strides, self.num_res_units, self.norm, self.dropout)
        return Convolution(self.dimensions, inc, outc, strides, self.norm, self.dropout)

    def _up(self, inc: int, outc: int, strides: int, is_top: bool) -> nn.Module:
        conv = Convolution(self.dimensions, inc, outc, strides, self.norm, self.dropout,
                           conv_only=is_top and self.num_res_units == 0, is_transposed=True)
        if self.num_res_units > 0:
            ru = ResidualUnit(self.dimensions, outc, outc, 1, 1, self.norm, self.dropout, last_conv_only=is_top)
            return nn.Sequential(conv, ru)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
