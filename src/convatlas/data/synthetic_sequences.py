"""Synthetic long-range sequence tasks generated in code (stand-ins for LRA / long-conv benchmarks).

Every generator is deterministic given ``seed`` and returns ``(tokens, targets)`` as torch tensors:

- :func:`far_xor`: classification; a marker in the first part and one in the last part of a noisy sequence, the
  label is the XOR of their two bits. Mean-pooled local features are additive in the two markers, so a model whose
  receptive field cannot span the distance is provably at chance; a global convolution solves it.
- :func:`delayed_copy`: sequence labelling; output at ``t`` is the input token at ``t - lag`` (``-100`` = ignore
  where ``t < lag``), the flashfftconv card's "copy token from position t-512" task.
- :func:`associative_recall`: classification; key/value pairs then a query key, the label is its value.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["far_xor", "delayed_copy", "associative_recall", "FAR_XOR_VOCAB"]

FAR_XOR_VOCAB = 8  # tokens 0-3 noise, 4/5 first marker (bit 0/1), 6/7 second marker (bit 0/1)


def far_xor(n: int, length: int = 256, *, seed: int = 0, first_span: float = 0.125,
            last_span: float = 0.125, label: str = "xor", second_at: float | None = None) -> tuple[Tensor, Tensor]:
    """``n`` sequences ``(n, length)`` of token ids and labels ``(n,)``.

    The first marker (4 or 5) sits uniformly in the first ``first_span`` fraction of the sequence, the second
    (6 or 7) in the last ``last_span`` fraction (or, with ``second_at=f``, in ``[f, f + last_span)`` of the
    length); ``label="xor"``: bit1 XOR bit2 (2 classes); ``label="sum"``: bit1 + bit2 (3 classes). All other
    tokens are noise in 0..3.
    """
    if label not in ("xor", "sum"):
        raise ValueError(f"far_xor: label must be 'xor' or 'sum', got {label!r}")
    if length < 8:
        raise ValueError(f"far_xor: length must be >= 8, got {length}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (n, length), generator=g)
    a = torch.randint(0, 2, (n,), generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    w1 = max(1, int(length * first_span))
    w2 = max(1, int(length * last_span))
    pa = torch.randint(0, w1, (n,), generator=g)
    if second_at is None:
        pb = length - 1 - torch.randint(0, w2, (n,), generator=g)
    else:
        pb = int(length * second_at) + torch.randint(0, w2, (n,), generator=g)
        if int(pb.max()) >= length or int(pb.min()) < w1:
            raise ValueError(f"far_xor: second_at={second_at} with last_span={last_span} leaves the sequence")
    rows = torch.arange(n)
    x[rows, pa] = 4 + a
    x[rows, pb] = 6 + b
    return x, (a ^ b) if label == "xor" else (a + b)


def delayed_copy(n: int, length: int = 1024, lag: int = 512, vocab: int = 8, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Tokens ``(n, length)`` uniform in ``[0, vocab)``; targets ``(n, length)``: the token at ``t - lag``
    (-100 = ignore for ``t < lag``)."""
    if not 0 < lag < length:
        raise ValueError(f"delayed_copy: need 0 < lag < length, got lag={lag}, length={length}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = torch.full_like(x, -100)
    y[:, lag:] = x[:, :-lag]
    return x, y


def associative_recall(n: int, num_pairs: int = 16, num_keys: int = 32, num_values: int = 8, *,
                       seed: int = 0) -> tuple[Tensor, Tensor]:
    """Sequences ``k1 v1 k2 v2 ... q`` (length ``2·num_pairs + 1``); keys ``[0, num_keys)``, values offset by
    ``num_keys``; the query is one of the keys; label = its value in ``[0, num_values)``."""
    if num_pairs > num_keys:
        raise ValueError(f"associative_recall: num_pairs {num_pairs} > num_keys {num_keys}")
    g = torch.Generator().manual_seed(seed)
    keys = torch.stack([torch.randperm(num_keys, generator=g)[:num_pairs] for _ in range(n)])
    vals = torch.randint(0, num_values, (n, num_pairs), generator=g)
    seq = torch.stack([keys, vals + num_keys], -1).reshape(n, 2 * num_pairs)
    qi = torch.randint(0, num_pairs, (n,), generator=g)
    rows = torch.arange(n)
    x = torch.cat([seq, keys[rows, qi][:, None]], 1)
    return x, vals[rows, qi]
