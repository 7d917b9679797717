"""Structured Global Convolution (GConv) layer (paper slug: ``sgconv``, arXiv 2210.09298).

A global (kernel length = sequence length) per-channel convolution whose kernel is assembled from ``S`` short
learnable sub-kernels of ``kernel_dim`` taps: sub-kernel ``i`` is linearly upsampled by ``2^(max(0, i-1)+init_scale)``
and scaled by ``multiplier^(S-i-1)`` (``multiplier = linspace(decay_min, decay_max, H)``), and the pieces are
concatenated ('cat' modes) or upsampled by ``2^(i+init_scale)`` and summed ('sum' modes). Parameters grow like
``kernel_dim · log2(L)`` (sub-linear) and the kernel decays with distance (the paper's two properties).

Steps (card ``sgconv``, official ``gconv_standalone.GConv``): build the kernel; optionally multiply by
``(t+1)^(-decay_h)`` ('learnable' modes); on the first forward freeze ``kernel_norm = ||k||`` (a buffer) and divide
by it from then on; truncate/zero-pad to L; bidirectional kernels are ``pad(k0, (0, L)) + pad(flip(k1), (L, 0))``
with FFT size 2L; ``y = k * u + D·u`` (:func:`convatlas.ops.fft_conv.fft_conv`), GELU, dropout (tied over length),
optional LayerNorm, position-wise linear ``H -> 2H`` and GLU.

State-dict keys follow the official module (``D``, ``kernel_list.i``, ``decay``, ``multiplier``, ``kernel_norm``,
``kernel_norm_initialized``, ``output_linear.0.weight`` (2H, H), ``output_linear.0.bias``) so official checkpoints
load strictly. Kernel parameters carry ``_optim = {"lr": kernel_lr}`` as official (the S4 framework adds such
groups with the optimizer's defaults, so kernels *are* weight-decayed; only biases and TransposedLN scalars carry
``weight_decay: 0``) (see
:func:`convatlas.models.sequence.sgconv.sgconv_param_groups`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity
from convatlas.ops.fft_conv import direct_conv, fft_conv

__all__ = ["GConv", "TransposedLinear", "TransposedScalarLN", "sgconv_num_scales", "convert_official_gconv"]


def sgconv_num_scales(l_max: int, kernel_dim: int, init_scale: int = 0) -> int:
    """``S = 1 + ceil(log2(l_max / kernel_dim)) - init_scale`` (official default for ``n_scales=None``)."""
    return 1 + math.ceil(math.log2(l_max / kernel_dim)) - init_scale


class TransposedLinear(nn.Module):
    """Linear map over the channel dim of ``(B, C, L)``: weight ``(out, in)``, bias ``(out,)``."""

    def __init__(self, d_input: int, d_output: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_output, d_input))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            bound = 1 / math.sqrt(d_input)
            self.bias = nn.Parameter(torch.empty(d_output).uniform_(-bound, bound))
            self.bias._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype)
        y = torch.einsum("bul,vu->bvl", x, w) if x.ndim == 3 else x @ w.t()
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(-1, *([1] * (x.ndim - 2)))
        return y


class TransposedScalarLN(nn.Module):
    """The S4 framework's ``TransposedLN(d, scalar=True)``: normalise ``(B, C, L...)`` over the channel dim with
    two *scalar* affine parameters, ``y = (s / std) · (x − mean + m)`` (biased std, no epsilon, as official).

    This is what ``norm: layer`` / ``ln: true`` build in the official transposed SGConv models (keys ``m``, ``s``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1))
        self.s = nn.Parameter(torch.ones(1))
        self.m._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]
        self.s._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        std, mean = torch.std_mean(x, dim=1, unbiased=False, keepdim=True)
        return (self.s / std) * (x - mean + self.m)


