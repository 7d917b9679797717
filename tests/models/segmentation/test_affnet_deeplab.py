"""AFFNet + DeepLabv3 segmentation (card: aff)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "classification"))
from test_affnet import n_params, official_affnet  # noqa: E402

from convatlas import create_model  # noqa: E402
from convatlas.analysis.complexity import measure_entry  # noqa: E402
from convatlas.models.segmentation.affnet_deeplab import AFFNetDeepLabV3, convert_official_affnet_deeplabv3  # noqa


def official_deeplabv3(mode: str, num_classes: int = 150, aspp: int = 256) -> dict[str, tuple]:
    """cvnets SegEncoderDecoder + DeepLabv3 head keys (official modules/aspp_block.py, heads/deeplabv3.py)."""
    enc = official_affnet(mode, num_classes=None)
    c5 = next(s[0] for k, s in reversed(list(enc.items())) if k.endswith("conv_proj.block.conv.weight"))
    sd = {"encoder." + k: s for k, s in enc.items()}
    p = "seg_head.aspp.aspp_layer."

    def conv(q: str, cout: int, cin: int, k: int) -> None:
        sd[q + "block.conv.weight"] = (cout, cin, k, k)
        for n in ("weight", "bias", "running_mean", "running_var"):
            sd[q + "block.norm." + n] = (cout,)
        sd[q + "block.norm.num_batches_tracked"] = ()

    conv(p + "convs.0.", aspp, c5, 1)
    for i in (1, 2, 3):
        conv(p + f"convs.{i}.", aspp, c5, 3)
    conv(p + "convs.4.aspp_pool.conv_1x1.", aspp, c5, 1)
    conv(p + "project.", aspp, 5 * aspp, 1)
    sd["seg_head.classifier.block.conv.weight"] = (num_classes, aspp, 1, 1)
    sd["seg_head.classifier.block.conv.bias"] = (num_classes,)
    return sd


@pytest.mark.parametrize("name,mode", [("affnet_et_deeplabv3", "xx_small"), ("affnet_t_deeplabv3", "x_small"),
                                       ("affnet_deeplabv3", "small")])
def test_params_official_layout_and_readme(name: str, mode: str) -> None:
    from convatlas.registry import get_entry

    c = measure_entry(name)
    assert c.params == n_params(official_deeplabv3(mode))
    r = get_entry(name).reported
    assert abs(c.params - r.params) / r.params <= r.params_tol
    if name != "affnet_deeplabv3":  # the documented +2.1% exception
        assert abs(c.params - r.params) / r.params <= 0.01


def test_official_checkpoint_converts_strictly() -> None:
    shapes = official_deeplabv3("xx_small", num_classes=21)
    with torch.device("meta"):
        model = AFFNetDeepLabV3("xx_small", num_classes=21)
        sd = {k: torch.empty(s, dtype=torch.long if k.endswith("tracked") else torch.float) for k, s in shapes.items()}
    res = model.load_state_dict(convert_official_affnet_deeplabv3({"state_dict": sd}), strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_forward_shapes_output_stride_and_bad_input() -> None:
    torch.manual_seed(0)
    m = create_model("test_aff_deeplabv3").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert m(x).shape == (2, 5, 64, 96)
        assert m.encoder.forward_features(x).shape[-2:] == (4, 6)  # output stride 16
    m8 = create_model("test_aff_deeplabv3", output_stride=8).eval()
    with torch.no_grad():
        assert m8.encoder.forward_features(x).shape[-2:] == (8, 12)
        assert m8(x).shape == (2, 5, 64, 96)
    assert m8.seg_head.aspp.convs[1][0].dilation == (12, 12)
    with pytest.raises(ValueError):
        m(torch.randn(2, 3, 60, 64))
    with pytest.raises(ValueError, match="mode"):
        AFFNetDeepLabV3("tiny")
    m.train()
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.slow
def test_learns_synthetic_segmentation() -> None:
    """Tiny AFFNet + DeepLabv3 (OS 8) segments a bright square in noise (32x32): pixel accuracy >= 0.9 after 60 steps
    (measured 0.951); the majority class is 0.75 of the pixels."""
    from convatlas.analysis.bench import num_threads

    with num_threads(1):
        _learn()


def _learn() -> None:
    torch.manual_seed(0)
    m = create_model("test_aff_deeplabv3", num_classes=2, output_stride=8)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = 0.5 * torch.randn(n, 3, 32, 32)
        y = torch.zeros(n, 32, 32, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(0, 16, (2,)).tolist()
            x[i, :, r:r + 16, c:c + 16] += 1.5
            y[i, r:r + 16, c:c + 16] = 1
        return x, y

    for _ in range(60):
        x, y = batch(8)
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x, y = batch(16)
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float().mean().item()

    assert acc >= 0.9, acc
