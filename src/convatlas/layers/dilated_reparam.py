"""UniRepLKNet's Dilated Reparam Block: a large depthwise kernel plus parallel dilated small kernels, fused for inference.

Training form (cards: unireplknet, scaling-up-kernels)::

    y = BN_0(DW_KxK(x)) + sum_i BN_i(DW_{k_i x k_i, dilation r_i}(x))

Every branch pads by ``(r_i (k_i - 1) + 1) // 2`` so all outputs stay centred. A dilated ``k x k`` kernel equals a
dense ``r(k-1)+1`` kernel with ``r-1`` zeros between taps, so after folding each BN into its conv the whole block is
*one* depthwise ``K x K`` conv with bias (deploy form). ``reparameterize()`` switches in place.

Branch table (kernel sizes, dilations) per large kernel K, as in the official code:
K=17: (5,9,3,3,3),(1,2,4,5,7); 15: (5,7,3,3,3),(1,2,3,5,7); 13: (5,7,3,3,3),(1,2,3,4,5); 11: (5,5,3,3,3),(1,2,3,4,5);
9: (5,5,3,3),(1,2,3,4); 7: (5,3,3),(1,2,3); 5: (3,3),(1,2).

Parameter keys follow the official checkpoints: ``lk_origin``, ``origin_bn``, ``dil_conv_k{k}_{r}``, ``dil_bn_k{k}_{r}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers.reparam import dilate_kernel, fuse_conv_bn, pad_kernel

__all__ = ["DilatedReparamBlock", "DILATED_BRANCHES"]

DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


class DilatedReparamBlock(nn.Module):
    """Depthwise large-kernel conv with parallel dilated branches: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C (depthwise: groups = C).
        kernel_size: the large kernel K (odd, 5..17 with the default branch table).
        branches: optional ``(kernel_sizes, dilations)`` overriding the table; each needs ``r(k-1)+1 <= K``.
        deploy: build the fused form directly (one DW conv with bias).

    Example::

        blk = DilatedReparamBlock(64, 13).eval()
        y = blk(x); blk.reparameterize(); torch.testing.assert_close(blk(x), y, atol=1e-5, rtol=1e-5)
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        branches: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if branches is None:
            if kernel_size not in DILATED_BRANCHES:
                raise ValueError(
                    f"DilatedReparamBlock: no default branches for kernel_size={kernel_size}; "
                    f"expected one of {sorted(DILATED_BRANCHES)} or explicit branches"
                )
            branches = DILATED_BRANCHES[kernel_size]
        ks, rs = (tuple(int(v) for v in b) for b in branches)
        if len(ks) != len(rs):
            raise ValueError(f"DilatedReparamBlock: {len(ks)} kernel sizes but {len(rs)} dilations")
        for k, r in zip(ks, rs):
            if r * (k - 1) + 1 > kernel_size or k % 2 == 0:
                raise ValueError(
                    f"DilatedReparamBlock: branch k={k}, r={r} (span {r * (k - 1) + 1}) does not fit in K={kernel_size}"
                )
        self.channels = channels
        self.kernel_size = kernel_size
        self.kernel_sizes, self.dilates = ks, rs
        self.lk_origin = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels,
                                   bias=deploy)
        self.deploy = deploy
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in zip(ks, rs):
                setattr(self, f"dil_conv_k{k}_{r}", nn.Conv2d(channels, channels, k, padding=(r * (k - 1) + 1) // 2,
                                                              dilation=r, groups=channels, bias=False))
                setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates):
            out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
        return out

    @torch.no_grad()
    def fused_kernel(self) -> tuple[Tensor, Tensor]:
        """The equivalent single depthwise kernel (C, 1, K, K) and bias (C,) (eval-mode BN statistics)."""
        if self.deploy:
            return self.lk_origin.weight, self.lk_origin.bias
        w, b = fuse_conv_bn(self.lk_origin.weight, None, self.origin_bn)
        for k, r in zip(self.kernel_sizes, self.dilates):
            wk, bk = fuse_conv_bn(getattr(self, f"dil_conv_k{k}_{r}").weight, None, getattr(self, f"dil_bn_k{k}_{r}"))
            w = w + pad_kernel(dilate_kernel(wk, r), self.kernel_size)
            b = b + bk
        return w, b

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge every branch and BN into ``lk_origin`` (DW KxK conv with bias), in place. Idempotent."""
        if self.deploy:
            return
        w, b = self.fused_kernel()
        conv = nn.Conv2d(self.channels, self.channels, self.kernel_size, padding=self.kernel_size // 2,
                         groups=self.channels, bias=True, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.lk_origin = conv
        del self.origin_bn
        for k, r in zip(self.kernel_sizes, self.dilates):
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        self.deploy = True

    def extra_repr(self) -> str:
        return f"channels={self.channels}, K={self.kernel_size}, branches={list(zip(self.kernel_sizes, self.dilates))}, " \
               f"deploy={self.deploy}"


def dilated_branches_reference(x: Tensor, block: DilatedReparamBlock) -> Tensor:
    """Slow reference of the training-form sum using ``F.conv2d`` per branch (eval-mode BN), for tests."""
    out = F.batch_norm(F.conv2d(x, block.lk_origin.weight, None, 1, block.kernel_size // 2, 1, block.channels),
                       block.origin_bn.running_mean, block.origin_bn.running_var, block.origin_bn.weight,
                       block.origin_bn.bias, False, 0.0, block.origin_bn.eps)
    for k, r in zip(block.kernel_sizes, block.dilates):
        conv, bn = getattr(block, f"dil_conv_k{k}_{r}"), getattr(block, f"dil_bn_k{k}_{r}")
        y = F.conv2d(x, conv.weight, None, 1, (r * (k - 1) + 1) // 2, r, block.channels)
        out = out + F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return out
