"""PHC SEDnet: sound event detection with parameterised hypercomplex convolutions (card: phnn, arXiv 2110.04176,
official code eleGAN23/HyperNets ``sound-event-detection/SEDNet.py``, MIT).

The L3DAS21 Task-2 baseline (SELDnet "augmented", SED branch only) with its convolutions replaced by PHC layers:
a multichannel spectrogram (B, C, F, T) (C = 4/8/16: magnitudes of 1-2 Ambisonics microphones, x2 with phases)
goes through four conv blocks ``conv3x3 -> BN -> ReLU -> MaxPool(p_f, p_t) -> Dropout``, the pooled map is read
as a sequence over time (B, T/8, C_4 * F/128), a 3-layer bidirectional GRU and a 4-layer MLP give one score per
(label frame, output unit): (B, T/8, K). With the official preprocessing a 60 s clip is (C, 256, 4800) STFT
frames -> 600 label frames of 100 ms, K = 14 classes x 3 overlap slots = 42.

Card facts / decisions (official code read; no paper table of SED parameter counts was found, so the registered
counts are measured from the official layer shapes, as for the PHC image networks):
- ``pool_size = [[8,2],[8,2],[2,2],[1,1]]`` (frequency, time), ``cnn_filters = [64,128,256,512]``, GRU(1024, 256,
  3 layers, bidirectional, dropout 0.3), head Linear 512->1024->1024->1024->42 with ReLUs and one Dropout(0.3)
  before the last layer; BCE loss on sigmoid outputs, Adam lr 1e-5, batch 16 (README), 1000 epochs.
- ``PHMSednet_augmented(n)`` (``phmsednet_n{2,4,8,16}``): PHC convs, real-valued head; ``Full_PHMSednet_augmented``
  (n = 4): PHM layers for the first three head layers too; ``QSednet_augmented``: quaternion convs (with bias);
  ``Sednet_augmented``: real convs (with bias). n must divide the input channels (README: n matched to 4/8/16
  channels).
- The official PHC conv creates a bias it never adds (every conv is followed by BN); here PHC convs have none,
  so counts are the official ``sum(numel)`` minus 960 (= 64+128+256+512 unused biases). 8-channel input,
  K = 42: real 8,557,930, quaternion 7,393,258, PHC n=2/4/8 7,780,554 / 7,392,554 / 7,200,234 (official
  ``sum(numel)`` 7,781,514 / 7,393,514 / 7,201,194), full-PHM n=4 5,426,666. The GRU (4.33 M) and the head
  (2.67 M) dominate; the official ``count_parameters`` prints the CNN only: real 1,555,776, PHC n=2/4/8
  779,360 / 391,360 / 199,040 (incl. unused biases), i.e. the 1/n saving of the paper.
- The official model ends with ``nn.Sigmoid`` and trains with ``BCELoss``; here the model returns logits and the
  ``sound_event_detection`` task applies ``BCEWithLogits`` (numerically stable; same optimum). Use
  ``model.predict_proba(x)`` for probabilities.
- Module indices follow the official classes (``cnn.i.{0,1}``, ``rnn``, ``sed.{0,2,4,7}``);
  :func:`checkpoint_filter_fn` loads official state dicts (unused biases, quaternion components, PHM ``A``/``S``).
- The official reshape after the CNN needs ``time_dim`` at construction; here the label-frame count is read from
  the input, so any T divisible by the total time pooling works.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers.phc_conv import PHConv, PHMLinear
from convatlas.layers.validation import check_input
from convatlas.registry import Reported, register_model

__all__ = ["PHCSEDnet", "checkpoint_filter_fn", "sednet_param_count"]

_POOL = ((8, 2), (8, 2), (2, 2), (1, 1))
_FILTERS = (64, 128, 256, 512)


def _conv(algebra: str, n: int, cin: int, cout: int) -> nn.Module:
    if algebra == "real":
        return nn.Conv2d(cin, cout, 3, padding=1)  # official nn.Conv2d keeps its bias
    if algebra == "quaternion":
        return PHConv(4, cin, cout, 3, padding=1, algebra="quaternion", bias=True)  # QuaternionConv adds its bias
    return PHConv(n, cin, cout, 3, padding=1, bias=False)


class PHCSEDnet(nn.Module):
    """SEDnet with PHC convolutions: (B, in_chans, freq_dim, T) -> frame logits (B, T / prod(time pools), num_classes).

    Args:
        in_chans: spectrogram channels C (divisible by ``n`` for PHC layers, by 4 for quaternion layers).
        num_classes: output units per label frame (L3DAS21: 14 classes x 3 overlap slots = 42).
        freq_dim: frequency bins F (the GRU input size is ``cnn_filters[-1] * F / prod(freq pools)``).
        pool_size: per conv block (frequency pool, time pool).
        cnn_filters: conv widths.
        rnn_size / n_rnn: GRU hidden size (per direction) and layers (bidirectional).
        fc_size: width of the head MLP.
        dropout: dropout after every conv block, between GRU layers and before the last linear layer.
        n: hypercomplex dimension of the PHC layers.
        algebra: ``"learned"`` (PHC), ``"quaternion"`` (fixed Hamilton product, n = 4) or ``"real"``.
        phm_head: PHM layers (n) for the first three head layers (official ``Full_PHMSednet_augmented``).
    """

    def __init__(
        self,
        in_chans: int = 8,
        num_classes: int = 42,
        freq_dim: int = 256,
        pool_size: Sequence[Sequence[int]] = _POOL,
        cnn_filters: Sequence[int] = _FILTERS,
        rnn_size: int = 256,
        n_rnn: int = 3,
        fc_size: int = 1024,
        dropout: float = 0.3,
        n: int = 4,
        algebra: str = "learned",
        phm_head: bool = False,
    ) -> None:
        super().__init__()
        if algebra not in ("learned", "quaternion", "real"):
            raise ValueError(f"PHCSEDnet: algebra must be 'learned', 'quaternion' or 'real', got {algebra!r}")
        if len(pool_size) != len(cnn_filters):
            raise ValueError(f"PHCSEDnet: {len(pool_size)} pool sizes for {len(cnn_filters)} conv blocks")
        self.freq_pool = math.prod(p[0] for p in pool_size)
        self.time_pool = math.prod(p[1] for p in pool_size)
        if freq_dim % self.freq_pool:
            raise ValueError(
                f"PHCSEDnet: freq_dim {freq_dim} must be divisible by the frequency pooling {self.freq_pool}")
        self.in_chans, self.num_classes, self.freq_dim = in_chans, num_classes, freq_dim
        self.n, self.algebra = n, algebra
        self.phm_head = phm_head
        blocks, cin = [], in_chans
        for (pf, pt), cout in zip(pool_size, cnn_filters):
            blocks.append(nn.Sequential(
                _conv(algebra, n, cin, cout), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d((pf, pt)),
                nn.Dropout(dropout),
            ))
            cin = cout
        self.cnn = nn.Sequential(*blocks)
        rnn_in = cnn_filters[-1] * (freq_dim // self.freq_pool)
        self.rnn = nn.GRU(rnn_in, rnn_size, num_layers=n_rnn, batch_first=True, bidirectional=True,
                          dropout=dropout if n_rnn > 1 else 0.0)
        lin = (lambda i, o: PHMLinear(n, i, o)) if phm_head else nn.Linear
        self.sed = nn.Sequential(
            lin(2 * rnn_size, fc_size), nn.ReLU(), lin(fc_size, fc_size), nn.ReLU(), lin(fc_size, fc_size), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(fc_size, num_classes),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, F, T) -> GRU output (B, T', 2 * rnn_size)."""
        check_input(type(self).__name__, x, ndim=4, channels=self.in_chans, layout="(B, C, F, T) spectrogram")
        if x.shape[2] != self.freq_dim or x.shape[3] % self.time_pool:
            raise ValueError(
                f"{type(self).__name__}: expected (B, {self.in_chans}, F={self.freq_dim}, T) with T divisible by "
                f"{self.time_pool}, got shape {tuple(x.shape)}"
            )
        h = self.cnn(x)  # (B, C4, F', T')
        h = h.permute(0, 3, 1, 2).flatten(2)  # (B, T', C4 * F'): channel-major, as the official reshape
        if h.device.type == "meta":  # shape/MAC counting only: the GRU's T-step loop is slow on the meta device
            return _gru_meta(self.rnn, h)
        return self.rnn(h)[0]

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F, T) -> frame logits (B, T / time_pool, num_classes)."""
        return self.sed(self.forward_features(x))

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Per-frame event probabilities (the official model's sigmoid output), (B, T', num_classes)."""
        return torch.sigmoid(self.forward(x).float())


