"""convatlas.verify: measured figures vs Reported, tolerances, identities, caching (fake entries, no real models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import importlib

from convatlas import atlas, identities, registry

verify = importlib.import_module("convatlas.verify")
from convatlas.registry import ModelEntry, Reported

SLUG = "zz-fake-verify"
# Tiny net with hand-counted figures at 8x8 input:
#   conv 3->4 k3 pad1: params 3*4*9 + 4 = 112, MACs 4*8*8*3*9 = 6912, outputs 256
#   linear 4->5:       params 20 + 5 = 25,     MACs 20,              outputs 5
PARAMS, MACS, ACTS = 137, 6932, 261


def _tiny(**kwargs) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


def _broken(**kwargs) -> nn.Module:
    raise RuntimeError("cannot build this\nsecond line")


@pytest.fixture
def fake(monkeypatch):
    """``add_model(name, reported, builder)`` / ``add_identity(name, fn)`` under a fake atlas slug; undone after."""
    registry._discover()
    monkeypatch.setitem(atlas._BY_SLUG, SLUG, atlas.Paper(999, SLUG, "Fake paper", "Fake", "0000.00000", 2020,
                                                         "classification", "Foundation"))
    monkeypatch.setitem(identities._IDENTITIES, SLUG, [])
    verify.clear_cache()

    class Fake:
        @staticmethod
        def add_model(name, reported=None, builder=_tiny, test_only=False, tags=()):
            monkeypatch.setitem(registry._REGISTRY, name, ModelEntry(
                name=name, builder=builder, paper=SLUG, input_size=(3, 8, 8), num_classes=5,
                reported=reported, test_only=test_only, family="fake", tags=tags))

        @staticmethod
        def add_identity(name, fn):
            identities._IDENTITIES[SLUG].append(identities.Identity(SLUG, name, fn))

    yield Fake
    verify.clear_cache()


def test_rel_error():
    assert verify.rel_error(101, 100) == pytest.approx(0.01)
    assert verify.rel_error(99, 100) == pytest.approx(-0.01)
    assert verify.rel_error(0, 0) == 0.0
    assert verify.rel_error(1, 0) == float("inf")


def test_exact_figures_pass(fake):
    fake.add_model("zz_fake_exact", Reported(params=PARAMS, gmacs=MACS / 1e9, activations=ACTS / 1e6,
                                             resolution=8, params_exact=True))
    v = verify.verify_variant("zz_fake_exact")
    kinds = {c.kind: c for c in v.checks}
    assert set(kinds) == {"params", "gmacs", "activations"}
    assert all(c.ok for c in v.checks), v.checks
    assert v.params == PARAMS and kinds["params"].exact and kinds["params"].rel_err == 0
    assert v.gmacs == pytest.approx(MACS / 1e9) and v.mactivations == pytest.approx(ACTS / 1e6)


def test_exact_params_off_by_one_fails(fake):
    fake.add_model("zz_fake_off1", Reported(params=PARAMS + 1, gmacs=MACS / 1e9, resolution=8, params_exact=True))
    (res,) = verify.verify_papers([SLUG])
    assert not res.ok and res.counts() == {"passed": 1, "failed": 1, "no_reference": 0}
    (fail,) = res.failures
    assert fail.kind == "params" and fail.measured == PARAMS and fail.reported == PARAMS + 1


def test_tolerances(fake):
    # rounded paper figure: 0.9% off params (tol 1%) and 2.9% off MACs (tol 3%) pass ...
    fake.add_model("zz_fake_close", Reported(params=round(PARAMS * 1.009), gmacs=MACS * 1.029 / 1e9, resolution=8))
    # ... 5% off fails both
    fake.add_model("zz_fake_far", Reported(params=round(PARAMS * 1.05), gmacs=MACS * 1.05 / 1e9, resolution=8))
    close, far = verify.verify_variant("zz_fake_close"), verify.verify_variant("zz_fake_far")
    assert close.ok and all(c.ok for c in close.checks)
    assert [c.ok for c in far.checks] == [False, False]
    assert far.checks[1].rel_err == pytest.approx(1 / 1.05 - 1, rel=1e-6)


def test_resolution_is_used(fake):
    # at 16x16 the conv costs 4x as much: a 16-px reported figure must be measured at 16
    fake.add_model("zz_fake_res16", Reported(gmacs=(4 * 6912 + 20) / 1e9, resolution=16))
    v = verify.verify_variant("zz_fake_res16")
    assert v.ok and v.gmacs == pytest.approx((4 * 6912 + 20) / 1e9)


def test_no_reference_is_not_a_failure(fake):
    fake.add_model("zz_fake_noref", None)
    (res,) = verify.verify_papers([SLUG])
    assert res.counts() == {"passed": 0, "failed": 0, "no_reference": 1}
    assert not res.ok  # nothing checked -> not verified
    assert res.variants[0].params == PARAMS and all(c.ok is None for c in res.variants[0].checks)


def test_build_error_is_a_failure_with_one_line(fake):
    fake.add_model("zz_fake_broken", Reported(params=1, resolution=8), builder=_broken)
    (res,) = verify.verify_papers([SLUG])
    (fail,) = res.failures
    assert fail.kind == "build" and fail.message == "RuntimeError: cannot build this"


def test_identities_pass_fail_and_crash(fake):
    fake.add_model("zz_fake_ok", Reported(params=PARAMS, resolution=8, params_exact=True))
    fake.add_identity("returns", lambda: "max abs error 0.0e+00")

    def bad():
        assert 1e-3 < 1e-6, "max abs error 1.0e-03"

    def crash():
        raise ZeroDivisionError("boom")

    fake.add_identity("asserts", bad)
    fake.add_identity("crashes", crash)
    (res,) = verify.verify_papers([SLUG])
    by = {c.name: c for c in res.identities}
    assert by["returns"].ok and by["returns"].message == "max abs error 0.0e+00"
    assert by["asserts"].ok is False and "1.0e-03" in by["asserts"].message
    assert by["crashes"].ok is False and by["crashes"].message == "ZeroDivisionError: boom"
    assert res.counts()["failed"] == 2 and not res.ok
    d = res.to_dict()
    assert d["status"] == "implemented" and len(d["identities"]) == 3


def test_test_only_variants_are_skipped(fake):
    fake.add_model("zz_fake_testonly", Reported(params=1, resolution=8), test_only=True)
    fake.add_model("zz_fake_real", Reported(params=PARAMS, resolution=8, params_exact=True))
    (res,) = verify.verify_papers([SLUG])
    assert [v.name for v in res.variants] == ["zz_fake_real"] and res.ok


def test_cache_and_clear(fake):
    calls = []

    def counting():
        calls.append(1)
        return "ok"

    fake.add_identity("counted", counting)
    verify.verify_papers([SLUG])
    verify.verify_papers([SLUG])
    assert len(calls) == 1
    verify.clear_cache()
    verify.verify_papers([SLUG])
    assert len(calls) == 2
    verify.verify_papers([SLUG], use_cache=False)
    assert len(calls) == 3


def test_unknown_slug_suggests():
    with pytest.raises(ValueError, match="did you mean convnext"):
        verify.verify_papers(["convnex"])


def test_meta_device_only(fake):
    """Verification builds on the meta device: a builder that would allocate 40 GB costs nothing."""
    def huge(**kwargs):
        return nn.Linear(100_000, 100_000)

    fake.add_model("zz_fake_huge", Reported(params=100_000 * 100_000 + 100_000, resolution=(100_000,),
                                            params_exact=True), builder=huge)
    v = verify.verify_variant("zz_fake_huge")
    assert v.ok and v.gmacs == pytest.approx(10.0)
    assert torch.get_default_device().type == "cpu"


def test_public_convatlas_verify_is_callable(fake):
    import convatlas

    fake.add_model("zz_fake_pub", Reported(params=PARAMS, resolution=8, params_exact=True))
    (res,) = convatlas.verify(SLUG)
    assert res.slug == SLUG and res.ok


class _Reparam(nn.Module):
    """conv3x3 + parallel conv1x1 branch; reparameterize() folds the 1x1 into the 3x3 (the RepVGG idea)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.branch = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) + (self.branch(x) if self.branch is not None else 0)

    def reparameterize(self) -> None:
        self.conv.weight.data[:, :, 1:2, 1:2] += self.branch.weight.data
        self.conv.bias.data += self.branch.bias.data
        self.branch = None


def test_deploy_form_measured_when_tagged(fake):
    deploy = Reported(params=112, gmacs=6912e-9, resolution=8, params_exact=True)  # the single fused 3x3 conv
    fake.add_model("zz_fake_train_form", deploy, builder=_Reparam)
    fake.add_model("zz_fake_deploy_form", deploy, builder=_Reparam, tags=(verify.DEPLOY_TAG,))
    assert not verify.verify_variant("zz_fake_train_form").ok  # 128 params, 7680 MACs in training form
    v = verify.verify_variant("zz_fake_deploy_form")
    assert v.ok and v.params == 112
    fake.add_model("zz_fake_no_reparam", deploy, tags=(verify.DEPLOY_TAG,))
    (c,) = verify.verify_variant("zz_fake_no_reparam").checks
    assert c.kind == "build" and "no reparameterize()" in c.message
