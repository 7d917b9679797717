"""Face-recognition MobileNetV2 with TVConv (card: tvconv, arXiv 2203.10489, official code JierunChen/TVConv, MIT).

The official ``face_recognition/model/mobilenetv2.py``: a MobileNetV2 for aligned 96x96 faces with a stride-1
stem, inverted residuals whose depthwise 3x3 is either a plain depthwise conv (``atom="base"``) or a
:class:`~convatlas.layers.tvconv.TVConv` (``atom="tvconv"``), a 1x1 conv to 512 channels and the ``OutputLayer``
(BN2d -> dropout -> 6x6 average pool -> Linear 512->512 -> BN1d) giving a 512-d face embedding. The paper trains
it with a margin-based softmax on CASIA-WebFace; here ``forward_head(x, pre_logits=True)`` returns the embedding
and a Linear classifier on top gives identity logits (``num_classes``; set 0 for embeddings only).

Card facts: width multipliers 0.1/0.2/0.3/0.5/1.0, channels made divisible by 8, last channel 512. The paper's
per-width parameter/FLOP table was not available offline (card: unconfirmed), so no figures are registered;
measured (1000-class head, 96x96, training form): TVConv x0.1 3,391,872 params / 0.651 GMACs vs depthwise
x0.1 837,672 / 0.019; x1.0 13,123,144 / 2.437 vs 2,754,280 / 0.212. The TVConv generators (mostly LayerNorm
affine maps over (16, h, w) and the generator convs on the affinity maps) dominate; they disappear after
:meth:`FaceMobileNetV2.reparameterize`. The MAC counter does not see TVConv's per-pixel multiply-add (an
elementwise product), C*9*h*w MACs per layer.

``input_size`` other than 96 is supported (TVConv sizes follow the input), e.g. 32x32 for the digits check.
The stage grouping (``stem``, ``stages.0..4``) differs from the official flat ``features.N`` list.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from convatlas.layers import check_input
from convatlas.layers.tvconv import TVConv
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.registry import Reported, register_model

__all__ = ["FaceMobileNetV2", "TVConvInvertedResidual", "make_divisible"]

# (t, c, n, s) per official setting; h_w is derived from the input size.
FACE_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))
# Stage boundaries (index of the setting that starts each stage) -> reductions 1, 2, 4, 8, 16.
_STAGE_OF = (0, 1, 2, 3, 3, 4, 4)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """TF-slim rounding used by MobileNetV2: nearest multiple of ``divisor``, never below 90% of ``v``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class TVConvInvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with a TVConv (or plain) depthwise 3x3: (B, C_in, H, W) -> (B, C_out, h, w).

    Args:
        cin, cout, stride, expand_ratio: as MobileNetV2.
        out_hw: output resolution h = w (needed by TVConv).
        atom: ``"tvconv"`` or ``"base"`` (depthwise nn.Conv2d).
        tvconv_kwargs: TVConv options (posi_chans, inter_chans, inter_layers, bias).
    """

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, out_hw: int, atom: str = "tvconv",
                 **tvconv_kwargs: Any) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        if atom == "tvconv":
            dw = nn.Sequential(TVConv(hidden, out_hw, out_hw, 3, stride, **tvconv_kwargs), nn.BatchNorm2d(hidden),
                               nn.ReLU6(inplace=True))
        elif atom == "base":
            dw = _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        else:
            raise ValueError(f"atom must be 'tvconv' or 'base', got {atom!r}")
        layers += [dw, nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class FaceMobileNetV2(LinearHeadBackbone):
    """Face MobileNetV2 (stride-1 stem) with TVConv or depthwise atoms: (B, 3, S, S) -> (B, num_classes).

    Args:
        width_mult: channel multiplier (0.1 ... 1.0).
        atom: ``"tvconv"`` or ``"base"``.
        input_size: S (96 in the paper); TVConv resolutions follow it, the model only runs at this size.
        embedding_size: face embedding width (512).
        settings: (t, c, n, s) rows (default: the official face setting).
        drop_rate: dropout in the output layer (official ``drop_ratio``).
        num_classes: classifier on the embedding (0: none, the embedding is the output).
        in_chans: input channels.
        tvconv_kwargs: TVConv options.
    """

    pre_head_modules = ("out_norm", "out_drop", "embed", "embed_norm")

    def __init__(
        self,
        width_mult: float = 1.0,
        atom: str = "tvconv",
        input_size: int = 96,
        embedding_size: int = 512,
        settings: Sequence[tuple[int, int, int, int]] = FACE_SETTINGS,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        last_channel: int = 512,
        **tvconv_kwargs: Any,
    ) -> None:
        super().__init__()
        self.in_chans, self.input_size = in_chans, input_size
        cin = make_divisible(32 * width_mult)
        last = make_divisible(last_channel * max(1.0, width_mult))
        self.stem = _conv_bn_relu6(in_chans, cin, 3, 1)
        stages: list[list[nn.Module]] = [[] for _ in range(max(_STAGE_OF[: len(settings)]) + 1)]
        hw, reduction = input_size, 1
        reductions = [1] * len(stages)
        for idx, (t, c, n, s) in enumerate(settings):
            cout = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                if stride == 2:
                    if hw % 2:
                        raise ValueError(f"FaceMobileNetV2: input_size {input_size} must be divisible by 16")
                    hw //= 2
                    reduction *= 2
                stage = _STAGE_OF[idx] if idx < len(_STAGE_OF) else len(stages) - 1
                stages[stage].append(TVConvInvertedResidual(cin, cout, stride, t, hw, atom, **tvconv_kwargs))
                reductions[stage] = reduction
                cin = cout
        stages[-1].append(_conv_bn_relu6(cin, last, 1))
        self.stages = nn.Sequential(*[nn.Sequential(*s) for s in stages])
        self.feature_info = []
        for i, (s, r) in enumerate(zip(stages, reductions)):
            chs = last if i == len(stages) - 1 else next(
                m.conv[-1].num_features for m in reversed(s) if isinstance(m, TVConvInvertedResidual))
            self.feature_info.append({"num_chs": chs, "reduction": r, "module": f"stages.{i}"})
        self.final_hw = hw
        # OutputLayer (official commons.py): BN2d -> Dropout -> AvgPool(final size) -> Linear -> BN1d.
        self.out_norm = nn.BatchNorm2d(last)
        self.out_drop = nn.Dropout(drop_rate)
        self.embed = nn.Linear(last, embedding_size)
        self.embed_norm = nn.BatchNorm1d(embedding_size)
        self.num_features = embedding_size
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _check(self, x: Tensor) -> None:
        name = type(self).__name__
        check_input(name, x, ndim=4, channels=self.in_chans)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"{name}: expected input (B, {self.in_chans}, {self.input_size}, {self.input_size}) (TVConv fixes "
                f"the resolution), got shape {tuple(x.shape)}"
            )

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> 512-d embedding (``pre_logits``) -> logits."""
        x = self.out_drop(self.out_norm(x)).mean((2, 3))
        x = self.embed_norm(self.embed(x))
        return x if pre_logits else self.head(x)

    def reparameterize(self) -> None:
        """Switch every TVConv to its inference form (generated kernels stored as buffers)."""
        for m in self.modules():
            if isinstance(m, TVConv):
                m.reparameterize()


