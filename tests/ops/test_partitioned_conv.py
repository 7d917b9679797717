"""Uniformly partitioned FFT convolution (flashfftconv long-sequence path): exact against direct convolution."""

from __future__ import annotations

import pytest
import torch

import convatlas.ops.partitioned_conv as pc
from convatlas.ops.fft_conv import direct_conv, fft_conv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition sequences from 256 samples on, in blocks of ~64: the same code paths at test-sized lengths."""
    monkeypatch.setattr(pc, "MIN_LENGTH", 256)
    monkeypatch.setattr(pc, "_TARGET_BLOCK", 64)


def test_plan_covers_the_sequence_and_kernel() -> None:
    for seq_len, taps in ((1 << 16, 1 << 16), (1 << 20, 1 << 20), (100_003, 100_003), (300_000, 5_000)):
        nb, p, pk = pc.partition_plan(seq_len, taps)
        assert p * nb >= seq_len > (p - 1) * nb and 2 <= p <= pc._MAX_BLOCKS
        assert pk * nb >= taps > (pk - 1) * nb
    assert pc.partition_plan(1 << 15, 1 << 15) is None


@pytest.mark.parametrize("seq_len,taps", [(256, 256), (301, 301), (512, 100), (700, 513), (1000, 1)])
def test_partitioned_rows_equal_direct_conv(seq_len: int, taps: int, small_blocks: None) -> None:
    torch.manual_seed(seq_len + taps)
    u = torch.randn(3, seq_len, dtype=torch.float64)
    k = torch.randn(3, taps, dtype=torch.float64)
    nb, p, pk = pc.partition_plan(seq_len, taps)
    assert p >= 2, "the test must exercise more than one block"
    out = torch.empty_like(u)
    pc.partitioned_conv_rows(u, k, nb, p, pk, out)
    ref = direct_conv(u[None], k)[0]
    assert (out - ref).abs().max().item() < 1e-10
    cached = torch.empty_like(u)
    pc.partitioned_conv_rows(u, pc.kernel_block_spectrum(k, nb, pk), nb, p, pk, cached)
    assert (cached - ref).abs().max().item() < 1e-10


def test_fft_conv_inference_routes_long_sequences_through_partitions(small_blocks: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates, skip term, dtypes: the partitioned inference path gives fft_conv's full semantics."""
    calls = []
    orig = pc.partitioned_conv_rows
    import convatlas.ops.fft_conv as fc

    monkeypatch.setattr(fc, "partitioned_conv_rows", lambda *a: calls.append(1) or orig(*a))
    torch.manual_seed(0)
    u = torch.randn(2, 5, 600, dtype=torch.float64)
    k = torch.randn(5, 600, dtype=torch.float64) / 30
    d = torch.randn(5, dtype=torch.float64)
    g1, g2 = torch.rand(2, 5, 600, dtype=torch.float64), torch.rand(1, 5, 600, dtype=torch.float64)
    with torch.no_grad():
        y = fft_conv(u, k, d, pregate=g1, postgate=g2, backend="torch")
    v = u * g1
    ref = (direct_conv(v, k) + v * d[:, None]) * g2
    assert calls and (y - ref).abs().max().item() < 1e-10
    with torch.no_grad():
        yb = fft_conv(u.bfloat16(), k.float())
    assert yb.dtype == torch.bfloat16
    ref_b = direct_conv(u.bfloat16().double(), k.float().double())
    assert (yb.double() - ref_b).abs().max().item() < 0.05 * ref_b.abs().max().item()


def _graph_nodes(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and type(f).__name__ not in seen:
            seen.add(type(f).__name__)
            todo.extend(n for n, _ in f.next_functions)
    return seen


@pytest.mark.parametrize("seq_len,taps,bsz", [(301, 301, 2), (512, 100, 1), (700, 513, 3)])
def test_fft_conv_training_through_partitions_matches_direct(seq_len: int, taps: int, bsz: int,
                                                             small_blocks: None) -> None:
    """Forward and every gradient (input, kernel, skip, gates) of the partitioned training path, fp64."""
    torch.manual_seed(seq_len)
    u = torch.randn(bsz, 3, seq_len, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, taps, dtype=torch.float64, requires_grad=True)
    d = torch.randn(3, dtype=torch.float64, requires_grad=True)
    g1 = torch.rand(bsz, 3, seq_len, dtype=torch.float64, requires_grad=True)
    g2 = torch.rand(bsz, 3, seq_len, dtype=torch.float64, requires_grad=True)
    y = fft_conv(u, k, d, pregate=g1, postgate=g2)
    assert "PartitionedConvBackward" in _graph_nodes(y), "the training path must use the partitioned Function"
    v = u * g1
    ref = (direct_conv(v, k) + v * d[:, None]) * g2
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, (u, k, d, g1, g2), gy)
    want = torch.autograd.grad(ref, (u, k, d, g1, g2), gy)
    assert (y - ref).abs().max().item() < 1e-10
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), got, want):
        assert (a - b).abs().max().item() < 1e-9, name


def test_partitioned_gradcheck(small_blocks: None) -> None:
    u = torch.randn(1, 2, 300, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 260, dtype=torch.float64, requires_grad=True)
    d = torch.randn(2, dtype=torch.float64, requires_grad=True)
    plan = pc.partition_plan(300, 260)
    assert torch.autograd.gradcheck(lambda a, b, c: pc.PartitionedConv.apply(a, b, c, plan, 1), (u, k, d))


def test_cached_block_spectrum_inference_training_and_compile(small_blocks: None) -> None:
    """kernel_spectrum keeps the partitioned layout for long sequences; fft_conv uses it for inference, for a
    learnable spectrum (autograd) and under torch.compile (fullgraph, one vectorised graph)."""
    from convatlas.ops.fft_conv import kernel_spectrum

    torch.manual_seed(1)
    u = torch.randn(2, 3, 600, dtype=torch.float64)
    k = torch.randn(3, 600, dtype=torch.float64) / 25
    d = torch.randn(3, dtype=torch.float64)
    s = kernel_spectrum(k, 600)
    assert s.partition is not None and s.k_f.shape == (3, s.partition[2], s.partition[0] + 1)
    ref = direct_conv(u, k) + u * d[:, None]
    with torch.no_grad():
        assert (fft_conv(u, None, d, spectrum=s) - ref).abs().max().item() < 1e-10
    kf = s.k_f.clone().requires_grad_()
    learn = type(s)(kf, s.n, s.backend, s.taps, s.seq_len, partition=s.partition)
    y = fft_conv(u, None, d, spectrum=learn)
    assert (y - ref).abs().max().item() < 1e-10
    y.sum().backward()
    assert kf.grad is not None and kf.grad.abs().sum() > 0
    compiled = torch.compile(lambda x: fft_conv(x, None, d, spectrum=s), backend="aot_eager", fullgraph=True)
    assert (compiled(u) - ref).abs().max().item() < 1e-10
