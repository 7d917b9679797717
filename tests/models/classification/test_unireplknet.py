"""UniRepLKNet (cards: unireplknet, scaling-up-kernels)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import (  # noqa: E402
    check_export_deploy,
    check_reported,
    check_tiny,
    train_digits,
)

from convatlas import create_model, list_models  # noqa: E402
from convatlas.registry import example_inputs  # noqa: E402
from convatlas.analysis.bench import num_threads  # noqa: E402
from convatlas.analysis.complexity import count_params, measure_entry  # noqa: E402
from convatlas.identities import identities_for  # noqa: E402
from convatlas.models.classification.unireplknet import (  # noqa: E402
    UniRepLKNet,
    UniRepLKNetAudio,
    UniRepLKNetBlock,
    UniRepLKNetPoint,
    UniRepLKNetTimeSeries,
    UniRepLKNetVideo,
    _randomize_,
    checkpoint_filter_fn,
    default_kernel_sizes,
    tile_frames,
    video_to_image,
)

VARIANTS = ["a", "f", "p", "n", "t", "s", "s_384", "b", "l", "xl", "h"]
# Exact counts (card, scratch re-implementation of the official code): (training form, deploy form).
EXACT = {
    "a": (4_649_060, 4_437_300), "f": (6_489_328, 6_235_216), "p": (11_080_520, 10_741_704),
    "n": (18_818_880, 18_318_560), "t": (31_693_420, 31_037_980), "s": (56_456_704, 55_645_984),
    "s_384": (56_456_704, 55_645_984),
    "b": (99_089_416, 98_008_456), "l": (220_076_056, 218_454_616), "xl": (388_690_984, 386_529_064),
    "h": (1_353_916_000, 1_349_862_400),
}
TINY = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), kernel_sizes=((3,), (7,), (7, 3), (7,)))


MODALITIES = ["s_audio", "s_video", "s_point", "s_global_temp", "s_global_wind"]


def test_registered() -> None:
    assert list_models("unireplknet_*") == sorted(f"unireplknet_{v}" for v in VARIANTS + MODALITIES)
    assert list_models("test_unireplknet*", include_test=True) == [
        "test_unireplknet", "test_unireplknet_audio", "test_unireplknet_point", "test_unireplknet_timeseries",
        "test_unireplknet_video"]
    assert list_models(paper="scaling-up-kernels") == ["unireplknet_h"]


@pytest.mark.parametrize("v", VARIANTS)
def test_reported_figures_deploy_form(v: str) -> None:
    """Reported params/MACs are deploy-form figures: build with deploy=True (meta device)."""
    check_reported(f"unireplknet_{v}", deploy=True)


@pytest.mark.parametrize("v", VARIANTS)
def test_exact_counts_both_forms(v: str) -> None:
    with torch.device("meta"):
        train = count_params(create_model(f"unireplknet_{v}"))
        deploy = count_params(create_model(f"unireplknet_{v}", deploy=True))
    assert (train, deploy) == EXACT[v]


def test_table4_counts_exclude_the_grn_gamma() -> None:
    """README / Table 4 params = deploy params minus GRN gamma (4C per block) for all of A..XL; with the gamma
    B / L / XL would round to 98.0 / 218.5 / 386.5 M instead of the table's 97.9 / 218.3 / 386.4 M."""
    from convatlas.layers.grn import GRN

    table = {"a": 4.4, "f": 6.2, "p": 10.7, "n": 18.3, "t": 31.0, "s": 55.6, "b": 97.9, "l": 218.3, "xl": 386.4}
    full = {}
    for v, m_params in table.items():
        with torch.device("meta"):
            model = create_model(f"unireplknet_{v}", deploy=True)
        grn = sum(p.numel() for m in model.modules() if isinstance(m, GRN) for p in m.parameters())
        assert count_params(model) == EXACT[v][1]
        assert round((EXACT[v][1] - grn) / 1e6, 1) == m_params, v
        full[v] = round(EXACT[v][1] / 1e6, 1)
    assert [full[v] for v in ("b", "l", "xl")] == [98.0, 218.5, 386.5]


