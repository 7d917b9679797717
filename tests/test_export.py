"""Deployment paths on the tiny ConvNeXt test variants (card: convnext): channels_last, bf16, torch.export,
torch.compile and ONNX (checked with onnxruntime). TorchScript is deprecated and not supported."""

from __future__ import annotations

import pytest
import torch

from convatlas import create_model


def _model(name: str = "test_convnext") -> torch.nn.Module:
    m = create_model(name).eval()
    with torch.no_grad():  # non-trivial layer scales so the blocks matter
        for n, p in m.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.2, 1.0)
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("name", ["test_convnext", "test_convnext_isotropic"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_channels_last_equals_nchw(name, grad):
    m = _model(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.set_grad_enabled(grad):
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = m_cl(x.contiguous(memory_format=torch.channels_last))
    assert _rel(out, ref) < 1e-5


def test_bf16_autocast_and_pure_bf16():
    m = _model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
        assert _rel(y, ref) < 5e-2
        y16 = m.to(torch.bfloat16)(x.to(torch.bfloat16))  # pure bf16 (inference fast path)
        assert y16.dtype == torch.bfloat16 and _rel(y16, ref) < 5e-2
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(x).float().sum().backward()  # training under autocast
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("name", ["test_convnext", "test_convnext_isotropic"])
def test_torch_export_matches_eager(name):
    m = _model(name)
    x = torch.randn(2, 3, 64, 64)
    ep = torch.export.export(m, (x,))
    x2 = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel(ep.module()(x2), m(x2)) < 1e-5


@pytest.mark.slow
def test_torch_compile_matches_eager():
    m = _model()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(m)
    with torch.no_grad():
        assert _rel(compiled(x), m(x)) < 1e-4


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="onnx not installed (dev extra)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (dev extra)")
    pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx dynamo exporter) not installed (dev extra)")
    m = _model()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "convnext.onnx"
    torch.onnx.export(m, (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert _rel(torch.from_numpy(y), m(x)) < 1e-4
