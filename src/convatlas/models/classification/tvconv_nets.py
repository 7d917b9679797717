"""Face-recognition MobileNetV2 / ShuffleNetV2 with TVConv (card: tvconv, arXiv 2203.10489, official code
JierunChen/TVConv, MIT).

Official ``face_recognition/model/{mobilenetv2,shufflenetv2,commons,heads}.py`` and ``atoms/TVConv.py``:

- :class:`FaceMobileNetV2`: MobileNetV2 for aligned 96x96 faces with a stride-1 stem, inverted residuals whose
  depthwise 3x3 is a plain depthwise conv (``atom="base"``) or a :class:`~convatlas.layers.tvconv.TVConv`
  (``atom="tvconv"``, wrapped as :class:`TVConvBNReLU`), a 1x1 conv to 512 channels and the ``OutputLayer``.
- :class:`FaceShuffleNetV2`: ShuffleNetV2 x0.5/x1.0/x1.5 (stride-1 stem conv + max-pool, stages of 4/8/4 units at
  24/12/6 pixels, conv5 to 1024) with either atom in both branches (no activation after the depthwise conv).
- ``OutputLayer`` (both): BN2d -> dropout -> 6x6 average pool -> Linear(C, 512) -> BN1d = the 512-d embedding.
- Training head: :class:`~convatlas.layers.am_softmax.AMSoftmax` (margin 0.35, scale 32, official
  ``model_interface.py``); ``model(x, labels)`` applies the margin, ``model(x)`` gives ``32 * cos`` logits and
  ``forward_head(x, pre_logits=True)`` the embedding (what face verification compares:
  :func:`convatlas.analysis.face_verification.verification_accuracy_10fold`). ``head_type="linear"`` gives a plain
  Linear classifier instead; ``num_classes=0`` returns the embedding.

Card facts / decisions:
- TVConv generator: the registered models use the official *training* configuration, ``TVConv_inter_chans=64``,
  ``TVConv_inter_layers=3`` (``train_test.py`` defaults passed by ``model_interface.py``; also the defaults of the
  segmentation code's TVConv), not the layer's own defaults 16 / 1 (kept by :class:`TVConv`).
- Figures: the paper's per-width table could not be read offline (only the abstract: up to 3.1x fewer FLOPs and
  2.3x throughput at similar accuracy vs depthwise conv). Searched (session 3): the stored copies of
  ar5iv.labs.arxiv.org/html/2203.10489, alphaxiv.org/overview/2203.10489 and the deepai abstract page hold only the
  abstract and the start of the introduction; the official repository (README.MD: no result tables;
  utils/compute_complexity.py prints ptflops MACs/params but records none; train_test.py) and a code-index search
  give no per-width params/MACs/accuracy either. The registered figures are the exact counts of the
  official modules in their deployed form (``model_transform_for_test``: the generated kernels become buffers,
  so TVConv layers have no parameters), with the 512 x 1000 AM-softmax head of the default build, at 96x96. They
  are derived independently in the tests from the official module/key shapes (the converter's synthetic official
  state dict). MACs count TVConv's per-pixel multiply-add (custom op ``convatlas::tvconv_dw``, C*9*h*w per layer,
  the depthwise-conv convention), so a deployed TVConv model costs exactly what the depthwise model of the same
  width costs (x0.1: 18.5 M MACs incl. the head, x1.0: 212 M). The training form adds the generators
  (e.g. x0.1 with the official 64/3 generator: 16.9 M parameters, almost all LayerNorm affine maps and the
  final generator conv; it is batch-independent and disappears after :meth:`reparameterize`).
- Official ``OutputLayer`` is built for ``last_channel=512`` channels, equal to ours for every width <= 1.

``input_size`` other than 96 is supported (TVConv sizes follow the input; multiples of 16). Official checkpoints
(Lightning ``state_dict`` with ``model.``/``head.`` prefixes, or the bare model, training or ``TVConv_test``
deployed form) load through :func:`load_official_tvconv`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import check_input
from convatlas.layers.am_softmax import AMSoftmax
from convatlas.layers.tvconv import TVConv, adapt_official_tvconv_keys, reparameterize_tvconvs
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.registry import Reported, register_model

__all__ = ["FaceMobileNetV2", "FaceShuffleNetV2", "TVConvInvertedResidual", "TVConvBNReLU", "ShuffleUnit",
           "make_divisible", "convert_official_tvconv", "load_official_tvconv", "checkpoint_filter_fn",
           "OFFICIAL_TVCONV_KWARGS", "FACE_RECIPE"]

# Official training configuration of the TVConv weight generator (train_test.py defaults).
OFFICIAL_TVCONV_KWARGS = {"posi_chans": 4, "inter_chans": 64, "inter_layers": 3}

# Official face-recognition training (train_test.py defaults + model_interface.py configure_optimizers), recorded
# for reproduction (the engine's schedule is warm-up + cosine, so the step schedule is not wired): CASIA-WebFace-
# frontal (10,572 ids) at 96x96, AM-softmax (s 32, m 0.35) on the 512-d embedding, SGD momentum 0.9 (no Nesterov),
# lr 0.1, weight decay 5e-4, batch 512 (DDP, drop_last), 38 epochs, MultiStepLR x0.1 at epochs 22 / 30 / 35;
# model selection by the mean 10-fold verification accuracy over AgeDB-30 / CALFW / CFP-FF / LFW (L2 distance).
FACE_RECIPE: dict[str, Any] = {
    "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "lr": 0.1, "weight_decay": 5e-4, "batch_size": 512,
    "epochs": 38, "lr_milestones": (22, 30, 35), "lr_gamma": 0.1, "head": "am_softmax(s=32, m=0.35)",
    "num_classes": 10_572, "input_size": 96, "val_sets": ("agedb_30", "calfw", "cfp_ff", "lfw"),
}  # fmt: skip

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


def _depthwise(channels: int, out_hw: int, stride: int, atom: str, **tvconv_kwargs: Any) -> nn.Module:
    """The 'atom': TVConv at output size ``out_hw`` or a depthwise 3x3 conv (no bias)."""
    if atom == "tvconv":
        return TVConv(channels, out_hw, out_hw, 3, stride, **tvconv_kwargs)
    if atom == "base":
        if tvconv_kwargs:
            raise ValueError(f"atom='base' takes no TVConv options, got {sorted(tvconv_kwargs)}")
        return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
    raise ValueError(f"atom must be 'tvconv' or 'base', got {atom!r}")


class TVConvBNReLU(nn.Sequential):
    """TVConv -> BatchNorm2d -> ReLU6 (official ``TVConvBNReLU``): (B, C, h*s, w*s) -> (B, C, h, w)."""

    def __init__(self, channels: int, out_hw: int, stride: int = 1, **tvconv_kwargs: Any) -> None:
        super().__init__(TVConv(channels, out_hw, out_hw, 3, stride, **tvconv_kwargs), nn.BatchNorm2d(channels),
                         nn.ReLU6(inplace=True))


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
            dw: nn.Module = TVConvBNReLU(hidden, out_hw, stride, **tvconv_kwargs)
        else:
            dw = nn.Sequential(_depthwise(hidden, out_hw, stride, atom, **tvconv_kwargs), nn.BatchNorm2d(hidden),
                               nn.ReLU6(inplace=True))
        layers += [dw, nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


def _channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit with a TVConv or depthwise atom: (B, C_in, H, W) -> (B, C_out, h, w) (official layout).

    stride 1: split channels, ``branch2`` on one half, concat, shuffle; stride 2: ``branch1`` (atom s2 -> BN ->
    1x1 -> BN -> ReLU) and ``branch2`` (1x1 -> BN -> ReLU -> atom -> BN -> 1x1 -> BN -> ReLU) on the full input.
    """

    def __init__(self, cin: int, cout: int, out_hw: int, stride: int, atom: str = "tvconv",
                 **tvconv_kwargs: Any) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit: stride must be 1 or 2, got {stride}")
        branch = cout // 2
        if stride == 1 and cin != 2 * branch:
            raise ValueError(f"ShuffleUnit: stride 1 needs cin == cout, got {cin} -> {cout}")
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise(cin, out_hw, stride, atom, **tvconv_kwargs), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride == 2 else branch, branch, 1, bias=False), nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True), _depthwise(branch, out_hw, stride, atom, **tvconv_kwargs), nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _channel_shuffle(out, 2)


