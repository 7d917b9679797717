"""A small decoder-only transformer LM with chunked prefill over a bounded KV cache (card: lococo).

Llama-style pre-norm blocks (LayerNorm, RoPE multi-head attention, GELU MLP). ``forward(ids (B, T))`` reads the
sequence in chunks of ``block_size`` tokens; each layer keeps a :class:`~convatlas.layers.kv_conv_compressor.KVCache`
and applies ``cache_method`` whenever the cache exceeds ``mem_size + buffer`` at the start of a chunk:

- ``"full"``: never compress (equals ordinary causal attention over the whole sequence);
- ``"conv"``: LoCoCo's :class:`~convatlas.layers.kv_conv_compressor.KVConvCompressor` (one per layer);
- ``"hh"``: H2O-style heavy-hitter eviction (:func:`drop_tokens`); ``"recent"``: keep the last ``mem_size``.

The queries of a chunk attend to [compressed cache; the chunk itself (causal)], RoPE positions keep counting, and
the cache is stored detached (``detach_cache=True``, official): the compressor is trained by the loss of the
chunk in which it compresses. As in the official ``LlamaAttention.forward`` (VITA-Group/LoCoCo), the *past*
cache is compressed at the start of a chunk when it holds more than ``mem_size + buffer`` tokens (buffer 16),
then the chunk's keys are appended; the cache therefore stays below ``mem_size + buffer + block_size`` tokens
whatever the context length. The scores that pick heavy hitters are the column sums of the attention
probabilities of the last forward (official ``update_hh_scores`` replaces them; ``accumulate_scores=True`` keeps
an H2O-style running sum instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers.kv_conv_compressor import CACHE_METHODS, KVCache, KVConvCompressor, drop_tokens, keep_recent

__all__ = ["TinyLM", "apply_rope"]


def apply_rope(x: Tensor, pos: Tensor, base: float = 10000.0, scale: float = 1.0) -> Tensor:
    """Rotary position embedding (half-split convention): x (B, h, T, d) at positions pos (T,); ``scale`` > 1 is
    linear position interpolation (positions divided by ``scale``; LoCoCo's ``--rope_change``)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = (pos.to(torch.float32) / scale)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CachedSelfAttention(nn.Module):
    """Multi-head causal self-attention over [cache; chunk]: (B, T, D) -> (B, T, D), returns the new cache."""

    def __init__(self, dim: int, heads: int, rope_base: float = 10000.0, rope_scale: float = 1.0,
                 accumulate_scores: bool = False) -> None:
        super().__init__()
        self.accumulate_scores = accumulate_scores
        if dim % heads:
            raise ValueError(f"CachedSelfAttention: dim {dim} not divisible by heads {heads}")
        self.heads, self.head_dim, self.rope_base, self.rope_scale = heads, dim // heads, rope_base, rope_scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cache: KVCache | None, past_len: int) -> tuple[Tensor, KVCache]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        pos = torch.arange(past_len, past_len + t, device=x.device)
        q, k = apply_rope(q, pos, self.rope_base, self.rope_scale), apply_rope(k, pos, self.rope_base, self.rope_scale)
        n_c = 0 if cache is None else cache.length
        if cache is not None:
            k_all, v_all = torch.cat([cache.k.to(k.dtype), k], 2), torch.cat([cache.v.to(v.dtype), v], 2)
        else:
            k_all, v_all = k, v
        att = (q @ k_all.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        mask = torch.cat([torch.ones(t, n_c, dtype=torch.bool, device=x.device), causal], dim=1)
        att = att.to(torch.promote_types(att.dtype, torch.float32)).masked_fill(~mask, float("-inf"))
        probs = att.softmax(-1)
        y = (probs.to(v_all.dtype) @ v_all).transpose(1, 2).reshape(b, t, -1)
        col = probs.sum(2)  # (B, h, n_c + t): attention mass received by every key in this chunk
        if cache is None or not self.accumulate_scores:  # official: scores of this forward only (replaced)
            scores = col
        else:  # H2O-style running sum over all forwards
            scores = torch.cat([cache.scores.to(col.dtype) + col[..., :n_c], col[..., n_c:]], -1)
        return self.proj(y), KVCache(k_all, v_all, scores, past_len + t)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope_base: float, rope_scale: float = 1.0,
                 accumulate_scores: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CachedSelfAttention(dim, heads, rope_base, rope_scale, accumulate_scores)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, cache: KVCache | None, past_len: int) -> tuple[Tensor, KVCache]:
        a, cache = self.attn(self.norm1(x), cache, past_len)
        x = x + a
        return x + self.mlp(self.norm2(x)), cache


class TinyLM(nn.Module):
    """Decoder-only LM: token ids (B, T) int64 -> next-token logits (B, T, vocab_size).

    Args:
        vocab_size: vocabulary size.
        dim / depth / heads / mlp_ratio: transformer size (card's learning check: d 128, 2 layers, 4 heads).
        cache_method: ``"full"``, ``"conv"`` (LoCoCo), ``"hh"`` (H2O-style) or ``"recent"``.
        mem_size: cache slots after compression.
        block_size: chunk length of the chunked prefill (None: one chunk = plain causal attention).
        buffer: the cache is compressed when it holds more than ``mem_size + buffer`` tokens (official 16).
        kernel_size / hh_keep_rate / local_len / n_convlayer / expand / hidden_act / normalizer_init: compressor.
        detach_cache: store caches detached (official); False lets gradients flow through all compressions.
        rope_base: RoPE base.
        rope_scale: linear RoPE position interpolation factor (official ``--rope_change``: block_size ·
            clean_period / max_position_embeddings).
        accumulate_scores: ``hh_scores`` as a running sum over all chunks (H2O) instead of the official
            ``update_hh_scores``, which *replaces* them with the column sums of the last forward's attention
            probabilities (default False = official).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        cache_method: str = "full",
        mem_size: int = 128,
        block_size: int | None = None,
        buffer: int = 16,
        kernel_size: int = 21,
        hh_keep_rate: float = 0.5,
        local_len: int = 0,
        n_convlayer: int = 1,
        expand: int = 1,
        hidden_act: str = "relu",
        normalizer_init: float = 0.5,
        detach_cache: bool = True,
        rope_base: float = 10000.0,
        rope_scale: float = 1.0,
        accumulate_scores: bool = False,
    ) -> None:
        super().__init__()
        if cache_method not in CACHE_METHODS:
            raise ValueError(f"TinyLM: cache_method must be one of {CACHE_METHODS}, got {cache_method!r}")
        self.vocab_size, self.dim = vocab_size, dim
        self.cache_method, self.mem_size, self.block_size, self.buffer = cache_method, mem_size, block_size, buffer
        self.detach_cache, self.local_len = detach_cache, local_len
        self.embed = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_ratio, rope_base, rope_scale, accumulate_scores) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.compressors = None
        if cache_method == "conv":
            self.compressors = nn.ModuleList(
                [KVConvCompressor(dim // heads, mem_size, kernel_size, hh_keep_rate, local_len, n_convlayer, expand,
                                  hidden_act, normalizer_init) for _ in range(depth)]
            )
        self.last_caches: list[KVCache] | None = None
        self.max_cache_len = 0

    def compressor_parameters(self) -> list[nn.Parameter]:
        """Parameters of the KV compressors (what LoCoCo's "inference mode" trains)."""
        return [] if self.compressors is None else list(self.compressors.parameters())

    def _shrink(self, i: int, cache: KVCache | None) -> KVCache | None:
        if cache is None or self.cache_method == "full" or cache.length <= self.mem_size + self.buffer:
            return cache
        if self.cache_method == "conv":
            return self.compressors[i](cache)
        if self.cache_method == "hh":
            return drop_tokens(cache, self.mem_size, self.local_len)
        return keep_recent(cache, self.mem_size)

    def forward_chunk(self, ids: Tensor, caches: list[KVCache | None]) -> tuple[Tensor, list[KVCache]]:
        """One chunk (B, t) with the caches of every layer -> logits (B, t, V) and the updated caches."""
        x = self.embed(ids)
        new = []
        for i, blk in enumerate(self.blocks):
            cache = self._shrink(i, caches[i])
            past = 0 if caches[i] is None else caches[i].past_len
            x, c = blk(x, cache, past)
            new.append(c.detach() if self.detach_cache else c)
        return self.head(self.norm(x)), new

    def set_rope_scale(self, scale: float) -> None:
        """Linear RoPE position interpolation for every layer (official ``--rope_change`` of the post-training
        mode: factor = block_size · clean_period / max_position_embeddings)."""
        if not scale > 0:
            raise ValueError(f"TinyLM: rope scale must be > 0, got {scale}")
        for blk in self.blocks:
            blk.attn.rope_scale = float(scale)

    def forward(
        self, ids: Tensor, caches: list[KVCache | None] | None = None, return_caches: bool = False
    ) -> Tensor | tuple[Tensor, list[KVCache]]:
        """Token ids (B, T) -> logits (B, T, V), read in chunks of ``block_size``.

        ``caches`` (one per layer, e.g. the caches returned by the previous call) continue an earlier context:
        positions keep counting from their ``past_len``. With ``return_caches=True`` the new caches are returned
        too (this is how chunk-by-chunk training carries the cache across optimizer steps; see
        :class:`convatlas.tasks.language_model.ChunkedLanguageModelTask`)."""
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            got = f"shape {tuple(ids.shape)} dtype {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"TinyLM: expected token ids (B, T) of dtype int64, got {got}")
        if ids.device.type != "meta" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"TinyLM: expected token ids in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )
        if caches is None:
            caches = [None] * len(self.blocks)
        elif len(caches) != len(self.blocks):
            raise ValueError(f"TinyLM: expected {len(self.blocks)} caches (one per layer), got {len(caches)}")
        caches = list(caches)
        bs = self.block_size or ids.shape[1]
        outs = []
        self.max_cache_len = 0
        for s in range(0, ids.shape[1], bs):
            logits, caches = self.forward_chunk(ids[:, s : s + bs], caches)
            self.max_cache_len = max(self.max_cache_len, max(c.length for c in caches))
            outs.append(logits)
        self.last_caches = caches
        logits = torch.cat(outs, dim=1)
        return (logits, caches) if return_caches else logits