def test_training_recipes_cover_every_image_variant() -> None:
    from convatlas.models.classification.unireplknet import TRAINING_RECIPES

    assert set(TRAINING_RECIPES) == {f"unireplknet_{v}" for v in VARIANTS if v not in ("h", "s_384")}
    assert TRAINING_RECIPES["unireplknet_s"]["in1k"]["drop_path"] == 0.4  # official Image/README.md
    model = create_model("test_unireplknet", drop_path_rate=TRAINING_RECIPES["unireplknet_t"]["in1k"]["drop_path"])
    assert max(m.drop_prob for m in model.modules() if hasattr(m, "drop_prob")) > 0


def test_s_at_384_matches_readme() -> None:
    assert abs(measure_entry("unireplknet_s_384", deploy=True).gmacs - 26.72) < 0.01  # README 26.7G
    assert measure_entry("unireplknet_s_384").input_shapes == ((1, 3, 384, 384),)


def test_kernel_layouts() -> None:
    ks = default_kernel_sizes((3, 3, 27, 3))
    assert ks[0] == (3, 3, 3) and ks[1] == (13,) * 3 and ks[2][:3] == (13, 3, 3) and ks[2].count(13) == 9
    assert default_kernel_sizes((3, 3, 18, 3))[2].count(3) == 9
    with pytest.raises(ValueError, match="kernel"):
        default_kernel_sizes((1, 1, 1, 1))


def test_identities_pass() -> None:
    for paper in ("unireplknet", "scaling-up-kernels"):
        checks = identities_for(paper)
        assert checks
        for c in checks:
            c.fn()


def test_reparameterize_float64_and_deploy_checkpoint() -> None:
    """Fused model == training form (rel < 1e-5, float64); its state dict loads into a deploy=True model."""
    torch.manual_seed(0)
    model = _randomize_(UniRepLKNet(**TINY, num_classes=10).double()).eval()
    x = torch.randn(2, 3, 48, 80, dtype=torch.float64)  # non-square, not a multiple of 32
    y0 = model(x)
    model.reparameterize()
    assert model.deploy and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    y1 = model(x)
    assert ((y1 - y0).abs().max() / y0.abs().max()).item() < 1e-5
    dep = UniRepLKNet(**TINY, num_classes=10, deploy=True).double().eval()
    dep.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(dep(x), y1)


def test_block_kernel_size_zero_and_five() -> None:
    for k in (0, 5):
        blk = _randomize_(UniRepLKNetBlock(8, k).double()).eval()
        x = torch.randn(1, 8, 9, 9, dtype=torch.float64)
        y0 = blk(x)
        blk.reparameterize()
        torch.testing.assert_close(blk(x), y0)
    with pytest.raises(ValueError, match="kernel_size"):
        UniRepLKNetBlock(8, 4)


def test_contract_and_safety() -> None:
    model, x = check_tiny("test_unireplknet", num_classes=7, grad_checkpointing=True, any_size=(45, 71))
    feats = create_model("test_unireplknet", features_only=True, out_indices=(1, 3))
    maps = feats(x)
    assert [m.shape[1] for m in maps] == [32, 128] and [m.shape[-1] for m in maps] == [8, 2]


def test_official_checkpoint_keys_load() -> None:
    """A state dict in the official key layout (card) converts and loads strictly."""
    model = create_model("test_unireplknet", num_classes=5)
    ours = model.state_dict()
    inv = {}
    for k, v in ours.items():
        o = k.replace(".pwconv1.", ".pwconv1.1.").replace(".grn.", ".act.1.")
        o = o.replace(".pwconv2.", ".pwconv2.0.").replace(".norm2.", ".pwconv2.2.")
        o = o.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        inv[o] = v
    assert "stages.1.0.dwconv.lk_origin.weight" in inv and "stages.1.0.dwconv.dil_conv_k5_1.weight" in inv
    assert "stages.1.0.act.1.gamma" in inv and "stages.1.0.pwconv2.2.running_var" in inv and "head.weight" in inv
    fresh = create_model("test_unireplknet", num_classes=5)
    fresh.load_state_dict(checkpoint_filter_fn(inv), strict=True)


