"""LoCoCo's convolutional KV-cache compressor and the heuristic cache policies it is compared with (card: lococo).

A bounded KV cache holds keys/values (B, h, S, d) and accumulated attention scores ``hh_scores`` (B, h, S) (sum
over queries of the softmax probabilities each cached token received). When it overflows, a policy shrinks it to
``mem_size`` slots:

- :class:`KVConvCompressor` (official ``memory_saver``): keep ``keep_hh = mem_size − M_c`` heavy hitters verbatim
  (top scores, plus the last ``local_len`` tokens), and write the other tokens into ``M_c = int(mem_size·(1 −
  hh_keep_rate))`` slots with mixing weights ``W = (1 − λ)·W_hard + λ·softmax(act(Conv1d(concat(K, V))))`` over
  the token axis (λ = learnable ``normalizer``, init 0.5; ``W_hard`` = one-hot rows selecting the top-M_c remaining
  tokens by score, in position order). Output K' = [K_heavy; W·K_rest], V' likewise, scores' = [s_heavy; W·s_rest].
- :func:`drop_tokens` (official ``drop_tokens``, method ``hh``; H2O-style): keep the ``mem_size`` top-score tokens.
- :func:`keep_recent`: keep the last ``mem_size`` tokens (sliding window).

Every row of W is a probability vector (one-hot or softmax), so slots are convex combinations of cached tokens:
a cache of identical keys compresses to that key exactly; λ = 0 is hard top-score selection on the non-heavy part.
All shapes are static (top-k + gather), so the policies run under ``torch.compile`` and on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component

__all__ = ["KVCache", "KVConvCompressor", "drop_tokens", "keep_recent", "CACHE_METHODS"]

CACHE_METHODS = ("full", "conv", "hh", "recent")


@dataclass
class KVCache:
    """One layer's cache: keys/values (B, h, S, d) (RoPE already applied), scores (B, h, S), and the number of
    tokens seen so far (positions keep counting after compression)."""

    k: Tensor
    v: Tensor
    scores: Tensor
    past_len: int

    @property
    def length(self) -> int:
        return self.k.shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.scores))

    def detach(self) -> "KVCache":
        return KVCache(self.k.detach(), self.v.detach(), self.scores.detach(), self.past_len)


def _gather_tokens(t: Tensor, idx: Tensor) -> Tensor:
    """t (B, h, S, d) or (B, h, S); idx (B, h, n) -> (B, h, n[, d])."""
    if t.ndim == 4:
        return torch.gather(t, 2, idx[..., None].expand(*idx.shape, t.shape[-1]))
    return torch.gather(t, 2, idx)


def _topk_sorted(scores: Tensor, n: int) -> Tensor:
    """Indices of the n largest scores along the last axis, in increasing position order."""
    return torch.sort(torch.topk(scores, n, dim=-1).indices, dim=-1).values


def drop_tokens(cache: KVCache, mem_size: int, local_len: int = 0) -> KVCache:
    """H2O-style eviction (official method ``hh``): keep the ``mem_size`` tokens with the largest scores (the last
    ``local_len`` tokens always, plus the ``mem_size − local_len`` top-score earlier ones, as official)."""
    if cache.length <= mem_size:
        return cache
    if not 0 <= local_len <= mem_size:
        raise ValueError(f"drop_tokens: local_len must be in [0, mem_size={mem_size}], got {local_len}")
    sel = cache.scores
    if local_len > 0:
        pos = torch.arange(cache.length, device=sel.device)
        sel = torch.where(pos >= cache.length - local_len, torch.full_like(sel, float("inf")), sel)
    idx = _topk_sorted(sel, mem_size)
    return KVCache(_gather_tokens(cache.k, idx), _gather_tokens(cache.v, idx), _gather_tokens(cache.scores, idx),
                   cache.past_len)


def keep_recent(cache: KVCache, mem_size: int) -> KVCache:
    """Sliding-window eviction: keep the last ``mem_size`` cached tokens."""
    if cache.length <= mem_size:
        return cache
    return KVCache(cache.k[:, :, -mem_size:], cache.v[:, :, -mem_size:], cache.scores[:, :, -mem_size:],
                   cache.past_len)


_ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


@register_component("lococo")
class KVConvCompressor(nn.Module):
    """LoCoCo's convolutional KV compressor (one per attention layer, shared over heads and batch).

    Args:
        head_dim: d of the cached keys/values.
        mem_size: slots after compression.
        kernel_size: Conv1d kernel over the token axis (21).
        hh_keep_rate: fraction of slots kept as verbatim heavy hitters (0.5).
        local_len: the last ``local_len`` tokens are always among the heavy hitters (0).
        n_convlayer: stacked Conv1d layers (hidden width ``M_c·expand``).
        expand: hidden width multiplier.
        hidden_act: activation after every conv, including the last (official: before the softmax).
        normalizer_init: initial λ.

    Forward: :class:`KVCache` with S tokens -> :class:`KVCache` with ``min(S, mem_size)`` tokens.
    """

    def __init__(
        self,
        head_dim: int,
        mem_size: int,
        kernel_size: int = 21,
        hh_keep_rate: float = 0.5,
        local_len: int = 0,
        n_convlayer: int = 1,
        expand: int = 1,
        hidden_act: str = "relu",
        normalizer_init: float = 0.5,
    ) -> None:
        super().__init__()
        if hidden_act not in _ACTS:
            raise ValueError(f"KVConvCompressor: hidden_act must be one of {sorted(_ACTS)}, got {hidden_act!r}")
        if not 0.0 <= hh_keep_rate < 1.0:
            raise ValueError(f"KVConvCompressor: hh_keep_rate must be in [0, 1), got {hh_keep_rate}")
        self.head_dim, self.mem_size = head_dim, mem_size
        self.m_conv = int(mem_size * (1 - hh_keep_rate))
        self.keep_hh = mem_size - self.m_conv
        if self.m_conv < 1:
            raise ValueError(
                f"KVConvCompressor: mem_size {mem_size} with hh_keep_rate {hh_keep_rate} leaves no conv slot"
            )
        if local_len > self.keep_hh:
            raise ValueError(f"KVConvCompressor: local_len {local_len} exceeds the {self.keep_hh} heavy-hitter slots")
        self.local_len = local_len
        layers: list[nn.Module] = []
        cin = 2 * head_dim
        for i in range(n_convlayer):
            cout = self.m_conv if i == n_convlayer - 1 else self.m_conv * expand
            layers += [nn.Conv1d(cin, cout, kernel_size, padding=(kernel_size - 1) // 2), _ACTS[hidden_act]()]
            cin = cout
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Conv1d):
                nn.init.normal_(m.weight, 0.0, 1.0)  # official: randn init (std 1)
        self.normalizer = nn.Parameter(torch.full((1,), float(normalizer_init)))

    def mixing_weights(self, k: Tensor, v: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For the non-heavy tokens (B, h, R, d) and their scores: (W, W_hard, W_conv), each (B, h, M_c, R)."""
        b, h, r, d = k.shape
        x = torch.cat([k, v], dim=-1).reshape(b * h, r, 2 * d).transpose(1, 2)
        cdt = torch.promote_types(k.dtype, torch.float32)  # mixing weights in fp32 (fp64 kept)
        w_conv = torch.softmax(self.layers(x.to(self.normalizer.dtype)).to(cdt), dim=-1).reshape(b, h, self.m_conv, r)
        hard_idx = _topk_sorted(scores, self.m_conv)
        w_hard = F.one_hot(hard_idx, r).to(w_conv.dtype)
        lam = self.normalizer.to(cdt)
        return (1 - lam) * w_hard + lam * w_conv, w_hard, w_conv

    def forward(self, cache: KVCache) -> KVCache:
        if cache.length <= self.mem_size:
            return cache
        s = cache.scores
        sel = s.float()
        if self.local_len > 0:
            pos = torch.arange(cache.length, device=s.device)
            sel = torch.where(pos >= cache.length - self.local_len, torch.full_like(sel, float("inf")), sel)
        order = torch.sort(sel, dim=-1, descending=True, stable=True).indices
        heavy = torch.sort(order[..., : self.keep_hh], dim=-1).values
        rest = torch.sort(order[..., self.keep_hh :], dim=-1).values
        k_r, v_r, s_r = _gather_tokens(cache.k, rest), _gather_tokens(cache.v, rest), _gather_tokens(s, rest)
        w, _, _ = self.mixing_weights(k_r, v_r, s_r)
        k_new = torch.cat([_gather_tokens(cache.k, heavy), (w @ k_r.to(w.dtype)).to(cache.k.dtype)], dim=2)
        v_new = torch.cat([_gather_tokens(cache.v, heavy), (w @ v_r.to(w.dtype)).to(cache.v.dtype)], dim=2)
        s_new = torch.cat([_gather_tokens(s, heavy), (w @ s_r.to(w.dtype)[..., None])[..., 0].to(s.dtype)], dim=2)
        return KVCache(k_new, v_new, s_new, cache.past_len)