class _FaceNet(LinearHeadBackbone):
    """Shared face-model parts: the official ``OutputLayer`` embedding and the AM-softmax / linear head."""

    pre_head_modules = ("out_norm", "out_drop", "embed", "embed_norm")

    def _build_output(self, channels: int, embedding_size: int, drop_rate: float, num_classes: int,
                      head_type: str) -> None:
        if head_type not in ("am_softmax", "linear"):
            raise ValueError(f"{type(self).__name__}: head_type must be 'am_softmax' or 'linear', got {head_type!r}")
        self.head_type = head_type
        self.out_norm = nn.BatchNorm2d(channels)
        self.out_drop = nn.Dropout(drop_rate)
        self.embed = nn.Linear(channels, embedding_size)
        self.embed_norm = nn.BatchNorm1d(embedding_size)
        self.num_features, self.head_hidden_size = channels, embedding_size  # feature map; embedding width
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """AM-softmax (or Linear) classifier over the embedding; 0 returns the embedding."""
        if getattr(self, "head_type", "linear") == "am_softmax" and num_classes > 0:
            if global_pool not in (None, "avg"):
                raise ValueError(f"{type(self).__name__}: only global_pool='avg' is supported, got {global_pool!r}")
            self.num_classes = num_classes
            self.head = AMSoftmax(self.head_hidden_size, num_classes)
        else:
            super().reset_classifier(num_classes, global_pool)

    def _init_weights(self) -> None:
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

    def forward_head(self, x: Tensor, pre_logits: bool = False, labels: Tensor | None = None) -> Tensor:
        """Feature map -> 512-d embedding (``pre_logits``) -> logits (margin at ``labels`` with AM-softmax)."""
        x = self.out_drop(self.out_norm(x)).mean((2, 3))
        x = self.embed_norm(self.embed(x))
        if pre_logits:
            return x
        if isinstance(self.head, AMSoftmax):
            return self.head(x, labels)
        if labels is not None:
            raise ValueError(f"{type(self).__name__}: labels are only used by the AM-softmax head")
        return self.head(x)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) [+ labels (B,)] -> (B, num_classes) logits, or (B, 512) embedding for 0 classes."""
        return self.forward_head(self.forward_features(x), labels=labels)

    def reparameterize(self) -> None:
        """Switch every TVConv to its inference form (generated kernels stored as buffers)."""
        reparameterize_tvconvs(self)


class FaceMobileNetV2(_FaceNet):
    """Face MobileNetV2 (stride-1 stem) with TVConv or depthwise atoms: (B, 3, S, S) -> (B, num_classes).

    Args:
        width_mult: channel multiplier (0.1 ... 1.0).
        atom: ``"tvconv"`` or ``"base"``.
        input_size: S (96 in the paper); TVConv resolutions follow it, the model only runs at this size.
        embedding_size: face embedding width (512).
        settings: (t, c, n, s) rows (default: the official face setting).
        drop_rate: dropout in the output layer (official ``drop_ratio``).
        num_classes: identities of the classifier on the embedding (0: none, the embedding is the output).
        head_type: ``"am_softmax"`` (paper) or ``"linear"``.
        in_chans: input channels.
        last_channel: width of the final 1x1 conv (512, scaled by max(1, width_mult)).
        tvconv_kwargs: TVConv options (posi_chans, inter_chans, inter_layers, bias).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        atom: str = "tvconv",
        input_size: int = 96,
        embedding_size: int = 512,
        settings: Sequence[tuple[int, int, int, int]] = FACE_SETTINGS,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        head_type: str = "am_softmax",
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
        self._build_output(last, embedding_size, drop_rate, num_classes, head_type)
        self._init_weights()

    def official_blocks(self) -> list[str]:
        """Our module path of each official ``features.{i}`` entry (stem, blocks, final 1x1 conv)."""
        return ["stem"] + [f"stages.{i}.{j}" for i, st in enumerate(self.stages) for j in range(len(st))]