def _gru_meta(rnn: nn.GRU, x: Tensor) -> Tensor:
    """Meta-device stand-in for a batch-first (bi)GRU: the same output shape and the same matmul MACs
    (per step and direction: W_ih x_t and W_hh h_{t-1}, here batched over all steps), without the T-step loop."""
    b, t, _ = x.shape
    out = x
    for layer in range(rnn.num_layers):
        outs = []
        for sfx in ("", "_reverse")[: 1 + int(rnn.bidirectional)]:
            gi = out.reshape(b * t, -1) @ getattr(rnn, f"weight_ih_l{layer}{sfx}").T
            h = torch.empty(b * t, rnn.hidden_size, device=x.device, dtype=x.dtype)
            gh = h @ getattr(rnn, f"weight_hh_l{layer}{sfx}").T
            outs.append((gi + gh)[:, : rnn.hidden_size].reshape(b, t, rnn.hidden_size))
        out = torch.cat(outs, -1)
    return out


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: PHCSEDnet) -> dict[str, Tensor]:
    """Official ``SEDNet.py`` state dict -> ``model``'s layout (module indices already agree: ``cnn.i.{0,1}``,
    ``rnn.*``, ``sed.{0,2,4,7}``): the PHC convs' never-added ``bias`` is dropped, quaternion convs'
    ``r/i/j/k_weight`` (each (C_out/4, C_in/4, 3, 3)) become ``F`` (official ``F`` (n, C_out/n, C_in/n, 3, 3) is
    reshaped by ``PHConv`` on load), and the SED-folder ``PHMLinear``'s ``A``/``S`` become ``a``/``s``."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, PHConv)}
    phm = {n for n, m in model.named_modules() if isinstance(m, PHMLinear)}
    out: dict[str, Tensor] = {}
    quat: dict[str, dict[str, Tensor]] = {}
    for k, v in state_dict.items():
        mod, _, leaf = k.rpartition(".")
        if mod in convs:
            if leaf == "bias" and convs[mod].bias is None:
                continue
            if leaf in ("r_weight", "i_weight", "j_weight", "k_weight"):
                quat.setdefault(mod, {})[leaf[0]] = v
                continue
        if mod in phm:
            leaf = {"A": "a", "S": "s"}.get(leaf, leaf)
        out[f"{mod}.{leaf}"] = v
    for mod, parts in quat.items():
        out[f"{mod}.F"] = torch.stack([parts[c] for c in "rijk"]).reshape(convs[mod].F.shape)
    return out


def sednet_param_count(in_chans: int, n: int, algebra: str = "learned", phm_head: bool = False,
                       num_classes: int = 42, official: bool = False) -> int:
    """Closed-form parameter count of the official SEDnet "augmented" configuration, from its layer shapes.

    ``official=True`` adds the biases the official PHC conv creates but never uses (64+128+256+512 = 960).
    """
    total, cin = 0, in_chans
    for cout in _FILTERS:
        if algebra == "real":
            total += cout * cin * 9 + cout
        elif algebra == "quaternion":
            total += cout * cin * 9 // 4 + cout
        else:
            total += n**3 + cout * cin * 9 // n + (cout if official else 0)
        total += 2 * cout  # BN
        cin = cout
    h = 256
    for layer in range(3):
        i = 1024 if layer == 0 else 2 * h
        total += 2 * 3 * h * (i + h + 2)  # two directions x 3 gates (W_ih, W_hh, b_ih, b_hh)

    def lin(i: int, o: int) -> int:
        return n**3 + i * o // n + o if phm_head else i * o + o

    total += lin(512, 1024) + 2 * lin(1024, 1024) + 1024 * num_classes + num_classes
    return total


_SRC = ("card phnn: official HyperNets sound-event-detection/SEDNet.py layer shapes (L3DAS21 Task 2 defaults); "
        "PHC conv biases (created, never added) excluded")
_INPUT = (256, 4800)


# Parameter counts of the official configurations (K = 42), from the official layer shapes (``sednet_param_count``
# reproduces them in closed form; the tests check both against the built models).
_COUNTS = {
    "sednet_real_4ch": 8_555_626, "sednet_quat_4ch": 7_392_682, "phc_sednet_n2_4ch": 7_779_402,
    "phc_sednet_n4_4ch": 7_391_978,
    "sednet_real_8ch": 8_557_930, "sednet_quat_8ch": 7_393_258, "phc_sednet_n2_8ch": 7_780_554,
    "phc_sednet_n4_8ch": 7_392_554, "phc_sednet_n8_8ch": 7_200_234, "phc_sednet_full_n4_8ch": 5_426_666,
    "sednet_real_16ch": 8_562_538, "sednet_quat_16ch": 7_394_410, "phc_sednet_n2_16ch": 7_782_858,
    "phc_sednet_n4_16ch": 7_393_706, "phc_sednet_n8_16ch": 7_200_810, "phc_sednet_n16_16ch": 7_117_802,
}


def _register(name: str, doc: str, in_chans: int, **args: Any) -> None:

    def builder(**kw: Any) -> PHCSEDnet:
        return PHCSEDnet(**{"in_chans": in_chans, **args, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(
        builder, paper="phnn", name=name, task="sound_event_detection", input_size=(in_chans, *_INPUT),
        test_input_size=(in_chans, 256, 16), num_classes=42, mean=(0.0,), std=(1.0,),
        reported=Reported(params=_COUNTS[name], resolution=(in_chans, *_INPUT),
                          params_exact=True, source=_SRC),
        tags=("audio", "l3das21") + (("baseline",) if args.get("algebra", "learned") != "learned" else ()),
    )


for _c in (4, 8, 16):
    _register(f"sednet_real_{_c}ch", f"SEDnet, real-valued convs (official Sednet_augmented), {_c}-channel input.",
              _c, algebra="real")
    _register(f"sednet_quat_{_c}ch", f"SEDnet, quaternion convs (official QSednet_augmented), {_c}-channel input.",
              _c, algebra="quaternion")
    for _n in (2, 4, 8, 16):
        if _n <= _c:
            _register(f"phc_sednet_n{_n}_{_c}ch",
                      f"PHC SEDnet n={_n} (official PHMSednet_augmented), {_c}-channel input.",
                      _c, n=_n)
_register("phc_sednet_full_n4_8ch",
          "PHC SEDnet n=4 with PHM head layers (official Full_PHMSednet_augmented), 8 channels.",
          8, n=4, phm_head=True)


@register_model(paper="phnn", test_only=True, task="sound_event_detection", input_size=(4, 16, 32),
                test_input_size=(4, 16, 32), num_classes=3, mean=(0.0,), std=(1.0,))
def test_phnn_sednet(**kw: Any) -> PHCSEDnet:
    """Tiny PHC SEDnet (n = 4, 4 channels, 16 bins, widths 8/8/16/16, 1 GRU layer of 16) for the generic tests."""
    args = dict(in_chans=4, num_classes=3, freq_dim=16, pool_size=((2, 2), (2, 2), (2, 2), (2, 1)),
                cnn_filters=(8, 8, 16, 16), rnn_size=16, n_rnn=1, fc_size=16, dropout=0.0, n=4)
    args.update(kw)
    return PHCSEDnet(**args)