_SRC = "card tvconv: paper per-width table not read (unconfirmed); architecture from the official code"
_WIDTHS = {"0_1": 0.1, "0_2": 0.2, "0_3": 0.3, "0_5": 0.5, "1_0": 1.0}


def _register(width: str, atom: str) -> None:
    prefix = "tvconv_mobilenetv2" if atom == "tvconv" else "mobilenetv2_face"
    name = f"{prefix}_x{width}"

    def builder(**kw: Any) -> FaceMobileNetV2:
        return FaceMobileNetV2(**{"width_mult": _WIDTHS[width], "atom": atom, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"Face MobileNetV2 x{_WIDTHS[width]} with {'TVConv' if atom == 'tvconv' else 'depthwise'} atoms."
    register_model(builder, paper="tvconv", name=name, input_size=(3, 96, 96), test_input_size=(3, 96, 96),
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), reported=Reported(resolution=96, source=_SRC),
                   tags=("face",) + (("baseline",) if atom == "base" else ("reparam",)))


for _w in _WIDTHS:
    for _atom in ("tvconv", "base"):
        _register(_w, _atom)


@register_model(paper="tvconv", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32), num_classes=10)
def test_tvconv(**kw: Any) -> FaceMobileNetV2:
    """Tiny TVConv MobileNetV2 at 32x32 (four short stages) for the generic tests."""
    args = dict(width_mult=0.25, atom="tvconv", input_size=32, settings=((1, 16, 1, 1), (2, 24, 1, 2), (2, 32, 1, 2),
                (2, 64, 1, 2)), last_channel=64, embedding_size=32, num_classes=10, inter_chans=8)
    args.update(kw)
    return FaceMobileNetV2(**args)
