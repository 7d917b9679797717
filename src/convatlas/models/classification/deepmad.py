"""DeepMAD networks (card: deepmad): plain ResNet-/MobileNet-style CNNs designed by mathematical programming.

The architectures are given as TinyNAS *structure lists* (one dict per super-block) and built by
:class:`DeepMADNet`; the designer that produces such lists lives in :mod:`convatlas.analysis.deepmad_designer`.

Block definitions (official ``alibaba/lightweight-neural-architecture-search``, ``tinynas/deploy/cnnnet``, read):

- ``ConvKXBNRELU{in,out,k,s}``: conv k x k stride s (no bias) -> BN -> ReLU.
- ``SuperResK1KXK1{in,out,s,k,L,btn}``: L bottlenecks ``ReLU(BN(1x1 -> btn) ...)``: 1x1 in->btn BN ReLU, kxk
  btn->btn (stride s on the first) BN ReLU, 1x1 btn->out BN; shortcut AvgPool2d(2) when strided, then a 1x1 conv+BN
  projection on the *first block always* (``force_resproj``) and whenever channels change; ReLU after the add.
- ``SuperResK1DWSEK1{in,out,s,k,L,btn}``: L inverted residuals with SiLU: 1x1 in->btn BN SiLU, DW kxk BN SiLU,
  SE (1x1 conv+BN -> SiLU -> 1x1 conv+BN -> sigmoid, reduced width ``max(1, round(btn/4)//8)*8``), 1x1 btn->out BN;
  identity shortcut (AvgPool2d(2) when strided) only when in == out, no projection; SiLU after the add.
- head: global average pool -> Linear (key ``fc_linear``, as the official builder). Keys follow the official layout
  (``block_list.i[.block_list.j].conv1.conv1.weight`` ...) so official checkpoints load strictly.

Reported vs measured (1000 classes; MACs = conv/linear only, this library's counter):

| model | README params / FLOPs | measured params / GMACs | note |
|---|---|---|---|
| R18 | 11.69M / 1.82G | 11,826,088 / 1.812 | README = ResNet-18 budget; +1.2% params |
| R34 | 21.80M / 3.68G | 21,690,160 / 3.635 | README = ResNet-34 budget |
| R50 | 25.55M / 4.13G | 25,441,144 / 4.043 | README = ResNet-50 budget |
| 29M-224 | 29M / 4.5G | 28,669,956 / 4.324 | name rounded to 1M; -3.9% MACs |
| 29M-288 | 29M / 4.5G | 28,703,630 / 4.322 @288 | the 4.5G *is* at 288 px (2.62 G at 224) |
| 50M | 50M / 8.7G | 49,408,964 / 8.450 | name rounded |
| 89M | 89M / 15.4G | 88,325,780 / 15.027 | |

The README figures of R18/R34/R50 are exactly the ResNet-18/34/50 budgets given to the search, not counts of the
found networks; the searcher's own size/FLOP model (``get_model_size``/``get_flops``) also counts BN (2*C per
conv and pixel), so its budgeted networks measure slightly differently with a conv/linear counter. The same holds
for the MobileNet-like models (checked in session 3 against ``configs/classification/deepmad_29M_224.py`` etc.:
budgets flops 4.5e9 / 8.7e9 / 15.4e9, model_size 29e6 / 50e6 / 89e6): under TinyNAS accounting
(:func:`~convatlas.analysis.deepmad_designer.tinynas_counts`) the published 29M-224 / 29M-288 (at 288) / 50M /
89M use 4.449 / 4.435 / 8.611 / 15.257 G (98.5-99.1 % of the flops budget) and 26.9 / 26.9 / 47.4 / 85.8 M
(classifier excluded), so the README's "29M / 4.5G" etc. are the budgets, and the -3 to -4 % MAC gap is BN and
activation work that a conv/linear counter leaves out. ``Reported``
keeps the README values, with ``params_tol``/``macs_tol`` widened per variant to the measured gap stated here
(1.5% for R18; 2% for the rounded "29M"/"50M" names; 5% MACs for 29M-224/288).

Inference speed (CPU, grad off; the training forward is unchanged): the maps run channels-last (oneDNN's depthwise
5x5 is several times faster than on NCHW), eval BN is folded into the conv weights per call and SiLU / ReLU / SE
scaling / residual adds run in place (:mod:`convatlas.layers.conv_bn_act`). DeepMAD-29M's 1x1 -> DW layers at
112x112 have 240-512 channels, so at batch 16 each BN or activation output is 0.2-0.4 GB, mmapped and page-faulted
fresh on every call: in the torch profiler (1 thread) BN + SiLU + SE multiply were 47% of the forward and NCHW
depthwise convs most of the rest. Old vs new code in one process, interleaved, medians of repeated runs: 1 thread,
thread CPU time (load ~6): b16 7.47 s -> 2.32 s (3.2x), b1 276 -> 149 ms (1.85x); 2 threads (load ~1): b16 wall
4.70 s -> 1.38 s (3.4x); DeepMAD-R18 1 thread b16 609 -> 342 ms; max logit change 6e-8 (relative).
Stage maps returned by ``forward_stages`` in inference are channels-last tensors (same shape and values).
"""

