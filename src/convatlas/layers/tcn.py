"""Temporal convolutional network blocks (card: colontcn; official cosmoimd/temporal_segmentation src/models/layers.py).

:class:`TemporalBlock` is the residual block of Bai et al.'s TCN as customised by ColonTCN: ``num_of_convs``
weight-normalised dilated ``Conv1d`` layers with *symmetric* ("same") padding (the official code is acausal even
where its config says "causal"), each followed by ReLU and dropout; the residual branch is the identity or a 1x1
conv when the width changes; out = ReLU(net(x) + res(x)), optionally multiplied by a frame mask.

Weight normalisation uses the current ``torch.nn.utils.parametrizations.weight_norm`` API (parameters
``parametrizations.weight.original0`` = g, ``original1`` = v); :func:`convert_legacy_weight_norm` maps the official
checkpoints' legacy ``weight_g`` / ``weight_v`` keys.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from convatlas.identities import register_component

__all__ = ["TemporalBlock", "TemporalConvNet", "convert_legacy_weight_norm", "tcn_receptive_field"]


def _wn_conv(cin: int, cout: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    if kernel_size % 2 == 0:
        raise ValueError(f"TemporalBlock: kernel_size must be odd for symmetric padding, got {kernel_size}")
    conv = nn.Conv1d(cin, cout, kernel_size, padding=(kernel_size - 1) * dilation // 2, dilation=dilation)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.01)  # official init N(0, 0.01); g is then set to ||v|| by weight_norm
    return weight_norm(conv, name="weight", dim=0)


@register_component("colontcn")
class TemporalBlock(nn.Module):
    """Residual dilated temporal block: (B, C_in, T) -> (B, C_out, T) (acausal, length preserving).

    Args:
        cin: input channels.
        cout: output channels.
        kernel_size: odd temporal kernel size.
        dilation: dilation of every conv in the block.
        num_of_convs: convs in the block (ColonTCN: 2).
        dropout: dropout after each conv's ReLU.
        residual: add the (identity or 1x1-conv) shortcut before the final ReLU.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 7,
        dilation: int = 1,
        num_of_convs: int = 2,
        dropout: float = 0.5,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if num_of_convs < 1:
            raise ValueError(f"TemporalBlock: num_of_convs must be >= 1, got {num_of_convs}")
        self.convs = nn.ModuleList(
            [_wn_conv(cin if i == 0 else cout, cout, kernel_size, dilation) for i in range(num_of_convs)]
        )
        self.dropout = nn.Dropout(dropout)
        self.residual = residual
        self.downsample = nn.Conv1d(cin, cout, 1) if (residual and cin != cout) else None
        if self.downsample is not None:
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out = x
        for conv in self.convs:
            out = self.dropout(torch.relu(conv(out)))
        if self.residual:
            out = torch.relu(out + (x if self.downsample is None else self.downsample(x)))
        if mask is not None:
            out = out * mask[:, None, :].to(out.dtype)
        return out


class TemporalConvNet(nn.Module):
    """Stack of :class:`TemporalBlock` with dilation 2**i and a per-frame classifier.

    (B, C_in, T) -> (B, T, num_classes) (the official layout: permuted at the end).

    Args:
        cin: input channels.
        widths: output channels of each block (``len(widths)`` blocks, dilation ``2**i``).
        num_classes: per-frame outputs.
        kernel_size / num_of_convs / dropout / residual: see :class:`TemporalBlock`.
        last_layer: ``"conv"`` (1x1 Conv1d, ColonTCN) or ``"linear"``.
    """

    def __init__(
        self,
        cin: int,
        widths: tuple[int, ...],
        num_classes: int,
        kernel_size: int = 7,
        num_of_convs: int = 2,
        dropout: float = 0.5,
        residual: bool = True,
        last_layer: str = "conv",
    ) -> None:
        super().__init__()
        if last_layer not in ("conv", "linear"):
            raise ValueError(f"TemporalConvNet: last_layer must be 'conv' or 'linear', got {last_layer!r}")
        blocks = []
        c = cin
        for i, w in enumerate(widths):
            blocks.append(TemporalBlock(c, w, kernel_size, 2**i, num_of_convs, dropout, residual))
            c = w
        self.network = nn.ModuleList(blocks)
        self.last_layer_type = last_layer
        self.last_layer = nn.Conv1d(c, num_classes, 1) if last_layer == "conv" else nn.Linear(c, num_classes)
        self.num_features = c

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for blk in self.network:
            x = blk(x, mask)
        return x

    def forward_head(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.last_layer_type == "conv":
            out = self.last_layer(x).transpose(1, 2)
        else:
            out = self.last_layer(x.transpose(1, 2))
        if mask is not None:
            out = out * mask[:, :, None].to(out.dtype)
        return out

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, mask), mask)


def tcn_receptive_field(kernel_size: int, num_blocks: int, num_of_convs: int = 2) -> int:
    """Frames seen by one output of a TCN with dilations 1, 2, ..., 2**(num_blocks-1)."""
    return 1 + num_of_convs * (kernel_size - 1) * (2**num_blocks - 1)


def convert_legacy_weight_norm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename legacy ``nn.utils.weight_norm`` keys (``X.weight_g`` / ``X.weight_v``) to the parametrizations API
    (``X.parametrizations.weight.original0`` / ``original1``); other keys pass through."""
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if k.endswith(".weight_g"):
            out[k[: -len("weight_g")] + "parametrizations.weight.original0"] = v
        elif k.endswith(".weight_v"):
            out[k[: -len("weight_v")] + "parametrizations.weight.original1"] = v
        else:
            out[k] = v
    return out
