"""LoCoCo: convolutional KV-cache compression dropped into a decoder-only LM (card: lococo, arXiv 2406.05317).

Registered variants:
- ``lococo_llama2_7b_compressor`` / ``..._m128``: one layer's compressor as used with Llama-2-7B (head_dim 128,
  kernel 21, hh_keep_rate 0.5, mem_size 512 / 128): ``model(k, v, scores) -> cat(K', V', -1)`` of shape
  (B, h, mem_size, 256). Card parameter counts (computed from the official shapes): 1,376,513 and 344,129 per
  layer (x32 layers: 44,048,416 / 11,012,128), reproduced exactly.
- ``lococo_tiny_lm``: the card's learning-check LM (2 layers, 4 heads, d 128, byte vocabulary) with one
  compressor per layer, chunked prefill (block 128) and a 128-slot cache; ``test_lococo`` is its tiny version.

Building blocks: :mod:`convatlas.layers.kv_conv_compressor` (compressor, H2O-style ``drop_tokens``,
``keep_recent``), :mod:`convatlas.models.sequence.tiny_lm` (LM with the cache policy),
:mod:`convatlas.data.synthetic_retrieval` (long-context retrieval task). ``benchmarks/lococo_cache.py`` trains the
LM, then the compressors ("inference mode", :func:`lococo_train`), and compares LoCoCo with keep-recent and H2O at
equal cache size.

Training (official ``train.py``): :func:`lococo_train` reads every sequence chunk by chunk with the KV cache carried
across chunks and detached at chunk boundaries, one optimizer step per chunk, through the engine
(:class:`~convatlas.tasks.language_model.ChunkedLanguageModelTask`); modes ``inference`` (LM frozen; compressors +
embedding/norms trained, README lr scales 1000 / 5) and ``post_training`` (+ LoRA r 8 / alpha 16 on q, k, v, o and
linear RoPE scaling, the 4K -> 32K context-extension recipe). Card figures not reproducible on a CPU (Llama-2-7B on
RedPajama): 3,482 tokens into a 128-slot cache, +0.2791 accuracy over baselines, 4K -> 32K extension; the
mechanism is checked at small scale instead (tests/models/sequence/test_lococo_chunked_training.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers.kv_conv_compressor import KVCache, KVConvCompressor, drop_tokens
from convatlas.models.sequence.tiny_lm import TinyLM
from convatlas.registry import Reported, register_model

__all__ = ["LoCoCoCompressor", "convert_official_lococo", "lococo_param_groups", "lococo_train", "LOCOCO_RECIPES"]


class LoCoCoCompressor(nn.Module):
    """One attention layer's LoCoCo compressor as a model: keys/values (B, h, S, d) and scores (B, h, S) ->
    cat(K', V', -1) (B, h, min(S, mem_size), 2·d). Official module name: ``memory_saver``."""

    def __init__(self, head_dim: int = 128, mem_size: int = 512, kernel_size: int = 21, **kwargs) -> None:
        super().__init__()
        self.memory_saver = KVConvCompressor(head_dim, mem_size, kernel_size, **kwargs)

    def forward(self, k: Tensor, v: Tensor, scores: Tensor) -> Tensor:
        d = self.memory_saver.head_dim
        for name, t in (("k", k), ("v", v)):
            if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[-1] != d or not t.is_floating_point():
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"LoCoCoCompressor: expected {name} of shape (B, h, S, {d}) float, got {got}")
        if k.shape != v.shape or not isinstance(scores, Tensor) or scores.shape != k.shape[:3]:
            raise ValueError(
                f"LoCoCoCompressor: expected v like k {tuple(k.shape)} and scores (B, h, S) = {tuple(k.shape[:3])}, "
                f"got v {tuple(v.shape)}, scores {tuple(scores.shape) if isinstance(scores, Tensor) else scores}"
            )
        out = self.memory_saver(KVCache(k, v, scores, k.shape[2]))
        return torch.cat([out.k, out.v], dim=-1)


def lococo_param_groups(
    model: TinyLM,
    lr: float = 5e-5,
    memory_lr_scale: float = 1.0,
    norm_lr_scale: float = 1.0,
    lora_lr_scale: float = 1.0,
    weight_decay: float = 0.0,
    compressors_only: bool = False,
) -> list[dict]:
    """AdamW parameter groups of the official ``train.py`` (and the matching ``requires_grad`` flags, in place).

    Trainable: compressor weights (group ``memory``, lr·``memory_lr_scale``, README 1000; their biases in
    ``memory_nd`` without weight decay), every parameter whose name contains ``embed`` or ``norm`` (group
    ``norm``, lr·``norm_lr_scale``, README 5), LoRA adapters if present (group ``lora``, lr·``lora_lr_scale``).
    Every other parameter is frozen (the base LM is only adapted through LoRA). ``compressors_only=True`` freezes
    the embedding/norm group too (the compressors alone, the card's strictest reading of "inference mode")."""
    comp = {id(p) for p in model.compressor_parameters()}
    groups: dict[str, list] = {"memory_nd": [], "memory": [], "norm": [], "lora": []}
    for name, p in model.named_parameters():
        if id(p) in comp:
            key = "memory_nd" if name.endswith("bias") else "memory"
        elif "lora_" in name:
            key = "lora"
        elif ("embed" in name or "norm" in name) and not compressors_only:
            key = "norm"
        else:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        groups[key].append(p)
    scale = {"memory_nd": memory_lr_scale, "memory": memory_lr_scale, "norm": norm_lr_scale, "lora": lora_lr_scale}
    return [{"params": ps, "lr": lr * scale[k], "weight_decay": 0.0 if k == "memory_nd" else weight_decay,
             "name": k} for k, ps in groups.items() if ps]


def lococo_train(
    model: TinyLM,
    train_ids: Tensor,
    train_targets: Tensor | None = None,
    *,
    mode: str = "inference",
    block_size: int | None = None,
    batch_size: int = 1,
    epochs: int = 1,
    max_steps: int | None = None,
    lr: float = 5e-5,
    memory_lr_scale: float = 1000.0,
    norm_lr_scale: float = 5.0,
    lora_lr_scale: float = 1.0,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    rope_scale: float | None = None,
    compressors_only: bool = False,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    accum_steps: int = 1,
    grad_clip: float | None = None,
    val_ids: Tensor | None = None,
    val_targets: Tensor | None = None,
    out_dir: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    callbacks: tuple = (),
):
    """LoCoCo's training procedure (official ``train.py``) run by the convatlas engine; returns the
    :class:`~convatlas.engine.trainer.Trainer` after ``fit()`` (``trainer.history`` holds the epoch records).

    Every sequence (N, T) is read in chunks of ``block_size`` tokens (T / block_size = ``--clean_period``); the
    KV cache is carried across chunks and stored detached, each chunk's LM loss is back-propagated and stepped on
    its own (optimizer step every ``accum_steps`` chunks): see
    :class:`~convatlas.tasks.language_model.ChunkedLanguageModelTask`. Trainable parameters follow
    :func:`lococo_param_groups` (compressors at lr·1000, embedding/norms at lr·5, README settings).

    Modes:
        ``"inference"``: the LM is frozen; compressors (+ embedding/norms) are trained ("dropped in").
        ``"post_training"``: context extension: additionally LoRA (r 8, alpha 16) on the attention projections
        (q, k, v, o: our fused ``qkv`` gets three independent adapters, ``proj`` one) and, if ``rope_scale`` is
        given, linear RoPE interpolation (official factor block_size · clean_period / max_position_embeddings).
        The adapters stay in the model (``merge_lora`` folds them, as the official script does at the end).

    Differences from the official script (documented, deliberate): the learning-rate schedule is the engine's
    warm-up + cosine (official: HF ``linear``); the loss of a chunk uses the targets given (default: next token
    over the whole sequence, so the first token of a chunk is predicted from the cached context; HF's loss shifts
    inside each chunk and skips that target).
    """
    from torch.utils.data import DataLoader

    from convatlas.engine.trainer import TrainConfig, Trainer
    from convatlas.layers.lora import apply_lora
    from convatlas.tasks.language_model import ChunkedLanguageModelTask, ChunkedSequences

    if mode not in ("inference", "post_training"):
        raise ValueError(f"lococo_train: mode must be 'inference' or 'post_training', got {mode!r}")
    if model.cache_method != "conv":
        raise ValueError(f"lococo_train: the model must use cache_method='conv' (LoCoCo), got {model.cache_method!r}")
    bs = block_size or model.block_size
    if not bs:
        raise ValueError("lococo_train: give block_size (or build the model with one)")
    if mode == "post_training":
        if not any(n.endswith("lora_A") for n, _ in model.named_parameters()):
            apply_lora(model, ("qkv", "proj"), r=lora_r, alpha=lora_alpha, splits={"qkv": 3})
        if rope_scale is not None:
            model.set_rope_scale(rope_scale)
    train = DataLoader(ChunkedSequences(train_ids, train_targets, block_size=bs, batch_size=batch_size),
                       batch_size=None)
    val = None
    if val_ids is not None:
        val = DataLoader(ChunkedSequences(val_ids, val_targets, block_size=bs, batch_size=batch_size),
                         batch_size=None)
    groups = lococo_param_groups(model, lr, memory_lr_scale, norm_lr_scale, lora_lr_scale, weight_decay,
                                 compressors_only=compressors_only)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size * accum_steps, lr=lr, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, min_lr=0.0, accum_steps=accum_steps, grad_clip=grad_clip,
                      seed=seed, device=device, progress=False, max_steps=max_steps)
    trainer = Trainer(model, ChunkedLanguageModelTask(), train, val, cfg, out_dir=out_dir,
                      model_name=getattr(model, "pretrained_cfg", {}).get("architecture", "lococo_tiny_lm"),
                      callbacks=callbacks, param_groups=groups)  # official: AdamW over the LoCoCo groups
    trainer.fit()
    return trainer


