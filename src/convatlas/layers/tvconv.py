"""Translation-variant depthwise convolution (card: tvconv, arXiv 2203.10489, official code JierunChen/TVConv).

A depthwise k x k convolution whose kernel differs at every output pixel but is the same for every image:
learnable affinity maps ``posi_map`` (1, P, h, w) pass through a small weight-generating block (3x3 convs with
LayerNorm over (C, h, w) and ReLU) that outputs one k x k kernel per channel per pixel. After training the kernels
are constants: :meth:`TVConv.reparameterize` stores them as a buffer and drops the generator (the official
``TVConv_test`` / ``model_transform_for_test``), leaving a per-pixel depthwise multiply-add.

Shapes: input (B, C, H, W) with H = h * stride, W = w * stride (h, w fixed at construction); output (B, C, h, w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import register_flop_formula

from convatlas.identities import register_component, register_identity

__all__ = ["TVConv", "tvconv_unfold_reference", "tvconv_apply", "tvconv_dw", "reparameterize_tvconvs",
           "adapt_official_tvconv_keys"]


def tvconv_unfold_reference(x: Tensor, weight: Tensor, k: int, stride: int) -> Tensor:
    """The official training-form computation: unfold x into (B, C, k*k, h, w) patches, multiply, sum.

    ``weight``: (1, C, k*k, h, w) with the k*k index ``i * k + j`` (row-major over the kernel window).
    """
    b, c = x.shape[:2]
    h, w = weight.shape[-2:]
    patches = F.unfold(x, k, dilation=1, padding=(k - 1) // 2, stride=stride).view(b, c, k * k, h, w)
    return (weight * patches).sum(2)


def tvconv_taps(weight: Tensor) -> Tensor:
    """(1, C, k*k, h, w) kernels -> (k*k, C, h, w) contiguous per-tap maps (the layout :func:`tvconv_apply` reads)."""
    return weight[0].transpose(0, 1).contiguous()


def tvconv_apply(x: Tensor, weight: Tensor, k: int, stride: int, taps: Tensor | None = None) -> Tensor:
    """Per-pixel depthwise conv as a sum of k*k shifted strided views (no unfold buffer of size k*k*|x|).

    x: (B, C, H, W); weight: (1, C, k*k, h, w) -> (B, C, h, w). Same result as :func:`tvconv_unfold_reference`.
    ``taps``: ``tvconv_taps(weight)`` if already computed. The first tap allocates the output, the others
    accumulate into it in place (``addcmul_``): one pass per tap, no temporaries (2-7x faster than mul + add).
    """
    p = (k - 1) // 2
    h, w = weight.shape[-2:]
    taps = tvconv_taps(weight) if taps is None else taps
    xp = F.pad(x, (p, p, p, p))
    # stride > 1: split the padded input into stride^2 contiguous phases once, so that every tap reads a unit-stride
    # window of one phase instead of a strided view (strided reads were up to 10x slower).
    phases = {(a, b): xp[:, :, a::stride, b::stride].contiguous() for a in range(stride) for b in range(stride)} \
        if stride > 1 else None
    out = None
    for i in range(k):
        for j in range(k):
            if phases is None:
                view = xp[:, :, i : i + h, j : j + w]
            else:
                ph = phases[(i % stride, j % stride)]
                view = ph[:, :, i // stride : i // stride + h, j // stride : j // stride + w]
            if out is None:
                out = view * taps[i * k + j]
            else:
                out.addcmul_(view, taps[i * k + j])
    return out


def _views(xp: Tensor, k: int, stride: int, h: int, w: int):
    for i in range(k):
        for j in range(k):
            yield i * k + j, (slice(None), slice(None), slice(i, i + stride * (h - 1) + 1, stride),
                              slice(j, j + stride * (w - 1) + 1, stride))


@torch.library.custom_op("convatlas::tvconv_dw", mutates_args=())
def _tvconv_dw_op(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    k = int(round(weight.shape[2] ** 0.5))
    return tvconv_apply(x, weight, k, stride)


@_tvconv_dw_op.register_fake
def _(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[-2], weight.shape[-1]))


def _tvconv_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride = stride


def _tvconv_backward(ctx, grad: Tensor):  # noqa: ANN001, ANN202
    x, weight = ctx.saved_tensors
    s, k2 = ctx.stride, weight.shape[2]
    k = int(round(k2 ** 0.5))
    p = (k - 1) // 2
    h, w = weight.shape[-2:]
    gx = gw = None
    if ctx.needs_input_grad[0]:
        gxp = x.new_zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p)
        for ij, idx in _views(gxp, k, s, h, w):
            gxp[idx] += weight[:, :, ij] * grad
        gx = gxp[:, :, p : p + x.shape[2], p : p + x.shape[3]]
    if ctx.needs_input_grad[1]:
        xp = F.pad(x, (p, p, p, p))
        gw = torch.stack([(grad * xp[idx]).sum(0, keepdim=True) for _, idx in _views(xp, k, s, h, w)], dim=2)
        gw = gw.sum_to_size(weight.shape)
    return gx, gw, None


_tvconv_dw_op.register_autograd(_tvconv_backward, setup_context=_tvconv_setup)


@register_flop_formula(torch.ops.convatlas.tvconv_dw)
def _tvconv_flops(x_shape, w_shape, stride, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    # One multiply-add per kernel tap per output element, as a depthwise conv (the paper's FLOP convention).
    b, c, h, w = out_shape
    return 2 * b * c * h * w * w_shape[2]


def _flop_counting() -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any(type(m).__name__ == "_FlopCounterMode" for m in _get_current_dispatch_mode_stack())


def tvconv_dw(x: Tensor, weight: Tensor, stride: int = 1, taps: Tensor | None = None) -> Tensor:
    """Per-pixel depthwise conv: x (B, C, H, W), weight (1, C, k*k, h, w) -> (B, C, h, w).

    Computed by :func:`tvconv_apply` (shifted strided views, 'same' zero padding). While a ``FlopCounterMode`` is
    active (MAC counting, :mod:`convatlas.analysis.complexity`) the same function runs wrapped as the custom op
    ``convatlas::tvconv_dw``, whose registered formula counts C*k*k*h*w multiply-adds per image (what a depthwise
    conv of the same shape costs); elementwise products are otherwise invisible to the counter. Outside counting
    the plain aten ops run, so ``torch.export`` / ONNX / ``torch.compile`` see ordinary ops.
    """
    if not torch.compiler.is_compiling() and _flop_counting():
        return _tvconv_dw_op(x, weight, stride)
    return tvconv_apply(x, weight, int(round(weight.shape[2] ** 0.5)), stride, taps)


def _gen_block(cin: int, cout: int, h: int, w: int) -> nn.Sequential:
    # Conv3x3 (no bias) -> LayerNorm over (C, h, w) jointly, per-position affine -> ReLU (official _ConvBlock).
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.LayerNorm([cout, h, w]), nn.ReLU(inplace=True))


@register_component("tvconv")
class TVConv(nn.Module):
    """Translation-variant depthwise convolution: (B, C, h*stride, w*stride) -> (B, C, h, w).

    Args:
        channels: C (depthwise: one kernel per channel).
        h, w: OUTPUT spatial size (the layer only runs at this resolution).
        kernel_size: k (odd); padding is (k - 1) / 2 as in the official layer.
        stride: 1 or 2.
        posi_chans: channels of the affinity maps (4).
        inter_chans: width of the weight-generating block (16).
        inter_layers: extra Conv-LN-ReLU blocks in the generator (1).
        bias: also generate a per-pixel bias map (C, h, w) with a second generator.

    State-dict keys follow the official layer (``posi_map``, ``weight_layers.*``, ``bias_layers.*``); after
    :meth:`reparameterize` they are replaced by the buffer ``weight_maps`` (1, C, k, k, h, w) (+ ``bias_map``), the
    official ``TVConv_test`` layout (6-D, so ``model.to(memory_format=torch.channels_last)`` leaves it alone; the
    earlier convatlas layout (1, C, k*k, h, w) still loads).
    """

    def __init__(
        self,
        channels: int,
        h: int,
        w: int,
        kernel_size: int = 3,
        stride: int = 1,
        posi_chans: int = 4,
        inter_chans: int = 16,
        inter_layers: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"TVConv: kernel_size must be odd, got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"TVConv: stride must be 1 or 2, got {stride}")
        self.channels, self.h, self.w = channels, h, w
        self.kernel_size, self.stride = kernel_size, stride
        self.posi_map = nn.Parameter(torch.ones(1, posi_chans, h, w))
        self.weight_layers = self._make_generator(posi_chans, inter_chans, kernel_size**2 * channels, inter_layers)
        self.bias_layers = self._make_generator(posi_chans, inter_chans, channels, inter_layers) if bias else None
        self.reparameterized = False

    def _make_generator(self, cin: int, inter: int, cout: int, n_inter: int) -> nn.Sequential:
        layers = [_gen_block(cin, inter, self.h, self.w)]
        layers += [_gen_block(inter, inter, self.h, self.w) for _ in range(n_inter)]
        layers.append(nn.Conv2d(inter, cout, 3, 1, 1, bias=False))
        return nn.Sequential(*layers)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, out_hw: tuple[int, int], **kwargs) -> "TVConv":
        """A TVConv replacing a depthwise ``conv`` whose output is ``out_hw`` (used by ``layers.swap``)."""
        k = conv.kernel_size[0]
        if not (conv.groups == conv.in_channels == conv.out_channels) or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"TVConv.from_conv: needs a square depthwise conv, got {conv}")
        if conv.padding != ((k - 1) // 2,) * 2 or conv.dilation != (1, 1) or conv.stride[0] != conv.stride[1]:
            raise ValueError(f"TVConv.from_conv: needs 'same' padding, dilation 1 and equal strides, got {conv}")
        kwargs.setdefault("bias", conv.bias is not None)
        return cls(conv.in_channels, out_hw[0], out_hw[1], k, conv.stride[0], **kwargs)

    def generate_weight(self) -> Tensor:
        """The per-pixel kernels (1, C, k*k, h, w) (C outer, k*k inner, as the official view)."""
        if self.reparameterized:
            return self.weight_maps.flatten(2, 3)
        k2 = self.kernel_size**2
        return self.weight_layers(self.posi_map).view(1, self.channels, k2, self.h, self.w)

    def generate_bias(self) -> Tensor | None:
        if self.reparameterized:
            return getattr(self, "bias_map", None)
        return None if self.bias_layers is None else self.bias_layers(self.posi_map)

    def forward(self, x: Tensor) -> Tensor:
        exp = (self.h * self.stride, self.w * self.stride)
        if x.ndim != 4 or x.shape[1] != self.channels or tuple(x.shape[-2:]) != exp:
            raise ValueError(
                f"TVConv: expected input (B, {self.channels}, {exp[0]}, {exp[1]}) (h, w are fixed at construction), "
                f"got {tuple(x.shape)}"
            )
        weight = self.generate_weight().to(x.dtype)
        taps = self._deploy_taps(x.dtype) if self.reparameterized else None
        out = tvconv_dw(x, weight, self.stride, taps)
        bias = self.generate_bias()
        return out if bias is None else out + bias.to(x.dtype)

    def _deploy_taps(self, dtype: torch.dtype) -> Tensor | None:
        """Per-tap layout of ``weight_maps``, cached until the buffer changes (load_state_dict, .to, in place)."""
        if torch.compiler.is_compiling() or self.weight_maps.device.type == "meta":
            return None
        w = self.weight_maps
        key = (w.data_ptr(), w._version, w.device, dtype)
        if getattr(self, "_taps_key", None) != key:
            self._taps = tvconv_taps(w.flatten(2, 3)).to(dtype)
            self._taps_key = key
        return self._taps

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch to the inference form in place: generated kernels become a buffer, the generator is dropped."""
        if self.reparameterized:
            return
        k = self.kernel_size
        weight = self.generate_weight().detach().reshape(1, self.channels, k, k, self.h, self.w)
        self.register_buffer("weight_maps", weight.clone())
        bias = self.generate_bias()
        if bias is not None:
            self.register_buffer("bias_map", bias.detach().clone())
        del self.posi_map, self.weight_layers
        self.bias_layers = None
        self.reparameterized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        key = prefix + "weight_maps"
        value = state_dict.get(key)
        if self.reparameterized and isinstance(value, Tensor) and value.ndim == 5:  # earlier (1, C, k*k, h, w)
            k = self.kernel_size
            state_dict[key] = value.reshape(value.shape[0], value.shape[1], k, k, *value.shape[-2:])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, h={self.h}, w={self.w}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"reparameterized={self.reparameterized}"
        )


