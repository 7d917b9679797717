"""UniRepLKNet (cards: unireplknet, scaling-up-kernels): a large-kernel ConvNet with dilated re-parameterisation.

Few large-kernel (13x13) blocks for receptive field, many 3x3 blocks for depth. Each large depthwise kernel is
trained with parallel dilated small kernels (:class:`~convatlas.layers.dilated_reparam.DilatedReparamBlock`) and
every BatchNorm / GRN-bias / layer-scale folds away for inference: ``model.reparameterize()`` switches in place to a
network of DW conv(bias) -> SE -> Linear -> GELU -> GRN(gamma) -> Linear(bias) blocks computing the same function.

Card facts (official ``AILab-CVC/UniRepLKNet/unireplknet.py``, read with the search tools):

- block: dw (K>=7: DilatedReparamBlock; K in {3,5}: DW conv no bias; K=0: identity, no BN) -> BN -> SE(C/4, ReLU,
  biased 1x1 convs) -> NHWC -> Linear C->4C -> GELU -> GRN(gamma, beta) -> Linear 4C->C (no bias) -> NCHW -> BN
  -> layer scale (1e-6) -> DropPath -> +x.
- stem: conv3x3 s2 (C/2, bias) -> LN -> GELU -> conv3x3 s2 -> LN; downsampling conv3x3 s2 -> LN (conv first).
- head: global mean -> LayerNorm(1e-6) -> Linear; init trunc-normal(0.02), bias 0, head x head_init_scale.
- kernel layouts: stage 1 all 3, stages 2 and 4 all 13, stage 3: A/F/P/N all 13; T (13,3)x9; S..XL/H (13,3,3)x9.
- reported parameter counts are **deploy-form** (after re-parameterisation): build with ``deploy=True`` (or call
  ``reparameterize()``) to compare. Measured here (1000 classes): deploy A 4,437,300 / F 6,235,216 / P 10,741,704 /
  N 18,318,560 / T 31,037,980 / S 55,645,984 / B 98,008,456 / L 218,454,616 / XL 386,529,064 / H 1,349,862,400
  (training form: A 4,649,060 ... XL 388,690,984). Paper/README: 4.4/6.2/10.7/18.3/31.0/55.6/97.9/218.3/386.4 M,
  H "1.4B" (journal only, not in the official code: the training-form 1,353,916,000 rounds to 1.4B, the deploy
  1.3499B to 1.3B; checked within 4%). The card's "B/L/XL differ by ~0.1 M, cause unconfirmed" is explained: the
  README / Table 4 counts equal our deploy counts *without the GRN gamma* (4C per block: B 72,192, L 108,288,
  XL 144,384), e.g. B 98,008,456 - 72,192 = 97.94 M -> "97.9M"; this rounds to the table for all nine of A..XL,
  while the full deploy counts round to 98.0 / 218.5 / 386.5 M for B / L / XL (the authors' counter evidently
  skipped the custom GRN module; test_unireplknet checks this). ``Reported.params`` keeps the table figures (1 %). Deploy GMACs: A 0.640, F 0.905, P 1.573, N 2.767, T 4.899, S 9.094
  at 224; S 26.72, B 47.18, L 105.42, XL 186.77 at 384 (README 0.6/0.9/1.6/2.8/4.9/9.1; 26.7/47.2/105.4/187).
  ``Reported.gmacs`` holds the official-code count (the paper rounds to 0.1 G, which is up to 7% off for A).
- UniRepLKNet-H is the journal extension's variant (slug scaling-up-kernels), same code.

Non-image uses (the same blocks, modality-specific input handling only; settings from the official
``Audio/``, ``Video/``, ``Point/``, ``Time-Series/`` code, all registered on UniRepLKNet-S):

- :class:`UniRepLKNetAudio` (``unireplknet_s_audio``): spectrogram (B, T, F) -> (B, 1, F, T) image (official
  ``unsqueeze(1).transpose(2, 3)``), 35 Speech Commands V2 classes at 128 x 128.
- :class:`UniRepLKNetVideo` (``unireplknet_s_video``): clip (B, C, T, H, W) -> (B, C, 4H, 4W) by the official memory
  reshape (16 x 224^2 -> 896^2; ``layout="grid"`` tiles whole frames instead), 400 Kinetics classes.
- :class:`UniRepLKNetPoint` (``unireplknet_s_point``): points (B, N, 3) -> V learned projections (3, 224, 224)
  (:class:`~convatlas.layers.point_projection.PointProjectionEncoder`: EdgeConv point features rasterised onto
  rotated x-y views + multi-view attention fusion) -> per-view features concatenated -> LayerNorm -> Linear;
  ModelNet-40 config (4096 points, 4 views).
- :class:`UniRepLKNetTimeSeries` (``unireplknet_s_global_temp`` / ``_global_wind``): Corrformer ``DataEmbedding`` of
  each node's (L, c) series into (L, D'), read as an H x W image (48 x 768 -> 192 x 192), instance normalisation;
  deviation: a direct regression head replaces Corrformer's correlation decoder.

As released, the official modality scripts call the image model's full forward (1000-class logits) where they
need features (``ast_models.py`` feeds them to ``LayerNorm(768)``; ``p2p_adaptor_lk.py`` to a 4-D pooling head;
``Corrformer.py`` reshapes them to (nodes, -1, 768) for its decoder; the Point train script imports a missing
``p2p_adaptor_lkv``), so they cannot run unmodified; we use the pooled/stage-4 features those heads were written
for. The Corrformer decoder is therefore not reproduced (its input is undefined in the released code).

Per-modality paper figures: none registered, because none could be read. Searched (session 3): the official
repo's README.md (image/COCO/ADE20K tables only), Audio/, Video/, Point/ and Time-Series/README.md (setup and
commands only; the Time-Series README notes that Global Temp / Wind MSE and MAE as logged must be divided by 100
and 10, since the NCEI raw data are scaled by 10), and the pages corpus for arXiv 2311.15599v2 and 2410.08049v1
(HTML), the project page invictus717.github.io/UniRepLKNet, Papers-with-Code and two mirrors: only their opening
sections (abstract/introduction) are stored, not the modality tables; the official checkpoints for these tasks
are unreleased (README TODO). The cards record none either. So these entries carry no figures ("no reference" in
``convatlas verify``); their measured params/MACs are asserted in the tests: audio 55,713,755 / 3.01 G, video
55,995,304 / 147.5 G, point 56,973,219 / 107.5 G, Global Temp 55,749,334 / 2366 G per 350-node sample.

``checkpoint_filter_fn`` maps official checkpoint keys (training or deploy form) onto this module layout.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity
from convatlas.layers import DropPath, LayerNorm2d, check_input, drop_path_rates
from convatlas.layers.classifier import NormMlpClassifierHead
from convatlas.layers.dilated_reparam import DilatedReparamBlock
from convatlas.layers.grn import GRN
from convatlas.layers.point_projection import PointProjectionEncoder
from convatlas.layers.reparam import fuse_conv_bn, reparameterize_model
from convatlas.layers.squeeze_excite import SqueezeExcite
from convatlas.models.backbone import checkpoint_seq
from convatlas.registry import Reported, register_model

__all__ = [
    "UniRepLKNetBlock",
    "UniRepLKNet",
    "UniRepLKNetAudio",
    "UniRepLKNetTimeSeries",
    "UniRepLKNetVideo",
    "UniRepLKNetPoint",
    "tile_frames",
    "video_to_image",
    "default_kernel_sizes",
    "checkpoint_filter_fn",
    "TRAINING_RECIPES",
]


def default_kernel_sizes(depths: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The official kernel-size layout for a depth preset (A/F/P, N, T, S..XL/H)."""
    d = tuple(depths)
    s3 = {(2, 2, 6, 2): (13,) * 6, (2, 2, 8, 2): (13,) * 8, (3, 3, 18, 3): (13, 3) * 9, (3, 3, 27, 3): (13, 3, 3) * 9}
    if d not in s3:
        raise ValueError(f"UniRepLKNet: no default kernel sizes for depths {d}; pass kernel_sizes explicitly")
    return ((3,) * d[0], (13,) * d[1], s3[d], (13,) * d[3])


