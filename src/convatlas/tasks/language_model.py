"""Causal language modelling: ``model(ids (B, T)) -> logits (B, T, V)`` vs next-token targets (B, T) (-100 = ignore).

Batches are ``(ids, targets)``; with targets = ids shifted by one for ordinary LM training, or -100 everywhere
except the answer positions for synthetic retrieval (card lococo). Metrics: loss, perplexity, token accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["LanguageModelTask", "LanguageModelMetrics", "ChunkedLanguageModelTask", "ChunkedSequences"]


class LanguageModelMetrics(MetricAccumulator):
    """Sums of token NLL, correct predictions and counted tokens."""

    def __init__(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float().reshape(-1, outputs.shape[-1])
        t = targets.detach().reshape(-1)
        keep = t != -100
        nll = F.cross_entropy(logits, t, ignore_index=-100, reduction="sum")
        correct = ((logits.argmax(-1) == t) & keep).sum()
        self._sums += torch.stack([nll.double(), correct.double(), keep.sum().double()])

    def compute(self) -> dict[str, float]:
        nll, correct, n = self._sums.tolist()
        n = max(n, 1.0)
        return {"loss": nll / n, "perplexity": math.exp(min(nll / n, 50.0)), "accuracy": correct / n}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("language_model")
class LanguageModelTask(TaskAdapter):
    """Next-token prediction with cross-entropy over the non-ignored positions."""

    primary_metric = "loss"
    higher_is_better = False

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float().reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def metrics(self) -> LanguageModelMetrics:
        return LanguageModelMetrics()

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        nxt = outputs.detach().float()[:, -1].softmax(-1)
        p, i = nxt.max(-1)
        return [{"next_token": int(a), "probability": float(b)} for a, b in zip(i.tolist(), p.tolist())]

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        ids = inputs[0]
        return (ids.shape[0], ids.shape[1], num_classes) if num_classes else None


class ChunkedSequences(torch.utils.data.Dataset):
    """Long sequences served chunk by chunk, in order, for :class:`ChunkedLanguageModelTask`.

    Item ``i`` is one batch ``(ids (B, t), targets (B, t), chunk_index)``: the sequences ``[b·B, (b+1)·B)`` are cut
    into ``ceil(T / block_size)`` chunks and served consecutively (``chunk_index`` 0 starts new sequences). Use it
    through ``DataLoader(ds, batch_size=None)`` (the engine iterates a DataLoader as given, so the chunk order is
    kept). Incomplete batches of sequences are dropped.

    Args:
        ids: token ids (N, T) int64.
        targets: next-token targets (N, T) (-100 = ignored); default ``ids`` shifted left by one (last -100).
        block_size: chunk length (official ``--block_size``; T / block_size is ``--clean_period``).
        batch_size: sequences per batch.
    """

    def __init__(self, ids: Tensor, targets: Tensor | None = None, *, block_size: int, batch_size: int) -> None:
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"ChunkedSequences: expected ids (N, T) int64, got {tuple(ids.shape)} {ids.dtype}")
        if targets is None:
            targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], 1)
        if targets.shape != ids.shape:
            raise ValueError(f"ChunkedSequences: targets {tuple(targets.shape)} must match ids {tuple(ids.shape)}")
        if block_size < 1 or batch_size < 1 or ids.shape[0] < batch_size:
            raise ValueError(f"ChunkedSequences: need block_size >= 1 and 1 <= batch_size <= N={ids.shape[0]}, "
                             f"got {block_size}, {batch_size}")
        self.ids, self.targets, self.block_size, self.batch_size = ids, targets, block_size, batch_size
        self.chunks_per_seq = math.ceil(ids.shape[1] / block_size)
        self.n_batches = ids.shape[0] // batch_size

    def __len__(self) -> int:
        return self.n_batches * self.chunks_per_seq

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        b, c = divmod(i, self.chunks_per_seq)
        rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
        cols = slice(c * self.block_size, (c + 1) * self.block_size)
        return self.ids[rows, cols], self.targets[rows, cols], c


@register_task("chunked_language_model")
class ChunkedLanguageModelTask(LanguageModelTask):
    """Chunk-by-chunk LM training with a carried, *detached* KV cache (LoCoCo ``train.py``; truncated BPTT).

    Batches ``(ids (B, t), targets (B, t), chunk_index)`` come from :class:`ChunkedSequences`. The adapter keeps
    the caches returned by the model for the previous chunk and passes them to the next (``model(ids,
    caches=..., return_caches=True)``, e.g. :class:`~convatlas.models.sequence.tiny_lm.TinyLM`); ``chunk_index
    == 0`` starts from an empty cache. The stored caches are detached, so every chunk's loss is back-propagated
    and stepped on its own (one optimizer step per chunk, as the official loop does): gradients reach the cache
    compressor only through the compression made inside the current chunk, the autograd graph never spans two
    chunks, and memory stays constant whatever the sequence length. Training and evaluation keep separate
    caches. Loss: token cross-entropy over the chunk's non-ignored targets (0 for a chunk without targets).
    """

    def __init__(self) -> None:
        self._caches: dict[bool, Any] = {True: None, False: None}

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        ids, targets, chunk_index = batch
        return (ids, int(chunk_index)), targets

    def forward(self, model: torch.nn.Module, inputs: tuple) -> Tensor:
        ids, chunk_index = inputs
        key = bool(model.training)
        caches = None if chunk_index == 0 else self._caches[key]
        if chunk_index != 0 and caches is None:
            raise ValueError(f"ChunkedLanguageModelTask: chunk {chunk_index} arrived without the earlier chunks of "
                             "its sequences (serve ChunkedSequences in order, DataLoader(batch_size=None))")
        logits, new = model(ids, caches=caches, return_caches=True)
        self._caches[key] = [c.detach() for c in new]  # truncation point: no graph across chunks
        if torch.is_grad_enabled() and model.training:
            # Chunks before the first compression do not use the compressors. Single process: their gradients stay
            # None and AdamW skips them (as in the official loop); only if the loss depends on no trained parameter
            # at all (compressors-only training) one parameter is anchored with weight 0 so backward() is valid.
            # DDP needs every parameter in every graph: then all trainable parameters are anchored (zero grads).
            params = [p for p in model.parameters() if p.requires_grad]
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            if params and (distributed or not logits.requires_grad):
                anchors = params if distributed else params[:1]
                logits = logits + 0.0 * torch.stack([p.reshape(-1)[0].float() for p in anchors]).sum()
        return logits

    def reset(self) -> None:
        """Forget the carried caches."""
        self._caches = {True: None, False: None}

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        flat = targets.reshape(-1)
        logits = outputs.float().reshape(-1, outputs.shape[-1])
        if outputs.device.type != "meta" and not bool((flat != -100).any()):
            return logits.sum() * 0.0  # no target in this chunk: zero loss, graph kept
        return F.cross_entropy(logits, flat, ignore_index=-100)
