"""Synthetic long-context key-value retrieval for bounded-KV-cache experiments (card: lococo).

A sequence is ``ctx_len`` context tokens followed by one query token. The context holds ``n_keys`` *fact* tokens
(one per key, each fact token encodes a (key, value) pair: id ``F(k, v)``), at random distinct positions among
random *filler* tokens. The query ``Q(j)`` asks for key j's value; the target at the query position is the
answer token ``A(v_j)``; all other positions are ignored (-100). A model must keep the facts of the whole context
in its KV cache: with a cache much smaller than the context, the eviction/compression policy decides what
survives.

Vocabulary layout: fillers ``[0, n_filler)``, facts ``n_filler + k·n_values + v``, queries next (``n_keys``),
answers last (``n_values``); :func:`retrieval_vocab_size` gives the total.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["make_retrieval_batch", "retrieval_vocab_size"]


def retrieval_vocab_size(n_keys: int = 8, n_values: int = 8, n_filler: int = 32) -> int:
    """Total vocabulary of :func:`make_retrieval_batch`."""
    return n_filler + n_keys * n_values + n_keys + n_values


def make_retrieval_batch(
    batch_size: int,
    ctx_len: int = 64,
    *,
    n_keys: int = 8,
    n_values: int = 8,
    n_filler: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """ids (B, ctx_len + 1) int64 and targets (B, ctx_len + 1) (-100 except the last position).

    Args:
        batch_size: B.
        ctx_len: context tokens before the query (>= n_keys).
        n_keys / n_values / n_filler: vocabulary sizes of the task.
        generator: torch generator for reproducible batches.
    """
    if ctx_len < n_keys:
        raise ValueError(f"make_retrieval_batch: ctx_len {ctx_len} must be >= n_keys {n_keys}")
    g = generator
    ids = torch.randint(0, n_filler, (batch_size, ctx_len + 1), generator=g)
    values = torch.randint(0, n_values, (batch_size, n_keys), generator=g)
    pos = torch.argsort(torch.rand(batch_size, ctx_len, generator=g), dim=1)[:, :n_keys]  # distinct positions
    keys = torch.arange(n_keys).expand(batch_size, n_keys)
    ids.scatter_(1, pos, n_filler + keys * n_values + values)
    j = torch.randint(0, n_keys, (batch_size,), generator=g)
    ids[:, -1] = n_filler + n_keys * n_values + j
    targets = torch.full_like(ids, -100)
    targets[:, -1] = n_filler + n_keys * n_values + n_keys + values.gather(1, j[:, None])[:, 0]
    return ids, targets