class UniRepLKNetBlock(nn.Module):
    """One UniRepLKNet block: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: C.
        kernel_size: depthwise kernel (>=7: Dilated Reparam Block; 3 or 5: plain DW conv; 0: identity).
        drop_path: stochastic depth rate.
        layer_scale_init_value: initial layer scale (None/0 disables it).
        ffn_factor: FFN expansion.
        deploy: build the fused inference form directly.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        ffn_factor: int = 4,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.deploy = deploy
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy)
        elif kernel_size in (3, 5):
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
        else:
            raise ValueError(f"UniRepLKNetBlock: kernel_size must be 0, 3, 5 or >= 7, got {kernel_size}")
        self.norm = nn.Identity() if (deploy or kernel_size == 0) else nn.BatchNorm2d(dim)
        self.se = SqueezeExcite(dim, rd_channels=dim // 4, act_layer=nn.ReLU, names=("down", "up"))
        hidden = int(ffn_factor * dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden, bias=not deploy)
        self.pwconv2 = nn.Linear(hidden, dim, bias=deploy)
        self.norm2 = nn.Identity() if deploy else nn.BatchNorm2d(dim)
        use_ls = (not deploy) and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value))) if use_ls else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y))))
        y = self.norm2(y.permute(0, 3, 1, 2))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse dilated branches + BN into the DW conv and GRN-beta + BN + layer scale into pwconv2, in place."""
        if self.deploy:
            return
        # 1) depthwise part: DW conv (+ dilated branches) -> BN  ==>  one DW conv with bias.
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
            conv = self.dwconv.lk_origin
        elif isinstance(self.dwconv, nn.Conv2d):
            conv = self.dwconv
        else:
            conv = None
        if conv is not None and isinstance(self.norm, nn.BatchNorm2d):
            w, b = fuse_conv_bn(conv.weight, conv.bias, self.norm)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                              groups=conv.groups, bias=True, device=w.device, dtype=w.dtype)
            fused.weight.copy_(w)
            fused.bias.copy_(b)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = fused
            else:
                self.dwconv = fused
            self.norm = nn.Identity()
        # 2) pointwise tail: gamma * BN(W (g + beta))  ==>  W' g + b'.
        lin, bn = self.pwconv2, self.norm2
        scale = torch.ones(lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        shift = torch.zeros_like(scale)
        if isinstance(bn, nn.BatchNorm2d):
            s = bn.weight / (bn.running_var + bn.eps).sqrt()
            scale, shift = s, bn.bias - bn.running_mean * s
        if self.gamma is not None:
            scale, shift = scale * self.gamma, shift * self.gamma
        bias = lin.bias if lin.bias is not None else torch.zeros_like(scale)
        if self.grn.beta is not None:
            bias = bias + lin.weight @ self.grn.beta.reshape(-1)
        new = nn.Linear(lin.in_features, lin.out_features, bias=True, device=lin.weight.device, dtype=lin.weight.dtype)
        new.weight.copy_(lin.weight * scale[:, None])
        new.bias.copy_(bias * scale + shift)
        self.pwconv2 = new
        self.norm2 = nn.Identity()
        self.gamma = None
        self.grn.beta = None
        self.deploy = True


class UniRepLKNet(nn.Module):
    """UniRepLKNet backbone + classifier: (B, C_in, H, W) -> (B, num_classes); any H, W >= 32 (stride 32 total).

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        kernel_sizes: per-block kernel sizes per stage (default: the official layout for ``depths``).
        in_chans: input channels (1 for spectrograms / time-series maps).
        num_classes: classifier outputs (0: no classifier).
        drop_path_rate: stochastic depth, linear over blocks.
        layer_scale_init_value: layer scale init (1e-6).
        head_init_scale: multiplies the classifier's initial weight and bias.
        drop_rate: dropout before the classifier.
        global_pool: ``"avg"`` (official), ``"max"`` or ``"avgmax"``.
        ffn_factor: FFN expansion (4).
        deploy: build the fused inference form directly (loads deploy checkpoints; reported params).
        feature_norms: add the official downstream-mode per-stage LayerNorms ``norm0..norm3`` (channels-first,
            eps 1e-6) applied to the maps of ``forward_stages`` (detection/segmentation backbones).
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        ffn_factor: int = 4,
        deploy: bool = False,
        feature_norms: bool = False,
    ) -> None:
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"UniRepLKNet: depths and dims need 4 stages, got {depths}, {dims}")
        kernel_sizes = default_kernel_sizes(depths) if kernel_sizes is None else tuple(map(tuple, kernel_sizes))
        for i in range(4):
            if len(kernel_sizes[i]) != depths[i]:
                raise ValueError(f"UniRepLKNet: stage {i} has {depths[i]} blocks but {len(kernel_sizes[i])} kernel sizes")
        self.depths, self.dims, self.kernel_sizes = depths, dims, kernel_sizes
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.grad_checkpointing = False
        self.deploy = deploy

        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, 3, 2, 1), LayerNorm2d(dims[0] // 2), nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1), LayerNorm2d(dims[0]),
            )
        ])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1), LayerNorm2d(dims[i + 1])))
        dpr = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList(
            nn.Sequential(*[
                UniRepLKNetBlock(dims[i], kernel_sizes[i][j], dpr[i][j], layer_scale_init_value, ffn_factor, deploy)
                for j in range(depths[i])
            ])
            for i in range(4)
        )
        self.feature_info = [
            {"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"} for i in range(4)
        ]
        self.feature_norms = feature_norms
        if feature_norms:
            for i in range(4):
                self.add_module(f"norm{i}", LayerNorm2d(dims[i]))
        self.head = NormMlpClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- backbone contract ---------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        check_input(type(self).__name__, x, ndim=4, channels=self.in_chans, layout="(B, C, H, W)")

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """Per-stage maps [(B, dims[i], H/4/2^i, W/4/2^i)] up to ``max_index`` (inclusive); with
        ``feature_norms`` each map goes through ``norm{i}`` (the stage itself still feeds the raw map onwards)."""
        self._check(x)
        last = 3 if max_index is None else max_index
        outs = []
        for i in range(last + 1):
            x = self.downsample_layers[i](x)
            if self.grad_checkpointing and x.requires_grad:
                x = checkpoint_seq(self.stages[i], x)
            else:
                x = self.stages[i](x)
            outs.append(getattr(self, f"norm{i}")(x) if self.feature_norms else x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, dims[-1], H/32, W/32) (the raw last-stage map, as the classifier sees it)."""
        if not self.feature_norms:
            return self.forward_stages(x)[-1]
        self._check(x)
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = checkpoint_seq(self.stages[i], x) if (self.grad_checkpointing and x.requires_grad) else self.stages[i](x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, dims[-1], h, w) -> logits (B, num_classes), or pooled+normed features (B, dims[-1])."""
        if isinstance(self.head, nn.Identity):  # after remove_head(): the map itself
            return x
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def remove_head(self) -> None:
        self.head = nn.Identity()  # type: ignore[assignment]
        self.num_classes = 0

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reparameterize(self) -> "UniRepLKNet":
        """Switch every block to the fused inference form, in place (eval mode); returns ``self``."""
        reparameterize_model(self)
        self.deploy = True
        return self

    reparameterize_unireplknet = reparameterize  # the official name


def _backbone_kwargs(owner: str, variant_kwargs: dict[str, Any], **forced: Any) -> dict[str, Any]:
    """Backbone arguments with the adapter's fixed ones; a conflicting user value raises instead of being dropped."""
    for k, v in forced.items():
        if k in variant_kwargs and variant_kwargs[k] != v:
            raise ValueError(f"{owner}: {k} is fixed to {v!r} by the adapter, got {variant_kwargs[k]!r}")
    return {**variant_kwargs, **forced}


class UniRepLKNetAudio(nn.Module):
    """UniRepLKNet on audio spectrograms (card: unireplknet): (B, T, F) -> (B, num_classes).

    As the official ``Audio/src/models/ast_models.py``: the (B, T, F) spectrogram becomes a 1-channel image
    ``x.unsqueeze(1).transpose(2, 3)`` of shape (B, 1, F, T) (frequency on the height axis); everything else is the
    image network (its head, global mean -> LayerNorm -> Linear, is the official ``mlp_head``).

    Args:
        variant_kwargs: UniRepLKNet arguments (depths, dims, num_classes, ...); ``in_chans`` is 1.
    """

    def __init__(self, **variant_kwargs: Any) -> None:
        super().__init__()
        self.backbone = UniRepLKNet(**_backbone_kwargs("UniRepLKNetAudio", variant_kwargs, in_chans=1))
        self.num_classes = self.backbone.num_classes

    @staticmethod
    def to_image(spec: Tensor) -> Tensor:
        """(B, T, F) spectrogram -> (B, 1, F, T) image."""
        return spec.unsqueeze(1).transpose(2, 3)

    def forward(self, spec: Tensor) -> Tensor:
        check_input("UniRepLKNetAudio", spec, ndim=3, layout="(B, T, F) spectrogram")
        return self.backbone(self.to_image(spec))

    def reparameterize(self) -> "UniRepLKNetAudio":
        self.backbone.reparameterize()
        return self.eval()


def tile_frames(video: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
    """Tile a clip into one image: (B, T, C, H, W) -> (B, C, gh*H, gw*W), frames in row-major order.

    ``grid`` defaults to the squarest (gh, gw) with gh*gw == T (16 frames -> 4x4; 16 x 224^2 -> 896^2).
    """
    if video.ndim != 5:
        raise ValueError(f"tile_frames: expected (B, T, C, H, W), got shape {tuple(video.shape)}")
    b, t, c, h, w = video.shape
    if grid is None:
        gh = max(d for d in range(1, int(math.isqrt(t)) + 1) if t % d == 0)
        grid = (gh, t // gh)
    gh, gw = grid
    if gh * gw != t:
        raise ValueError(f"tile_frames: grid {grid} does not hold {t} frames")
    return video.view(b, gh, gw, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * h, gw * w)


def video_to_image(video: Tensor, layout: str = "reshape", grid: tuple[int, int] | None = None) -> Tensor:
    """(B, C, T, H, W) clip -> (B, C, H', W') image.

    ``layout="reshape"`` is the official one (``Video/engine_for_finetuning.py``: ``x.reshape(B, C, 4H, 4W)`` for
    T=16): the memory of each channel is re-read as an (sH, sW) image with s = sqrt(T), so frame t fills rows
    [tH/s, (t+1)H/s) and each of those rows holds s consecutive rows of the frame. ``layout="grid"`` tiles whole
    frames on a (gh, gw) grid instead (:func:`tile_frames`).
    """
    if video.ndim != 5:
        raise ValueError(f"video_to_image: expected (B, C, T, H, W), got shape {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    if layout == "reshape":
        if grid is not None:
            raise ValueError("video_to_image: grid applies to layout='grid' only")
        s = math.isqrt(t)
        if s * s != t:
            raise ValueError(f"video_to_image: layout='reshape' needs a square number of frames, got T={t}")
        return video.reshape(b, c, h * s, w * s)
    if layout == "grid":
        return tile_frames(video.transpose(1, 2), grid)
    raise ValueError(f"video_to_image: layout must be 'reshape' or 'grid', got {layout!r}")


class UniRepLKNetVideo(nn.Module):
    """UniRepLKNet on video clips (card: unireplknet): (B, C, T, H, W) -> (B, num_classes).

    The clip becomes one (C, sH, sW) image (:func:`video_to_image`; 16 x 224^2 -> 896^2) classified by the image
    network, as the official Kinetics-400 code does.

    Args:
        layout: ``"reshape"`` (official) or ``"grid"`` (whole frames tiled).
        grid: frame grid for ``layout="grid"`` (default: squarest factorisation of T).
        variant_kwargs: UniRepLKNet arguments.
    """

    def __init__(self, layout: str = "reshape", grid: tuple[int, int] | None = None, **variant_kwargs: Any) -> None:
        super().__init__()
        if layout not in ("reshape", "grid"):
            raise ValueError(f"UniRepLKNetVideo: layout must be 'reshape' or 'grid', got {layout!r}")
        if grid is not None and layout != "grid":
            raise ValueError("UniRepLKNetVideo: grid applies to layout='grid' only")
        self.layout, self.grid = layout, grid
        self.backbone = UniRepLKNet(**variant_kwargs)
        self.num_classes = self.backbone.num_classes

    def forward(self, video: Tensor) -> Tensor:
        check_input("UniRepLKNetVideo", video, ndim=5, channels=self.backbone.in_chans, layout="(B, C, T, H, W) clip")
        try:
            img = video_to_image(video, self.layout, self.grid)
        except ValueError as e:
            raise ValueError(f"UniRepLKNetVideo: {e}") from None
        return self.backbone(img)

    def reparameterize(self) -> "UniRepLKNetVideo":
        self.backbone.reparameterize()
        return self.eval()


def _sinusoid_table(n: int, dim: int) -> Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


# Calendar fields of Corrformer's fixed temporal embedding: (name, table size), in x_mark column order.
_CALENDAR = (("month", 13), ("day", 32), ("weekday", 7), ("hour", 24), ("minute", 4))


class UniRepLKNetTimeSeries(nn.Module):
    """UniRepLKNet for multivariate forecasting (card: unireplknet): (B, L, N*c) -> (B, horizon, N*c).

    Follows the official ``Time-Series/models/Corrformer.py`` (Global Temp/Wind): instance normalisation of each
    series with a learned per-channel affine (undone on the output); the D = N*c input columns form N nodes of c
    channels; each node is embedded per time step into D' features by Corrformer's ``DataEmbedding`` (circular
    Conv1d k=3 value embedding, no bias + optional fixed calendar embedding of ``x_mark`` + optional linear
    embedding of standardised node coordinates); the (L, D') map of each node is read as a (1, H, W) image with
    H*W = L*D' (official: 48 x 768 -> 192 x 192) and encoded by the image network.

    Deviation (documented): the official model decodes the encoder features with Corrformer's auto/cross-
    correlation decoder; here the network's own head (global mean -> LayerNorm -> Linear) regresses the
    ``horizon * c`` future values of each node directly.

    Args:
        seq_len: L.
        horizon: predicted steps.
        embed_dim: D' (official 768).
        node_channels: c, series per node (official Global Temp: 11; D = 350 * 11).
        map_size: (H, W) with H*W = L*D' (default (L, D')).
        revin: instance normalisation + learned affine (official).
        pos_embed: add a sinusoidal time-step embedding (not in the official DataEmbedding; off by default).
        calendar: ``None`` or ``"h"`` / ``"t"``: fixed sinusoidal month/day/weekday/hour(/minute) embedding of
            ``x_mark`` (B, L, 4|5) integer calendar fields; ``forward`` then requires ``x_mark``.
        node_positions: (N, P) node coordinates (official: station lat/lon/elevation, P = 3c); standardised per
            column and embedded by a Linear P -> D'. Fixes N.
        embed_dropout: dropout after the embedding (official ``DataEmbedding`` dropout; 0 here by default).
        variant_kwargs: UniRepLKNet arguments; ``in_chans=1``, ``num_classes=horizon*c`` are set here.
    """

    def __init__(self, seq_len: int, horizon: int, embed_dim: int = 32, node_channels: int = 1,
                 map_size: tuple[int, int] | None = None, revin: bool = True, pos_embed: bool = False,
                 calendar: str | None = None, node_positions: Tensor | None = None, embed_dropout: float = 0.0,
                 **variant_kwargs: Any) -> None:
        super().__init__()
        name = "UniRepLKNetTimeSeries"
        if seq_len < 1 or horizon < 1 or embed_dim < 2 or node_channels < 1:
            raise ValueError(f"{name}: seq_len, horizon, node_channels >= 1 and embed_dim >= 2 required")
        map_size = (seq_len, embed_dim) if map_size is None else tuple(map_size)
        if len(map_size) != 2 or map_size[0] * map_size[1] != seq_len * embed_dim:
            raise ValueError(f"{name}: map_size {map_size} must hold L*D' = {seq_len * embed_dim} values")
        if calendar not in (None, "h", "t"):
            raise ValueError(f"{name}: calendar must be None, 'h' or 't', got {calendar!r}")
        self.seq_len, self.horizon, self.embed_dim = seq_len, horizon, embed_dim
        self.node_channels, self.map_size, self.calendar = node_channels, map_size, calendar
        self.value_embedding = nn.Conv1d(node_channels, embed_dim, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value_embedding.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("pos", _sinusoid_table(seq_len, embed_dim) if pos_embed else None, persistent=False)
        if calendar is not None:
            fields = _CALENDAR if calendar == "t" else _CALENDAR[:4]
            for fname, size in fields:
                self.register_buffer(f"cal_{fname}", _sinusoid_table(size, embed_dim), persistent=False)
            self.calendar_fields = tuple(f for f, _ in fields)
        else:
            self.calendar_fields = ()
        if node_positions is not None:
            p = torch.as_tensor(node_positions, dtype=torch.float32)
            if p.ndim != 2:
                raise ValueError(f"{name}: node_positions must be (N, P), got shape {tuple(p.shape)}")
            p = (p - p.mean(0)) / p.std(0, unbiased=False).clamp_min(1e-12)  # StandardScaler
            self.register_buffer("node_positions", p)
            self.geo_embedding: nn.Module | None = nn.Linear(p.shape[1], embed_dim)
        else:
            self.node_positions = None
            self.geo_embedding = None
        self.embed_drop = nn.Dropout(embed_dropout)
        self.revin = revin
        if revin:
            self.affine_weight = nn.Parameter(torch.ones(node_channels))
            self.affine_bias = nn.Parameter(torch.zeros(node_channels))
        self.backbone = UniRepLKNet(**_backbone_kwargs(name, variant_kwargs, in_chans=1,
                                                       num_classes=horizon * node_channels))

    def embed(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        """(B*N, L, c) node series -> (B*N, 1, H, W) maps (value + calendar + node embeddings)."""
        bn = x.shape[0]
        emb = self.value_embedding(x.transpose(1, 2)).transpose(1, 2)                  # (B*N, L, D')
        if self.pos is not None:
            emb = emb + self.pos.to(emb.dtype)
        if x_mark is not None:
            idx = x_mark.long()
            n = bn // idx.shape[0]
            cal = sum(getattr(self, f"cal_{f}")[idx[..., i]] for i, f in enumerate(self.calendar_fields))
            emb = emb + cal.to(emb.dtype).repeat_interleave(n, dim=0)
        if self.geo_embedding is not None:
            geo = self.geo_embedding(self.node_positions.to(emb.dtype))                   # (N, D')
            emb = emb + geo.repeat(bn // geo.shape[0], 1).unsqueeze(1)
        return self.embed_drop(emb).reshape(bn, 1, *self.map_size)

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        name = "UniRepLKNetTimeSeries"
        c = self.node_channels
        check_input(name, x, ndim=3, layout=f"(B, L={self.seq_len}, N*{c}) series")
        b, length, d = x.shape
        if length != self.seq_len or d % c:
            raise ValueError(f"{name}: expected (B, L={self.seq_len}, N*{c}), got shape {tuple(x.shape)}")
        n = d // c
        if self.node_positions is not None and n != self.node_positions.shape[0]:
            raise ValueError(f"{name}: built for N={self.node_positions.shape[0]} nodes, got {n}")
        if self.calendar is None and x_mark is not None:
            raise ValueError(f"{name}: x_mark given but the model was built with calendar=None")
        if self.calendar is not None:
            nf = len(self.calendar_fields)
            if not isinstance(x_mark, Tensor) or tuple(x_mark.shape) != (b, length, nf):
                got = None if x_mark is None else tuple(x_mark.shape)
                raise ValueError(f"{name}: calendar={self.calendar!r} needs x_mark (B, L, {nf}), got {got}")
        if self.revin:
            mean = x.mean(1, keepdim=True).detach()
            std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5).detach()
            x = (x - mean) / std * self.affine_weight.repeat(n) + self.affine_bias.repeat(n)
        series = x.reshape(b, length, n, c).permute(0, 2, 1, 3).reshape(b * n, length, c)
        y = self.backbone(self.embed(series, x_mark))                                    # (B*N, horizon*c)
        y = y.reshape(b, n, self.horizon, c).permute(0, 2, 1, 3).reshape(b, self.horizon, d)
        if self.revin:
            y = (y - self.affine_bias.repeat(n)) / (self.affine_weight.repeat(n) + 1e-10) * std + mean
        return y

    def reparameterize(self) -> "UniRepLKNetTimeSeries":
        self.backbone.reparameterize()
        return self.eval()


class UniRepLKNetPoint(nn.Module):
    """UniRepLKNet on point clouds (card: unireplknet): (B, N, 3) -> (B, num_classes).

    Official ``Point/`` pipeline (P2P-style, ModelNet-40 config ``multiview_UniRepLKNet-S.yaml``): a learned
    projection encoder (:class:`~convatlas.layers.point_projection.PointProjectionEncoder`) renders V views of the
    cloud as (3, 224, 224) images; the image network encodes each view to a (C, h, w) map; the V maps are
    concatenated on channels, globally averaged, LayerNorm-ed and classified (official ``PoolingClsHead``).

    Args:
        num_classes: classes (ModelNet-40: 40).
        num_views, img_size, obj_size, k, graph_dim, fusion, fusion_width: projection encoder settings
            (official 4, 224, img_size, 32, 64, True, 128).
        variant_kwargs: UniRepLKNet arguments (the backbone's own classifier is not built).
    """

    def __init__(self, num_classes: int = 40, num_views: int = 4, img_size: int = 224, obj_size: int | None = None,
                 k: int = 32, graph_dim: int = 64, fusion: bool = True, fusion_width: int = 128,
                 **variant_kwargs: Any) -> None:
        super().__init__()
        self.encoder = PointProjectionEncoder(num_views, img_size, obj_size, graph_dim=graph_dim, k=k, fusion=fusion,
                                              fusion_width=fusion_width)
        self.backbone = UniRepLKNet(**_backbone_kwargs("UniRepLKNetPoint", variant_kwargs, in_chans=3, num_classes=0))
        self.backbone.remove_head()
        self.num_views, self.num_classes = num_views, num_classes
        feat = num_views * self.backbone.num_features
        self.norm = nn.LayerNorm(feat)
        self.head = nn.Linear(feat, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def forward(self, points: Tensor, original_points: Tensor | None = None) -> Tensor:
        """(B, N, 3) -> (B, num_classes). ``original_points`` (official ``original_pc``): the un-augmented cloud the
        point features are computed from while ``points`` (e.g. randomly rotated) are projected; default ``points``."""
        for t in (points,) if original_points is None else (points, original_points):
            check_input("UniRepLKNetPoint", t, ndim=3, layout="(B, N, 3) points")
            if t.shape[-1] != 3 or t.shape[1] < 2:
                raise ValueError(f"UniRepLKNetPoint: expected (B, N >= 2, 3) points, got shape {tuple(t.shape)}")
        if original_points is not None and original_points.shape != points.shape:
            raise ValueError(f"UniRepLKNetPoint: original_points {tuple(original_points.shape)} must match points "
                             f"{tuple(points.shape)}")
        f = self.backbone.forward_features(self.encoder(points, original_points))  # (B*V, C, h, w)
        b = points.shape[0]
        f = f.mean((2, 3)).reshape(b, -1)                                           # views concatenated
        return self.head(self.norm(f))

    def reparameterize(self) -> "UniRepLKNetPoint":
        self.backbone.reparameterize()
        return self.eval()


register_component("unireplknet", UniRepLKNetAudio)
register_component("unireplknet", UniRepLKNetTimeSeries)
register_component("unireplknet", UniRepLKNetVideo)
register_component("unireplknet", UniRepLKNetPoint)
register_component("unireplknet", PointProjectionEncoder)
register_component("unireplknet", DilatedReparamBlock)
register_component("scaling-up-kernels", DilatedReparamBlock)


# --- official checkpoint keys -----------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map an official UniRepLKNet state dict (training or deploy form) onto :class:`UniRepLKNet` keys."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace(".pwconv1.1.", ".pwconv1.").replace(".act.1.", ".grn.")
        k = k.replace(".pwconv2.0.", ".pwconv2.").replace(".pwconv2.2.", ".norm2.")
        if k.startswith("norm."):
            k = "head.norm." + k[5:]
        elif k.startswith("head."):
            k = "head.fc." + k[5:]
        out[k] = v
    return out


# --- variants ---------------------------------------------------------------------------------------------------
_SRC = "README/journal Table 4-5 (params deploy form); gmacs: official-code deploy count, paper rounds to 0.1G"
_CFG = dict(depths=(2, 2, 6, 2))


def _reported(params: float, gmacs: float | None, res: int, top1: float | None, tol: float = 0.01) -> Reported:
    return Reported(params=int(params), gmacs=gmacs, resolution=res, params_tol=tol, source=_SRC,
                    metrics={"imagenet_top1": top1} if top1 is not None else {})


# Official Image/README.md recipes (ConvNeXt-style: AdamW, lr 4e-3 at batch 4096, 300 epochs on IN-1k; IN-22k
# pre-training 90 epochs (5 warm-up); 22k->1k fine-tuning at 384, lr 5e-5 at batch 512, wd 1e-8, layer decay 0.8,
# head_init_scale 1e-3, no mixup/cutmix, 30 epochs (L/XL: 20 epochs, EMA, label smoothing 0.3)).
TRAINING_RECIPES: dict[str, dict[str, dict[str, float]]] = {
    "unireplknet_a": {"in1k": dict(drop_path=0.0, mixup=0.3, cutmix=0.3)},
    "unireplknet_f": {"in1k": dict(drop_path=0.0, mixup=0.3, cutmix=0.3)},
    "unireplknet_p": {"in1k": dict(drop_path=0.1, mixup=0.3, cutmix=0.3)},
    "unireplknet_n": {"in1k": dict(drop_path=0.1, mixup=0.5, cutmix=0.5)},
    "unireplknet_t": {"in1k": dict(drop_path=0.2, mixup=0.8, cutmix=1.0)},
    "unireplknet_s": {"in1k": dict(drop_path=0.4, mixup=0.8, cutmix=1.0), "in22k": dict(drop_path=0.1),
                      "in22k_to_1k": dict(drop_path=0.2, input_size=384)},
    "unireplknet_b": {"in22k": dict(drop_path=0.1), "in22k_to_1k": dict(drop_path=0.2, input_size=384)},
    "unireplknet_l": {"in22k": dict(drop_path=0.1, lr=1e-3, input_size=192),
                      "in22k_to_1k": dict(drop_path=0.3, input_size=384, smoothing=0.3)},
    "unireplknet_xl": {"in22k": dict(drop_path=0.2, lr=1e-3, input_size=192),
                       "in22k_to_1k": dict(drop_path=0.3, input_size=384, smoothing=0.3)},
}

_COMMON: dict[str, Any] = dict(
    paper="unireplknet", reference="official:AILab-CVC/UniRepLKNet", tags=("reparam", "reported_deploy"),
    test_input_size=(3, 64, 64),
)


def _build(variant_kwargs: dict[str, Any], kwargs: dict[str, Any]) -> UniRepLKNet:
    return UniRepLKNet(**{**variant_kwargs, **kwargs})


@register_model(paper="unireplknet", test_only=True, test_input_size=(3, 64, 64), input_size=(3, 64, 64),
                tags=("reparam",))
def test_unireplknet(**kwargs: Any) -> UniRepLKNet:
    """Tiny UniRepLKNet for the generic tests: depths (1,1,2,1), dims 16..128, LarK 7 and SmaK 3 blocks."""
    return _build(dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), kernel_sizes=((3,), (7,), (7, 3), (7,))), kwargs)


@register_model(**_COMMON, reported=_reported(4.4e6, 0.640, 224, 77.0))
def unireplknet_a(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-A (4.4M deploy params, 0.6G MACs at 224)."""
    return _build(dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)), kwargs)


@register_model(**_COMMON, reported=_reported(6.2e6, 0.905, 224, 78.6))
def unireplknet_f(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-F (6.2M, 0.9G)."""
    return _build(dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)), kwargs)


@register_model(**_COMMON, reported=_reported(10.7e6, 1.573, 224, 80.2))
def unireplknet_p(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-P (10.7M, 1.6G)."""
    return _build(dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)), kwargs)


@register_model(**_COMMON, reported=_reported(18.3e6, 2.767, 224, 81.6))
def unireplknet_n(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-N (18.3M, 2.8G)."""
    return _build(dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)), kwargs)


@register_model(**_COMMON, reported=_reported(31.0e6, 4.899, 224, 83.2))
def unireplknet_t(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-T (31.0M, 4.9G)."""
    return _build(dict(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640)), kwargs)


@register_model(**_COMMON, reported=_reported(55.6e6, 9.094, 224, 83.9))
def unireplknet_s(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-S (55.6M, 9.1G at 224; 26.7G at 384)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)), kwargs)


_COMMON_384 = {**_COMMON, "input_size": (3, 384, 384)}


@register_model(**_COMMON_384, reported=_reported(55.6e6, 26.72, 384, 86.4))
def unireplknet_s_384(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-S IN-22k -> 1k fine-tuned at 384 (README: 56M, 26.7G, 86.4; same network as ``unireplknet_s``)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)), kwargs)


@register_model(**_COMMON_384, reported=_reported(97.9e6, 47.18, 384, 87.4))
def unireplknet_b(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-B (97.9M, 47.2G at 384; IN-22k -> 1k)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)), kwargs)


@register_model(**_COMMON_384, reported=_reported(218.3e6, 105.42, 384, 87.9))
def unireplknet_l(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-L (218.3M, 105.4G at 384)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)), kwargs)


@register_model(**_COMMON_384, reported=_reported(386.4e6, 186.77, 384, 88.0))
def unireplknet_xl(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-XL (386.4M, 187G at 384)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)), kwargs)


@register_model(**{**_COMMON, "paper": "scaling-up-kernels"},
                reported=Reported(params=int(1.4e9), resolution=224, params_tol=0.04,
                                  source="journal Table 4 '1.4B' (deploy 1,349,862,400 measured; 1.35B rounds to 1.4B)"))
def unireplknet_h(**kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-H (journal extension, 1.4B params; no ImageNet MACs reported)."""
    return _build(dict(depths=(3, 3, 27, 3), dims=(480, 960, 1920, 3840)), kwargs)


# --- modality models ---------------------------------------------------------------------------------------------
# Official settings (AILab-CVC/UniRepLKNet Audio/Video/Point/Time-Series code, read with the search tools), all on
# UniRepLKNet-S. No per-modality accuracy/params figures could be read (where we looked: module docstring), so
# these entries carry no reported figures ("no reference" in `convatlas verify`); measured figures are in the
# tests. Tiny ``test_unireplknet_<modality>`` variants drive the generic registry tests.
_S = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
_TINY = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), kernel_sizes=((3,), (7,), (7, 3), (7,)))
# Time-Series/models/Corrformer.py: the S layout with 11x11 kernels in stage 4.
TS_KERNEL_SIZES = ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (11,) * 3)
_MODAL: dict[str, Any] = dict(paper="unireplknet", reference="official:AILab-CVC/UniRepLKNet", tags=("reparam",))


def _inputs(full: tuple[tuple[int, ...], ...], small: tuple[tuple[int, ...], ...]) -> Any:
    def make(b: int, is_small: bool) -> tuple[Tensor, ...]:
        return tuple(torch.randn(b, *s) for s in (small if is_small else full))
    return make


def _ts_inputs(seq: int, d: int, fields: int) -> Any:
    def make(b: int, is_small: bool) -> tuple[Tensor, ...]:
        x = torch.randn(b, seq, d)
        if not fields:
            return (x,)
        hi = torch.tensor([13, 32, 7, 24, 4][:fields], dtype=torch.float32)
        return x, (torch.rand(b, seq, fields) * hi).floor()
    return make


@register_model(**_MODAL, test_only=True, num_classes=5, input_size=(32, 32),
                example_inputs=_inputs(((32, 32),), ((32, 32),)))
def test_unireplknet_audio(**kwargs: Any) -> UniRepLKNetAudio:
    """Tiny audio model: (B, T, F) spectrogram -> 5 classes."""
    return UniRepLKNetAudio(**{**_TINY, "num_classes": 5, **kwargs})


@register_model(**_MODAL, num_classes=35, input_size=(128, 128), example_inputs=_inputs(((128, 128),), ((32, 32),)),
                reported=Reported(source="Speech Commands V2-35 (Audio/egs/speechcommands/run_sc.sh: 128 frames x "
                                         "128 mel bins); no figure in the card"))
def unireplknet_s_audio(**kwargs: Any) -> UniRepLKNetAudio:
    """UniRepLKNet-S on (B, 128, 128) log-mel spectrograms, 35 Speech Commands V2 classes (official audio setup)."""
    return UniRepLKNetAudio(**{**_S, "num_classes": 35, **kwargs})


@register_model(**_MODAL, test_only=True, num_classes=5, input_size=(3, 4, 16, 16),
                example_inputs=_inputs(((3, 4, 16, 16),), ((3, 4, 16, 16),)))
def test_unireplknet_video(**kwargs: Any) -> UniRepLKNetVideo:
    """Tiny video model: (B, 3, 4, 16, 16) clip -> (B, 3, 32, 32) image -> 5 classes."""
    return UniRepLKNetVideo(**{**_TINY, "num_classes": 5, **kwargs})


@register_model(**_MODAL, num_classes=400, input_size=(3, 16, 224, 224),
                example_inputs=_inputs(((3, 16, 224, 224),), ((3, 4, 16, 16),)),
                reported=Reported(source="Kinetics-400, 16 frames x 224^2 -> 896^2 (Video/run_unireplknet.sh); "
                                         "no figure in the card"))
def unireplknet_s_video(**kwargs: Any) -> UniRepLKNetVideo:
    """UniRepLKNet-S on 16-frame 224^2 clips (B, 3, 16, 224, 224), 400 Kinetics classes (official video setup)."""
    return UniRepLKNetVideo(**{**_S, "num_classes": 400, **kwargs})


@register_model(**_MODAL, test_only=True, num_classes=5, input_size=(64, 3),
                example_inputs=_inputs(((64, 3),), ((64, 3),)))
def test_unireplknet_point(**kwargs: Any) -> UniRepLKNetPoint:
    """Tiny point model: 2 views of 32^2 (k=8 neighbours, 16 point features, fusion width 32), (B, 64, 3) -> 5."""
    return UniRepLKNetPoint(**{**_TINY, "num_classes": 5, "num_views": 2, "img_size": 32, "k": 8, "graph_dim": 16,
                               "fusion_width": 32, **kwargs})


@register_model(**_MODAL, num_classes=40, input_size=(4096, 3), example_inputs=_inputs(((4096, 3),), ((64, 3),)),
                reported=Reported(source="ModelNet-40, 4096 points, 4 views of 224^2 (Point/config/ModelNet40/"
                                         "multiview_UniRepLKNet-S.yaml); no figure in the card"))
def unireplknet_s_point(**kwargs: Any) -> UniRepLKNetPoint:
    """UniRepLKNet-S on (B, 4096, 3) point clouds, 4 projected views, 40 ModelNet classes (official point setup)."""
    return UniRepLKNetPoint(**{**_S, "num_classes": 40, "num_views": 4, "img_size": 224, **kwargs})


def _horizon_alias(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``create_model(name, num_classes=h)`` on a forecasting entry means horizon h (the registry's convention)."""
    kwargs = dict(kwargs)
    if "num_classes" in kwargs:
        h = kwargs.pop("num_classes")
        if "horizon" in kwargs and kwargs["horizon"] != h:
            raise ValueError(f"UniRepLKNetTimeSeries: num_classes={h} (the horizon) conflicts with "
                             f"horizon={kwargs['horizon']}")
        kwargs["horizon"] = h
    return kwargs


@register_model(**_MODAL, task="forecasting", test_only=True, num_classes=3, input_size=(16, 4),
                example_inputs=_ts_inputs(16, 4, 4))
def test_unireplknet_timeseries(**kwargs: Any) -> UniRepLKNetTimeSeries:
    """Tiny forecaster: (B, 16, 2 nodes x 2 channels) + hourly calendar marks -> (B, 3, 4)."""
    return UniRepLKNetTimeSeries(**{**_TINY, "seq_len": 16, "horizon": 3, "embed_dim": 16, "node_channels": 2,
                                    "calendar": "h", "map_size": (8, 32), **_horizon_alias(kwargs)})


def _global_weather(kwargs: dict[str, Any]) -> UniRepLKNetTimeSeries:
    return UniRepLKNetTimeSeries(**{**_S, "kernel_sizes": TS_KERNEL_SIZES, "seq_len": 48, "horizon": 24,
                                    "embed_dim": 768, "node_channels": 11, "map_size": (192, 192), "calendar": "h",
                                    **_horizon_alias(kwargs)})


_WEATHER = dict(task="forecasting", num_classes=24, input_size=(48, 3850), example_inputs=_ts_inputs(48, 3850, 4))


@register_model(**_MODAL, **_WEATHER,
                reported=Reported(source="Global Temp (Time-Series/scripts/Global_Temp/UniRepLKNet.sh: 48 -> 24 steps, "
                                         "350 nodes x 11 stations, d_model 768); no figure in the card"))
def unireplknet_s_global_temp(**kwargs: Any) -> UniRepLKNetTimeSeries:
    """UniRepLKNet-S forecaster for Global Temp: (B, 48, 3850) + calendar (B, 48, 4) -> (B, 24, 3850).

    Pass ``node_positions`` (350, 33) station coordinates to add the official geo embedding."""
    return _global_weather(kwargs)


@register_model(**_MODAL, **_WEATHER,
                reported=Reported(source="Global Wind (Time-Series/scripts/Global_Wind/UniRepLKNet.sh: same settings "
                                         "as Global Temp); no figure in the card"))
def unireplknet_s_global_wind(**kwargs: Any) -> UniRepLKNetTimeSeries:
    """UniRepLKNet-S forecaster for Global Wind (same architecture and shapes as Global Temp)."""
    return _global_weather(kwargs)


# --- identities -------------------------------------------------------------------------------------------------
def _randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, BN statistics, layer scale and GRN parameters, so every fused term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if p.ndim > 1 else 0.5))
            if name.endswith("gamma") and p.ndim == 1:
                p.add_(0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 2.0)
    return model


@register_identity("unireplknet", "dilated branches + BNs == one merged large DW kernel (K=13, float64)")
def _identity_dilated_merge() -> str:
    blk = _randomize_(DilatedReparamBlock(8, 13).double()).eval()
    x = torch.randn(2, 8, 19, 19, dtype=torch.float64)
    y0 = blk(x)
    blk.reparameterize()
    y1 = blk(x)
    err = ((y1 - y0).abs().max() / y0.abs().max()).item()
    assert err < 1e-10, f"relative error {err:.2e}"
    return f"max rel error {err:.2e}"


@register_identity("unireplknet", "reparameterize() keeps the network function (float64, rel. err < 1e-5)")
def _identity_model_reparam() -> str:
    torch.manual_seed(0)
    model = _randomize_(test_unireplknet(num_classes=10).double()).eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y0 = model(x)
    n0 = sum(p.numel() for p in model.parameters())
    model.reparameterize()
    y1 = model(x)
    n1 = sum(p.numel() for p in model.parameters())
    err = ((y1 - y0).abs().max() / y0.abs().max()).item()
    assert err < 1e-5, f"relative error {err:.2e}"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "BatchNorm left after reparameterize"
    return f"max rel error {err:.2e}; params {n0} -> {n1}"


@register_identity("scaling-up-kernels", "UniRepLKNet re-parameterisation is exact (shared code with unireplknet)")
def _identity_journal() -> str:
    return _identity_model_reparam()


@register_identity("unireplknet", "audio/video/point/time-series models: reparameterize() exact (float64, rel < 1e-5)")
def _identity_modalities_reparam() -> str:
    micro = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 32), kernel_sizes=((3,), (7,), (5,), (7,)))
    g = torch.Generator().manual_seed(0)
    cases = [
        ("audio", UniRepLKNetAudio(**micro, num_classes=3), (torch.randn(1, 16, 12, generator=g),)),
        ("video", UniRepLKNetVideo(**micro, num_classes=3), (torch.randn(1, 3, 4, 8, 8, generator=g),)),
        ("point", UniRepLKNetPoint(**micro, num_classes=3, num_views=2, img_size=16, k=4, graph_dim=8),
         (torch.randn(1, 24, 3, generator=g),)),
        ("timeseries", UniRepLKNetTimeSeries(**micro, seq_len=8, horizon=2, embed_dim=8, node_channels=2,
                                             calendar="h"),
         (torch.randn(1, 8, 4, generator=g), (torch.rand(1, 8, 4, generator=g) * 7).floor())),
    ]
    errs = []
    for name, model, inputs in cases:
        model = _randomize_(model).double().eval()
        if isinstance(model, UniRepLKNetTimeSeries):
            with torch.no_grad():
                model.affine_weight.copy_(1 + 0.1 * torch.randn(model.affine_weight.shape, generator=g))
        inputs = tuple(t.double() for t in inputs)
        with torch.no_grad():
            y0 = model(*inputs)
            model.reparameterize()
            y1 = model(*inputs)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules()), f"{name}: BN left"
        err = ((y1 - y0).abs().max() / y0.abs().max()).item()
        assert err < 1e-5, f"{name}: relative error {err:.2e}"
        errs.append(f"{name} {err:.1e}")
    return "max rel error " + ", ".join(errs)