def test_audio_and_time_series_adapters() -> None:
    torch.manual_seed(0)
    audio = UniRepLKNetAudio(**TINY, num_classes=4)
    spec = torch.randn(2, 40, 36)  # (B, T, F)
    y = audio(spec)
    assert y.shape == (2, 4)
    y.sum().backward()
    assert all(p.grad is not None for p in audio.parameters())
    audio.eval()
    with torch.no_grad():
        y0 = audio(spec)
        audio.reparameterize()
        torch.testing.assert_close(audio(spec), y0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="UniRepLKNetAudio"):
        audio(torch.randn(2, 1, 40, 36))

    ts = UniRepLKNetTimeSeries(seq_len=48, horizon=6, embed_dim=32, **TINY)
    series = torch.randn(2, 48, 3)  # (B, L, N)
    out = ts(series)
    assert out.shape == (2, 6, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in ts.parameters())
    with pytest.raises(ValueError, match="L=48"):
        ts(torch.randn(2, 40, 3))


@pytest.mark.slow
def test_time_series_learns_sine_forecast() -> None:
    """Sine mixtures: the adapter forecasts the next 4 steps far better than the last-value baseline."""
    torch.manual_seed(0)
    t = torch.arange(36, dtype=torch.float32)
    freq = torch.rand(256, 1, 2) * 0.4 + 0.1
    phase = torch.rand(256, 1, 2) * 6.28
    series = torch.sin(t[None, :, None] * freq + phase)  # (256, 36, 2): 2 nodes
    x, y = series[:, :32], series[:, 32:]
    model = UniRepLKNetTimeSeries(seq_len=32, horizon=4, embed_dim=16, depths=(1, 1, 1, 1), dims=(16, 32, 48, 64),
                                  kernel_sizes=((3,), (7,), (7,), (7,)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with num_threads(1):
        for _ in range(60):
            idx = torch.randint(0, 224, (32,))
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            mse = nn.functional.mse_loss(model(x[224:]), y[224:]).item()
    naive = nn.functional.mse_loss(x[224:, -1:].expand(-1, 4, -1), y[224:]).item()
    assert mse < 0.5 * naive, (mse, naive)


@pytest.mark.slow
def test_learns_digits_and_reparam_keeps_predictions() -> None:
    """Tiny UniRepLKNet (card's A-like check) on 32x32 digits: val accuracy >= 0.9; fused model predicts the same."""
    torch.manual_seed(0)
    model = UniRepLKNet(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), kernel_sizes=((3,), (7,), (7, 7), (7,)),
                        num_classes=10)
    acc, logits = train_digits(model, size=32, epochs=5, lr=4e-3, return_logits=True)  # measured 0.962
    assert acc >= 0.9, acc
    from backbone_checks import digits_tensors

    xva = digits_tensors(32)[2]
    model.reparameterize()
    with torch.no_grad():
        fused = torch.cat([model(xva[i : i + 200]) for i in range(0, len(xva), 200)])
    assert (fused.argmax(1) == logits.argmax(1)).all()
    torch.testing.assert_close(fused, logits, rtol=1e-3, atol=1e-3)


def test_torch_export_of_deploy_form() -> None:
    check_export_deploy("test_unireplknet")


def test_downstream_feature_norms() -> None:
    """Official downstream mode: per-stage LayerNorms norm0..norm3 on the feature maps (keys as official)."""
    model = UniRepLKNet(**TINY, num_classes=3, feature_norms=True).eval()
    assert all(f"norm{i}.weight" in model.state_dict() for i in range(4))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_stages(x)
        m = maps[2]
        assert torch.allclose(m.mean(1), torch.zeros_like(m.mean(1)), atol=1e-4)  # LN over channels
        assert model(x).shape == (1, 3)
    feats = create_model("test_unireplknet", features_only=True, feature_norms=True)
    assert len(feats(x)) == 4


def test_video_tiling_adapter() -> None:
    clip = torch.arange(16 * 2 * 3 * 3, dtype=torch.float32).view(1, 16, 2, 3, 3)
    img = tile_frames(clip)
    assert img.shape == (1, 2, 12, 12)
    torch.testing.assert_close(img[0, :, 3:6, 6:9], clip[0, 6])  # frame 6 = row 1, column 2 of the 4x4 grid
    with torch.device("meta"):
        assert tile_frames(torch.empty(1, 16, 3, 224, 224)).shape == (1, 3, 896, 896)
    torch.testing.assert_close(video_to_image(clip.transpose(1, 2), "grid"), img)
    video = UniRepLKNetVideo(**TINY, num_classes=4)
    assert video(torch.randn(2, 3, 4, 16, 16)).shape == (2, 4)
    with pytest.raises(ValueError, match="UniRepLKNetVideo"):
        video(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="UniRepLKNetVideo.*square"):
        video(torch.randn(2, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="UniRepLKNetVideo.*channels"):
        video(torch.randn(2, 1, 4, 16, 16))
    with pytest.raises(ValueError, match="grid"):
        tile_frames(torch.randn(1, 6, 1, 2, 2), (4, 2))
    with pytest.raises(ValueError, match="grid applies"):
        UniRepLKNetVideo(grid=(2, 2), **TINY)


def test_video_reshape_is_the_official_memory_reshape() -> None:
    """Official engine_for_finetuning: (B, C, T, H, W).reshape(B, C, 4H, 4W) for T=16 (frame t -> rows of band t)."""
    clip = torch.randn(2, 3, 16, 8, 8)
    img = video_to_image(clip)
    assert img.shape == (2, 3, 32, 32)
    torch.testing.assert_close(img, clip.reshape(2, 3, 32, 32))
    # frame 5, rows 4..7 side by side form image row 5*8/4 + 1 = 11
    torch.testing.assert_close(img[:, :, 11], clip[:, :, 5, 4:8].reshape(2, 3, 32))


def test_audio_orientation_is_official() -> None:
    """Official ast_models.py: (B, T, F) -> unsqueeze(1).transpose(2, 3) = (B, 1, F, T)."""
    spec = torch.randn(2, 40, 24)
    img = UniRepLKNetAudio.to_image(spec)
    assert img.shape == (2, 1, 24, 40)
    torch.testing.assert_close(img[:, 0, 5, 7], spec[:, 7, 5])
    with pytest.raises(ValueError, match="in_chans is fixed"):
        UniRepLKNetAudio(**TINY, in_chans=3)
    audio = UniRepLKNetAudio(**TINY, num_classes=3)
    for bad, msg in [(torch.full((1, 16, 16), float("nan")), "UniRepLKNetAudio"),
                     (torch.ones(1, 16, 16, dtype=torch.long), "floating"), (torch.randn(16, 16), "3-D")]:
        with pytest.raises(ValueError, match=msg):
            audio(bad)


def test_modality_models_measured_figures() -> None:
    """Official settings on UniRepLKNet-S (training form, meta device); the cards give no modality figures."""
    expected = {  # params, GMACs (conv/linear/matmul incl. attention of the point fusion)
        "unireplknet_s_audio": (55_713_755, 3.009), "unireplknet_s_video": (55_995_304, 147.454),
        "unireplknet_s_point": (56_973_219, 107.546), "unireplknet_s_global_temp": (55_749_334, 2366.402),
    }
    for name, (params, gmacs) in expected.items():
        c = measure_entry(name)
        assert c.params == params, (name, c.params)
        assert abs(c.gmacs - gmacs) / gmacs < 1e-3, (name, c.gmacs)
    with torch.device("meta"):
        video = create_model("unireplknet_s_video")
        assert count_params(video) == count_params(create_model("unireplknet_s", num_classes=400))


def test_point_model_contract_and_projection() -> None:
    torch.manual_seed(0)
    model = create_model("test_unireplknet_point").eval()
    pts = torch.randn(2, 64, 3)
    with torch.no_grad():
        y = model(pts)
        img = model.encoder(pts)
        # permutation of the points does not change the output (EdgeConv + scatter-sum + max are symmetric)
        torch.testing.assert_close(model(pts[:, torch.randperm(64)]), y, rtol=1e-4, atol=1e-5)
        # a translated / uniformly scaled cloud projects to the same pixels
        idx = model.encoder.pixel_indices(pts)
        assert torch.equal(model.encoder.pixel_indices(pts * 2.0 + 0.5), idx)
    assert y.shape == (2, 5) and img.shape == (4, 3, 32, 32)
    assert int(idx.min()) >= 0 and int(idx.max()) < 32 * 32
    for bad, msg in [(torch.randn(2, 64, 2), "points"), (torch.randn(64, 3), "3-D"),
                     (torch.full((1, 64, 3), float("nan")), "UniRepLKNetPoint"),
                     (torch.ones(1, 64, 3, dtype=torch.long), "floating")]:
        with pytest.raises(ValueError, match=msg):
            model(bad)
    with pytest.raises(ValueError, match="num_views"):
        UniRepLKNetPoint(num_views=11, **TINY)
    # official training call model(pc, original_pc): features from the original, projection of the rotated copy
    rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    with torch.no_grad():
        y2 = model(pts @ rot.T, original_points=pts)
        assert y2.shape == (2, 5) and not torch.allclose(y2, y)
        torch.testing.assert_close(model(pts, original_points=pts), y)
    with pytest.raises(ValueError, match="must match"):
        model(pts, original_points=pts[:, :10])


def test_time_series_official_features() -> None:
    """Node channels, calendar marks, node coordinates, (H, W) map reshape and instance normalisation."""
    torch.manual_seed(0)
    pos = torch.randn(3, 6)
    ts = UniRepLKNetTimeSeries(seq_len=16, horizon=4, embed_dim=8, node_channels=2, map_size=(8, 16), calendar="h",
                               node_positions=pos, **TINY)
    x = torch.randn(2, 16, 6)
    mark = (torch.rand(2, 16, 4) * torch.tensor([13.0, 32, 7, 24])).floor()
    out = ts(x, mark)
    assert out.shape == (2, 4, 6)
    out.sum().backward()
    assert all(p.grad is not None for p in ts.parameters())
    ts.eval()
    with torch.no_grad():  # instance normalisation: a shifted and scaled input shifts and scales the forecast
        torch.testing.assert_close(ts(3 * x + 5, mark), 3 * ts(x, mark) + 5, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="x_mark"):
        ts(x)
    with pytest.raises(ValueError, match="N=3 nodes"):
        ts(torch.randn(2, 16, 8), mark)
    with pytest.raises(ValueError, match="N\\*2"):
        ts(torch.randn(2, 16, 5), mark)
    with pytest.raises(ValueError, match="map_size"):
        UniRepLKNetTimeSeries(seq_len=16, horizon=4, embed_dim=8, map_size=(8, 8), **TINY)
    plain = UniRepLKNetTimeSeries(seq_len=16, horizon=4, embed_dim=8, **TINY)
    with pytest.raises(ValueError, match="calendar=None"):
        plain(torch.randn(2, 16, 3), mark)
    with pytest.raises(ValueError, match="num_classes is fixed"):
        UniRepLKNetTimeSeries(seq_len=16, horizon=4, num_classes=10, **TINY)
    # registry convention: num_classes of a forecasting entry is the horizon
    m = create_model("test_unireplknet_timeseries", num_classes=5)
    assert m.horizon == 5 and m(*example_inputs("test_unireplknet_timeseries", 1)).shape == (1, 5, 4)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int = 32) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _spectrograms(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T=32, F=32) noisy spectrograms: 0 steady tone, 1 rising chirp, 2 falling chirp (random start bin)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    t = torch.arange(32.0)
    start = torch.randint(8, 24, (n,), generator=g).float()
    slope = torch.tensor([0.0, 0.4, -0.4])[y]
    centre = start[:, None] + slope[:, None] * (t[None] - 16)                     # (n, T)
    f = torch.arange(32.0)
    spec = torch.exp(-0.5 * (f[None, None] - centre[..., None]) ** 2)             # (n, T, F)
    return spec + 0.3 * torch.randn(spec.shape, generator=g), y


@pytest.mark.slow
def test_audio_learns_chirp_direction() -> None:
    """Tiny audio model separates steady / rising / falling tones (needs the time-frequency pattern): >= 0.9."""
    torch.manual_seed(0)
    xtr, ytr = _spectrograms(384, 0)
    xte, yte = _spectrograms(192, 1)
    model = create_model("test_unireplknet_audio", num_classes=3)
    with num_threads(1):
        _fit(model, xtr, ytr, steps=60, lr=4e-3)
        acc = _accuracy(model, xte, yte)
    assert acc >= 0.9, acc  # measured 1.0 (chance 0.33)


def _clips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, T=4, 16, 16) clips of a moving blob: class 0 moves right, class 1 moves left (random start/row)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x0 = torch.randint(4, 12, (n,), generator=g).float()
    row = torch.randint(3, 13, (n,), generator=g).float()
    step = torch.where(y == 0, 2.0, -2.0)
    t = torch.arange(4.0)
    cx = x0[:, None] + step[:, None] * (t[None] - 1.5)                            # (n, T)
    grid = torch.arange(16.0)
    blob = torch.exp(-0.5 * ((grid[None, None, None, :] - cx[..., None, None]) ** 2
                             + (grid[None, None, :, None] - row[:, None, None, None]) ** 2) / 1.5)
    clip = blob + 0.2 * torch.randn(blob.shape, generator=g)
    return clip.unsqueeze(1), y                                                   # (n, 1, T, H, W)