# README commands (card table): the paper's two settings, as arguments of ``TinyLM``-style models / lococo_train.
# ``sequence_length`` = block_size x clean_period; optimizer steps 1000 at batch 1 x grad-accum 128 x 8 GPUs
# (accum_steps counts chunks, as the official accelerator.accumulate wraps every chunk). Linear RoPE scaling
# (``--rope_change``) is optional: factor = sequence_length / max_position_embeddings (4096 for Llama-2).
LOCOCO_RECIPES: dict[str, dict] = {
    "inference": dict(base_model="meta-llama/Llama-2-7b-hf", mode="inference", block_size=512, sequence_length=4096,
                      mem_size=512, kernel_size=21, n_convlayer=1, hh_keep_rate=0.5, local_len=0, hidden_act="relu",
                      normalizer_init=0.5, lr=5e-5, memory_lr_scale=1000.0, norm_lr_scale=5.0, batch_size=1,
                      accum_steps=128, max_steps=1000, data="togethercomputer/RedPajama-Data-1T-Sample"),
    "post_training": dict(base_model="meta-llama/Llama-2-7b-hf", mode="post_training", block_size=512,
                          sequence_length=8192, mem_size=512, kernel_size=21, n_convlayer=1, hh_keep_rate=0.5,
                          local_len=0, hidden_act="relu", normalizer_init=0.5, lr=5e-5, memory_lr_scale=1000.0,
                          norm_lr_scale=5.0, lora_r=8, lora_alpha=16.0, batch_size=1, accum_steps=128,
                          max_steps=1000, data="togethercomputer/RedPajama-Data-1T-Sample"),
}


