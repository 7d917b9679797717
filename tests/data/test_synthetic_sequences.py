"""Synthetic long-range sequence generators: shapes, determinism, labels consistent with the tokens."""

from __future__ import annotations

import pytest
import torch

from convatlas.data.synthetic_sequences import FAR_XOR_VOCAB, associative_recall, delayed_copy, far_xor


def test_far_xor_labels_and_positions() -> None:
    for label in ("xor", "sum"):
        x, y = far_xor(200, 64, seed=3, label=label, first_span=0.25, last_span=0.25, second_at=0.25)
        assert x.shape == (200, 64) and int(x.max()) < FAR_XOR_VOCAB
        assert torch.equal(x, far_xor(200, 64, seed=3, label=label, first_span=0.25, last_span=0.25,
                                      second_at=0.25)[0])
        pa = (x >= 4) & (x <= 5)
        pb = x >= 6
        assert (pa.sum(1) == 1).all() and (pb.sum(1) == 1).all()
        assert pa[:, :16].any(1).all() and pb[:, 16:32].any(1).all()
        a = (x * pa).sum(1) - 4
        b = (x * pb).sum(1) - 6
        assert torch.equal(y, a ^ b if label == "xor" else a + b)
    with pytest.raises(ValueError, match="label"):
        far_xor(2, 64, label="and")


def test_delayed_copy_and_recall() -> None:
    x, y = delayed_copy(3, 100, 40, 5, seed=1)
    assert (y[:, :40] == -100).all() and torch.equal(y[:, 40:], x[:, :60])
    x, y = associative_recall(10, num_pairs=4, num_keys=8, num_values=3, seed=0)
    assert x.shape == (10, 9)
    for row, lab in zip(x, y):
        keys, vals = row[:-1:2], row[1:-1:2]
        assert vals[(keys == row[-1]).nonzero()[0, 0]] - 8 == lab
    with pytest.raises(ValueError, match="lag"):
        delayed_copy(2, 10, 10)
