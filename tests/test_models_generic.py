"""Registry-driven tests run on every model family (timm's pattern).

For each family (``ModelEntry.family``) the tests use its ``test_only`` variants if it has any, else its
smallest variant by reported parameter count. Inputs come from ``convatlas.registry.example_inputs(entry, 2,
small=True)`` (``test_input_size``) and output shapes from the task adapter (``get_task(entry.task)``).

Checked per model: forward + backward, every trainable parameter gets a finite gradient, output shape matches
the task; ``features_only`` maps match ``feature_info`` (channels and reductions); a state-dict round trip into
a fresh model reproduces the outputs; a wrong-rank image input raises ``ValueError``. A failure here is a bug
in the named model's family, and the message says which parameter/stage/shape is wrong.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
import torch

from convatlas.registry import ModelEntry, create_model, example_inputs, get_entry, list_models
from convatlas.tasks import get_task


def _select_entries() -> list[ModelEntry]:
    families: dict[str, list[ModelEntry]] = defaultdict(list)
    for name in list_models(include_test=True):
        e = get_entry(name)
        families[e.family].append(e)
    chosen = []
    for fam in sorted(families):
        entries = families[fam]
        tests = [e for e in entries if e.test_only]
        if tests:
            chosen += sorted(tests, key=lambda e: e.name)
        else:
            def size(e: ModelEntry) -> tuple[float, str]:
                p = e.reported.params if e.reported is not None and e.reported.params else math.inf
                return (p, e.name)

            chosen.append(min(entries, key=size))
    return chosen


ENTRIES = _select_entries()
IDS = [e.name for e in ENTRIES]
IMAGE_ENTRIES = [e for e in ENTRIES if e.example_inputs is None and len(e.input_size) in (3, 4)]


def _inputs(entry: ModelEntry) -> tuple:
    torch.manual_seed(0)
    return example_inputs(entry, 2, small=True)


def _build(entry: ModelEntry, seed: int = 0, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(entry.name, **kw)


def _tensors(out: Any) -> list[torch.Tensor]:
    """All floating tensors in a model output (tensor, tuple/list, dict, or an object with tensor fields)."""
    if isinstance(out, torch.Tensor):
        return [out] if (out.is_floating_point() or out.is_complex()) else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "__dict__"):
        return [t for v in vars(out).values() for t in _tensors(v)]
    return []


def _scalar(out: Any) -> torch.Tensor:
    ts = _tensors(out)
    assert ts, f"model output of type {type(out).__name__} contains no floating tensor"
    return sum(t.real.float().sum() if t.is_complex() else t.float().sum() for t in ts)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_forward_backward_gradients_and_shape(entry: ModelEntry):
    model = _build(entry).train()
    inputs = _inputs(entry)
    out = model(*inputs)
    expected = get_task(entry.task).expected_output_shape(inputs, entry.num_classes)
    if expected is not None:
        assert isinstance(out, torch.Tensor), f"{entry.name}: task {entry.task!r} expects a tensor, got {type(out)}"
        assert tuple(out.shape) == tuple(expected), (
            f"{entry.name}: output shape {tuple(out.shape)}, task {entry.task!r} expects {tuple(expected)} "
            f"for inputs {[tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor)]} (registry entry declares "
            f"num_classes={entry.num_classes}, the built model has num_classes={getattr(model, 'num_classes', '?')})"
        )
    loss = _scalar(out)
    assert torch.isfinite(loss), f"{entry.name}: non-finite output sum {loss.item()}"
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{entry.name}: {len(missing)} trainable parameters received no gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{entry.name}: non-finite gradients in {bad[:10]}"


FEATURE_ENTRIES = [e for e in ENTRIES if e.example_inputs is None and len(e.input_size) >= 2]


@pytest.mark.parametrize("entry", FEATURE_ENTRIES, ids=[e.name for e in FEATURE_ENTRIES])
def test_features_only_matches_feature_info(entry: ModelEntry):
    model = _build(entry)
    if not hasattr(model, "feature_info") or not hasattr(model, "forward_stages"):
        pytest.skip(f"{entry.name} has no feature_info/forward_stages (not a backbone)")
    info = list(model.feature_info)
    fx = _build(entry, features_only=True).eval()
    (x,) = _inputs(entry)
    with torch.no_grad():
        feats = fx(x)
    assert len(feats) == len(info), f"{entry.name}: {len(feats)} feature maps but feature_info has {len(info)}"
    spatial_in = x.shape[2:]
    for i, (f, fi) in enumerate(zip(feats, info)):
        assert f.shape[0] == x.shape[0], f"{entry.name}: stage {i} batch {f.shape[0]} != {x.shape[0]}"
        assert f.shape[1] == fi["num_chs"], (
            f"{entry.name}: stage {i} ({fi.get('module')}) has {f.shape[1]} channels, feature_info says "
            f"{fi['num_chs']}"
        )
        r = fi["reduction"]
        for d_in, d_out in zip(spatial_in, f.shape[2:]):
            assert d_out in (d_in // r, math.ceil(d_in / r)), (
                f"{entry.name}: stage {i} ({fi.get('module')}) map {tuple(f.shape)} from input {tuple(x.shape)}"
                f" does not match reduction {r}"
            )


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_state_dict_round_trip(entry: ModelEntry):
    a = _build(entry, seed=0).eval()
    b = _build(entry, seed=1).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    inputs = _inputs(entry)
    with torch.no_grad():
        ya, yb = _tensors(a(*inputs)), _tensors(b(*inputs))
    assert len(ya) == len(yb)
    for i, (ta, tb) in enumerate(zip(ya, yb)):
        assert torch.allclose(ta, tb, rtol=1e-5, atol=1e-6), (
            f"{entry.name}: output {i} differs after a state-dict round trip "
            f"(max abs diff {(ta - tb).abs().max().item():.3e}); some state is not in state_dict()"
        )


@pytest.mark.parametrize("entry", IMAGE_ENTRIES, ids=[e.name for e in IMAGE_ENTRIES])
def test_wrong_rank_raises_value_error(entry: ModelEntry):
    model = _build(entry).eval()
    (x,) = _inputs(entry)
    with pytest.raises(ValueError) as err:
        with torch.no_grad():
            model(x[0])  # drop the batch dimension
    assert str(err.value), f"{entry.name}: empty ValueError message"


# ---- deployment paths, one model per family (the backbone API: torch.compile / torch.export / ONNX) ----------
def _one_per_family(entries: list[ModelEntry]) -> list[ModelEntry]:
    seen: dict[str, ModelEntry] = {}
    for e in entries:
        seen.setdefault(e.family, e)
    return list(seen.values())


DEPLOY_ENTRIES = _one_per_family([e for e in IMAGE_ENTRIES if e.task == "classification"])
DEPLOY_IDS = [e.name for e in DEPLOY_ENTRIES]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("entry", DEPLOY_ENTRIES, ids=DEPLOY_IDS)
def test_dynamo_captures_whole_model(entry: ModelEntry):
    """torch.compile's graph capture (Dynamo + AOTAutograd, ``fullgraph=True``: no graph break anywhere in the
    forward) gives the eager outputs. Inductor code generation itself is tested on the tiny ConvNeXt and HorNet and
    the whole Terminator (their test files)."""
    torch._dynamo.reset()
    model = _build(entry).eval()
    (x,) = _inputs(entry)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        ref = model(x)
        out = compiled(x)
    assert _rel_err(out, ref) < 1e-5, f"{entry.name}: compiled output differs from eager"


@pytest.mark.parametrize("entry", DEPLOY_ENTRIES, ids=DEPLOY_IDS)
def test_torch_export_matches_eager(entry: ModelEntry):
    """``torch.export`` yields a graph that reproduces eager on a fresh input of the same shape."""
    model = _build(entry).eval()
    (x,) = _inputs(entry)
    ep = torch.export.export(model, (x,))
    x2 = torch.randn_like(x)
    with torch.no_grad():
        assert _rel_err(ep.module()(x2), model(x2)) < 1e-5, f"{entry.name}: exported graph differs from eager"


@pytest.mark.slow
@pytest.mark.parametrize("entry", DEPLOY_ENTRIES, ids=DEPLOY_IDS)
def test_onnx_export_runs_in_onnxruntime(entry: ModelEntry, tmp_path):
    """ONNX (dynamo exporter) run in onnxruntime equals eager within 1e-4."""
    pytest.importorskip("onnx", reason="onnx not installed (dev extra)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (dev extra)")
    pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx dynamo exporter) not installed (dev extra)")
    model = _build(entry).eval()
    (x,) = _inputs(entry)
    path = tmp_path / f"{entry.name}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert _rel_err(torch.from_numpy(y), model(x)) < 1e-4, f"{entry.name}: onnxruntime output differs"
