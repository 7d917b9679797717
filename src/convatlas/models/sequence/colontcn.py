"""ColonTCN: per-frame temporal segmentation of long videos (card: colontcn, arXiv 2502.03430).

Frame features (B, C_in, T) (ResNet-50 GAP features, C_in = 2048, in the paper) -> 1x1 Conv1d + ReLU to 64 channels
-> 13 :class:`~convatlas.layers.tcn.TemporalBlock` (two weight-normalised k=7 convs each, dilation 2**i, dropout
0.5, residual) -> 1x1 Conv1d -> logits (B, T, num_classes). Acausal (offline segmentation), any T.

Card facts:
- Parameters of the official configuration (ymls/training/colontcn_{4,5}fold): 880,521 = 131,136 + 13 x 57,600 +
  585, reproduced exactly (weight_norm g is (64, 1, 1) per conv: 64 values).
- Receptive field 1 + 2·6·(2**13 − 1) = 98,293 frames.
- MACs are not reported by the paper; measured: 877,120 MACs per frame (0.2631 GMACs at T = 300).
- Two official configurations: the 5-fold ymls use 13 blocks (``colontcn``, RF 98,293 frames, 2000 epochs), the
  4-fold ymls (``ymls/training/colontcn_4fold/*.yml``) 12 blocks (``colontcn_4fold``: 131,136 + 12 x 57,600 + 585
  = 822,921 parameters, RF 1 + 2·6·(2**12 − 1) = 49,141 frames, 1500 epochs); everything else is identical.
- Classes (official ``str_to_idx`` of the ymls, :data:`REAL_COLON_CLASSES`): outside 0, insertion 1, caecum 2,
  ileum 3, ascending 4, transverse 5, descending 6, sigmoid 7, rectum 8 ("n.a." / "uncertain" frames are ignored,
  label 999 officially, ``-100`` here); the withdrawal phase is labels 2..8.
- Training data (official ymls): 1x features sub-sampled with factor 5 (:func:`temporal_subsample`) plus the 5
  augmented feature sets at factor 1; validation on 1x features sub-sampled by 5; batch 6.
- Frame features (official data/feature_extraction, checked): every 5th frame, resized to 224x224, ImageNet
  mean/std, ResNet-50 (ImageNet) GAP features (:func:`encode_frames`); the 5 augmented sets repeat the encoding
  with a per-frame ``RandomChoice`` of [ColorJitter (brightness/contrast/saturation factors drawn once from
  U(0.9, 1.1), i.e. jitter ranges of about [0, 2]; hue from U(0, 0.1)), vertical flip p 0.5, horizontal flip
  p 0.5] (torchvision transforms; torchvision is not a convatlas dependency).
- Official training loss and schedule: class-weighted CE only (the configured TMSE is not used by training.py;
  :meth:`~convatlas.tasks.sequence_labelling.SequenceLabellingTask.official_colontcn`), AdamW + per-iteration
  linear warm-up/decay (:func:`colontcn_optimizer`). Folds: :mod:`convatlas.engine.kfold` ships the official
  REAL-Colon 4-fold / 5-fold lists.
- Official checkpoint keys (``conv_first_layer``, ``stage1.network.{i}.conv{1,2}.weight_{g,v}``,
  ``stage1.last_layer``) load through :func:`convert_official_colontcn`.
Training (losses CE + TMSE, metrics, dual k-fold protocol): :mod:`convatlas.tasks.sequence_labelling`,
:mod:`convatlas.engine.kfold`, synthetic stand-in data :mod:`convatlas.data.synthetic_procedure`.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers import check_input
from convatlas.layers.tcn import TemporalConvNet, convert_legacy_weight_norm, tcn_receptive_field
from convatlas.registry import Reported, register_model

__all__ = [
    "ColonTCN", "convert_official_colontcn", "temporal_subsample", "encode_frames", "REAL_COLON_CLASSES",
    "colontcn_optimizer",
]

#: Frame classes of the REAL-Colon temporal annotations (official ``str_to_idx``; the ymls spell "ceacum").
REAL_COLON_CLASSES: tuple[str, ...] = (
    "outside", "insertion", "caecum", "ileum", "ascending", "transverse", "descending", "sigmoid", "rectum",
)


class ColonTCN(nn.Module):
    """ColonTCN: (B, input_size, T) frame features [+ mask (B, T)] -> per-frame logits (B, T, num_classes).

    Args:
        input_size: feature size per frame (2048 for ResNet-50 features).
        num_classes: per-frame classes (9 in REAL-Colon).
        width: channels of every temporal block (``list_of_features_sizes`` = [64] * 13).
        num_blocks: temporal blocks (dilations 1 .. 2**(num_blocks-1)).
        kernel_size: temporal kernel size (7).
        num_of_convs: convs per block (2).
        dropout: dropout inside the blocks (0.5).
    """

    def __init__(
        self,
        input_size: int = 2048,
        num_classes: int = 9,
        width: int = 64,
        num_blocks: int = 13,
        kernel_size: int = 7,
        num_of_convs: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_classes = num_classes
        self.conv_first_layer = nn.Conv1d(input_size, width, 1)
        self.stage1 = TemporalConvNet(
            width, (width,) * num_blocks, num_classes, kernel_size, num_of_convs, dropout, True, "conv"
        )
        self.receptive_field = tcn_receptive_field(kernel_size, num_blocks, num_of_convs)

    def reparameterize(self) -> None:
        """Fold weight normalisation into plain conv weights (inference form; same outputs, no g/v recompute)."""
        from torch.nn.utils import parametrize

        for m in self.modules():
            if isinstance(m, nn.Conv1d) and parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_input(type(self).__name__, x, ndim=3, channels=self.input_size, layout="(B, C, T) frame features")
        if mask is not None and (mask.shape != (x.shape[0], x.shape[2])):
            raise ValueError(
                f"ColonTCN: expected mask of shape (B, T) = {(x.shape[0], x.shape[2])}, got {tuple(mask.shape)}"
            )
        h = torch.relu(self.conv_first_layer(x))
        return self.stage1(h, mask)


def temporal_subsample(
    features: Tensor, labels: Tensor, factor: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Official temporal augmentation of one video: features (C, T), labels (T,) -> a sub-sampled copy.

    With probability 2/3 every frame is kept independently with probability 1/factor (random sub-sampling);
    otherwise a random start in [0, factor) and every ``factor``-th frame (regular sub-sampling).
    """
    if factor < 1:
        raise ValueError(f"temporal_subsample: factor must be >= 1, got {factor}")
    t = labels.shape[0]
    if factor == 1 or t == 0:
        return features, labels
    if torch.rand((), generator=generator) < 2 / 3:
        keep = torch.nonzero(torch.rand(t, generator=generator) < 1.0 / factor).flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long)
    else:
        start = int(torch.randint(0, factor, (), generator=generator))
        keep = torch.arange(min(start, t - 1), t, factor)
    return features[:, keep], labels[keep]