def reparameterize_tvconvs(model: nn.Module) -> nn.Module:
    """Switch every :class:`TVConv` inside ``model`` to its inference form, in place (the official
    ``model_transform_for_test``, which swaps each TVConv for a ``TVConv_test``); returns ``model``."""
    for m in model.modules():
        if isinstance(m, TVConv):
            m.reparameterize()
    return model


_OFFICIAL_BUFFERS = ("TVConv_k", "TVConv_k_square", "stride", "channels", "h", "w", "c")


def adapt_official_tvconv_keys(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Official TVConv / TVConv_test entries -> ours, for keys already named like ``model``'s modules.

    The official shape buffers (``TVConv_k``, ``TVConv_k_square``, ``stride``, ``channels``, ``h``, ``w``; ``c`` in
    ``TVConv_test``) are checked against the layer and dropped; ``TVConv_test.weight_maps`` (1, C, k, k, h, w) is
    ours unchanged (the model must be reparameterised before loading such a checkpoint).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, TVConv)}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        owner, _, leaf = key.rpartition(".")
        layer = layers.get(owner)
        if layer is not None and leaf in _OFFICIAL_BUFFERS:
            expect = {"TVConv_k": layer.kernel_size, "TVConv_k_square": layer.kernel_size ** 2, "stride": layer.stride,
                      "channels": layer.channels, "c": layer.channels, "h": layer.h, "w": layer.w}[leaf]
            if int(value) != expect:
                raise ValueError(f"official TVConv checkpoint: {key} = {int(value)} but the model has {expect}")
            continue
        out[key] = value
    return out


