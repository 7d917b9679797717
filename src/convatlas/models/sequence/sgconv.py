"""SGConv sequence classifiers for the Long Range Arena (paper slug: ``sgconv``, arXiv 2210.09298).

S4-style residual backbone (official code: ctlllll/SGConv, S4 training framework, branch ``preview``,
``configs/experiment/lra/gconv-lra-*.yaml``)::

    encoder (Embedding for token ids, 1x1 linear for (B, C, L) signals)
    N x [ (prenorm) norm -> GConv -> dropout -> + residual -> (postnorm) norm ]
    decoder: mean ('pool') or last position -> linear classifier
    (retrieval: both documents are encoded; [a, b, a-b, a*b] -> Linear 4H -> H -> act -> classes, S4's
    RetrievalHead(nli=True))

Inputs: token ids ``(B, L)`` (ListOps, Text, and ``(B, 2, L)`` for Retrieval) or signals ``(B, C, L)`` (Image,
Pathfinder, Path-X: grayscale pixels as a sequence, C = 1). Output: logits ``(B, num_classes)``.

Card facts: per-GConv-layer parameter counts of the official module are reproduced exactly (36,224 ListOps;
144,128 Text; 138,496 Retrieval; 722,944 Image incl. 512 frozen ``decay``; 230,144 Pathfinder; 393,984 Path-X;
tested). The paper reports no whole-model parameter counts or MACs; the registered ``Reported`` carries the LRA
test accuracies (paper Table 1). Vocabulary sizes of the LRA token tasks (ListOps 18, Text 135, Retrieval 98) and
l_max of ListOps (2048) / Retrieval (4000) are dataset-dependent and unconfirmed (the configs read them from the
dataset); they only change the embedding size. FFT work (the convolution itself) is not counted in MACs by the
FLOP counter (only the linear layers are).

Card audit against the official code (ctlllll/SGConv ``preview`` configs + the S4 framework it runs in):
- ``norm: layer`` in a transposed S4 model is the scalar ``TransposedLN`` (2 parameters, no epsilon), not a
  per-channel LayerNorm: used by the Image config (``norm="layer"``; ``"layernorm"`` keeps the per-channel form).
- Decoders: ``pool`` (mean) for ListOps/Text/Image/Path-X and the retrieval features, ``last`` for Pathfinder
  (``gconv-lra-pathfinder.yaml``); the text/ListOps pipelines pool over true lengths (``lengths=``). Retrieval
  uses S4's ``RetrievalHead(nli=True)`` (Linear 4H -> H, act, Linear H -> K); its activation in the ``aan``
  pipeline config is unconfirmed (relu, the code default).
- Optimiser: GConv kernels carry ``_optim={"lr": 0.001}`` only, and the framework builds those groups with the
  optimizer defaults, so kernels are weight-decayed (the card's "no weight decay" holds only for biases and
  TransposedLN scalars); see :func:`sgconv_param_groups`.
- All options of the framework ``gconv.py`` exist on :class:`~convatlas.layers.sgconv.GConv` (cat/sum,
  randn/cos, nearest, learnable(+fixed), decay init, expand, trunc, hankel, channels, linear); ``hyper_act`` is
  not: the official forward never applies it and its doubled channels break the output linear.
- The paper's Speech Commands, language-model and SGConv-ConvNeXt (ImageNet) variants have no code or config in
  the official repository and no recorded figures (card: unconfirmed); they are not built.
- Checkpoints: :func:`convert_official_sgconv` (Lightning keys) and
  :func:`~convatlas.layers.sgconv.convert_official_gconv` (standalone layer) load strictly; no official
  checkpoint is published.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers.sgconv import GConv, TransposedScalarLN, convert_official_gconv
from convatlas.layers.validation import _tracing
from convatlas.registry import Reported, register_model

__all__ = ["SGConvClassifier", "SGConvBlock", "sgconv_param_groups", "convert_official_sgconv"]

_SRC = "SGConv paper Table 1 (LRA test accuracy); configs from ctlllll/SGConv preview branch"


def _make_norm(kind: str, d_model: int) -> nn.Module:
    """S4-framework ``Normalization`` of a transposed model: ``batch`` -> BatchNorm1d; ``layer`` -> the official
    scalar ``TransposedLN`` (2 parameters); ``layernorm`` -> per-channel ``nn.LayerNorm`` (not in the official code;
    kept as an option)."""
    if kind == "batch":
        return nn.BatchNorm1d(d_model)
    if kind == "layer":
        return TransposedScalarLN()
    if kind == "layernorm":
        return nn.LayerNorm(d_model)
    raise ValueError(f"SGConv: norm must be 'batch', 'layer' or 'layernorm', got {kind!r}")


def _apply_norm(norm: nn.Module, x: Tensor) -> Tensor:
    if isinstance(norm, nn.LayerNorm):
        return norm(x.transpose(1, 2)).transpose(1, 2)
    return norm(x)


class SGConvBlock(nn.Module):
    """Residual block ``x + dropout(GConv(norm(x)))`` (prenorm) or ``norm(x + dropout(GConv(x)))``; ``(B, H, L)``."""

    def __init__(self, d_model: int, *, norm: str = "batch", prenorm: bool = False, dropout: float = 0.0,
                 **gconv_kwargs: Any) -> None:
        super().__init__()
        self.prenorm, self.norm_kind = prenorm, norm
        self.norm = _make_norm(norm, d_model)
        self.conv = GConv(d_model, dropout=dropout, **gconv_kwargs)
        self.dropout_p = float(dropout)

    def _norm(self, x: Tensor) -> Tensor:
        return _apply_norm(self.norm, x)

    def forward(self, x: Tensor) -> Tensor:
        z = self._norm(x) if self.prenorm else x
        z, _ = self.conv(z)
        if self.training and self.dropout_p > 0:  # tied over length (S4 DropoutNd)
            z = z * (torch.rand(z.shape[0], z.shape[1], 1, device=z.device) >= self.dropout_p).to(z.dtype)
            z = z / (1 - self.dropout_p)
        x = x + z
        return x if self.prenorm else self._norm(x)


class SGConvClassifier(nn.Module):
    """SGConv classifier: token ids ``(B, L)`` / ``(B, 2, L)`` (retrieval) or signals ``(B, C, L)`` -> ``(B, K)``.

    Args:
        num_classes: classifier outputs.
        vocab_size: token-id input with this vocabulary (Embedding); ``None`` for float ``(B, in_chans, L)`` input.
        in_chans: channels of float inputs.
        d_model: width ``H``; n_layers: number of residual GConv blocks.
        l_max: maximum length (number of kernel scales).
        kernel_dim / mode / decay_min / decay_max / init_scale / bidirectional: GConv kernel (see ``GConv``).
        norm: ``batch``, ``layer`` (official scalar TransposedLN) or ``layernorm`` (per-channel); prenorm: pre- or
            post-normalisation.
        dropout: dropout in the blocks (tied over length).
        pool: ``mean`` or ``last``.
        retrieval: dual-encoder retrieval head (input ``(B, 2, L)`` token ids), S4's ``RetrievalHead(nli=True)``.
        retrieval_act: its activation (S4 code default ``relu``; the ``aan`` pipeline config is not in the
            searchable official sources, so its value is unconfirmed).
        kernel_lr: learning rate recorded on kernel parameters (see :func:`sgconv_param_groups`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        vocab_size: int | None = None,
        in_chans: int = 1,
        d_model: int = 128,
        n_layers: int = 4,
        l_max: int = 1024,
        kernel_dim: int = 32,
        mode: str = "cat_randn",
        decay_min: float = 2.0,
        decay_max: float = 2.0,
        init_scale: int = 0,
        bidirectional: bool = True,
        norm: str = "batch",
        prenorm: bool = False,
        dropout: float = 0.0,
        pool: str = "mean",
        retrieval: bool = False,
        retrieval_act: str = "relu",
        kernel_lr: float = 0.001,
    ) -> None:
        super().__init__()
        if retrieval_act not in ("relu", "gelu"):
            raise ValueError(f"SGConvClassifier: retrieval_act must be 'relu' or 'gelu', got {retrieval_act!r}")
        self.retrieval_act = retrieval_act
        if pool not in ("mean", "last"):
            raise ValueError(f"SGConvClassifier: pool must be 'mean' or 'last', got {pool!r}")
        if retrieval and vocab_size is None:
            raise ValueError("SGConvClassifier: retrieval needs token inputs (vocab_size)")
        self.num_classes, self.vocab_size, self.in_chans = num_classes, vocab_size, in_chans
        self.d_model, self.pool, self.retrieval, self.l_max = d_model, pool, retrieval, l_max
        self.num_features = d_model
        if vocab_size is not None:
            self.encoder: nn.Module = nn.Embedding(vocab_size, d_model)
        else:
            self.encoder = nn.Conv1d(in_chans, d_model, 1)
        self.blocks = nn.ModuleList(
            SGConvBlock(
                d_model, norm=norm, prenorm=prenorm, dropout=dropout, l_max=l_max, kernel_dim=kernel_dim,
                bidirectional=bidirectional, mode=mode, decay_min=decay_min, decay_max=decay_max,
                init_scale=init_scale, kernel_lr=kernel_lr,
            )
            for _ in range(n_layers)
        )
        # final norm after pre-norm blocks (S4 SequenceModel), same kind as the blocks'
        self.norm: nn.Module = _make_norm(norm, d_model) if prenorm else nn.Identity()
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        h = self.d_model
        if self.retrieval:  # S4 RetrievalHead(nli=True): [a, b, a-b, a*b] -> Linear(4H, H) -> act -> Linear(H, K)
            act = nn.GELU() if self.retrieval_act == "gelu" else nn.ReLU()
            return nn.Sequential(nn.Linear(4 * h, h), act, nn.Linear(h, num_classes))
        return nn.Linear(h, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    def _check(self, x: object) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}: expected a tensor, got {type(x).__name__}")
        if self.vocab_size is not None:
            layout = "(B, 2, L) token ids" if self.retrieval else "(B, L) token ids"
            ndim = 3 if self.retrieval else 2
            if x.ndim != ndim or (self.retrieval and x.shape[1] != 2):
                raise ValueError(f"{name}: expected {layout}, got shape {tuple(x.shape)}")
            if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ValueError(f"{name}: expected integer token ids {layout}, got dtype {x.dtype}")
            if (
                x.device.type != "meta"
                and not _tracing()
                and x.numel()
                and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size)
            ):
                raise ValueError(
                    f"{name}: token ids must be in [0, {self.vocab_size}), got range [{int(x.min())}, {int(x.max())}]"
                )
        else:
            from convatlas.layers.validation import check_input

            check_input(name, x, ndim=3, channels=self.in_chans, layout=f"(B, {self.in_chans}, L)")

    def forward_features(self, x: Tensor) -> Tensor:
        """Encoded sequence ``(B', H, L)`` (B' = 2B for retrieval: both documents stacked)."""
        if self.vocab_size is not None:
            if self.retrieval:
                x = torch.cat([x[:, 0], x[:, 1]], 0)
            x = self.encoder(x.long()).transpose(1, 2)
        else:
            x = self.encoder(x)
        for blk in self.blocks:
            x = blk(x)
        return _apply_norm(self.norm, x)

    def forward_head(self, x: Tensor, pre_logits: bool = False, lengths: Tensor | None = None) -> Tensor:
        """Pool ``(B', H, L)`` -> logits. ``lengths`` (B,) (or (B, 2) for retrieval): true lengths of padded
        sequences; pooling then covers only the first ``lengths`` positions ('last': position ``lengths − 1``),
        the S4 SequenceDecoder's ``use_lengths: true`` of the LRA text/ListOps/retrieval pipelines."""
        if lengths is None:
            x = x.mean(-1) if self.pool == "mean" else x[..., -1]
        else:
            n = lengths.reshape(-1) if not self.retrieval else torch.cat([lengths[:, 0], lengths[:, 1]])
            n = n.to(device=x.device, dtype=torch.long).clamp(1, x.shape[-1])
            if self.pool == "mean":
                keep = torch.arange(x.shape[-1], device=x.device)[None] < n[:, None]
                x = (x * keep[:, None].to(x.dtype)).sum(-1) / n[:, None].to(x.dtype)
            else:
                x = x.gather(-1, (n - 1).view(-1, 1, 1).expand(x.shape[0], x.shape[1], 1))[..., 0]
        if self.retrieval:
            a, b = x.chunk(2, 0)
            x = torch.cat([a, b, a - b, a * b], -1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x``: ``(B, L)`` / ``(B, 2, L)`` token ids or ``(B, C, L)`` signals; optional ``lengths`` of padded
        sequences (see :meth:`forward_head`). Returns logits ``(B, num_classes)``."""
        self._check(x)
        if lengths is not None:
            want = (x.shape[0], 2) if self.retrieval else (x.shape[0],)
            if not isinstance(lengths, Tensor) or tuple(lengths.shape) != want:
                got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
                raise ValueError(f"SGConvClassifier: expected lengths of shape {want}, got {got}")
        return self.forward_head(self.forward_features(x), lengths=lengths)


def sgconv_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups honouring each parameter's ``_optim`` dict as the official S4 framework's
    ``configure_optimizers`` does (``{"params": ..., **optimizer_defaults, **_optim}``): kernels lr 0.001 with the
    default weight decay (GConv sets only ``lr``), output-linear biases and TransposedLN scalars without weight
    decay; everything else (BatchNorm/embedding weights included) gets ``lr`` / ``weight_decay``."""
    groups: dict[tuple, dict[str, Any]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = {"lr": lr, "weight_decay": weight_decay, **getattr(p, "_optim", {})}
        key = tuple(sorted(hp.items()))
        groups.setdefault(key, {**hp, "params": []})["params"].append(p)
    return list(groups.values())


# official S4-framework key -> ours (regex, ``re.Match.expand`` template); see :func:`convert_official_sgconv`
_OFFICIAL_SGCONV_KEYS: tuple[tuple[str, str], ...] = (
    (r"encoder\.\d+\.(weight|bias)", r"encoder.\1"),
    (r"model\.layers\.(\d+)\.layer\.(.+)", r"blocks.\1.conv.\2"),
    (r"model\.layers\.(\d+)\.norm\.norm\.(.+)", r"blocks.\1.norm.\2"),
    (r"model\.norm\.norm\.(.+)", r"norm.\1"),
    (r"decoder\.\d+\.output_transform\.(weight|bias)", r"head.\1"),
    (r"decoder\.\d+\.retrieval\.classifier\.(\d+)\.(weight|bias)", r"head.\1.\2"),
)


def convert_official_sgconv(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official SGConv LRA checkpoint (S4 framework ``SequenceLightningModule``, ``ctlllll/SGConv`` branch
    ``preview``) -> :class:`SGConvClassifier` keys; loads with ``strict=True``. A Lightning ``{"state_dict": ...}``
    wrapper is unwrapped.

    Official layout (S4 ``train.py``/``SequenceModel``/``SequenceResidualBlock``, encoders/decoders in
    ``src/tasks``) -> ours:

    - ``encoder.0.weight`` (H, C) + ``encoder.0.bias`` (``encoder: linear`` on (B, L, C)) -> ``encoder.weight``
      (H, C, 1) + ``encoder.bias`` (our 1x1 Conv1d on (B, C, L)); ``encoder.0.weight`` (V, H) without bias
      (``encoder: embedding``) -> ``encoder.weight``;
    - ``model.layers.{i}.layer.*`` (GConv) -> ``blocks.{i}.conv.*`` (see :func:`convert_official_gconv`);
    - ``model.layers.{i}.norm.norm.*`` (BatchNorm1d weight/bias/running stats, or scalar TransposedLN ``m``/``s``)
      -> ``blocks.{i}.norm.*``; ``model.norm.norm.*`` (final norm of pre-norm models) -> ``norm.*``;
    - ``decoder.0.output_transform.{weight, bias}`` (SequenceDecoder) -> ``head.*``;
      ``decoder.0.retrieval.classifier.{0, 2}.*`` (RetrievalDecoder, nli) -> ``head.{0, 2}.*``.

    The ``encoder.N`` / ``decoder.N`` index is whatever the PassthroughSequential gave (0 when the task adds no
    module); any index is accepted. Unknown keys are kept, so a strict load names them.
    """
    import re

    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    out: dict[str, Tensor] = {}
    linear_encoder = any(re.fullmatch(r"encoder\.\d+\.bias", k) for k in state_dict)
    for key, v in state_dict.items():
        for pattern, template in _OFFICIAL_SGCONV_KEYS:
            m = re.fullmatch(pattern, key)
            if m:
                new = m.expand(template)
                if new == "encoder.weight" and linear_encoder:  # Linear (H, C) -> our 1x1 Conv1d (H, C, 1)
                    v = v[..., None]
                out[new] = v
                break
        else:
            out[key] = v
    for i in sorted({int(k.split(".")[1]) for k in out if k.startswith("blocks.")}):
        out = convert_official_gconv(out, prefix=f"blocks.{i}.conv.")
    return out


def _tokens(vocab: int, length: int, pair: bool = False, small_length: int | None = None):
    """``example_inputs`` for token-id models: ``(B, L)`` (or ``(B, 2, L)``) ids; ``small`` uses ``small_length``."""

    def make(batch_size: int, small: bool) -> tuple[Tensor]:
        n = small_length if (small and small_length) else length
        shape = (batch_size, 2, n) if pair else (batch_size, n)
        return (torch.randint(0, vocab, shape),)

    return make


# name: (config, input_size, num_classes, metric, vocab or None)
_LRA = {
    "listops": (dict(n_layers=8, d_model=128, norm="batch", prenorm=False, kernel_dim=1, mode="cat_randn",
                     decay_min=2, decay_max=2, l_max=2048, vocab_size=18, dropout=0.0), 2048, 10, 61.45),
    "text": (dict(n_layers=6, d_model=256, norm="batch", prenorm=True, kernel_dim=2, mode="cat_randn",
                  decay_min=2, decay_max=2, l_max=4096, vocab_size=135, dropout=0.0), 4096, 2, 89.20),
    "retrieval": (dict(n_layers=6, d_model=256, norm="batch", prenorm=True, kernel_dim=1, mode="cat_randn",
                       decay_min=2, decay_max=2, l_max=4000, vocab_size=98, retrieval=True, dropout=0.0), 4000, 2,
                  91.11),
    "image": (dict(n_layers=6, d_model=512, norm="layer", prenorm=False, kernel_dim=32,
                   mode="cat_randn_learnable_fixed", decay_min=1, decay_max=1, l_max=1024, dropout=0.2), 1024, 10,
              87.97),
    "pathfinder": (dict(n_layers=6, d_model=256, norm="batch", prenorm=True, kernel_dim=32, mode="cat_randn",
                        decay_min=2, decay_max=2, l_max=1024, dropout=0.2, pool="last"), 1024, 2, 95.46),
    "pathx": (dict(n_layers=6, d_model=256, norm="batch", prenorm=True, kernel_dim=64, mode="cat_cos",
                   decay_min=1, decay_max=3, init_scale=1, l_max=16384, dropout=0.0), 16384, 2, 97.83),
}


def _build(task: str, **kwargs: Any) -> SGConvClassifier:
    cfg, _, num_classes, _ = _LRA[task]
    return SGConvClassifier(**{"num_classes": num_classes, **cfg, **kwargs})


def _entry(task: str) -> dict[str, Any]:
    cfg, length, num_classes, acc = _LRA[task]
    vocab = cfg.get("vocab_size")
    entry: dict[str, Any] = dict(
        paper="sgconv",
        task="classification",
        num_classes=num_classes,
        mean=(0.0,),
        std=(1.0,),
        # token models: resolution None makes complexity counting use example_inputs (token ids)
        reported=Reported(
            resolution=None if vocab is not None else (1, length), metrics={f"lra_{task}_acc": acc}, source=_SRC
        ),
        tags=("sequence", "lra"),
    )
    if vocab is not None:
        entry["input_size"] = (2, length) if cfg.get("retrieval") else (length,)
        entry["example_inputs"] = _tokens(vocab, length, bool(cfg.get("retrieval")), small_length=256)
    else:
        entry["input_size"] = (1, length)
        entry["test_input_size"] = (1, 256)
    return entry


@register_model(**_entry("listops"))
def sgconv_lra_listops(**kwargs: Any) -> SGConvClassifier:
    """LRA ListOps: 8 layers, d_model 128, BatchNorm post-norm, kernel_dim 1 (12 scales, 2048 taps)."""
    return _build("listops", **kwargs)


@register_model(**_entry("text"))
def sgconv_lra_text(**kwargs: Any) -> SGConvClassifier:
    """LRA Text (IMDB bytes): 6 layers, d_model 256, BatchNorm pre-norm, kernel_dim 2, l_max 4096."""
    return _build("text", **kwargs)


@register_model(**_entry("retrieval"))
def sgconv_lra_retrieval(**kwargs: Any) -> SGConvClassifier:
    """LRA Retrieval (AAN): dual encoder, 6 layers, d_model 256, kernel_dim 1, input ``(B, 2, 4000)`` token ids."""
    return _build("retrieval", **kwargs)


@register_model(**_entry("image"))
def sgconv_lra_image(**kwargs: Any) -> SGConvClassifier:
    """LRA Image (grayscale CIFAR-10 as 1024 steps): 6 layers, d_model 512, scalar LayerNorm post-norm (official
    ``norm: layer`` of a transposed S4 model), 'learnable_fixed' decay."""
    return _build("image", **kwargs)


@register_model(**_entry("pathfinder"))
def sgconv_lra_pathfinder(**kwargs: Any) -> SGConvClassifier:
    """LRA Pathfinder 32x32: 6 layers, d_model 256, kernel_dim 32, dropout 0.2."""
    return _build("pathfinder", **kwargs)


@register_model(**_entry("pathx"))
def sgconv_lra_pathx(**kwargs: Any) -> SGConvClassifier:
    """LRA Path-X 128x128 (16,384 steps): 6 layers, d_model 256, kernel_dim 64, 'cat_cos', init_scale 1."""
    return _build("pathx", **kwargs)


@register_model(
    paper="sgconv",
    task="classification",
    input_size=(64,),
    num_classes=2,
    example_inputs=_tokens(8, 64),
    test_only=True,
    mean=(0.0,),
    std=(1.0,),
    tags=("sequence",),
)
def test_sgconv(**kwargs: Any) -> SGConvClassifier:
    """Tiny token-input SGConv for the generic tests: 2 layers, d_model 16, kernel_dim 4, l_max 64."""
    cfg = dict(num_classes=2, vocab_size=8, d_model=16, n_layers=2, l_max=64, kernel_dim=4, norm="layer",
               bidirectional=True)
    return SGConvClassifier(**{**cfg, **kwargs})


# Official per-GConv-layer parameter counts (card table, measured by instantiating gconv_standalone.GConv).
_OFFICIAL_LAYER_PARAMS = {
    "listops": 36_224, "text": 144_128, "retrieval": 138_496, "image": 722_944, "pathfinder": 230_144,
    "pathx": 393_984,
}


@register_identity("sgconv", "per-layer GConv params == official gconv_standalone.GConv counts (6 LRA configs)")
def _identity_layer_params() -> str:
    got = {}
    for task, expect in _OFFICIAL_LAYER_PARAMS.items():
        with torch.device("meta"):
            model = _build(task, n_layers=1)
        got[task] = sum(p.numel() for p in model.blocks[0].conv.parameters())
        assert got[task] == expect, f"{task}: {got[task]} != official {expect}"
    return "exact: " + ", ".join(f"{t} {n:,}" for t, n in got.items())