from __future__ import annotations

import ast
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers import check_input
from convatlas.layers.conv_bn_act import bn_foldable, conv_bn_act, fast_conv_bn
from convatlas.models.backbone import checkpoint_seq
from convatlas.ops.residual_mlp import use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["DeepMADNet", "parse_structure", "DEEPMAD_STRUCTURES"]

_RELU = nn.ReLU()  # activation handle for conv_bn_act (applied in place); no parameters


class ConvKXBN(nn.Module):
    """conv k x k (no bias) + BN: (B, in, H, W) -> (B, out, H/s, W/s). Keys ``conv1``, ``bn1``."""

    def __init__(self, cin: int, cout: int, k: int, s: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        if fast_conv_bn(x, self.bn1):  # inference: BN folded into the conv weight
            return conv_bn_act(x, self.conv1, self.bn1)
        return self.bn1(self.conv1(x))


class ConvKXBNReLU(ConvKXBN):
    """conv + BN + ReLU (``ConvKXBNRELU``)."""

    def __init__(self, cin: int, cout: int, k: int, s: int = 1) -> None:
        super().__init__(cin, cout, k, s)
        self.in_channels, self.out_channels, self.stride = cin, cout, s

    def forward(self, x: Tensor) -> Tensor:
        if fast_conv_bn(x, self.bn1):
            return conv_bn_act(x, self.conv1, self.bn1, _RELU)
        return torch.relu(self.bn1(self.conv1(x)))


class ResK1KXK1(nn.Module):
    """ResNet bottleneck 1x1 -> kxk -> 1x1 (BN, ReLU): (B, in, H, W) -> (B, out, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, btn: int, force_resproj: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvKXBN(cin, btn, 1)
        self.conv2 = ConvKXBN(btn, btn, k, s)
        self.conv3 = ConvKXBN(btn, cout, 1)
        self.residual_downsample = nn.AvgPool2d(2, 2) if s == 2 else nn.Identity()
        self.residual_proj = ConvKXBN(cin, cout, 1) if (cin != cout or force_resproj) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        res = self.residual_proj(self.residual_downsample(x))
        if fast_conv_bn(x, self.conv1.bn1) and bn_foldable(self.conv2.bn1):  # inference: folded BN, in-place ops
            y = conv_bn_act(x, self.conv1.conv1, self.conv1.bn1, _RELU)
            y = conv_bn_act(y, self.conv2.conv1, self.conv2.bn1, _RELU)
            return torch.relu_(self.conv3(y).add_(res))
        y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return torch.relu(y + res)


class DeepMADSE(nn.Module):
    """TinyNAS SE: pool -> 1x1 conv+BN -> SiLU -> 1x1 conv+BN -> sigmoid -> scale. Keys ``conv1``, ``conv2``."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        rd = max(1, round(channels * ratio) // 8) * 8
        self.conv1 = ConvKXBN(channels, rd, 1)
        self.conv2 = ConvKXBN(rd, channels, 1)
        self.act = nn.SiLU()

    def gate(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> the (B, C, 1, 1) sigmoid gate."""
        s = x.mean((2, 3), keepdim=True)
        return torch.sigmoid(self.conv2(self.act(self.conv1(s))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class ResK1DWSEK1(nn.Module):
    """Inverted residual 1x1 -> DW kxk -> SE -> 1x1 (SiLU): (B, in, H, W) -> (B, out, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, btn: int) -> None:
        super().__init__()
        self.conv1 = ConvKXBN(cin, btn, 1)
        self.conv2 = ConvKXBN(btn, btn, k, s, groups=btn)
        self.se2 = DeepMADSE(btn)
        self.conv3 = ConvKXBN(btn, cout, 1)
        self.act = nn.SiLU()
        self.is_reslink = cin == cout
        self.residual_downsample = nn.AvgPool2d(2, 2) if (s == 2 and self.is_reslink) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if fast_conv_bn(x, self.conv1.bn1) and bn_foldable(self.conv2.bn1):  # inference: folded BN, in-place ops
            y = conv_bn_act(x, self.conv1.conv1, self.conv1.bn1, self.act)
            y = conv_bn_act(y, self.conv2.conv1, self.conv2.bn1, self.act)
            y = self.conv3(y.mul_(self.se2.gate(y)))
            if self.is_reslink:
                y = y.add_(self.residual_downsample(x))
            return nn.functional.silu(y, inplace=True)
        y = self.conv3(self.se2(self.act(self.conv2(self.act(self.conv1(x))))))
        if self.is_reslink:
            y = y + self.residual_downsample(x)
        return self.act(y)


class SuperBlock(nn.Module):
    """L inner blocks; the first maps in->out with the stride, the rest out->out. Key ``block_list``."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__()
        cls, L = info["class"], int(info["L"])
        cin, cout, k, s, btn = info["in"], info["out"], info["k"], info.get("s", 1), info["btn"]
        blocks = []
        for j in range(L):
            bi, bs = (cin, s) if j == 0 else (cout, 1)
            if cls == "SuperResK1KXK1":
                blocks.append(ResK1KXK1(bi, cout, k, bs, btn, force_resproj=j == 0))
            else:
                blocks.append(ResK1DWSEK1(bi, cout, k, bs, btn))
        self.block_list = nn.Sequential(*blocks)
        self.in_channels, self.out_channels, self.stride = cin, cout, s

    def forward(self, x: Tensor) -> Tensor:
        return self.block_list(x)


_BLOCK_CLASSES = ("ConvKXBNRELU", "SuperResK1KXK1", "SuperResK1DWSEK1")


def parse_structure(structure: str | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A TinyNAS structure (the txt files' ``{'best_structures': [[...]]}`` text, a list literal, or a list of
    dicts) -> validated list of block dicts. Raises ValueError on unknown classes or broken channel chaining."""
    if isinstance(structure, str):
        obj = ast.literal_eval(structure.strip())
        if isinstance(obj, dict):
            obj = obj["best_structures"][0]
        structure = obj
    blocks = [dict(b) for b in structure]
    if not blocks:
        raise ValueError("DeepMAD structure is empty")
    for i, b in enumerate(blocks):
        if b.get("class") not in _BLOCK_CLASSES:
            raise ValueError(f"DeepMAD structure block {i}: unknown class {b.get('class')!r}; expected {_BLOCK_CLASSES}")
        if i and b["in"] != blocks[i - 1]["out"]:
            raise ValueError(f"DeepMAD structure block {i}: in={b['in']} != previous out={blocks[i - 1]['out']}")
        if b.get("s", 1) not in (1, 2):
            raise ValueError(f"DeepMAD structure block {i}: stride must be 1 or 2, got {b.get('s')}")
    return blocks


class DeepMADNet(nn.Module):
    """A DeepMAD / TinyNAS ``CnnNet`` classifier: (B, C_in, H, W) -> (B, num_classes).

    Args:
        structure: block list (see :func:`parse_structure`).
        in_chans: input channels (replaces the first block's ``in``).
        num_classes: classifier outputs (0: none).
        drop_rate: dropout before the classifier.
    """

    def __init__(self, structure: str | Sequence[dict[str, Any]], in_chans: int = 3, num_classes: int = 1000,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        blocks = parse_structure(structure)
        blocks[0]["in"] = in_chans
        self.structure = blocks
        self.in_chans, self.num_classes = in_chans, num_classes
        self.block_list = nn.ModuleList(
            ConvKXBNReLU(b["in"], b["out"], b["k"], b.get("s", 1)) if b["class"] == "ConvKXBNRELU" else SuperBlock(b)
            for b in blocks
        )
        # Stage ends as the official get_stage_idx: before every strided block (except the first), and the last.
        ends = [i - 1 for i, b in enumerate(blocks) if b.get("s", 1) == 2 and i > 0] + [len(blocks) - 1]
        self.stage_ends = sorted(set(ends))
        red, reds = 1, []
        for i, b in enumerate(blocks):
            red *= b.get("s", 1)
            reds.append(red)
        self.feature_info = [
            {"num_chs": blocks[e]["out"], "reduction": reds[e], "module": f"block_list.{e}"} for e in self.stage_ends
        ]
        self.num_features = blocks[-1]["out"]
        self.drop = nn.Dropout(drop_rate)
        self.fc_linear: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """Maps at each stage end [(B, C_i, H/r_i, W/r_i)] up to ``max_index``."""
        check_input("DeepMADNet", x, ndim=4, channels=self.in_chans, layout="(B, C, H, W)")
        if not self.training and use_fast_inference(x):
            x = x.contiguous(memory_format=torch.channels_last)  # see the module docstring, "Inference speed"
        last = self.stage_ends[len(self.stage_ends) - 1 if max_index is None else max_index]
        outs = []
        for i, blk in enumerate(self.block_list[: last + 1]):
            if self.grad_checkpointing and x.requires_grad and isinstance(blk, SuperBlock):
                x = checkpoint_seq(blk.block_list, x)
            else:
                x = blk(x)
            if i in self.stage_ends:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_last, H/32, W/32)."""
        return self.forward_stages(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc_linear(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"DeepMADNet: only global_pool='avg' is supported, got {global_pool!r}")
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.fc_linear = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                          if num_classes > 0 else nn.Identity())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def remove_head(self) -> None:
        self.fc_linear, self.num_classes = nn.Identity(), 0


# --- the published structures (configs/classification/models/deepmad-*.txt) ------------------------------------
def _k1kxk1(cin: int, cout: int, s: int, k: int, L: int, btn: int) -> dict[str, Any]:
    return {"class": "SuperResK1KXK1", "in": cin, "out": cout, "s": s, "k": k, "L": L, "btn": btn}


def _k1dwsek1(cin: int, cout: int, s: int, k: int, L: int, btn: int) -> dict[str, Any]:
    return {"class": "SuperResK1DWSEK1", "in": cin, "out": cout, "s": s, "k": k, "L": L, "btn": btn}


def _conv(cin: int, cout: int, k: int, s: int) -> dict[str, Any]:
    return {"class": "ConvKXBNRELU", "in": cin, "out": cout, "k": k, "s": s}


DEEPMAD_STRUCTURES: dict[str, list[dict[str, Any]]] = {
    "R18": [_conv(3, 32, 3, 2), _k1kxk1(32, 96, 2, 5, 1, 40), _k1kxk1(96, 384, 2, 5, 6, 40),
            _k1kxk1(384, 384, 2, 5, 9, 64), _k1kxk1(384, 1024, 1, 3, 10, 104), _k1kxk1(1024, 672, 2, 5, 12, 104)],
    "R34": [_conv(3, 24, 3, 2), _k1kxk1(24, 128, 2, 5, 1, 24), _k1kxk1(128, 512, 2, 5, 10, 48),
            _k1kxk1(512, 896, 2, 5, 13, 88), _k1kxk1(896, 1024, 1, 5, 11, 104), _k1kxk1(1024, 616, 2, 5, 14, 128)],
    "R50": [_conv(3, 32, 3, 2), _k1kxk1(32, 128, 2, 5, 1, 40), _k1kxk1(128, 512, 2, 5, 11, 48),
            _k1kxk1(512, 872, 2, 5, 12, 88), _k1kxk1(872, 1024, 1, 5, 13, 104), _k1kxk1(1024, 1232, 2, 5, 15, 120)],
    "29M-224": [_conv(3, 40, 3, 2), _k1dwsek1(40, 40, 1, 5, 2, 240), _k1dwsek1(40, 85, 2, 5, 4, 512),
                _k1dwsek1(85, 134, 2, 5, 6, 800), _k1dwsek1(134, 201, 2, 5, 6, 1208),
                _k1dwsek1(201, 312, 2, 5, 5, 1872), _conv(312, 1792, 1, 1)],
    "29M-288": [_conv(3, 40, 3, 2), _k1dwsek1(40, 61, 2, 5, 4, 368), _k1dwsek1(61, 96, 2, 5, 4, 576),
                _k1dwsek1(96, 145, 2, 5, 5, 872), _k1dwsek1(145, 217, 1, 5, 6, 1304),
                _k1dwsek1(217, 328, 2, 5, 4, 1968), _conv(328, 1792, 1, 1)],
    "50M": [_conv(3, 48, 3, 2), _k1dwsek1(48, 112, 2, 5, 7, 672), _k1dwsek1(112, 168, 2, 5, 9, 1008),
            _k1dwsek1(168, 252, 2, 5, 7, 1512), _k1dwsek1(252, 378, 2, 5, 3, 2272),
            _k1dwsek1(378, 576, 1, 3, 1, 3456), _conv(576, 2048, 1, 1)],
    "89M": [_conv(3, 56, 3, 2), _k1dwsek1(56, 136, 2, 5, 10, 816), _k1dwsek1(136, 204, 2, 5, 9, 1224),
            _k1dwsek1(204, 326, 2, 5, 7, 1952), _k1dwsek1(326, 490, 2, 5, 4, 2944),
            _k1dwsek1(490, 744, 1, 3, 1, 4464), _conv(744, 2560, 1, 1)],
}

_SRC = "official README (params/FLOPs of R18/R34/R50 are the ResNet budgets of the search)"


def _build(key: str, kwargs: dict[str, Any]) -> DeepMADNet:
    return DeepMADNet(kwargs.pop("structure", DEEPMAD_STRUCTURES[key]), **kwargs)


def _rep(params: float, gmacs: float | None, res: int, top1: float, ptol: float = 0.01, mtol: float = 0.03) -> Reported:
    return Reported(params=int(params), gmacs=gmacs, resolution=res, params_tol=ptol, macs_tol=mtol, source=_SRC,
                    metrics={"imagenet_top1": top1})


_COMMON: dict[str, Any] = dict(paper="deepmad", reference="official:alibaba/lightweight-neural-architecture-search",
                               test_input_size=(3, 64, 64))


@register_model(paper="deepmad", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32))
def test_deepmad(**kwargs: Any) -> DeepMADNet:
    """Tiny DeepMAD-style net (both block types) for the generic tests."""
    s = [_conv(3, 8, 3, 2), _k1kxk1(8, 16, 2, 3, 2, 8), _k1dwsek1(16, 16, 1, 3, 2, 32), _k1dwsek1(16, 24, 2, 5, 1, 48)]
    return DeepMADNet(kwargs.pop("structure", s), **kwargs)


@register_model(**_COMMON, reported=_rep(11.69e6, 1.82, 224, 77.7, ptol=0.015))
def deepmad_r18(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-R18 (ResNet-18 budget: 11.69M params, 1.82G FLOPs)."""
    return _build("R18", kwargs)


@register_model(**_COMMON, reported=_rep(21.80e6, 3.68, 224, 79.7))
def deepmad_r34(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-R34 (ResNet-34 budget: 21.80M, 3.68G)."""
    return _build("R34", kwargs)


@register_model(**_COMMON, reported=_rep(25.55e6, 4.13, 224, 80.6))
def deepmad_r50(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-R50 (ResNet-50 budget: 25.55M, 4.13G)."""
    return _build("R50", kwargs)


@register_model(**_COMMON, reported=_rep(29e6, 4.5, 224, 82.5, ptol=0.02, mtol=0.05))
def deepmad_29m_224(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-29M at 224 (29M, 4.5G)."""
    return _build("29M-224", kwargs)


@register_model(**{**_COMMON, "input_size": (3, 288, 288)}, reported=_rep(29e6, 4.5, 288, 82.8, ptol=0.02, mtol=0.05))
def deepmad_29m_288(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-29M searched for 288 px (29M, "4.5G" as listed)."""
    return _build("29M-288", kwargs)


@register_model(**_COMMON, reported=_rep(50e6, 8.7, 224, 83.9, ptol=0.02))
def deepmad_50m(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-50M (50M, 8.7G)."""
    return _build("50M", kwargs)


@register_model(**_COMMON, reported=_rep(89e6, 15.4, 224, 84.0))
def deepmad_89m(**kwargs: Any) -> DeepMADNet:
    """DeepMAD-89M (89M, 15.4G)."""
    return _build("89M", kwargs)


@register_identity("deepmad", "published structures chain correctly and reach stride 32 (5 stages)")
def _identity_structures() -> str:
    out = []
    for key, s in DEEPMAD_STRUCTURES.items():
        with torch.device("meta"):
            net = DeepMADNet(s, num_classes=10)
        reds = [f["reduction"] for f in net.feature_info]
        assert reds == [2, 4, 8, 16, 32], f"{key}: reductions {reds}"
        out.append(key)
    return f"{len(out)} structures, reductions 2..32"