class FaceShuffleNetV2(_FaceNet):
    """Face ShuffleNetV2 (stride-1 stem conv + max-pool) with TVConv or depthwise atoms: (B, 3, S, S) -> logits.

    Args:
        stage_channels: (stem, stage2, stage3, stage4, conv5) widths, e.g. (24, 116, 232, 464, 1024) for x1.0.
        stage_repeats: units per stage (4, 8, 4).
        atom, input_size, embedding_size, drop_rate, num_classes, head_type, in_chans, tvconv_kwargs: as
            :class:`FaceMobileNetV2` (input_size divisible by 16; stages run at S/4, S/8, S/16: 24/12/6 at 96).
    """

    def __init__(
        self,
        stage_channels: Sequence[int] = (24, 116, 232, 464, 1024),
        stage_repeats: Sequence[int] = (4, 8, 4),
        atom: str = "tvconv",
        input_size: int = 96,
        embedding_size: int = 512,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        head_type: str = "am_softmax",
        in_chans: int = 3,
        **tvconv_kwargs: Any,
    ) -> None:
        super().__init__()
        if len(stage_channels) != 5 or len(stage_repeats) != 3:
            raise ValueError("FaceShuffleNetV2: expected 5 stage_channels and 3 stage_repeats")
        if input_size % 16:
            raise ValueError(f"FaceShuffleNetV2: input_size {input_size} must be divisible by 16")
        self.in_chans, self.input_size = in_chans, input_size
        c0 = stage_channels[0]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        cin, hw = c0, input_size // 2
        stages = []
        for i, (reps, cout) in enumerate(zip(stage_repeats, stage_channels[1:4])):
            hw //= 2
            units: list[nn.Module] = [ShuffleUnit(cin, cout, hw, 2, atom, **tvconv_kwargs)]
            units += [ShuffleUnit(cout, cout, hw, 1, atom, **tvconv_kwargs) for _ in range(reps - 1)]
            cin = cout
            if i == 2:  # official conv5 (1x1 -> BN -> ReLU) closes the last stage
                units.append(nn.Sequential(nn.Conv2d(cin, stage_channels[4], 1, bias=False),
                                           nn.BatchNorm2d(stage_channels[4]), nn.ReLU(inplace=True)))
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [{"num_chs": c, "reduction": r, "module": f"stages.{i}"}
                             for i, (c, r) in enumerate(zip((*stage_channels[1:3], stage_channels[4]), (4, 8, 16)))]
        self.final_hw = hw
        self._build_output(stage_channels[4], embedding_size, drop_rate, num_classes, head_type)
        self._init_weights()


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------