class GConv(nn.Module):
    """SGConv's global convolution layer: ``(B, H, L) -> (B, H, L)`` (``(B, L, H)`` with ``transposed=False``).

    Args:
        d_model: channels ``H``.
        l_max: maximum sequence length (sets the number of scales); any L works at run time (kernel truncated or
            zero-padded).
        kernel_dim: taps per sub-kernel.
        bidirectional: two kernels, causal + anti-causal (non-causal layer).
        n_scales: number of sub-kernels ``S`` (default :func:`sgconv_num_scales`).
        init_scale: upsampling offset (Path-X uses 1).
        mode: ``cat_randn`` | ``cat_cos`` | ``sum_randn`` | ``sum_cos``, optionally with ``nearest`` (nearest
            upsampling), ``learnable`` (+ ``fixed``: power-law decay ``(t+1)^-decay``), and the options of the
            S4-framework ``gconv.py``: ``decay`` (sub-kernels initialised times ``linspace(1, 2/(decay_min+decay_max),
            kernel_dim)``), ``expand`` (kernel resampled to ``l_max`` taps), ``trunc`` (first ``l_max`` taps
            resampled to the input length and scaled by ``l_max/L``); or ``hankel``: one ``(C, H, kernel_dim)``
            kernel mapped through the first ``kernel_dim`` rows of the eigenvector matrix of the ``l_max`` Hankel
            matrix ``2 / (h^3 - h)``, ``h = i + j`` (buffer ``eigvecs``; official quirk kept).
        decay_min / decay_max: multiplier range (or the ``decay`` init range in 'learnable' modes).
        activation: ``gelu`` (or ``id``) after the convolution.
        postact: ``glu`` (output linear H -> 2H + GLU) or ``None`` (H -> H).
        dropout: dropout probability, tied over the length dim when ``transposed``.
        ln: normalisation over channels before the output linear, as official: the S4 framework's scalar
            ``TransposedLN`` (:class:`TransposedScalarLN`) when ``transposed``, ``nn.LayerNorm(H)`` otherwise.
        transposed: layout ``(B, H, L)`` (True) or ``(B, L, H)``.
        kernel_lr: learning rate recorded in the kernel parameters' ``_optim``.
        channels: official "heads": ``channels`` kernels per input channel, outputs flattened to ``channels·H``
            before the output linear (``channels·H -> H`` or ``2H`` with GLU); ``D`` is ``(channels, H)``.
        linear: official ``linear=True``: no activation, dropout, norm or output linear (returns ``channels·H``
            channels).
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        kernel_dim: int = 64,
        bidirectional: bool = False,
        *,
        n_scales: int | None = None,
        init_scale: int = 0,
        mode: str = "cat_randn",
        decay_min: float = 2.0,
        decay_max: float = 2.0,
        activation: str = "gelu",
        postact: str | None = "glu",
        dropout: float = 0.0,
        ln: bool = False,
        transposed: bool = True,
        kernel_lr: float = 0.001,
        channels: int = 1,
        linear: bool = False,
    ) -> None:
        super().__init__()
        if d_model < 1 or l_max < 1 or kernel_dim < 1:
            raise ValueError(f"GConv: d_model, l_max, kernel_dim must be >= 1, got {d_model}, {l_max}, {kernel_dim}")
        hankel = "hankel" in mode
        if hankel and any(w in mode for w in ("cat", "sum", "randn", "cos")):
            raise ValueError(f"GConv: 'hankel' mode takes no cat/sum/randn/cos, got {mode!r}")
        if not hankel and (not (("cat" in mode) ^ ("sum" in mode)) or not (("randn" in mode) ^ ("cos" in mode))):
            raise ValueError(f"GConv: mode must contain one of cat/sum and one of randn/cos (or be 'hankel'), "
                             f"got {mode!r}")
        if channels < 1:
            raise ValueError(f"GConv: channels must be >= 1, got {channels}")
        if activation not in ("gelu", "id"):
            raise ValueError(f"GConv: activation must be 'gelu' or 'id', got {activation!r}")
        if postact not in ("glu", None):
            raise ValueError(f"GConv: postact must be 'glu' or None, got {postact!r}")
        self.h, self.l_max, self.kernel_dim, self.mode = d_model, l_max, kernel_dim, mode
        self.bidirectional, self.transposed, self.init_scale = bidirectional, transposed, init_scale
        self.num_scales = n_scales if n_scales is not None else sgconv_num_scales(l_max, kernel_dim, init_scale)
        if self.num_scales < 1:
            raise ValueError(
                f"GConv: n_scales must be >= 1 (l_max={l_max}, kernel_dim={kernel_dim}), got {self.num_scales}"
            )
        self.channels, self.linear = channels, linear
        c = channels * (2 if bidirectional else 1)
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.kernel_list = nn.ParameterList()
        for _ in range(1 if hankel else self.num_scales):
            if "randn" in mode or hankel:
                k = torch.randn(c, d_model, kernel_dim)
            else:  # cos: channel i gets cos(linspace(0, 2*pi*i, kernel_dim)), channels permuted
                k = torch.stack(
                    [torch.cos(torch.linspace(0, 2 * math.pi * i, kernel_dim)) for i in range(d_model)]
                )[torch.randperm(d_model)].expand(c, d_model, kernel_dim).clone()
            if "decay" in mode:
                k = k * torch.linspace(1, 2 / (decay_max + decay_min), kernel_dim)
            p = nn.Parameter(k)
            p._optim = {"lr": kernel_lr}  # type: ignore[attr-defined]
            self.kernel_list.append(p)
        if "learnable" in mode:
            self.decay = nn.Parameter(torch.rand(d_model) * (decay_max - decay_min) + decay_min)
            if "fixed" in mode:
                self.decay.requires_grad_(False)
            else:
                self.decay._optim = {"lr": kernel_lr}  # type: ignore[attr-defined]
            self.register_buffer("multiplier", torch.tensor(1.0))
        else:
            self.decay = None
            self.register_buffer("multiplier", torch.linspace(decay_min, decay_max, d_model).view(1, -1, 1))
        if hankel:
            self.register_buffer("eigvecs", self._hankel_eigvecs(l_max, kernel_dim))
        self.register_buffer("kernel_norm", torch.ones(c, d_model, 1))
        self.register_buffer("kernel_norm_initialized", torch.tensor(False))
        self._norm_pending = True  # Python mirror of kernel_norm_initialized (no tensor sync in forward)
        self.register_load_state_dict_post_hook(GConv._after_load)

        self.activation = nn.GELU() if activation == "gelu" else nn.Identity()
        self.dropout_p = float(dropout)
        self.norm: nn.Module | None = None
        if ln and not linear:
            self.norm = TransposedScalarLN() if transposed else nn.LayerNorm(d_model * channels)
        self.output_linear: nn.Module | None = None
        if not linear:
            out = 2 * d_model if postact == "glu" else d_model
            self.output_linear = nn.Sequential(TransposedLinear(d_model * channels, out))
            if postact == "glu":
                self.output_linear.append(nn.GLU(dim=1))

    @staticmethod
    def _hankel_eigvecs(l_max: int, kernel_dim: int) -> Tensor:
        """First ``kernel_dim`` rows of the eigenvectors (columns, ascending eigenvalues) of the Hankel matrix."""
        a = torch.arange(l_max, device="cpu", dtype=torch.float64) + 1
        hk = a.view(1, -1) + a.view(-1, 1)
        vecs = torch.linalg.eigh(2 / (hk**3 - hk)).eigenvectors
        return vecs[:kernel_dim, :].to(torch.float32)

    @staticmethod
    def _after_load(module: nn.Module, incompatible_keys) -> None:
        flag = module.kernel_norm_initialized
        if flag.device.type != "meta":
            module._norm_pending = not bool(flag)

    @property
    def kernel_length(self) -> int:
        """Length of the assembled kernel: ``kernel_dim · 2^(S-1+init_scale)`` (``l_max`` in 'hankel' mode)."""
        if "hankel" in self.mode:
            return self.l_max
        return self.kernel_dim * 2 ** (self.num_scales - 1 + self.init_scale)

    def raw_kernel(self) -> Tensor:
        """The assembled kernel before normalisation, ``(C, H, kernel_length)`` (C = 2 if bidirectional)."""
        interp = "nearest" if "nearest" in self.mode else "linear"
        s = self.num_scales
        mult = self.multiplier
        if "hankel" in self.mode:
            kern = torch.einsum("chd,dl->chl", self.kernel_list[0], self.eigvecs.to(self.kernel_list[0].dtype))
        elif "cat" in self.mode:
            pieces = []
            for i, k in enumerate(self.kernel_list):
                scale = 2 ** (max(0, i - 1) + self.init_scale)
                piece = k * mult ** (s - i - 1)
                if scale != 1:
                    piece = F.interpolate(piece, scale_factor=float(scale), mode=interp)
                pieces.append(piece)
            kern = torch.cat(pieces, dim=-1)
        else:
            total = self.kernel_length
            kern = None
            for i, k in enumerate(self.kernel_list):
                scale = 2 ** (i + self.init_scale)
                piece = F.interpolate(k * mult ** (s - i - 1), scale_factor=float(scale), mode=interp)[..., :total]
                piece = F.pad(piece, (0, total - piece.shape[-1]))
                kern = piece if kern is None else kern + piece
        if self.decay is not None:
            t = torch.arange(kern.shape[-1], device=kern.device, dtype=kern.dtype)
            kern = kern * torch.exp(-self.decay.view(1, -1, 1) * torch.log(t + 1).view(1, 1, -1))
        return kern

    def kernel(self, seq_len: int) -> Tensor:
        """Normalised kernel for length ``L``: ``(channels·H, L)`` causal, or ``(channels·H, 2L)`` bidirectional
        (see module doc)."""
        k = self.raw_kernel()
        interp = "nearest" if "nearest" in self.mode else "linear"
        if self._norm_pending:
            with torch.no_grad():
                self.kernel_norm.copy_(k.detach().norm(dim=-1, keepdim=True))
                self.kernel_norm_initialized.fill_(True)
            self._norm_pending = False
        if "expand" in self.mode:
            k = F.interpolate(k, size=self.l_max, mode=interp)
        if "trunc" in self.mode:
            k = F.interpolate(k[..., : self.l_max], size=seq_len, mode=interp) * (self.l_max / seq_len)
        if k.shape[-1] > seq_len:
            k = k[..., :seq_len]
        elif k.shape[-1] < seq_len:
            k = F.pad(k, (0, seq_len - k.shape[-1]))
        k = k / self.kernel_norm
        c = self.channels
        if self.bidirectional:  # official rearrange '(s c) h l -> s c h l', s=2
            k = F.pad(k[:c], (0, seq_len)) + F.pad(k[c:].flip(-1), (seq_len, 0))
        return k.reshape(c * self.h, k.shape[-1])

    def forward(self, u: Tensor, return_kernel: bool = False) -> tuple[Tensor, Tensor | None]:
        """``u``: ``(B, H, L)`` (or ``(B, L, H)`` if not transposed). Returns ``(y, kernel or None)``."""
        layout = "(B, H, L)" if self.transposed else "(B, L, H)"
        cdim = 1 if self.transposed else 2
        if not isinstance(u, Tensor) or u.ndim != 3 or u.shape[cdim] != self.h or not u.is_floating_point():
            got = (tuple(u.shape), u.dtype) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"GConv: expected a float input {layout} with H={self.h}, got {got}")
        if not self.transposed:
            u = u.transpose(1, 2)
        seq_len = u.shape[-1]
        k = self.kernel(seq_len)
        n = 2 * seq_len if self.bidirectional else None
        if self.channels > 1:  # every head convolves the same input: y (B, C, H, L) flattened to (B, C·H, L)
            u = u.repeat(1, self.channels, 1)
        y = fft_conv(u, k, self.D.reshape(-1), n=n)
        if self.linear:
            return (y if self.transposed else y.transpose(1, 2)), (k if return_kernel else None)
        y = self.activation(y)
        if self.training and self.dropout_p > 0:
            mask = torch.rand(y.shape[0], y.shape[1], 1, device=y.device) >= self.dropout_p
            y = y * mask.to(y.dtype) / (1 - self.dropout_p)
        if isinstance(self.norm, TransposedScalarLN):
            y = self.norm(y)
        elif self.norm is not None:
            y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        y = self.output_linear(y)
        if not self.transposed:
            y = y.transpose(1, 2)
        return y, (k if return_kernel else None)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.h}, l_max={self.l_max}, kernel_dim={self.kernel_dim}, n_scales={self.num_scales}, "
            f"mode={self.mode!r}, bidirectional={self.bidirectional}"
            + (f", channels={self.channels}" if self.channels > 1 else "")
            + (", linear=True" if self.linear else "")
        )


def convert_official_gconv(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Official ``GConv`` keys (``gconv_standalone.py`` or the S4-framework ``src/models/sequence/gconv.py``, both
    ``ctlllll/SGConv``) -> :class:`GConv` keys, for the keys under ``prefix`` (other keys are returned unchanged).

    Official layout (d_model H, C = 2 if bidirectional else 1, S scales): ``D`` (1, H); ``kernel_list.i``
    (C, H, kernel_dim); ``decay`` (H) ('learnable' modes); buffers ``multiplier`` ((1, H, 1) or scalar),
    ``kernel_norm`` ((H, 1) before the first forward, (C, H, 1) after: expanded here),
    ``kernel_norm_initialized`` (bool); ``output_linear.0.{weight (2H, H), bias (2H)}`` (``postact: glu``) or
    ``output_linear.{weight, bias}`` (no postact; ours keeps the ``.0.`` of the Sequential) or
    ``output_linear.0.weight_g/weight_v`` (``weight_norm=True``: folded into ``weight``); ``norm.norm.{m, s}``
    (``ln=True``, scalar TransposedLN) -> ``norm.{m, s}``.
    """
    out: dict[str, Tensor] = {}
    wn: dict[str, dict[str, Tensor]] = {}
    for key, v in state_dict.items():
        if not key.startswith(prefix):
            out[key] = v
            continue
        k = key[len(prefix):]
        if k.startswith("norm.norm."):
            k = "norm." + k[len("norm.norm."):]
        elif k in ("output_linear.weight", "output_linear.bias"):
            k = "output_linear.0." + k.split(".")[-1]
        elif k in ("output_linear.0.weight_g", "output_linear.0.weight_v"):
            wn.setdefault(prefix, {})[k[-1]] = v
            continue
        out[prefix + k] = v
    for pre, gv in wn.items():  # nn.utils.weight_norm(dim=0): w = g · v / ||v|| (norm over all dims but 0)
        v = gv["v"]
        out[pre + "output_linear.0.weight"] = gv["g"] * v / v.norm(dim=tuple(range(1, v.ndim)), keepdim=True)
    for k in [k for k in out if k.startswith(prefix) and k.endswith("kernel_norm")]:
        kn, d = out[k], out[k[: -len("kernel_norm")] + "D"]
        if kn.ndim == 2:  # never-run official layer: (H, 1) -> (C, H, 1)
            c = out[k[: -len("kernel_norm")] + "kernel_list.0"].shape[0]
            out[k] = kn.reshape(1, d.shape[-1], 1).expand(c, -1, -1).clone()
    return out


