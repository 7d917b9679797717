"""LSNet (card: lsnet)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import (  # noqa: E402
    check_export_deploy,
    check_tiny,
    train_digits,
)

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import measure_complexity, measure_entry  # noqa: E402
from convatlas.identities import identities_for  # noqa: E402
from convatlas.registry import get_entry  # noqa: E402
from convatlas.verify import verify_variant  # noqa: E402
from convatlas.layers.reparam import ConvBN  # noqa: E402
from convatlas.models.classification.lsnet import LSAttention, LSNet, RepVGGDW, _randomize_bn_, checkpoint_filter_fn  # noqa: E402

EXACT = {"lsnet_t": 11_409_832, "lsnet_s": 16_146_304, "lsnet_b": 23_313_608}  # card: scratch re-implementation
FUSED = {"lsnet_t": 11_370_488, "lsnet_s": 16_098_232, "lsnet_b": 23_249_320}  # after reparameterize()


def test_registered() -> None:
    assert list_models(paper="lsnet") == sorted(EXACT)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_reported_and_exact_params(name: str) -> None:
    """Training-form count is the card's exact figure; the README (23.2M for B) counts the fused form."""
    with torch.device("meta"):
        model = create_model(name)
        assert sum(p.numel() for p in model.parameters()) == EXACT[name]
        model.eval().reparameterize()
        fused = sum(p.numel() for p in model.parameters())
    assert fused == FUSED[name]
    rep = get_entry(name).reported
    assert "reported_deploy" in get_entry(name).tags
    assert abs(fused - rep.params) <= 50_000  # README rounds to 0.1M


def test_measured_macs_and_readme_gap() -> None:
    """Fused conv/linear/matmul GMACs at 224, registered as the card's counts of the official layers (0.315 / 0.537
    / 1.241; the README's 0.3 / 0.5 G are these rounded, its 1.3 G for B is 4.6% above: unexplained, kept in the
    source note)."""
    with torch.device("meta"):
        model = create_model("lsnet_b").eval().reparameterize()
        c = measure_complexity(model, (torch.empty(1, 3, 224, 224),))
    assert abs(c.gmacs - 1.2404) < 2e-4, c.gmacs
    rep = get_entry("lsnet_b").reported
    assert round(c.gmacs, 1) != 1.3 and rep.gmacs == 1.241 and "1.3 G" in rep.source and rep.macs_tol == 0.03
    assert get_entry("lsnet_t").reported.gmacs == 0.315 and get_entry("lsnet_s").reported.gmacs == 0.5369


def test_verify_lsnet_variants_pass() -> None:
    """`convatlas verify lsnet` figures: fused params within 1% of the README, MACs within 3% (B: 5%; identities: below)."""
    for name in sorted(EXACT):
        res = verify_variant(name, use_cache=False)
        assert res.ok and all(c.ok for c in res.checks), res.checks


def test_stage_shapes_at_224() -> None:
    with torch.device("meta"):
        m = create_model("lsnet_t")
        maps = m.forward_stages(torch.empty(2, 3, 224, 224))
    assert [tuple(f.shape[-2:]) for f in maps] == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert measure_entry("lsnet_t", 256).gmacs > measure_entry("lsnet_t", 224).gmacs  # other sizes run


def test_identities_pass() -> None:
    checks = identities_for("lsnet")
    assert len(checks) == 2, [c.name for c in checks]  # an empty list would pass vacuously
    for c in checks:
        assert c.fn()


def test_reparameterize_with_distillation_float64() -> None:
    torch.manual_seed(0)
    model = _randomize_bn_(LSNet(embed_dim=(16, 32, 48, 64), depth=(1, 2, 2, 2), num_heads=(2, 2, 2, 2),
                                 key_dim=(8, 8, 8, 8), img_size=64, num_classes=5, distillation=True)).double()
    model.train()
    out = model(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert isinstance(out, tuple) and len(out) == 2  # (head, head_dist) in training
    model.eval()
    x = torch.randn(2, 3, 80, 48, dtype=torch.float64)
    y0 = model(x)
    model.reparameterize()
    assert not any(isinstance(m, (ConvBN, RepVGGDW)) for m in model.modules()) and model.head_dist is None
    torch.testing.assert_close(model(x), y0, rtol=1e-9, atol=1e-10)


def test_attention_bias_table_lookup() -> None:
    att = LSAttention(16, 4, 2, 2.0, resolution=4)
    with torch.no_grad():
        att.attention_biases.copy_(torch.arange(32.0).view(2, 16))
    b = att.attention_bias(4, 4)
    assert b.shape == (2, 16, 16)
    # token 0 = (0,0), token 6 = (1,2): offset (1,2) -> index 1*4+2.
    assert b[0, 0, 6].item() == 6 and b[1, 6, 0].item() == 16 + 6
    assert att.attention_bias(6, 5).shape == (2, 30, 30)  # larger grid: resized table


def test_contract_and_safety() -> None:
    model, x = check_tiny("test_lsnet", num_classes=6, grad_checkpointing=True, any_size=(72, 40))


def test_official_keys_convert() -> None:
    model = create_model("test_lsnet", num_classes=4)
    official = {}
    for k, v in model.state_dict().items():
        if k.startswith("stages."):
            i, rest = k[7:].split(".", 1)
            k = f"blocks{int(i) + 1}.{rest}"
        official[k] = v
    assert "blocks2.0.c.weight" in official and "blocks2.3.mixer.lkp.cv2.c.weight" in official
    official["blocks4.3.mixer.m.attention_bias_idxs"] = torch.zeros(1, 1, dtype=torch.long)
    create_model("test_lsnet", num_classes=4).load_state_dict(checkpoint_filter_fn(official), strict=True)


@pytest.mark.slow
def test_learns_digits() -> None:
    """Card's check (dims 16..64, depths 1,2,2,2): 32x32 digits, expect >= 0.9 (card measured 0.962 after 15 ep)."""
    torch.manual_seed(0)
    model = LSNet(embed_dim=(16, 32, 48, 64), depth=(1, 2, 2, 2), num_heads=(2, 2, 2, 2), key_dim=(8, 8, 8, 8),
                  img_size=32, num_classes=10)
    acc, logits = train_digits(model, size=32, epochs=5, lr=3e-3, return_logits=True)  # measured 0.977
    assert acc >= 0.9, acc
    model.reparameterize()
    from backbone_checks import digits_tensors

    xva = digits_tensors(32)[2]
    with torch.no_grad():
        fused = model(xva)
    assert (fused.argmax(1) == logits.argmax(1)).float().mean() > 0.99


def test_torch_export_of_deploy_form() -> None:
    check_export_deploy("test_lsnet")