def _official_prefix_map(model: _FaceNet) -> list[tuple[str, str]]:
    """(official module prefix, our prefix) pairs, longest official prefix first."""
    pairs = [("output_layer.layer1.0.", "out_norm."), ("output_layer.layer1.", "out_norm."),
             ("output_layer.layer2.0.", "embed."), ("output_layer.layer2.1.", "embed_norm.")]
    if isinstance(model, FaceMobileNetV2):
        pairs += [(f"features.{i}.", f"{p}.") for i, p in enumerate(model.official_blocks())]
    else:
        pairs += [("conv1.", "stem.")]
        pairs += [(f"stage{k + 2}.", f"stages.{k}.") for k in range(3)]
        pairs += [("conv5.", f"stages.2.{len(model.stages[2]) - 1}.")]
    return sorted(pairs, key=lambda p: -len(p[0]))


def convert_official_tvconv(state_dict: Mapping[str, Tensor], model: _FaceNet) -> dict[str, Tensor]:
    """Map an official TVConv face checkpoint onto ``model``'s keys.

    Accepts the Lightning checkpoint's ``state_dict`` (``model.*`` backbone keys, ``head.weight`` (512, K) of
    ``AM_Softmax``) or a bare model state dict, in the training form (``posi_map``, ``weight_layers.*``) or the
    deployed ``TVConv_test`` form (``weight_maps`` (1, C, 3, 3, h, w); call ``model.reparameterize()`` first).
    TVConv's shape buffers (``TVConv_k``, ``stride``, ``channels``, ``h``, ``w``, ``c``) are checked against the
    model and dropped. Returns a dict for ``model.load_state_dict(..., strict=True)``.
    """
    sd = dict(state_dict.get("state_dict", state_dict)) if isinstance(state_dict.get("state_dict"), Mapping) \
        else dict(state_dict)
    pairs = _official_prefix_map(model)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        k = key[len("model."):] if key.startswith("model.") else key
        if k == "head.weight":  # AM_Softmax weight (D, K) -> ours (K, D)
            out["head.weight"] = value.t().contiguous()
            continue
        new = next((ours_p + k[len(off):] for off, ours_p in pairs if k.startswith(off)), None)
        if new is None:
            raise KeyError(f"convert_official_tvconv: unexpected official key {key!r}")
        out[new] = value
    return adapt_official_tvconv_keys(out, model)


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: _FaceNet) -> dict[str, Tensor]:
    """Hook for ``load_weights`` / ``create_model(pretrained=path)``: official layouts -> ours (a deployed
    ``TVConv_test`` checkpoint needs ``model.reparameterize()`` before loading; :func:`load_official_tvconv` does
    that itself)."""
    return convert_official_tvconv(state_dict, model)


def load_official_tvconv(model: _FaceNet, state_dict: Mapping[str, Tensor]) -> _FaceNet:
    """Load an official checkpoint strictly (switching ``model`` to the deployed form if the checkpoint is)."""
    keys = state_dict.get("state_dict", state_dict) if isinstance(state_dict.get("state_dict"), Mapping) \
        else state_dict
    if any(k.endswith("weight_maps") for k in keys):
        model.reparameterize()
    model.load_state_dict(convert_official_tvconv(state_dict, model), strict=True)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------------------------

_SRC = ("exact count of the official modules (face_recognition/model/*.py) in the deployed form "
        "(model_transform_for_test) + 512x1000 AM-softmax head, 96x96; the paper's per-width table was not "
        "available (see module docstring)")
