"""conv1x1: same numbers as F.conv2d, oneDNN dispatch on channels-last float32 CPU tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from convatlas.ops.pointwise_conv import conv1x1

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("weight_4d", [False, True])
def test_conv1x1_equals_conv2d(channels_last: bool, weight_4d: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 24, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(40, 24, 1, 1), torch.randn(40)
    y = conv1x1(x, w if weight_4d else w.flatten(1), b)
    ref = F.conv2d(x, w, b)
    assert y.shape == (2, 40, 7, 9)
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(conv1x1(x.double(), w.double()), F.conv2d(x.double(), w.double()), atol=1e-12)


def test_conv1x1_rejects_a_larger_kernel() -> None:
    with pytest.raises(ValueError, match=r"1x1 kernel"):
        conv1x1(torch.randn(1, 3, 4, 4), torch.randn(5, 3, 3, 3))


def _conv_kernels(fn) -> set[str]:
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if "conv" in e.key}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not built into this torch")
def test_conv1x1_takes_onednn_where_pytorch_picks_thnn() -> None:
    """Batch 1, one thread, channels-last: plain F.conv2d goes to THNN's im2col GEMM; conv1x1 must reach oneDNN."""
    x = torch.randn(1, 128, 14, 14).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 128, 1, 1)
    assert "aten::mkldnn_convolution" in _conv_kernels(lambda: conv1x1(x, w))
    assert "aten::mkldnn_convolution" not in _conv_kernels(lambda: F.conv2d(x, w)), (
        "PyTorch now sends this 1x1 conv to oneDNN by itself: conv1x1's dilation trick may be unnecessary"
    )
    small = torch.randn(1, 64, 14, 14).contiguous(memory_format=torch.channels_last)  # 12544 elements
    assert "aten::slow_conv_dilated2d" not in _conv_kernels(lambda: conv1x1(small, torch.randn(8, 64, 1, 1)))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not built into this torch")
def test_conv1x1_nchw_small_maps_only() -> None:
    """NCHW maps up to 32x32 pixels go to oneDNN; larger NCHW maps keep PyTorch's own choice."""
    small = torch.randn(1, 128, 14, 14)
    assert "aten::mkldnn_convolution" in _conv_kernels(lambda: conv1x1(small, torch.randn(256, 128, 1, 1)))
    large = torch.randn(1, 96, 56, 56)
    assert _conv_kernels(lambda: conv1x1(large, torch.randn(384, 96, 1, 1))) == _conv_kernels(
        lambda: F.conv2d(large, torch.randn(384, 96, 1, 1))
    )
