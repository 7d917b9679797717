"""Synthetic retrieval generator (card lococo): layout and answer correctness."""

from __future__ import annotations

import torch

from convatlas.data.synthetic_retrieval import make_retrieval_batch, retrieval_vocab_size


def test_retrieval_batch_layout():
    ids, tg = make_retrieval_batch(16, 40, n_keys=5, n_values=7, n_filler=10,
                                   generator=torch.Generator().manual_seed(0))
    assert ids.shape == tg.shape == (16, 41)
    assert (tg[:, :-1] == -100).all() and int(ids.max()) < retrieval_vocab_size(5, 7, 10)
    for b in range(16):
        facts = ids[b, :-1][(ids[b, :-1] >= 10) & (ids[b, :-1] < 10 + 35)] - 10
        assert sorted((facts // 7).tolist()) == list(range(5))  # every key exactly once
        j = int(ids[b, -1]) - 10 - 35
        v = int(facts[facts // 7 == j][0] % 7)
        assert int(tg[b, -1]) == 10 + 35 + 5 + v
