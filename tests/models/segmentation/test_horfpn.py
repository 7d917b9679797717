"""HorFPN (card: hornet): g^nConv decoder modules, the FPN neck, HorNet + UPerNet segmentation, learning check."""

from __future__ import annotations

import pytest
import torch

from convatlas import create_model, list_models
from convatlas.analysis.complexity import measure_complexity
from convatlas.models.segmentation.horfpn import GnConvModule, HorFPN, HorNetUPerNet, HorUPerHead
from convatlas.tasks import get_task
from convatlas.tasks.segmentation2d import confusion_matrix, mean_iou

# Measured on the meta device (with the auxiliary head, 512x2048 decode path), README: 52M/926G, 55M/924G,
# 81M/1030G, 85M/1027G.
EXACT = {
    "upernet_hornet_tiny_7x7": (52_205_036, 925.2),
    "upernet_hornet_tiny_gf": (54_626_476, 923.6),
    "upernet_hornet_small_7x7": (81_181_772, 1029.6),
    "upernet_hornet_small_gf": (84_813_932, 1027.1),
    "upernet_hornet_base_7x7": (120_768_172, 1173.8),  # README 121M / 1174G
    "upernet_hornet_base_gf": (125_611_052, 1170.5),  # README 126M / 1171G
    "upernet_hornet_large_7x7": (231_769_964, 2471.6),  # README 232M / 2473G at 640x2560 (640 crops)
    "upernet_hornet_large_gf": (239_034_284, 2463.7),  # README 239M / 2465G at 640x2560
    "horfpn_7x7_upernet_hornet_small_7x7": (74_275_404, 576.8),
    "horfpn_gf_upernet_hornet_small_7x7": (74_661_324, 574.5),
}


def test_registered_variants() -> None:
    names = [n for n in list_models(paper="hornet") if "upernet" in n]
    assert sorted(names) == sorted(EXACT)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_counts_match_readme(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name).eval()
    crop = 640 if "large" in name else 512  # the L configs train on 640 crops; README FLOPs at crop x 4 crop
    c = measure_complexity(model, (torch.empty(1, 3, crop, 4 * crop, device="meta"),))
    params, gmacs = EXACT[name]
    assert c.params == params and abs(c.gmacs - gmacs) < 0.1, (c.params, c.gmacs)


def test_gnconv_module_official_layout() -> None:
    m = GnConvModule(2048, 512, order=2, spatial="gf", gf_size=32, norm="bn", act="relu")
    keys = set(m.state_dict())
    for k in ("proj_in.weight", "dwconv.dw.weight", "dwconv.complex_weight", "dwconv.pre_norm.weight",
              "pws.0.weight", "proj_out.weight", "bn.weight", "bn.running_mean"):
        assert k in keys, k
    assert m.proj_in.in_channels == 2048 and m.proj_in.out_channels == 1024
    assert tuple(m.dwconv.complex_weight.shape) == (384, 32, 17, 2)  # (sum d_k / 2, h, h//2+1, 2)
    no_proj = GnConvModule(16, 16, proj_out=False)
    assert isinstance(no_proj.proj_out, torch.nn.Identity) and "proj_out.weight" not in no_proj.state_dict()
    x = torch.randn(2, 16, 12, 10)
    assert GnConvModule(16, 8, spatial="gf", gf_size=8)(x).shape == (2, 8, 12, 10)  # GF spectrum interpolated
    with pytest.raises(ValueError, match="spatial"):
        GnConvModule(16, 8, spatial="fft")
    with pytest.raises(ValueError, match="divisible"):
        GnConvModule(16, 10, order=3)


