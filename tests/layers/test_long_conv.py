"""LongConv / FlashFFTConv modules: kernel-FFT cache, official semantics, depthwise conv, copy-task learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convatlas.data.synthetic_sequences import delayed_copy
from convatlas.layers.long_conv import (
    FlashDepthWiseConv1d,
    FlashFFTConv,
    FrequencySparseFFTConv,
    LongConv,
    PartialFFTConv,
)
from convatlas.ops.fft_conv import direct_conv


def test_long_conv_cache_used_and_invalidated() -> None:
    torch.manual_seed(0)
    layer = LongConv(4, 64).eval()
    u = torch.randn(2, 4, 64)
    ref = direct_conv(u, layer.kernel.detach(), layer.D.detach())
    with torch.no_grad():
        y1 = layer(u)
        s1 = layer._cache[1]
        y2 = layer(u)
        assert layer._cache[1] is s1  # reused
        assert torch.allclose(y1, ref, atol=1e-5) and torch.equal(y1, y2)
        layer.kernel.mul_(2.0)  # in-place change bumps the version: cache rebuilt
        y3 = layer(u)
        assert layer._cache[1] is not s1
    assert torch.allclose(y3 - layer.D.detach()[:, None] * u, 2 * (y1 - layer.D.detach()[:, None] * u), atol=1e-5)
    # training: no cache, gradients reach the kernel
    layer.train()
    layer(u).sum().backward()
    assert layer.kernel.grad is not None and layer.D.grad is not None


def test_flashfftconv_module_semantics_and_gates() -> None:
    torch.manual_seed(0)
    conv = FlashFFTConv(256)
    u = torch.randn(2, 4, 128, dtype=torch.bfloat16)
    k = torch.randn(4, 128)
    g1, g2 = torch.randn_like(u), torch.randn_like(u)
    y = conv(u, k, g1, g2)
    assert y.dtype == torch.bfloat16 and y.shape == u.shape
    v = u.float() * g1.float()
    ref = torch.fft.irfft(torch.fft.rfft(v, 256) * torch.fft.rfft(k, 256), 256)[..., :128] * g2.float()
    assert ((y.float() - ref).abs().max() / ref.abs().max()) < 1e-2
    assert sum(p.numel() for p in conv.parameters()) == 0
    with pytest.raises(ValueError, match="exceeds fft_size"):
        conv(torch.randn(1, 4, 300), torch.randn(4, 300))


def test_sparse_modules_and_depthwise() -> None:
    u = torch.randn(2, 3, 64, dtype=torch.float64)
    k = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(PartialFFTConv(10)(u, k), direct_conv(u, k[:, :10]), atol=1e-10)
    assert torch.allclose(FrequencySparseFFTConv(1000)(u, k), direct_conv(u, k), atol=1e-10)
    ref = nn.Conv1d(8, 8, 5, groups=8, padding=2)
    dw = FlashDepthWiseConv1d(8, 5, 2, ref.weight.detach(), ref.bias.detach())
    x = torch.randn(2, 8, 30)
    assert torch.allclose(dw(x), ref(x), atol=1e-6)
    dwl = FlashDepthWiseConv1d(8, 5, 2, ref.weight.detach(), ref.bias.detach(), is_bhl=False)
    assert torch.allclose(dwl(x.transpose(1, 2)), ref(x).transpose(1, 2), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        dwl(x)


def test_long_conv_state_dict_round_trip_refreshes_cache() -> None:
    """Loading a state dict into an eval-mode LongConv whose spectrum is cached must use the new kernel (the
    in-place copy bumps the kernel's version counter); fixed (buffer) kernels are saved too."""
    torch.manual_seed(0)
    for learnable in (True, False):
        a, b = LongConv(4, 300, learnable=learnable).eval(), LongConv(4, 300, learnable=learnable).eval()
        u = torch.randn(2, 4, 300)
        with torch.no_grad():
            b(u)  # b caches its own kernel's spectrum
            assert b._cache is not None
            b.load_state_dict(a.state_dict())
            assert set(a.state_dict()) == {"kernel", "D"}
            torch.testing.assert_close(b(u), a(u))
            torch.testing.assert_close(a(u), direct_conv(u, a.kernel, a.D), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"LongConv: expected input \(B, H=4, L\), got \(2, 3, 300\)"):
        a(torch.randn(2, 3, 300))
    with pytest.raises(ValueError, match=r"has 3 channels"):
        FlashFFTConv(64)(torch.randn(2, 4, 32), torch.randn(3, 32))


def test_flashfftconv_cache_never_stale() -> None:
    """One FlashFFTConv shared by layers whose kernels are generated afresh per call (implicit filters): the freed
    kernel's memory is reused by the next kernel (same address, version 0), which a (pointer, version) cache key
    alone mistakes for the same kernel (measured: errors of 60-73 before the fix). A persistent kernel object is
    cached from its second use on; changing it in place refreshes the cache."""
    import pickle

    torch.manual_seed(0)
    conv = FlashFFTConv(512)
    u = torch.randn(2, 4, 256)
    filters = [torch.randn(4, 256) for _ in range(4)]
    with torch.no_grad():
        for f in filters:
            k = f * 1.0  # a new kernel tensor per layer/call, freed right after
            torch.testing.assert_close(conv(u, k), direct_conv(u, k), atol=1e-4, rtol=1e-4)
            del k
        k = filters[0]
        conv(u, k)
        assert conv._cache[2] is None  # first use: uncached fused path, no spectrum kept
        conv(u, k)
        spec = conv._cache[2]
        assert spec is not None
        conv(u, k)
        assert conv._cache[2] is spec  # reused
        k.mul_(-1.0)
        torch.testing.assert_close(conv(u, k), direct_conv(u, k), atol=1e-4, rtol=1e-4)
    clone = pickle.loads(pickle.dumps(conv))  # the weak reference is not pickled
    assert clone._cache is None and clone.fft_size == 512


def test_dtype_arguments_are_honoured() -> None:
    """``FlashFFTConv(N, dtype)``: the official kernels need u (and gates) in that dtype: others raise, naming it.
    ``FlashDepthWiseConv1d(..., dtype=)``: the parameters are stored in that dtype."""
    conv = FlashFFTConv(128, dtype=torch.bfloat16)
    u, k = torch.randn(2, 4, 64), torch.randn(4, 64)
    y = conv(u.bfloat16(), k)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), FlashFFTConv(128)(u.bfloat16(), k).float())
    with pytest.raises(ValueError, match=r"dtype=torch.bfloat16.*u of shape \(2, 4, 64\).*float32"):
        conv(u, k)
    with pytest.raises(ValueError, match="postgate"):
        conv(u.bfloat16(), k, postgate=torch.ones(2, 4, 64))
    with pytest.raises(ValueError, match="dtype must be"):
        FlashFFTConv(128, dtype=torch.int32)
    with pytest.raises(ValueError, match="backend"):
        FlashFFTConv(128, backend="cuda")
    ref = nn.Conv1d(8, 8, 5, groups=8, padding=2)
    dw = FlashDepthWiseConv1d(8, 5, 2, ref.weight.detach(), ref.bias.detach(), dtype=torch.float64)
    assert dw.weights.dtype == dw.bias.dtype == torch.float64 and dw.weights.shape == (8, 5)
    x = torch.randn(2, 8, 30, dtype=torch.float64)
    torch.testing.assert_close(dw(x), ref.double()(x))
    with pytest.raises(ValueError, match=r"D\*k = 8\*5"):
        FlashDepthWiseConv1d(8, 5, 2, torch.randn(8, 3))