@register_identity("tvconv", "constant per-pixel kernels == depthwise F.conv2d (unfold ordering i*k+j)")
def _identity_translation_invariant() -> str:
    g = torch.Generator().manual_seed(0)
    errs = []
    for stride in (1, 2):
        c, k, hh = 6, 3, 10
        x = torch.randn(2, c, hh, hh, generator=g, dtype=torch.float64)
        kern = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64)
        ho = hh // stride
        weight = kern.view(1, c, k * k, 1, 1).expand(1, c, k * k, ho, ho)
        ref = F.conv2d(x, kern, padding=1, stride=stride, groups=c)
        for fn in (tvconv_unfold_reference, tvconv_apply):
            errs.append((fn(x, weight, k, stride) - ref).abs().max().item())
    err = max(errs)
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"unfold and shifted-view forms vs F.conv2d (stride 1, 2): max abs error {err:.1e}"


@register_identity("tvconv", "training form (generator + unfold) == reparameterised inference form")
def _identity_reparam() -> str:
    torch.manual_seed(0)
    errs = []
    for stride, bias in ((1, False), (2, True)):
        layer = TVConv(8, 12, 12, stride=stride, bias=bias).double()
        with torch.no_grad():
            layer.posi_map.normal_()
        x = torch.randn(2, 8, 12 * stride, 12 * stride, dtype=torch.float64)
        with torch.no_grad():
            ref = tvconv_unfold_reference(x, layer.generate_weight(), 3, stride)
            if bias:
                ref = ref + layer.generate_bias()
            layer.reparameterize()
            errs.append((layer(x) - ref).abs().max().item())
    err = max(errs)
    assert err < 1e-10, f"max abs error {err:.2e}"
    return f"training (official unfold) vs inference form, stride 1 and 2: max abs error {err:.1e}"