def convert_official_lococo(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official per-layer keys ``model.layers.{i}.self_attn.memory_saver.{layers.0.weight,normalizer}`` ->
    ``compressors.{i}.{...}`` of :class:`TinyLM` (other keys are dropped: the official base model is Llama-2)."""
    out = {}
    for key, v in state_dict.items():
        if ".self_attn.memory_saver." in key:
            i = key.split("model.layers.")[1].split(".")[0]
            out[f"compressors.{i}." + key.split(".memory_saver.")[1]] = v
    return out


def _kv_inputs(head_dim: int, heads: int, seq: int):
    def make(batch_size: int, small: bool) -> tuple:
        s = seq if not small else seq
        k, v = torch.randn(batch_size, heads, s, head_dim), torch.randn(batch_size, heads, s, head_dim)
        return k, v, torch.rand(batch_size, heads, s)

    return make


def _ids_inputs(vocab: int, full: int, small_len: int):
    def make(batch_size: int, small: bool) -> tuple:
        return (torch.randint(0, vocab, (batch_size, small_len if small else full)),)

    return make


_CARD = "card lococo: Conv1d(256 -> M_c, k=21) + bias + normalizer, computed from the official shapes"


@register_model(
    paper="lococo",
    task="kv_compression",
    input_size=(32, 1024, 128),
    num_classes=None,
    example_inputs=_kv_inputs(128, 2, 1024),
    reported=Reported(params=1_376_513, params_exact=True, source=_CARD),
)
def lococo_llama2_7b_compressor(**kwargs) -> LoCoCoCompressor:
    """Compressor of one Llama-2-7B layer, mem_size 512 (README inference / post-training settings)."""
    return LoCoCoCompressor(**{"head_dim": 128, "mem_size": 512, "kernel_size": 21, **kwargs})


@register_model(
    paper="lococo",
    task="kv_compression",
    input_size=(32, 512, 128),
    num_classes=None,
    example_inputs=_kv_inputs(128, 2, 512),
    reported=Reported(params=344_129, params_exact=True, source=_CARD),
)
def lococo_llama2_7b_compressor_m128(**kwargs) -> LoCoCoCompressor:
    """Compressor of one Llama-2-7B layer, mem_size 128 (train.py default; the paper's "128-size cache")."""
    return LoCoCoCompressor(**{"head_dim": 128, "mem_size": 128, "kernel_size": 21, **kwargs})


@register_model(
    paper="lococo",
    task="language_model",
    input_size=(1024,),
    num_classes=256,
    example_inputs=_ids_inputs(256, 1024, 384),
    reported=Reported(source="card lococo learning-check LM (2 layers, 4 heads, d 128); no paper figure"),
)
def lococo_tiny_lm(**kwargs) -> TinyLM:
    """Byte-level tiny LM with LoCoCo compressors: 128-slot cache, 128-token chunks, kernel 21, buffer 16."""
    cfg = dict(vocab_size=256, dim=128, depth=2, heads=4, cache_method="conv", mem_size=128, block_size=128)
    return TinyLM(**{**cfg, **kwargs})


@register_model(
    paper="lococo",
    task="language_model",
    input_size=(32,),
    num_classes=64,
    test_only=True,
    example_inputs=_ids_inputs(64, 32, 32),
)
def test_lococo(**kwargs) -> TinyLM:
    """Tiny LoCoCo LM for the generic tests: 8-slot cache, 8-token chunks (compression happens within 32 tokens)."""
    cfg = dict(vocab_size=64, dim=32, depth=1, heads=2, mlp_ratio=2.0, cache_method="conv", mem_size=8,
               block_size=8, buffer=0, kernel_size=5)
    return TinyLM(**{**cfg, **kwargs})


# ---------------------------------------------------------------- identities (card "How to verify")
class _OneThread:
    """Tiny tensors: one intra-op thread while an identity runs (threads only add overhead; restored after)."""

    def __enter__(self) -> None:
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.n)


def _random_cache(s: int = 40, d: int = 8, h: int = 2, b: int = 2, dtype=torch.float64) -> KVCache:
    g = torch.Generator().manual_seed(0)
    return KVCache(torch.randn(b, h, s, d, generator=g, dtype=dtype), torch.randn(b, h, s, d, generator=g, dtype=dtype),
                   torch.rand(b, h, s, generator=g, dtype=dtype), s)


@register_identity("lococo", "row-stochastic mixing: a cache of identical keys/values compresses to that key")
def _identical_identity() -> str:
    torch.manual_seed(0)
    comp = KVConvCompressor(8, 16, 5).double()
    c = _random_cache()
    key = torch.randn(8, dtype=torch.float64)
    c = KVCache(key.expand_as(c.k).clone(), key.expand_as(c.v).clone(), c.scores, c.past_len)
    out = comp(c)
    w, _, w_conv = comp.mixing_weights(c.k[:, :, :32], c.v[:, :, :32], c.scores[:, :, :32])
    err = max((out.k - key).abs().max().item(), (out.v - key).abs().max().item(),
              (w.sum(-1) - 1).abs().max().item(), (w_conv.sum(-1) - 1).abs().max().item())
    assert out.k.shape == (2, 2, 16, 8) and err < 1e-12, f"max abs error {err:.2e}"
    return f"16 slots, max abs error {err:.2e} (row sums of W and W_conv = 1)"


@register_identity("lococo", "λ = 0: conv compressor equals hard top-score selection (drop_tokens)")
def _hard_identity() -> str:
    comp = KVConvCompressor(8, 16, 5, normalizer_init=0.0).double()
    c = _random_cache()
    out, ref = comp(c), drop_tokens(c, 16)
    # same set of kept tokens (order: heavy first, then selected rest) -> compare after sorting by score
    o, r = torch.sort(out.scores, -1).indices, torch.sort(ref.scores, -1).indices
    gk = lambda t, i: torch.gather(t, 2, i[..., None].expand(*i.shape, t.shape[-1]))  # noqa: E731
    err = max((gk(out.k, o) - gk(ref.k, r)).abs().max().item(), (gk(out.v, o) - gk(ref.v, r)).abs().max().item())
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("lococo", "no overflow (S <= mem_size + buffer): chunked cached LM equals plain attention")
def _equivalence_identity() -> str:
    torch.manual_seed(0)
    lm = TinyLM(64, dim=32, depth=2, heads=2, cache_method="conv", mem_size=32, block_size=8, buffer=16).double()
    ref = TinyLM(64, dim=32, depth=2, heads=2, cache_method="full", block_size=None).double()
    ref.load_state_dict(lm.state_dict(), strict=False)
    ids = torch.randint(0, 64, (2, 48))
    with _OneThread():
        err = (lm(ids) - ref(ids)).abs().max().item()
    assert err < 1e-10, f"max abs error {err:.2e}"
    return f"48 tokens in 8-token chunks vs one causal pass: max abs error {err:.2e}"


@register_identity("lococo", "constant memory: the cache size does not grow with the context length")
def _constant_memory_identity() -> str:
    torch.manual_seed(0)
    lm = test_lococo().eval()
    sizes = []
    with torch.no_grad(), _OneThread():
        for n in (32, 64, 128):
            lm(torch.randint(0, 64, (1, n)))
            sizes.append((lm.max_cache_len, sum(c.nbytes() for c in lm.last_caches)))
    assert len({s for s in sizes}) == 1, sizes
    return f"max cache length {sizes[0][0]} tokens ({sizes[0][1]} bytes) for contexts 32, 64, 128"


@register_identity("lococo", "official chunked training: cache detached at chunk boundaries, per-chunk graph constant")
def _truncation_identity() -> str:
    from convatlas.tasks.language_model import ChunkedLanguageModelTask, ChunkedSequences

    with _OneThread():
        torch.manual_seed(0)
        lm = test_lococo().train()
        task = ChunkedLanguageModelTask()
        ds = ChunkedSequences(torch.randint(0, 64, (2, 8 * 6)), block_size=8, batch_size=2)
        sizes = []
        for i in range(len(ds)):
            inputs, targets = task.split_batch(ds[i])
            loss = task.loss(task.forward(lm, inputs), targets)
            seen, stack = set(), [loss.grad_fn]
            while stack:
                f = stack.pop()
                if f is not None and f not in seen:
                    seen.add(f)
                    stack.extend(n for n, _ in f.next_functions)
            sizes.append(len(seen))
            loss.backward()
            assert all(c.k.grad_fn is None and not c.k.requires_grad for c in task._caches[True])
    assert len(set(sizes[3:])) == 1, sizes
    assert lm.compressors[0].normalizer.grad is not None
    return f"graph nodes per chunk {sizes} (constant once compressing), stored caches detached"