_WIDTHS = {"0_1": 0.1, "0_2": 0.2, "0_3": 0.3, "0_5": 0.5, "1_0": 1.0}
_SHUFFLE = {"0_5": (24, 48, 96, 192, 1024), "1_0": (24, 116, 232, 464, 1024), "1_5": (24, 176, 352, 704, 1024)}
# Deployed-form (params, GMACs) at 96x96 with the default 1000-class AM-softmax head. TVConv and depthwise models of
# one width share them: TVConv_test has no parameters and costs C*9*h*w MACs, as the depthwise conv's weights
# (C*9) are its only extra parameters. Training-form counts (official 64/3 generator): TVConv MobileNetV2 x0.1
# 16,881,368 ... x1.0 50,220,576; ShuffleNetV2 x0.5 11,114,984 ... x1.5 27,162,216 (tests check them exactly).
_FIGURES: dict[str, tuple[int, float]] = {
    "tvconv_mobilenetv2_x0_1": (827_096, 0.018536), "mobilenetv2_face_x0_1": (836_672, 0.018536),
    "tvconv_mobilenetv2_x0_2": (901_160, 0.023700), "mobilenetv2_face_x0_2": (916_352, 0.023700),
    "tvconv_mobilenetv2_x0_3": (1_016_480, 0.038639), "mobilenetv2_face_x0_3": (1_038_656, 0.038639),
    "tvconv_mobilenetv2_x0_5": (1_307_424, 0.066772), "mobilenetv2_face_x0_5": (1_339_968, 0.066772),
    "tvconv_mobilenetv2_x1_0": (2_689_056, 0.211963), "mobilenetv2_face_x1_0": (2_753_280, 0.211963),
    "tvconv_shufflenetv2_x0_5": (1_372_376, 0.030022), "shufflenetv2_face_x0_5": (1_381_664, 0.030022),
    "tvconv_shufflenetv2_x1_0": (2_271_336, 0.106747), "shufflenetv2_face_x1_0": (2_293_476, 0.106747),
    "tvconv_shufflenetv2_x1_5": (3_485_016, 0.217577), "shufflenetv2_face_x1_5": (3_518_496, 0.217577),
}


def _reported(name: str) -> Reported:
    params, gmacs = _FIGURES[name]
    return Reported(params=params, gmacs=gmacs, resolution=96, params_exact=True, macs_tol=0.001, source=_SRC)


def _register(name: str, make: Any, doc: str, atom: str) -> None:
    def builder(**kw: Any) -> _FaceNet:
        args = dict(OFFICIAL_TVCONV_KWARGS) if atom == "tvconv" else {}
        args.update(kw)
        return make(atom=atom, **args)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(builder, paper="tvconv", name=name, input_size=(3, 96, 96), test_input_size=(3, 96, 96),
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), reported=_reported(name),
                   tags=("face", "reported_deploy") + (("baseline",) if atom == "base" else ("reparam",)))


for _w, _wm in _WIDTHS.items():
    for _atom, _prefix in (("tvconv", "tvconv_mobilenetv2"), ("base", "mobilenetv2_face")):
        _register(f"{_prefix}_x{_w}", lambda atom, _wm=_wm, **kw: FaceMobileNetV2(width_mult=_wm, atom=atom, **kw),
                  f"Face MobileNetV2 x{_wm} with {'TVConv' if _atom == 'tvconv' else 'depthwise'} atoms "
                  "(card: tvconv).",
                  _atom)
for _w, _chs in _SHUFFLE.items():
    for _atom, _prefix in (("tvconv", "tvconv_shufflenetv2"), ("base", "shufflenetv2_face")):
        _register(f"{_prefix}_x{_w}", lambda atom, _chs=_chs, **kw: FaceShuffleNetV2(_chs, atom=atom, **kw),
                  f"Face ShuffleNetV2 x{_w.replace('_', '.')} with {'TVConv' if _atom == 'tvconv' else 'depthwise'} "
                  "atoms (card: tvconv).", _atom)


@register_model(paper="tvconv", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32), num_classes=10)
def test_tvconv(**kw: Any) -> FaceMobileNetV2:
    """Tiny TVConv MobileNetV2 at 32x32 (four short stages) for the generic tests."""
    args = dict(width_mult=0.25, atom="tvconv", input_size=32, settings=((1, 16, 1, 1), (2, 24, 1, 2), (2, 32, 1, 2),
                (2, 64, 1, 2)), last_channel=64, embedding_size=32, num_classes=10, inter_chans=8)
    args.update(kw)
    return FaceMobileNetV2(**args)