@pytest.mark.slow
def test_video_learns_motion_direction() -> None:
    """Left vs right motion: every frame alone is ambiguous, only the order of frames tells: accuracy >= 0.9."""
    torch.manual_seed(0)
    xtr, ytr = _clips(384, 0)
    xte, yte = _clips(192, 1)
    model = UniRepLKNetVideo(**TINY, in_chans=1, num_classes=2)
    with num_threads(1):
        _fit(model, xtr, ytr, steps=60, lr=4e-3)
        acc = _accuracy(model, xte, yte)
    assert acc >= 0.9, acc  # measured 1.0 (chance 0.5; a single frame carries no direction)


def _shapes(n: int, seed: int, points: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, points, 3) surface samples of 0 sphere, 1 cube, 2 cylinder; random scale and rotation about z."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    u = torch.randn(n, points, 3, generator=g)
    sphere = u / u.norm(dim=-1, keepdim=True)
    cube = u / u.abs().amax(dim=-1, keepdim=True)
    ang = torch.rand(n, points, generator=g) * 6.2832
    h = torch.rand(n, points, generator=g) * 2 - 1
    cyl = torch.stack([ang.cos(), ang.sin(), h], -1)
    pts = torch.where(y[:, None, None] == 0, sphere, torch.where(y[:, None, None] == 1, cube, cyl))
    th = torch.rand(n, generator=g) * 6.2832
    rot = torch.stack([torch.stack([th.cos(), -th.sin(), 0 * th], -1), torch.stack([th.sin(), th.cos(), 0 * th], -1),
                       torch.stack([0 * th, 0 * th, 1 + 0 * th], -1)], -2)
    scale = 0.5 + torch.rand(n, 1, 1, generator=g)
    return (pts @ rot.transpose(1, 2)) * scale, y


@pytest.mark.slow
def test_point_model_learns_shapes() -> None:
    """Sphere / cube / cylinder point clouds (randomly rotated and scaled) through the projection encoder: >= 0.9."""
    torch.manual_seed(0)
    xtr, ytr = _shapes(256, 0)
    xte, yte = _shapes(96, 1)
    model = create_model("test_unireplknet_point", num_classes=3)
    with num_threads(1):
        _fit(model, xtr, ytr, steps=45, lr=3e-3, batch=16)  # measured 1.0 (0.958 with 60 steps)
        acc = _accuracy(model, xte, yte)
    assert acc >= 0.9, acc
