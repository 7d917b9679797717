"""Two-layer MLPs: channels-last (Linear) and channels-first (1x1 conv) forms with the same key names."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

__all__ = ["Mlp", "ConvMlp"]


class Mlp(nn.Module):
    """fc1 -> act -> drop -> (norm) -> fc2 -> drop on (..., C). Keys ``fc1``/``fc2`` match timm.

    Args:
        in_features: C.
        hidden_features: hidden width (default ``in_features``).
        out_features: output width (default ``in_features``).
        act_layer: activation class (default exact-erf GELU).
        bias: use biases in both linears.
        drop: dropout after the activation and after fc2.
        norm_layer: optional norm on the hidden features.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        out = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.norm(x)))


class ConvMlp(nn.Module):
    """Channels-first MLP with 1x1 convs on (B, C, H, W); keys ``fc1``/``fc2`` (4-D weights) match timm."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        out = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden, 1, bias=bias)
        self.norm = norm_layer(hidden) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, out, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.norm(self.fc1(x))))
        return self.fc2(x)