class _CopyModel(nn.Module):
    def __init__(self, vocab: int, h: int, taps: int, long: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, h)
        self.mix = LongConv(h, taps) if long else nn.Conv1d(h, h, taps, groups=h)
        self.taps, self.long = taps, long
        self.out = nn.Linear(h, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.emb(x).transpose(1, 2)
        z = self.mix(z) if self.long else self.mix(F.pad(z, (self.taps - 1, 0)))
        return self.out(z.transpose(1, 2))



@pytest.mark.slow
def test_learns_delayed_copy_where_short_conv_fails(one_thread) -> None:
    """Card check: copy the token from t-512 (L=1024): a free long kernel succeeds, a 3-tap conv is at chance."""
    vocab, length, lag = 8, 1024, 512
    xte, yte = delayed_copy(64, length, lag, vocab, seed=999)
    accs = {}
    for long in (True, False):
        torch.manual_seed(0)
        model = _CopyModel(vocab, 16, length if long else 3, long)
        opt = torch.optim.Adam(model.parameters(), lr=2e-2)
        for step in range(60):
            x, y = delayed_copy(16, length, lag, vocab, seed=step)
            loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = model(xte).argmax(-1)
        m = yte >= 0
        accs[long] = (pred[m] == yte[m]).float().mean().item()
    assert accs[True] > 0.95, accs
    assert accs[False] < 0.2, accs  # chance = 1/8
