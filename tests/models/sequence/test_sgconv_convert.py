"""SGConv official-checkpoint converters (card sgconv): synthetic state dicts with the official names and shapes
(S4-framework Lightning checkpoint of ctlllll/SGConv ``preview``, and the standalone ``gconv_standalone.GConv``)
load strictly, and the converted model reproduces a functional re-implementation of the official forward that
reads the official keys directly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convatlas.layers.sgconv import GConv, convert_official_gconv, sgconv_num_scales
from convatlas.models.sequence.sgconv import SGConvClassifier, convert_official_sgconv


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


H, L_MAX, KD = 8, 64, 4


def _official_gconv(g: torch.Generator, h: int, bidir: bool, mode: str, pre: str, *, initialised: bool = True,
                    postact: str | None = "glu", ln: bool = False, weight_norm: bool = False,
                    channels: int = 1) -> dict:
    c = channels * (2 if bidir else 1)
    s = sgconv_num_scales(L_MAX, KD)
    sd = {pre + "D": torch.randn(channels, h, generator=g)}
    for j in range(s):
        sd[pre + f"kernel_list.{j}"] = torch.randn(c, h, KD, generator=g)
    if "learnable" in mode:
        sd[pre + "decay"] = torch.rand(h, generator=g) + 0.5
        sd[pre + "multiplier"] = torch.tensor(1.0)
    else:
        sd[pre + "multiplier"] = torch.linspace(1.5, 2.5, h).view(1, -1, 1)
    sd[pre + "kernel_norm"] = (torch.rand(c, h, 1, generator=g) + 0.5) if initialised else torch.ones(h, 1)
    sd[pre + "kernel_norm_initialized"] = torch.tensor(initialised)
    out = 2 * h if postact == "glu" else h
    lin = pre + ("output_linear.0." if postact == "glu" or weight_norm else "output_linear.")
    if weight_norm:
        sd[lin + "weight_g"] = torch.rand(out, 1, generator=g) + 0.5
        sd[lin + "weight_v"] = torch.randn(out, channels * h, generator=g)
    else:
        sd[lin + "weight"] = torch.randn(out, channels * h, generator=g) / math.sqrt(h)
    sd[lin + "bias"] = torch.randn(out, generator=g) * 0.1
    if ln:
        sd[pre + "norm.norm.m"] = torch.randn(1, generator=g) * 0.1
        sd[pre + "norm.norm.s"] = torch.rand(1, generator=g) + 0.5
    return sd


def _ref_gconv(sd: dict, pre: str, u: torch.Tensor, bidir: bool, mode: str, postact="glu", ln=False) -> torch.Tensor:
    """Official GConv forward (S4-framework gconv.py), transposed (B, H, L), eval mode."""
    seq = u.shape[-1]
    s = sum(1 for k in sd if k.startswith(pre + "kernel_list."))
    mult = sd[pre + "multiplier"]
    pieces = [F.interpolate(sd[pre + f"kernel_list.{i}"], scale_factor=2 ** max(0, i - 1), mode="linear")
              * mult ** (s - i - 1) for i in range(s)]
    k = torch.cat(pieces, -1)
    if "learnable" in mode:
        k = k * torch.exp(-sd[pre + "decay"].view(1, -1, 1) * torch.log(torch.arange(k.shape[-1]) + 1.0).view(1, 1, -1))
    kn = sd[pre + "kernel_norm"] if bool(sd[pre + "kernel_norm_initialized"]) else k.norm(dim=-1, keepdim=True)
    k = k[..., :seq] if k.shape[-1] > seq else F.pad(k, (0, seq - k.shape[-1]))
    k = k / kn
    c = sd[pre + "D"].shape[0]
    if bidir:
        k = F.pad(k[:c], (0, seq)) + F.pad(k[c:].flip(-1), (seq, 0))
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * seq)[:, None] * torch.fft.rfft(k, n=2 * seq), n=2 * seq)[..., :seq]
    y = (y + u[:, None] * sd[pre + "D"][..., None]).flatten(1, 2)  # (B, C, H, L) -> (B, C·H, L)
    y = F.gelu(y)
    if ln:
        std, mean = torch.std_mean(y, dim=1, unbiased=False, keepdim=True)
        y = sd[pre + "norm.norm.s"] / std * (y - mean + sd[pre + "norm.norm.m"])
    if pre + "output_linear.0.weight_v" in sd:
        v = sd[pre + "output_linear.0.weight_v"]
        w, b = sd[pre + "output_linear.0.weight_g"] * v / v.norm(dim=1, keepdim=True), sd[pre + "output_linear.0.bias"]
    else:
        lin = pre + ("output_linear.0." if postact == "glu" else "output_linear.")
        w, b = sd[lin + "weight"], sd[lin + "bias"]
    y = torch.einsum("bul,vu->bvl", y, w) + b[:, None]
    return F.glu(y, dim=1) if postact == "glu" else y


def _official_norm(g, kind: str, pre: str) -> dict:
    if kind == "batch":
        return {pre + "weight": torch.rand(H, generator=g) + 0.5, pre + "bias": torch.randn(H, generator=g) * 0.1,
                pre + "running_mean": torch.randn(H, generator=g) * 0.1,
                pre + "running_var": torch.rand(H, generator=g) + 0.5, pre + "num_batches_tracked": torch.tensor(7)}
    return {pre + "m": torch.randn(1, generator=g) * 0.1, pre + "s": torch.rand(1, generator=g) + 0.5}


def _ref_norm(sd: dict, kind: str, pre: str, x: torch.Tensor) -> torch.Tensor:
    if kind == "batch":
        return F.batch_norm(x, sd[pre + "running_mean"], sd[pre + "running_var"], sd[pre + "weight"],
                            sd[pre + "bias"], False, 0.0, 1e-5)
    std, mean = torch.std_mean(x, dim=1, unbiased=False, keepdim=True)
    return sd[pre + "s"] / std * (x - mean + sd[pre + "m"])


CASES = {  # name: (our kwargs, encoder kind, decoder kind)
    "tokens_batch_postnorm": (dict(vocab_size=11, norm="batch", prenorm=False, mode="cat_randn", pool="mean"),
                              "embedding", "sequence"),
    "image_layer_learnable": (dict(in_chans=1, norm="layer", prenorm=False, mode="cat_randn_learnable_fixed",
                                   pool="mean", dropout=0.2), "linear", "sequence"),
    "pathfinder_prenorm_last": (dict(in_chans=1, norm="batch", prenorm=True, mode="cat_randn", pool="last"),
                                "linear", "sequence"),
    "retrieval_prenorm": (dict(vocab_size=11, norm="batch", prenorm=True, mode="cat_randn", pool="mean",
                               retrieval=True), "embedding", "retrieval"),
}


def _official_model_sd(g, cfg, enc, dec, n_layers=2, n_classes=3) -> dict:
    sd = {}
    if enc == "embedding":
        sd["encoder.0.weight"] = torch.randn(cfg["vocab_size"], H, generator=g)
    else:
        sd["encoder.0.weight"] = torch.randn(H, 1, generator=g)
        sd["encoder.0.bias"] = torch.randn(H, generator=g) * 0.1
    for i in range(n_layers):
        sd.update(_official_gconv(g, H, True, cfg["mode"], f"model.layers.{i}.layer."))
        sd.update(_official_norm(g, cfg["norm"], f"model.layers.{i}.norm.norm."))
    if cfg["prenorm"]:
        sd.update(_official_norm(g, cfg["norm"], "model.norm.norm."))
    if dec == "sequence":
        sd["decoder.0.output_transform.weight"] = torch.randn(n_classes, H, generator=g)
        sd["decoder.0.output_transform.bias"] = torch.randn(n_classes, generator=g)
    else:
        sd["decoder.0.retrieval.classifier.0.weight"] = torch.randn(H, 4 * H, generator=g) / 4
        sd["decoder.0.retrieval.classifier.0.bias"] = torch.randn(H, generator=g) * 0.1
        sd["decoder.0.retrieval.classifier.2.weight"] = torch.randn(n_classes, H, generator=g)
        sd["decoder.0.retrieval.classifier.2.bias"] = torch.randn(n_classes, generator=g)
    return sd


def _ref_model(sd, cfg, enc, x, n_layers=2) -> torch.Tensor:
    if cfg.get("retrieval"):
        x = torch.cat([x[:, 0], x[:, 1]], 0)
    h = F.embedding(x, sd["encoder.0.weight"]) if enc == "embedding" else \
        x.transpose(1, 2) @ sd["encoder.0.weight"].t() + sd["encoder.0.bias"]
    h = h.transpose(1, 2)  # transposed S4 model: (B, H, L)
    for i in range(n_layers):
        y = _ref_norm(sd, cfg["norm"], f"model.layers.{i}.norm.norm.", h) if cfg["prenorm"] else h
        h = h + _ref_gconv(sd, f"model.layers.{i}.layer.", y, True, cfg["mode"])
        if not cfg["prenorm"]:
            h = _ref_norm(sd, cfg["norm"], f"model.layers.{i}.norm.norm.", h)
    if cfg["prenorm"]:
        h = _ref_norm(sd, cfg["norm"], "model.norm.norm.", h)
    feat = h.mean(-1) if cfg["pool"] == "mean" else h[..., -1]
    if cfg.get("retrieval"):
        a, b = feat.chunk(2, 0)
        z = torch.cat([a, b, a - b, a * b], -1)
        z = F.relu(z @ sd["decoder.0.retrieval.classifier.0.weight"].t() + sd["decoder.0.retrieval.classifier.0.bias"])
        return z @ sd["decoder.0.retrieval.classifier.2.weight"].t() + sd["decoder.0.retrieval.classifier.2.bias"]
    return feat @ sd["decoder.0.output_transform.weight"].t() + sd["decoder.0.output_transform.bias"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_lightning_checkpoint_loads_strictly_and_matches(case):
    cfg, enc, dec = CASES[case]
    g = torch.Generator().manual_seed(0)
    official = _official_model_sd(g, cfg, enc, dec)
    model = SGConvClassifier(num_classes=3, d_model=H, n_layers=2, l_max=L_MAX, kernel_dim=KD, **cfg).eval()
    model.load_state_dict(convert_official_sgconv({"state_dict": official}), strict=True)
    seq = 50
    if enc == "embedding":
        x = torch.randint(0, cfg["vocab_size"], (2, 2, seq) if cfg.get("retrieval") else (2, seq))
    else:
        x = torch.randn(2, 1, seq)
    with torch.no_grad():
        out, ref = model(x), _ref_model(official, cfg, enc, x)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("postact, ln, weight_norm, initialised, channels, bidir", [
    ("glu", False, False, True, 1, False), (None, True, False, False, 1, False), ("glu", True, True, True, 1, True),
    ("glu", True, False, True, 2, True), ("glu", False, False, False, 3, False)])
def test_official_standalone_gconv_variants(postact, ln, weight_norm, initialised, channels, bidir):
    """gconv_standalone.GConv layouts: GLU or no postact (``output_linear.weight``), ``ln`` (scalar TransposedLN
    ``norm.norm.m/s``), ``weight_norm`` (``weight_g``/``weight_v`` folded), a never-run layer (``kernel_norm``
    (H, 1), set on our first forward exactly as the official one does), ``channels`` > 1 ("heads")."""
    g = torch.Generator().manual_seed(1)
    official = _official_gconv(g, H, bidir, "cat_randn", "", initialised=initialised, postact=postact, ln=ln,
                               weight_norm=weight_norm, channels=channels)
    layer = GConv(H, L_MAX, kernel_dim=KD, bidirectional=bidir, postact=postact, ln=ln, channels=channels).eval()
    layer.load_state_dict(convert_official_gconv(official), strict=True)
    u = torch.randn(2, H, 40)
    with torch.no_grad():
        y, _ = layer(u)
    torch.testing.assert_close(y, _ref_gconv(official, "", u, bidir, "cat_randn", postact, ln), atol=1e-4, rtol=1e-4)
    assert bool(layer.kernel_norm_initialized) and layer.kernel_norm.shape == (channels * (2 if bidir else 1), H, 1)


def test_unknown_official_keys_fail_strict_load():
    g = torch.Generator().manual_seed(2)
    cfg, enc, dec = CASES["tokens_batch_postnorm"]
    official = _official_model_sd(g, cfg, enc, dec)
    official["model.layers.0.layer.eigvecs"] = torch.zeros(4, 64)  # 'hankel' mode buffer: not supported
    model = SGConvClassifier(num_classes=3, d_model=H, n_layers=2, l_max=L_MAX, kernel_dim=KD, **cfg)
    with pytest.raises(RuntimeError, match="eigvecs"):
        model.load_state_dict(convert_official_sgconv(official), strict=True)
