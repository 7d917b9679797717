"""Exponential moving average of model weights (Polyak averaging), as used for ConvNeXt's "ema" checkpoints."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["ModelEma"]


class ModelEma:
    """Keeps ``ema = decay * ema + (1 - decay) * param`` for every floating parameter/buffer (integer buffers,
    e.g. BatchNorm's ``num_batches_tracked``, are copied).

    Args:
        model: the model being trained (unwrapped, not DDP).
        decay: EMA decay per update (e.g. 0.999 for short runs, 0.9999 for ImageNet).
        warmup: if True, use ``min(decay, (1 + n) / (10 + n))`` at update ``n`` so early averages are not
            dominated by the random init (timm's ModelEmaV3 warm-up).

    ``module`` is a frozen deep copy in eval mode; evaluate it like the model.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_sd = self.module.state_dict()
        floats_e: list[Tensor] = []
        floats_m: list[Tensor] = []
        for k, v in model.state_dict().items():
            e = ema_sd[k]
            if e.is_floating_point():
                floats_e.append(e)
                floats_m.append(v.detach().to(e.dtype))
            else:
                e.copy_(v)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_m, 1.0 - d)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)
