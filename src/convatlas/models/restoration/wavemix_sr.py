"""WaveMix for x2 single-image super-resolution (card: wavemix, official ``wavemix.sisr.WaveMix``, MIT).

(B, 3, H, W) low-resolution image -> (B, 3, 2H, 2W): stem of two stride-1 3x3 convs (3 -> C/2 -> C), ``depth``
resolution-preserving WaveMix blocks with residuals (:class:`~convatlas.models.classification.wavemix.WaveBlock`),
then the official ``expand`` head: ConvTranspose2d(C -> C/2, k4, s2, p1) -> Conv1x1(C/2 -> 3). No norm or
activation in the head, no global skip (as official).

Card facts: package defaults level 1, C = 144, depth 4, mult 2, ff_channel 144, dropout 0: 1,944,867 parameters
from the official layer shapes. The training script (``Image_Super_Resolution/Div2k_2x.py``, DIV2K) was not read:
loss, patch size and reported PSNR are unconfirmed, so no metric is registered. This is the package's SISR head,
not the later WaveMixSR paper's model. Key names: ``stem`` (official ``conv``), ``layers``, ``head`` (official
``expand``); :func:`checkpoint_filter_fn` maps them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from convatlas.layers.validation import check_input
from convatlas.models.classification.wavemix import WaveBlock, checkpoint_filter_fn as _cls_filter, wavemix_stem
from convatlas.registry import Reported, register_model

__all__ = ["WaveMixSR", "checkpoint_filter_fn"]


class WaveMixSR(nn.Module):
    """x2 super-resolution: (B, in_chans, H, W) -> (B, in_chans, 2H, 2W) (H, W divisible by 2^level).

    Args:
        depth / final_dim / mult / ff_channel / level / dropout / upsample: the WaveMix trunk (see ``WaveMix``).
        in_chans: image channels (input and output).
    """

    scale = 2

    def __init__(self, depth: int = 4, final_dim: int = 144, mult: int = 2, ff_channel: int | None = None, level: int = 1,
                 dropout: float = 0.0, in_chans: int = 3, upsample: str = "transposed") -> None:
        super().__init__()
        c = final_dim
        self.in_chans, self.level = in_chans, level
        self.stem, _ = wavemix_stem("lite", c, in_chans)
        ffc = c if ff_channel is None else ff_channel
        self.layers = nn.Sequential(*[WaveBlock(c, level, mult, ffc, dropout, upsample) for _ in range(depth)])
        self.head = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.Conv2d(c // 2, in_chans, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        check_input(type(self).__name__, x, ndim=4, channels=self.in_chans, multiple_of=2**self.level)
        x = self.stem(x)
        for blk in self.layers:
            x = blk(x) + x
        return self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Official ``wavemix.sisr`` keys (``conv.*``, ``layers.*``, ``expand.*``) -> this layout."""
    return {("head." + k[len("expand."):] if k.startswith("expand.") else k): v
            for k, v in _cls_filter(state_dict).items()}


@register_model(paper="wavemix", task="super_resolution", input_size=(3, 64, 64), test_input_size=(3, 16, 16),
                num_classes=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tags=("super_resolution",),
                reported=Reported(params=1_944_867, params_exact=True,
                                  source="official wavemix.sisr defaults; count from its layer shapes"))
def wavemix_sisr_144_4(**kw: Any) -> WaveMixSR:
    """WaveMix x2 SISR (official package defaults: level 1, C=144, depth 4)."""
    return WaveMixSR(**kw)


@register_model(paper="wavemix", task="super_resolution", test_only=True, input_size=(3, 16, 16),
                test_input_size=(3, 16, 16), num_classes=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
def test_wavemix_sr(**kw: Any) -> WaveMixSR:
    """Tiny WaveMix SR (C=16, depth 2) for the generic tests."""
    return WaveMixSR(**{"depth": 2, "final_dim": 16, "ff_channel": 16, **kw})
