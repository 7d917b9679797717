"""Terminator: slow-fast networks connected by the HyperZ·Z·W operator (card: hyperzzw, arXiv 2401.17948).

A residual-free stack of SFNE (slow-fast neural encoding) blocks. In every block slow networks
(:class:`~convatlas.layers.hyper_kernel.MAGNet`) generate a global hyper-kernel (the whole image / sequence) and
four context-dependent local hyper-kernels (sizes 3, 9, 5, 7); the fast network applies them to the hidden
activation Z through HyperZ·Z·W (``Z ⊙ W`` then matrix product / global FFT convolution / depthwise sliding
window), together with a recursive gated unit (RGU), an MLP channel mixer, hyper-channel and hyper-(channel x
spatial) interactions; the 10 (+ earlier blocks' outputs) branches are concatenated and compressed by a 1x1
bottleneck, standardised (G-IBS), passed through GELU, shifted by a scalar bias and dropped out.

Two forms (one class, ``data_dim``):
- 2-D images (B, C, H, H) (square; the global branch multiplies spatial matrices), e.g. CIFAR-10 at 32x32;
- 1-D pixel-level sequences (B, C, L) (sMNIST / sequential digits): the global branch is a causal global
  convolution with the context-dependent length-L kernel ``Z ⊙ W`` (via :func:`convatlas.ops.fft_conv.fft_conv`).

Training (official models/lightning_wrappers.py, checked): loss = label-smoothing CE (eps 0.09) + the slow neural
loss ("local feedback error", weight 1: :func:`slow_loss` on the global hyper-kernels returned by
:meth:`Terminator.forward_with_hyper_kernels`; both in :func:`terminator_loss`) + ``l2_reg`` x the official
``LnLoss`` (:func:`fast_weight_penalty`: L2 *norms*, not squared, of the fast-network parameters, plus 1e-6 x those
of the 2-D slow nets' layers). Optimiser: Kar3 (:class:`convatlas.engine.kar.Kar3`; lr 0.001215, betas (0.5, 0.95),
l2_reg 5e-5 on CIFAR-10; 100 epochs, batch 64, cosine schedule with 8 warm-up epochs, no gradient clipping).

torch.compile (whole model, ``fullgraph=True``: no graph breaks, no recompilations, no data-dependent shapes;
``torch._dynamo.explain``: 1 graph). Compile time is dominated by inductor generating and g++-compiling one C++
kernel per fused group of pointwise/reduction ops (0.8 s of g++ CPU each on the development CPU). The four
context-dependent local slow nets per block, each with a differently sized grid (3, 9, 5, 7), produced four
separate sets of such kernels (pooling, batch-mean, GELU, sine filters, s-renormalisation): 64 kernels for the
2-block test model, 254 s wall on the contended 2-core machine. They are now evaluated as one
:class:`~convatlas.layers.hyper_kernel.LocalHyperKernelBank` (stacked parameters, one batched matmul per layer,
bias-fused ``baddbmm``; same maths, max difference to the separate nets 4e-16 in float64): 42 kernels,
18 s of dynamo/inductor CPU + 32 s of g++ CPU, i.e. about 35 s on an idle 2-core machine (82 s wall at load 7).
Identically shaped computations (the two RGUs, the four LocalConv standardisations, the global and spatial slow
nets) share kernels through inductor's source-level de-duplication.

Card facts / decisions:
- Config (cfg/config.yaml, CIFAR-10): 5 blocks, in_channel [3, 12, 36, 72, 144], bottleneck factors
  [4, 3, 2, 2, 2], num_concat_pre [0, 0, 1, 1, 2], dropout [0, .05, .05, .05, .05], global MAGNet hidden 64 with
  [3, 2, 2, 2, 2] layers, local MAGNet hidden 32 / 2 layers / sizes [3, 9, 5, 7], hyper-channel MAGNet 2 layers
  hidden 32, hyper-interaction channel 2 layers hidden 16 and spatial 2 layers hidden 64.
- The paper reports no parameter counts or MACs (card: unconfirmed); measured here (meta device, regression values
  in the tests): terminator_cifar10 1,339,415 params, 1.2207 GMACs at 32x32; the slow nets (MAGNet coordinate
  MLPs, without the local nets' context layers) hold 223,360 = 16.7% of the parameters (a third-party summary
  quoted ~8%: unconfirmed, the official code gives no count).
- Unconfirmed in the official files, chosen here: G-IBS (not in the indexed repository) = affine-free group
  standardisation (12 groups) followed by affine-free batch standardisation; the classifier head = global
  average pooling + Linear; omega_0 = 0.5; "previous block output" for num_concat_pre = the input of the previous
  block (channel-tiled), "two blocks back" = the input of the block before it.
- Like the official code, standardisations use batch statistics in train *and* eval (no running stats) and the
  local slow nets average their context over the batch: outputs of one sample depend on the rest of the batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers import check_input
from convatlas.layers.hyper_kernel import LocalHyperKernelBank, MAGNet, hyperzzw_2e, hyperzzw_global
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.registry import Reported, register_model

__all__ = [
    "Terminator", "SFNEBlock", "FastMultiBranchLayer", "slow_loss", "terminator_loss", "fast_weight_penalty", "GIBS",
]


def _conv1x1(data_dim: int, cin: int, cout: int) -> nn.Module:
    return (nn.Conv1d if data_dim == 1 else nn.Conv2d)(cin, cout, 1)


def _instance_std(x: Tensor) -> Tensor:
    """Affine-free instance standardisation (InstanceNorm, eps 1e-5, no running stats)."""
    return F.instance_norm(x, eps=1e-5)


def _batch_std(x: Tensor) -> Tensor:
    """Affine-free batch standardisation (BatchNorm with batch statistics in train and eval)."""
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


class GIBS(nn.Module):
    """G-IBS standardisation (unconfirmed definition, see module notes): group then batch standardisation."""

    def __init__(self, channels: int, group_num: int = 12) -> None:
        super().__init__()
        self.groups = math.gcd(channels, group_num)

    def forward(self, x: Tensor) -> Tensor:
        return _batch_std(F.group_norm(x, self.groups, eps=1e-5))


class RGU(nn.Module):
    """Recursive gated unit: k = W_k x, v = W_v x, q = GELU(IN(k ⊙ W_q v)) + b_p, y = W_y q; (B, C, *S) -> same."""

    def __init__(self, data_dim: int, channels: int, size: Sequence[int]) -> None:
        super().__init__()
        self.fast_linear_k, self.fast_linear_v, self.fast_linear_q, self.fast_linear_y = (
            _conv1x1(data_dim, channels, channels) for _ in range(4)
        )
        for lin in (self.fast_linear_k, self.fast_linear_v, self.fast_linear_q, self.fast_linear_y):
            nn.init.kaiming_uniform_(lin.weight, nonlinearity="linear")
            nn.init.zeros_(lin.bias)
        self.fast_bias_p = nn.Parameter(torch.zeros(1, 1, *size))

    def forward(self, x: Tensor) -> Tensor:
        k, v = self.fast_linear_k(x), self.fast_linear_v(x)
        q = F.gelu(_instance_std(k * self.fast_linear_q(v))) + self.fast_bias_p
        return self.fast_linear_y(q)


class LocalConv(nn.Module):
    """Local HyperZ·Z·W: depthwise conv of x with a generated kernel (C, 1, *k), 1x1 channel mixer, affine-free
    batch standardisation, GELU. (B, C, *S) -> (B, C, *S)."""

    def __init__(self, data_dim: int, channels: int) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.channel_mixer = _conv1x1(data_dim, channels, channels)
        nn.init.kaiming_normal_(self.channel_mixer.weight)
        nn.init.zeros_(self.channel_mixer.bias)

    def forward(self, kernel: Tensor, x: Tensor) -> Tensor:
        conv = F.conv1d if self.data_dim == 1 else F.conv2d
        y = conv(x, kernel.to(x.dtype), padding=(kernel.shape[-1] - 1) // 2, groups=kernel.shape[0])
        return F.gelu(_batch_std(self.channel_mixer(y)))


class HyperChannelInteract(nn.Module):
    """Hyper-channel interaction: GAP -> (B, C) -> s = (y ⊙ hk_C) ⊙ y -> x · sigmoid(s)."""

    def __init__(self, channels: int, hidden: int, num_layers: int, omega_0: float, seed: int) -> None:
        super().__init__()
        self.slow_net_gc = MAGNet(1, channels, hidden, 1, num_layers, omega_0, seed=seed)

    def score(self, x: Tensor) -> Tensor:
        y = x.flatten(2).mean(-1)  # (B, C)
        s = hyperzzw_2e(self.slow_net_gc()[0], y)
        return s.reshape(*s.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.score(x))


class HyperInteract(nn.Module):
    """Hyper interaction: sigmoid(channel score ⊙ spatial score) of y, multiplied with x. (B, C, *S)."""

    def __init__(self, data_dim: int, channels: int, size: Sequence[int], hidden_c: int, hidden_s: int,
                 num_layers: int, omega_0: float, seed: int) -> None:
        super().__init__()
        self.channel = HyperChannelInteract(channels, hidden_c, num_layers, omega_0, seed)
        self.slow_net_gs = MAGNet(data_dim, size, hidden_s, 1, num_layers, omega_0, seed=seed + 1)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        ys = y.mean(1, keepdim=True)  # (B, 1, *S)
        score_s = hyperzzw_2e(self.slow_net_gs(), ys)
        return x * torch.sigmoid(score_s * self.channel.score(y))


class FastMultiBranchLayer(nn.Module):
    """The multi-branch fast layer of one SFNE block: (B, C, *S) -> (B, C·bottleneck_factor, *S) + global hk.

    Branch order (official): [global·fast, local_2, (x_pre), fast, global·MLP(x), local_1, SiLU-gate(global·fast),
    local_3, global·hyper-channel(x), local_4, (x_pre_pre), hyper-interaction].
    """

    def __init__(
        self,
        data_dim: int,
        channels: int,
        size: Sequence[int],
        bottleneck_factor: int,
        num_concat_pre: int = 0,
        global_layers: int = 2,
        global_hidden: int = 64,
        local_hidden: int = 32,
        local_layers: int = 2,
        local_sizes: Sequence[int] = (3, 9, 5, 7),
        gc_hidden: int = 32,
        hi_c_hidden: int = 16,
        hi_s_hidden: int = 64,
        gc_layers: int = 2,
        omega_0: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_concat_pre not in (0, 1, 2):
            raise ValueError(f"FastMultiBranchLayer: num_concat_pre must be 0, 1 or 2, got {num_concat_pre}")
        if len(local_sizes) != 4:
            raise ValueError(f"FastMultiBranchLayer: expected 4 local kernel sizes, got {local_sizes}")
        self.num_concat_pre = num_concat_pre
        self.slow_net_g = MAGNet(data_dim, size, global_hidden, channels, global_layers, omega_0, seed=seed)
        self.slow_nets_l = LocalHyperKernelBank(
            data_dim, local_sizes, local_hidden, channels, local_layers, channels, omega_0,
            seeds=[seed + 10 + i for i in range(len(local_sizes))],
        )
        self.local_convs = nn.ModuleList([LocalConv(data_dim, channels) for _ in local_sizes])
        self.local_bias = nn.Parameter(torch.zeros(4))
        self.channel_mixer_mlp = _conv1x1(data_dim, channels, channels)
        nn.init.kaiming_normal_(self.channel_mixer_mlp.weight)
        nn.init.zeros_(self.channel_mixer_mlp.bias)
        self.rgu_fast = RGU(data_dim, channels, size)
        self.rgu_slow = RGU(data_dim, channels, size)
        self.channel_mixer_hci = HyperChannelInteract(channels, gc_hidden, gc_layers, omega_0, seed + 20)
        self.hyper_interact = HyperInteract(data_dim, channels, size, hi_c_hidden, hi_s_hidden, gc_layers,
                                            omega_0, seed + 30)
        self.bottleneck_layer = _conv1x1(data_dim, channels * (10 + num_concat_pre), channels * bottleneck_factor)
        nn.init.kaiming_normal_(self.bottleneck_layer.weight)
        nn.init.zeros_(self.bottleneck_layer.bias)

    def forward(self, x: Tensor, x_pre: Tensor | None = None, x_pre_pre: Tensor | None = None) -> tuple[Tensor, Tensor]:
        global_hk = self.slow_net_g()  # (C, *S), input independent
        fast = _instance_std(self.rgu_slow(x * global_hk) + self.rgu_fast(x))
        mixer_x = _instance_std(self.channel_mixer_mlp(x))
        x_hci = _instance_std(self.channel_mixer_hci(x))
        out = hyperzzw_global(global_hk, x, fast)
        out_x = hyperzzw_global(global_hk, x, mixer_x)
        out_hci = hyperzzw_global(global_hk, x, x_hci)
        out_glu = torch.sigmoid(out) * out
        x_hyper = self.hyper_interact(out, x)
        sources = (x_hci, x, x, mixer_x)  # conv inputs of local branches 1..4 (official)
        ctxs = (x, x_hci, mixer_x, x)  # slow-net contexts of local branches 1..4
        kernels = self.slow_nets_l(ctxs)  # 4 context-dependent local hyper-kernels (C, 1, *k_i), one batched pass
        local = [
            conv(k, s) + self.local_bias[i] for i, (conv, k, s) in enumerate(zip(self.local_convs, kernels, sources))
        ]
        branches = [out, local[1]]
        if self.num_concat_pre >= 1:
            branches.append(_tile_channels(x_pre, x.shape[1], "x_pre"))
        branches += [fast, out_x, local[0], out_glu, local[2], out_hci, local[3]]
        if self.num_concat_pre == 2:
            branches.append(_tile_channels(x_pre_pre, x.shape[1], "x_pre_pre"))
        branches.append(x_hyper)
        return self.bottleneck_layer(torch.cat(branches, 1)), global_hk


def _tile_channels(t: Tensor | None, channels: int, name: str) -> Tensor:
    if t is None or channels % t.shape[1]:
        got = None if t is None else tuple(t.shape)
        raise ValueError(f"FastMultiBranchLayer: {name} must have a channel count dividing {channels}, got {got}")
    return t.repeat(1, channels // t.shape[1], *([1] * (t.ndim - 2)))


class SFNEBlock(nn.Module):
    """Slow-fast neural encoding block: multi-branch layer -> G-IBS -> GELU -> + bias -> dropout."""

    def __init__(self, data_dim: int, channels: int, size: Sequence[int], bottleneck_factor: int,
                 dropout: float = 0.0, **branch_kwargs) -> None:
        super().__init__()
        self.fast_multi_branch = FastMultiBranchLayer(data_dim, channels, size, bottleneck_factor, **branch_kwargs)
        self.gibs = GIBS(channels * bottleneck_factor, 12)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dp = (nn.Dropout1d if data_dim == 1 else nn.Dropout2d)(dropout)

    def forward(self, x: Tensor, x_pre: Tensor | None = None, x_pre_pre: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, ghk = self.fast_multi_branch(x, x_pre, x_pre_pre)
        return self.dp(F.gelu(self.gibs(out)) + self.bias), ghk


class Terminator(LinearHeadBackbone):
    """Terminator classifier: (B, C, H, H) images (``data_dim=2``) or (B, C, L) sequences (``data_dim=1``) ->
    logits (B, num_classes).

    Args:
        data_dim: 2 (images) or 1 (pixel-level sequences).
        size: spatial side (2-D, square) or sequence length (1-D); hyper-kernels are generated on this grid.
        in_channels: input channels of every block (first = image channels).
        bottleneck_factors: block i outputs ``in_channels[i] * bottleneck_factors[i]`` channels.
        num_concat_pre: earlier activations concatenated in each block (0, 1 or 2).
        dropout: Dropout1d/2d probability per block.
        global_layers: layers of each block's global slow net.
        num_classes: classifier outputs (head: global average pooling + Linear).
        **branch_kwargs: slow-net sizes (see :class:`FastMultiBranchLayer`).
    """

    def __init__(
        self,
        data_dim: int = 2,
        size: int = 32,
        in_channels: Sequence[int] = (3, 12, 36, 72, 144),
        bottleneck_factors: Sequence[int] = (4, 3, 2, 2, 2),
        num_concat_pre: Sequence[int] = (0, 0, 1, 1, 2),
        dropout: Sequence[float] = (0.0, 0.05, 0.05, 0.05, 0.05),
        global_layers: Sequence[int] = (3, 2, 2, 2, 2),
        num_classes: int = 10,
        **branch_kwargs,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        if not (len(bottleneck_factors) == len(num_concat_pre) == len(dropout) == len(global_layers) == n):
            raise ValueError("Terminator: per-block lists must all have len(in_channels) entries")
        for i in range(n - 1):
            if in_channels[i] * bottleneck_factors[i] != in_channels[i + 1]:
                raise ValueError(
                    f"Terminator: block {i} outputs {in_channels[i] * bottleneck_factors[i]} channels but block "
                    f"{i + 1} expects {in_channels[i + 1]}"
                )
        for i, p in enumerate(num_concat_pre):
            if p > i:
                raise ValueError(f"Terminator: block {i} cannot concatenate {p} earlier activations")
        self.data_dim, self.size = data_dim, size
        self.in_chans = in_channels[0]
        self.bottleneck_factors = tuple(bottleneck_factors)
        grid = (size,) * data_dim
        self.blocks = nn.ModuleList(
            [SFNEBlock(data_dim, c, grid, f, d, num_concat_pre=p, global_layers=g, seed=100 * i, **branch_kwargs)
             for i, (c, f, p, d, g) in enumerate(zip(in_channels, bottleneck_factors, num_concat_pre, dropout,
                                                      global_layers))]
        )
        self.num_features = in_channels[-1] * bottleneck_factors[-1]
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
        self.feature_info = [
            {"num_chs": c * f, "reduction": 1, "module": f"blocks.{i}"}
            for i, (c, f) in enumerate(zip(in_channels, bottleneck_factors))
        ]

    def _check(self, x: Tensor) -> None:
        layout = "(B, C, L)" if self.data_dim == 1 else "(B, C, H, W) with H = W"
        check_input(type(self).__name__, x, ndim=self.data_dim + 2, channels=self.in_chans, layout=layout)
        if any(s != self.size for s in x.shape[2:]):
            raise ValueError(
                f"Terminator: hyper-kernels are generated for spatial size {self.size} {layout}, "
                f"got shape {tuple(x.shape)}"
            )

    def forward_features_with_hyper_kernels(
        self, x: Tensor, max_index: int | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """(B, C, *S) -> every block's output (B, C_i·f_i, *S) (up to ``max_index``) and global hyper-kernels."""
        self._check(x)
        acts = [x]
        ghks = []
        last = len(self.blocks) - 1 if max_index is None else max_index
        for i, blk in enumerate(self.blocks[: last + 1]):
            p = blk.fast_multi_branch.num_concat_pre
            x_pre = acts[i - 1] if p >= 1 else None
            x_pre_pre = acts[i - 2] if p >= 2 else None
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                out, ghk = torch.utils.checkpoint.checkpoint(blk, acts[-1], x_pre, x_pre_pre, use_reentrant=False)
            else:
                out, ghk = blk(acts[-1], x_pre, x_pre_pre)
            acts.append(out)
            ghks.append(ghk)
        return acts[1:], ghks

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """Per-block maps (B, C_i·f_i, *S) (no downsampling: reduction 1 everywhere)."""
        return self.forward_features_with_hyper_kernels(x, max_index)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.flatten(2).mean(-1)
        return x if pre_logits else self.head(x)

    def forward_with_hyper_kernels(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the global hyper-kernels (input to :func:`slow_loss`)."""
        feats, ghks = self.forward_features_with_hyper_kernels(x)
        return self.forward_head(feats[-1]), ghks


def slow_loss(hyper_kernels: Sequence[Tensor], factors: Sequence[int]) -> Tensor:
    """Slow neural loss ("local feedback error"): Σ_{j<i} MSE(tile(ghk_j, Π factors[j:i]), ghk_i) (official
    ``cal_slow_loss``); ghk_i is (C_i, *S) with C_i = C_j · Π factors[j:i]."""
    total = hyper_kernels[0].new_zeros(())
    for i in range(1, len(hyper_kernels)):
        for j in range(i):
            rep = math.prod(factors[j:i])
            tiled = hyper_kernels[j].repeat(rep, *([1] * (hyper_kernels[j].ndim - 1)))
            total = total + F.mse_loss(tiled, hyper_kernels[i])
    return total


def terminator_loss(logits: Tensor, target: Tensor, hyper_kernels: Sequence[Tensor] | None = None,
                    factors: Sequence[int] = (), slow_weight: float = 1.0, label_smoothing: float = 0.09) -> Tensor:
    """Label-smoothing CE (official eps 0.09) + ``slow_weight`` x :func:`slow_loss`."""
    loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    if hyper_kernels is not None and slow_weight:
        loss = loss + slow_weight * slow_loss([h.float() for h in hyper_kernels], factors)
    return loss


def fast_weight_penalty(model: nn.Module, weight: float = 5e-5, norm_type: float = 2.0,
                        slow_weight_scale: float = 1e-6) -> Tensor:
    """Official ``LnLoss`` (models/modules/loss.py; ``l2_reg`` = ``weight``, norm_type 2), i.e.
    ``weight`` x (Σ ‖p‖ over the fast network + ``slow_weight_scale`` x Σ ‖W‖ over the 2-D slow nets' layers).

    Official selection by name: parameters whose name contains "fast" but not "Kernel" (the slow nets live in
    ``SlowNet*.Kernel``), i.e. every fast-network parameter inside the blocks' ``fast_multi_branch`` (not the
    block biases nor the head); plus, times 1e-6, the weights of the ``nn.Conv2d`` modules inside the slow nets:
    every linear layer of the 2-D slow nets (the official 2-D MAGNet layers are 1x1 convolutions; the 1-D
    channel nets use Conv1d and are not penalised). Norms, not squared norms. Stacked parameters of a
    :class:`LocalHyperKernelBank` are penalised per net and layer, as the official separate modules. The
    s-renormalisation scalars (Python lists, untrained, in the official code) are not penalised.
    """
    fast, slow = [], []
    slow_ids = set()
    for mod in model.modules():
        if isinstance(mod, LocalHyperKernelBank):
            slow_ids |= {id(p) for p in mod.parameters()}
            if mod.data_dim == 2:
                keep = ("filter_weight", "linear_weight", "output_weight", "fast_reduce_weight", "fast_fc1_weight",
                        "fast_context_weight")
                slow += [t for n, t in mod.unstacked_parameters() if n.split(".")[1] in keep]
        elif isinstance(mod, MAGNet):
            slow_ids |= {id(p) for p in mod.parameters()}
            if mod.data_dim == 2:
                slow += [m.weight for m in mod.modules() if isinstance(m, nn.Linear)]
    for n, p in model.named_parameters():
        if id(p) not in slow_ids and "fast" in n:
            fast.append(p)
    total = sum((torch.linalg.vector_norm(p.float(), norm_type) for p in fast), torch.zeros(()))
    total = total + slow_weight_scale * sum((torch.linalg.vector_norm(w.float(), norm_type) for w in slow),
                                            torch.zeros(()))
    return weight * total


# ---------------------------------------------------------------- registered variants
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_NO_FIGURES = "card hyperzzw: the paper reports no parameter counts or MACs; figures measured here (regression)"


@register_model(
    paper="hyperzzw",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=_CIFAR_MEAN,
    std=_CIFAR_STD,
    reported=Reported(resolution=32, source=_NO_FIGURES),
)
def terminator_cifar10(**kwargs) -> Terminator:
    """Terminator (2-D) with the official CIFAR-10 config (cfg/config.yaml)."""
    return Terminator(**kwargs)


@register_model(
    paper="hyperzzw",
    input_size=(3, 32, 32),
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    reported=Reported(resolution=32, source=_NO_FIGURES + "; README CIFAR-100 command: same network, 100 classes"),
)
def terminator_cifar100(**kwargs) -> Terminator:
    """Terminator (2-D) for CIFAR-100: the CIFAR-10 config with 100 classes (official README command: Kar3,
    lr 0.00120925, betas (0.75, 0.99), l2_reg 4e-5)."""
    return Terminator(**{"num_classes": 100, **kwargs})


@register_model(
    paper="hyperzzw",
    input_size=(1, 784),
    num_classes=10,
    mean=(0.1307,),
    std=(0.3081,),
    reported=Reported(resolution=(1, 784), source=_NO_FIGURES + "; 1-D code was never released: config mirrors 2-D"),
)
def terminator_smnist(**kwargs) -> Terminator:
    """Terminator (1-D) for pixel-level sequential MNIST (784 steps), channel plan scaled from the 2-D config;
    permuted MNIST (pMNIST) uses the same network on a fixed pixel permutation of the sequence."""
    cfg = dict(data_dim=1, size=784, in_channels=(1, 4, 12, 24, 48), num_classes=10)
    return Terminator(**{**cfg, **kwargs})


_SEQ_DIGITS = dict(
    data_dim=1, size=64, in_channels=(1, 8), bottleneck_factors=(8, 2), num_concat_pre=(0, 0),
    dropout=(0.0, 0.0), global_layers=(2, 2), global_hidden=32, local_hidden=16, gc_hidden=16, hi_c_hidden=8,
    hi_s_hidden=32, num_classes=10,
)


@register_model(paper="hyperzzw", input_size=(1, 64), num_classes=10, mean=(0.0,), std=(1.0,),
                reported=Reported(resolution=(1, 64), source=_NO_FIGURES))
def terminator_seqdigits(**kwargs) -> Terminator:
    """Small 1-D Terminator for 8x8 digits read as 64-step pixel sequences (the learning check)."""
    return Terminator(**{**_SEQ_DIGITS, **kwargs})


_TINY = dict(in_channels=(3, 6), bottleneck_factors=(2, 2), num_concat_pre=(0, 0), dropout=(0.0, 0.0),
             global_layers=(1, 1), global_hidden=8, local_hidden=4, local_layers=1, gc_hidden=4, hi_c_hidden=4,
             hi_s_hidden=8, gc_layers=1, num_classes=10)


@register_model(paper="hyperzzw", input_size=(3, 8, 8), num_classes=10, test_only=True)
def test_hyperzzw(**kwargs) -> Terminator:
    """Tiny 2-D Terminator for the generic tests (8x8 input)."""
    return Terminator(**{**_TINY, "data_dim": 2, "size": 8, **kwargs})


@register_model(paper="hyperzzw", input_size=(3, 16), num_classes=10, test_only=True)
def test_hyperzzw_1d(**kwargs) -> Terminator:
    """Tiny 1-D Terminator for the generic tests (16-step sequences)."""
    return Terminator(**{**_TINY, "data_dim": 1, "size": 16, **kwargs})


# ---------------------------------------------------------------- identities (card "How to verify")
@register_identity("hyperzzw", "W ≡ 1: global HyperZ·Z·W reduces to Z @ z (2-D) / causal conv of z with Z (1-D)")
def _global_identity() -> str:
    torch.manual_seed(0)
    x, z = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    e2 = (hyperzzw_global(torch.ones(3, 8, 8, dtype=torch.float64), x, z) - x @ z).abs().max().item()
    x1, z1 = torch.randn(2, 3, 20, dtype=torch.float64), torch.randn(2, 3, 20, dtype=torch.float64)
    y = hyperzzw_global(torch.ones(3, 20, dtype=torch.float64), x1, z1)
    ref = torch.stack([torch.stack([
        torch.stack([(x1[b, c, : t + 1].flip(0) * z1[b, c, : t + 1]).sum() for t in range(20)])
        for c in range(3)]) for b in range(2)])
    e1 = (y - ref).abs().max().item()
    assert e2 < 1e-12 and e1 < 1e-10, f"2-D {e2:.2e}, 1-D {e1:.2e}"
    return f"max abs error 2-D {e2:.2e}, 1-D (FFT vs direct sum) {e1:.2e}"


@register_identity("hyperzzw", "centred-delta local kernel: local branch = GELU(BN(channel_mixer(x)))")
def _local_identity() -> str:
    torch.manual_seed(0)
    lc = LocalConv(2, 4).double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    delta = torch.zeros(4, 1, 5, 5, dtype=torch.float64)
    delta[:, :, 2, 2] = 1.0
    err = (lc(delta, x) - F.gelu(_batch_std(lc.channel_mixer(x)))).abs().max().item()
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("hyperzzw", "local slow-net bank (batched) == four separate MAGNet_L nets (3, 9, 5, 7)")
def _bank_identity() -> str:
    torch.manual_seed(0)
    errs = []
    for dd, side in ((2, 8), (1, 16)):
        bank = LocalHyperKernelBank(dd, (3, 9, 5, 7), 8, 6, 2, 6, seeds=(10, 11, 12, 13)).double()
        with torch.no_grad():
            for p in bank.parameters():
                p.add_(0.1 * torch.randn_like(p))  # move every parameter off its initial value
        ctxs = [torch.randn(3, 6, *(side,) * dd, dtype=torch.float64) for _ in range(4)]
        errs += [(k - bank.magnet(i)(c)).abs().max().item() for i, (k, c) in enumerate(zip(bank(ctxs), ctxs))]
    err = max(errs)
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e} (2-D and 1-D, float64)"


@register_identity("hyperzzw", "slow nets are input-independent; slow loss = 0 for channel-tiled hyper-kernels")
def _slow_identity() -> str:
    torch.manual_seed(0)
    m = test_hyperzzw().eval()
    _, g1 = m.forward_with_hyper_kernels(torch.randn(2, 3, 8, 8))
    _, g2 = m.forward_with_hyper_kernels(torch.randn(2, 3, 8, 8))
    same = max((a - b).abs().max().item() for a, b in zip(g1, g2))
    base = torch.randn(3, 8, 8)
    zero = slow_loss([base, base.repeat(2, 1, 1), base.repeat(4, 1, 1)], (2, 2)).item()
    pos = slow_loss([base, torch.randn(6, 8, 8)], (2,)).item()
    assert same == 0 and zero == 0 and pos > 0, (same, zero, pos)
    return f"hyper-kernel change across inputs {same:.1e}; slow loss tiled {zero:.1e}, random {pos:.2f}"


@register_identity("hyperzzw", "standardised features: instance/batch std give mean 0, std 1 per channel")
def _std_identity() -> str:
    torch.manual_seed(0)
    x = 3 + 5 * torch.randn(4, 6, 16, 16, dtype=torch.float64)
    ins, bat = _instance_std(x), _batch_std(x)
    e = max(ins.mean((2, 3)).abs().max().item(), (ins.var((2, 3), unbiased=False) - 1).abs().max().item(),
            bat.mean((0, 2, 3)).abs().max().item(), (bat.var((0, 2, 3), unbiased=False) - 1).abs().max().item())
    assert e < 1e-4, f"max deviation {e:.2e}"
    return f"max deviation from (0, 1): {e:.2e}"