@pytest.mark.parametrize("extra", [False, "on_input", "on_output"])
def test_horfpn_neck_levels(extra) -> None:
    torch.manual_seed(0)
    fpn = HorFPN([8, 16, 32, 64], out_chs=16, num_outs=5, add_extra_convs=extra)
    feats = [torch.randn(2, c, 64 // 2**i, 48 // 2**i) for i, c in enumerate((8, 16, 32, 64))]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 64 // 2**i, 48 // 2**i) for i in range(5)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in fpn.parameters())
    with pytest.raises(ValueError, match="feature maps"):
        fpn(feats[:3])


def test_head_variants_and_aux() -> None:
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
    for fb in ("gnconv", "conv"):
        head = HorUPerHead([16, 32, 64, 128], 5, channels=16, fpn_bottleneck=fb, gf_size=8)
        assert head(feats).shape == (2, 5, 16, 16)
    model = create_model("test_horfpn", aux_head=True)
    x = torch.randn(2, 3, 64, 64)
    out, aux = model.train()(x)
    assert out.shape == aux.shape == (2, 4, 64, 64)
    task = get_task("segmentation2d")
    y = torch.randint(0, 4, (2, 64, 64))
    loss = task.loss((out, aux), y)
    assert torch.allclose(loss, task.loss(out, y) + 0.4 * task.loss(aux, y))
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 4, 64, 64)


def test_safety_bf16_channels_last_and_odd_sizes() -> None:
    torch.manual_seed(0)
    model = create_model("test_horfpn").eval()
    x = torch.randn(2, 3, 64, 64)
    for bad in (torch.randn(3, 64, 64), torch.randn(2, 4, 64, 64), torch.full((2, 3, 64, 64), float("nan"))):
        with pytest.raises(ValueError, match="test_horfpn"):
            model(bad)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        assert torch.isfinite(y).all() and (y.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 0.05
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
        assert model(torch.randn(1, 3, 72, 40)).shape == (1, 4, 72, 40)


def test_miou_metric() -> None:
    conf = confusion_matrix(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 255, 2]), 3)
    miou, iou = mean_iou(conf)
    assert iou.tolist() == [0.5, 0.5, 1.0] and abs(miou - 2 / 3) < 1e-12
    m = get_task("segmentation2d").metrics()
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :2] = logits[0, 2, 0, 2:] = 1.0
    m.update(logits, torch.tensor([[[0, 0, 2, 255]]]))  # class 1 absent from both: left out of the mean
    assert m.compute()["miou"] == 1.0 and m.compute()["pixel_accuracy"] == 1.0


@pytest.mark.slow
def test_learns_noisy_regions() -> None:
    """Tiny HorNet + HorFPN (GF fpn_bottleneck) on 32x32 noisy-rectangle scenes (3 classes, pixel noise = class
    shift, so one pixel alone is ambiguous: the per-pixel Bayes rule reaches mIoU ~0.37). 30 AdamW steps of 16
    images; threshold test mIoU >= 0.7 (measured 0.87; needs spatial context to beat the per-pixel optimum)."""
    from convatlas.data.synthetic_segmentation import make_noisy_rect_scenes, pixelwise_bayes_labels

    xtr, ytr = make_noisy_rect_scenes(256, 32, seed=0)
    xte, yte = make_noisy_rect_scenes(64, 32, seed=1)
    bayes, _ = mean_iou(confusion_matrix(pixelwise_bayes_labels(xte).flatten(), yte.flatten(), 3))
    torch.manual_seed(0)
    model = create_model("test_horfpn", num_classes=3, head={"channels": 16})
    task = get_task("segmentation2d")
    steps, lr = 30, 5e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (16,), generator=g)
        loss = task.loss(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    metrics = task.metrics()
    with torch.no_grad():
        metrics.update(model.eval()(xte), yte)
    miou = metrics.compute()["miou"]
    assert bayes < 0.45 and miou >= 0.7, (miou, bayes)


def test_backbone_matches_classifier_trunk() -> None:
    """The segmentation backbone is the HorNet classifier's trunk (same keys below ``backbone.``)."""
    seg = create_model("test_horfpn")
    assert isinstance(seg, HorNetUPerNet)
    cls_keys = {k for k in create_model("test_hornet").state_dict() if not k.startswith("head.")}
    assert {k[len("backbone."):] for k in seg.state_dict() if k.startswith("backbone.")} == cls_keys


def test_torch_export_matches_eager() -> None:
    """The segmentation model exports with torch.export (no graph breaks) and computes the same logits."""
    torch.manual_seed(0)
    model = create_model("test_horfpn").eval()
    x = torch.randn(1, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))