register_component("sgconv", GConv)


@register_identity("sgconv", "GConv FFT path == direct causal/anti-causal conv1d (float64)")
def _identity_gconv_fft_equals_direct() -> str:
    torch.manual_seed(0)
    worst = 0.0
    for bidir in (False, True):
        layer = GConv(8, 64, kernel_dim=4, bidirectional=bidir).double().eval()
        u = torch.randn(2, 8, 50, dtype=torch.float64)
        with torch.no_grad():
            y, _ = layer(u)
            k = layer.kernel(50)
            raw = layer.raw_kernel()[..., :50] / layer.kernel_norm
            conv = direct_conv(u, raw[0]) + u * layer.D.view(-1, 1)
            if bidir:  # anti-causal part: y[t] += sum_j k1[j] u[t+1+j]
                anti = direct_conv(u.flip(-1), raw[1]).flip(-1)
                conv = conv + F.pad(anti[..., 1:], (0, 1))
            ref = layer.output_linear(layer.activation(conv))
            err = (y - ref).abs().max().item()
        worst = max(worst, err)
        assert k.shape[-1] == (100 if bidir else 50)
        assert err < 1e-10, f"bidirectional={bidir}: max abs error {err:.2e}"
    return f"max abs error {worst:.2e} (causal and bidirectional)"


@register_identity("sgconv", "decay: with all sub-kernels = 1, piece i / piece 0 = multiplier^-i (1/2 per scale)")
def _identity_gconv_decay() -> str:
    layer = GConv(4, 256, kernel_dim=8)
    with torch.no_grad():
        for p in layer.kernel_list:
            p.fill_(1.0)
        k = layer.raw_kernel()[0]  # (H, 256)
    starts = [0, 8] + [8 * 2**j for j in range(1, layer.num_scales - 1)]
    ratios = [(k[:, s] / k[:, 0]).mean().item() for s in starts]
    expect = [2.0**-i for i in range(len(starts))]
    err = max(abs(r - e) for r, e in zip(ratios, expect))
    assert err < 1e-6 and k.shape[-1] == 256, f"ratios {ratios}"
    return f"{layer.num_scales} scales, piece ratios {', '.join(f'{r:.4g}' for r in ratios[:4])}..., err {err:.1e}"
