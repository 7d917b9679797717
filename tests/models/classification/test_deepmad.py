"""DeepMAD networks (card: deepmad)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import (  # noqa: E402
    check_fast_inference_matches,
    check_reported,
    check_tiny,
    train_digits,
)

from convatlas import create_model, list_models  # noqa: E402
from convatlas.identities import identities_for  # noqa: E402
from convatlas.models.classification.deepmad import DEEPMAD_STRUCTURES, DeepMADNet, parse_structure  # noqa: E402

# Measured with the official block layout (see the model file's table).
MEASURED = {
    "deepmad_r18": 11_826_088, "deepmad_r34": 21_690_160, "deepmad_r50": 25_441_144,
    "deepmad_29m_224": 28_669_956, "deepmad_29m_288": 28_703_630, "deepmad_50m": 49_408_964,
    "deepmad_89m": 88_325_780,
}

R18_TXT = """{ 'best_structures':[ [
    {'class': 'ConvKXBNRELU', 'in': 3, 'k': 3, 'out': 32, 's': 2},
    { 'L': 1, 'btn': 40, 'class': 'SuperResK1KXK1', 'in': 32, 'inner_class': 'ResK1KXK1', 'k': 5, 'out': 96, 's': 2},
    { 'L': 6, 'btn': 40, 'class': 'SuperResK1KXK1', 'in': 96, 'inner_class': 'ResK1KXK1', 'k': 5, 'out': 384, 's': 2},
    { 'L': 9, 'btn': 64, 'class': 'SuperResK1KXK1', 'in': 384, 'inner_class': 'ResK1KXK1', 'k': 5, 'out': 384, 's': 2},
    { 'L': 10, 'btn': 104, 'class': 'SuperResK1KXK1', 'in': 384, 'inner_class': 'ResK1KXK1', 'k': 3, 'out': 1024, 's': 1},
    { 'L': 12, 'btn': 104, 'class': 'SuperResK1KXK1', 'in': 1024, 'inner_class': 'ResK1KXK1', 'k': 5, 'out': 672, 's': 2}]],
'space_arch': 'CnnNet'}"""


def test_registered() -> None:
    assert list_models(paper="deepmad") == sorted(MEASURED)


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_reported_figures(name: str) -> None:
    params, _ = check_reported(name)
    assert params == MEASURED[name]


def test_parse_official_txt() -> None:
    s = parse_structure(R18_TXT)
    assert [{k: v for k, v in b.items() if k != "inner_class"} for b in s] == DEEPMAD_STRUCTURES["R18"]
    with torch.device("meta"):
        net = DeepMADNet(R18_TXT)
        assert net.forward_features(torch.empty(2, 3, 224, 224)).shape == (2, 672, 7, 7)
    with pytest.raises(ValueError, match="in=5"):
        parse_structure([{"class": "ConvKXBNRELU", "in": 3, "out": 8, "k": 3, "s": 2},
                         {"class": "ConvKXBNRELU", "in": 5, "out": 8, "k": 3, "s": 1}])
    with pytest.raises(ValueError, match="unknown class"):
        parse_structure([{"class": "Foo", "in": 3, "out": 8}])


def test_official_block_details() -> None:
    with torch.device("meta"):
        r18 = create_model("deepmad_r18")
        m29 = create_model("deepmad_29m_224")
    # the first bottleneck of every K1KXK1 stage has a projection, even 384->384 (force_resproj)
    assert hasattr(r18.block_list[3].block_list[0].residual_proj, "conv1")
    assert isinstance(r18.block_list[3].block_list[1].residual_proj, torch.nn.Identity)
    # K1DWSEK1: no projection shortcut when channels change; SE width max(1, round(btn/4)//8)*8
    blk = m29.block_list[2].block_list[0]
    assert not blk.is_reslink and blk.se2.conv1.conv1.out_channels == 128
    assert m29.block_list[1].block_list[0].is_reslink
    assert "block_list.1.block_list.0.conv1.conv1.weight" in r18.state_dict() and "fc_linear.weight" in r18.state_dict()


def test_identities_pass() -> None:
    checks = identities_for("deepmad")
    assert len(checks) == 2, [c.name for c in checks]  # an empty list would pass vacuously
    for c in checks:
        assert c.fn()


def test_contract_and_safety() -> None:
    check_tiny("test_deepmad", num_classes=5, grad_checkpointing=True, any_size=(40, 28))


@pytest.mark.slow
def test_designed_tiny_network_learns_digits() -> None:
    """Card: a DeepMAD-designed network under a tiny budget (3 MMACs, 0.1M params at 32x32) trains on digits to
    >= 0.9 in 3 epochs (measured 0.972)."""
    pytest.importorskip("scipy", reason="the designer needs scipy (convatlas[science])")
    from convatlas.analysis.deepmad_designer import DesignProblem, design

    prob = DesignProblem(macs_budget=3e6, params_budget=0.1e6, image_size=32, num_classes=10, stem=16,
                         strides=(1, 2, 2, 1, 2), beta=(1, 1, 1, 8), channels=(16, 128), btn=(8, 32), depth=(1, 3))
    res = design(prob, maxiter=20, popsize=6)
    assert res.macs <= 3e6 and res.params <= 0.1e6 and res.rho <= 0.3
    torch.manual_seed(0)
    model = DeepMADNet(res.structure, num_classes=10)
    acc = train_digits(model, size=32, epochs=3, lr=3e-3)
    assert acc >= 0.9, (acc, res.structure)


def test_torch_export_of_deploy_form() -> None:
    """The inference form exports with torch.export and computes the same outputs."""
    model = create_model("test_deepmad").eval()
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))


def test_inference_fast_path_matches_module_forward() -> None:
    """Folded-BN / in-place / channels-last inference equals the plain forward (eval BN with non-trivial stats)."""
    check_fast_inference_matches(create_model("test_deepmad"), torch.randn(2, 3, 32, 32), stages=True,
                                 channels_last_stages=True)