def colontcn_optimizer(
    model: nn.Module,
    steps_per_epoch: int,
    epochs: int = 2000,
    lr: float = 5e-4,
    weight_decay: float = 0.01,
    warmup_epochs: int = 5,
    warmup_lr: float = 5e-7,
    min_lr_rate: float = 0.01,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """Official ColonTCN optimiser and per-iteration schedule (src/optimizers/builders.py, "linear"; checked).

    AdamW(lr, weight_decay); the learning rate rises linearly from ``warmup_lr`` to ``lr`` over
    ``warmup_epochs * steps_per_epoch`` iterations, then falls linearly to ``min_lr_rate * lr`` at the last
    iteration (the official scheduler hard-codes ``lr_min_rate=0.01``; the ymls' ``min_lr`` 1e-6 is not used by
    it). Call ``scheduler.step()`` after every iteration. Epochs: 2000 (5-fold ymls), 1500 (4-fold ymls).
    """
    if steps_per_epoch < 1 or epochs < 1 or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"colontcn_optimizer: need steps_per_epoch >= 1 and 0 <= warmup_epochs < epochs, got "
                         f"{steps_per_epoch}, {warmup_epochs}, {epochs}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total, warm = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def factor(t: int) -> float:
        if t < warm:
            return (warmup_lr + t * (lr - warmup_lr) / warm) / lr
        return 1.0 - (1.0 - min_lr_rate) * min(t - warm, total - warm) / (total - warm)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def encode_frames(frames: Tensor, encoder: nn.Module, batch_size: int = 256) -> Tensor:
    """Frame features for ColonTCN: frames (T, 3, H, W) -> (D, T) with a frozen image encoder mapping
    (N, 3, H, W) -> (N, D) (the paper: ImageNet ResNet-50 with ``fc = Identity``, D = 2048; e.g.
    ``torchvision.models.resnet50(weights=...)``; torchvision is not a convatlas dependency)."""
    if frames.ndim != 4:
        raise ValueError(f"encode_frames: expected frames (T, 3, H, W), got shape {tuple(frames.shape)}")
    was_training = encoder.training
    encoder.eval()
    feats = [encoder(frames[i : i + batch_size]).flatten(1) for i in range(0, frames.shape[0], batch_size)]
    encoder.train(was_training)
    return torch.cat(feats, 0).T.contiguous()


def convert_official_colontcn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an official ColonTCN ``model_state_dict`` (legacy weight-norm keys, ``conv1``/``conv2``, optional
    ``tcn.`` prefix and ``linear`` head name) to this implementation's keys."""
    out = {}
    for k, v in convert_legacy_weight_norm(state_dict).items():
        k = k.replace("tcn.", "").replace(".linear.", ".last_layer.")
        k = re.sub(r"\.conv(\d+)\.", lambda m: f".convs.{int(m.group(1)) - 1}.", k)
        out[k] = v
    return out


_IN = (2048, 300)
_CARD = "card colontcn: exact count of the official ColonTCN config (ymls/training/colontcn_5fold, 13 blocks)"


@register_model(
    paper="colontcn",
    task="sequence_labelling",
    input_size=_IN,
    test_input_size=(2048, 64),
    num_classes=9,
    reported=Reported(params=880_521, params_exact=True, resolution=_IN, source=_CARD),
)
def colontcn(**kwargs) -> ColonTCN:
    """ColonTCN as trained on REAL-Colon (official 5-fold config): 2048-d features, 13 blocks of width 64, 9
    classes (:data:`REAL_COLON_CLASSES`)."""
    return ColonTCN(**kwargs)


@register_model(
    paper="colontcn",
    task="sequence_labelling",
    input_size=_IN,
    test_input_size=(2048, 64),
    num_classes=9,
    reported=Reported(
        params=822_921, resolution=_IN,
        source="card colontcn: official 4-fold config (ymls/training/colontcn_4fold, 12 blocks); count from the "
               "card's per-layer breakdown 131,136 + 12 x 57,600 + 585",
    ),
)
def colontcn_4fold(**kwargs) -> ColonTCN:
    """ColonTCN of the official 4-fold (cross-center) experiments: 12 temporal blocks (RF 49,141 frames)."""
    return ColonTCN(**{"num_blocks": 12, **kwargs})


@register_model(
    paper="colontcn",
    task="sequence_labelling",
    input_size=(64, 300),
    num_classes=9,
    reported=Reported(source="card colontcn learning check: reduced 6-block ColonTCN on 64-d features"),
)
def colontcn_reduced(**kwargs) -> ColonTCN:
    """The card's reduced ColonTCN (6 blocks, 64-d frame features) used for the synthetic learning check."""
    return ColonTCN(**{"input_size": 64, "num_blocks": 6, **kwargs})


@register_model(paper="colontcn", task="sequence_labelling", input_size=(16, 48), num_classes=9, test_only=True)
def test_colontcn(**kwargs) -> ColonTCN:
    """Tiny ColonTCN for the generic tests (16-d features, 3 blocks of width 8, dropout 0)."""
    return ColonTCN(**{"input_size": 16, "width": 8, "num_blocks": 3, "dropout": 0.0, **kwargs})


@register_identity("colontcn", "weight norm: effective weight = g * v / ||v|| (norm over all dims but 0)")
def _weight_norm_identity() -> str:
    torch.manual_seed(0)
    m = test_colontcn()
    conv = m.stage1.network[0].convs[0]
    g = conv.parametrizations.weight.original0
    v = conv.parametrizations.weight.original1
    with torch.no_grad():
        g.mul_(torch.rand_like(g) + 0.5)
    ref = g * v / v.norm(dim=(1, 2), keepdim=True)
    err = (conv.weight - ref).abs().max().item()
    assert err < 1e-6, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("colontcn", "receptive field and acausality: frame t affects outputs exactly within ±RF/2")
def _receptive_field_identity() -> str:
    torch.manual_seed(0)
    m = ColonTCN(input_size=4, width=4, num_blocks=3, kernel_size=3, dropout=0.0).eval().double()
    rf = m.receptive_field  # 1 + 2*2*7 = 29
    t_len, t = 80, 40
    x = torch.randn(1, 4, t_len, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, t] += 1.0
    with torch.no_grad():
        d = (m(x2) - m(x)).abs().sum(-1)[0]
    changed = torch.nonzero(d > 0).flatten()
    lo, hi = int(changed.min()), int(changed.max())
    half = (rf - 1) // 2
    assert lo >= t - half and hi <= t + half, f"changes at [{lo}, {hi}], allowed [{t - half}, {t + half}]"
    assert d[t - 1] > 0 and d[t + 1] > 0, "expected an acausal model (frame t+1 changes output t)"
    return f"RF {rf} frames; outputs changed on [{lo}, {hi}] for t={t} (bound ±{half})"


@register_identity("colontcn", "shift equivariance (eval): shifting the features shifts the logits")
def _shift_identity() -> str:
    torch.manual_seed(0)
    m = ColonTCN(input_size=4, width=4, num_blocks=3, kernel_size=3, dropout=0.0).eval().double()
    x = torch.randn(1, 4, 120, dtype=torch.float64)
    s = 7
    with torch.no_grad():
        y, ys = m(x), m(torch.roll(x, s, dims=-1))
    half = (m.receptive_field - 1) // 2
    inner = slice(half + s, 120 - half)
    err = (ys[:, inner] - y[:, half : 120 - half - s]).abs().max().item()
    assert err < 1e-10, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e} away from the sequence ends"
