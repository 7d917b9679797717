"""AFFNet + SSDLite object detection (card: aff): official cvnets layout and parameter counts, output contract,
priors, safety (bad inputs, state dict, bf16, channels_last), official checkpoints, and a learning check."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "classification"))
from backbone_checks import check_bad_inputs, check_state_dict_roundtrip  # noqa: E402
from test_affnet import OFFICIAL_CFGS, _conv_layer, fill, n_params, official_affnet  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import measure_entry  # noqa: E402
from convatlas.models.detection.ssdlite import SSDLite, convert_official_affnet_ssd  # noqa: E402
from convatlas.ops.boxes import box_iou, ssd_priors  # noqa: E402
from convatlas.registry import get_entry  # noqa: E402
from convatlas.tasks.detection import DetectionTask, SSDOutput, mean_average_precision  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

_REG = {"xx_small": "affnet_et_ssdlite", "x_small": "affnet_t_ssdlite", "small": "affnet_ssdlite"}


def official_ssd(mode: str, n_classes: int = 81) -> dict[str, tuple]:
    """cvnets ``SingleShotMaskDetector`` keys -> shapes (official models/detection/ssd.py, modules/ssd_heads.py,
    layers/conv_layer.py SeparableConv) for the MobileViT SSDLite config, written from the official modules."""
    rows = OFFICIAL_CFGS[mode][3]
    c4, c5 = rows[1][0], rows[2][0]
    sd = {"encoder." + k: s for k, s in official_affnet(mode, num_classes=None).items()}
    strides, proj, ratios = [16, 32, 64, 128, 256, -1], [512, 256, 256, 128, 128, 64], [[2, 3]] * 5 + [[2]]
    enc_ch, cin = [], c5
    for os_, p in zip(strides, proj):
        if os_ in (16, 32):
            enc_ch.append(c4 if os_ == 16 else c5)
            continue
        if os_ == -1:  # AdaptiveAvgPool2d, ConvLayer 1x1 (no norm, no bias) + act
            _conv_layer(sd, f"extra_layers.os_{os_}.1.", p, cin, 1, norm=False)
        else:  # SeparableConv stride 2: dw ConvLayer (BN) + pw ConvLayer (BN, act)
            _conv_layer(sd, f"extra_layers.os_{os_}.dw_conv.", cin, cin, 3, groups=cin)
            _conv_layer(sd, f"extra_layers.os_{os_}.pw_conv.", p, cin, 1)
        enc_ch.append(p)
        cin = p
    for i, (os_, c, p, ar) in enumerate(zip(strides, enc_ch, proj, ratios)):
        q, k, n = f"ssd_heads.{i}.", 3 if os_ != -1 else 1, (2 + 2 * len(ar)) * (4 + n_classes)
        if p != c and k > 1:
            _conv_layer(sd, q + "proj_layer.", p, c, 1)
            c = p
        if k > 1:
            _conv_layer(sd, q + "loc_cls_layer.dw_conv.", c, c, 3, groups=c)
            q += "loc_cls_layer.pw_conv."
        else:
            q += "loc_cls_layer."
        sd[q + "block.conv.weight"], sd[q + "block.conv.bias"] = (n, c, 1, 1), (n,)
    return sd


def test_variants_registered() -> None:
    assert list_models(paper="aff", task="detection") == sorted(_REG.values())
    for name in _REG.values():
        e = get_entry(name)
        assert e.input_size == (3, 320, 320) and e.num_classes == 80 and e.reported.params_exact


@pytest.mark.parametrize("mode", sorted(_REG))
def test_params_equal_official_layout(mode: str) -> None:
    """Meta device: our count == official key shapes == the registered exact figure; MACs at 320 as documented."""
    c = measure_entry(_REG[mode])
    assert c.params == n_params(official_ssd(mode)) == get_entry(_REG[mode]).reported.params
    assert c.gmacs == pytest.approx({"xx_small": 0.697, "x_small": 1.375, "small": 2.424}[mode], abs=5e-4)


def test_full_size_output_contract_on_meta() -> None:
    """cvnets SSDLite at 320: 3,232 priors, 81 logits (80 classes + background)."""
    with torch.device("meta"):
        model = create_model("affnet_et_ssdlite")
        out = model(torch.randn(2, 3, 320, 320))
    assert isinstance(out, SSDOutput)
    assert out.cls_logits.shape == (2, 3232, 81) and out.box_deltas.shape == (2, 3232, 4)
    assert out.priors.shape == (3232, 4)
    maps = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert [tuple(m.shape[-2:]) for m in model.feature_maps(torch.randn(1, 3, 320, 320, device="meta"))] == maps


def test_official_checkpoint_converts_strictly(tmp_path) -> None:
    shapes = official_ssd("xx_small")
    with torch.device("meta"):
        model = create_model("affnet_et_ssdlite")
        sd = {k: torch.empty(s, dtype=torch.long if k.endswith("tracked") else torch.float) for k, s in shapes.items()}
    res = model.load_state_dict(convert_official_affnet_ssd({"model": sd}), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    # values land where the official ops read them (real tensors, loaded from an official-style .pt file)
    real = fill(shapes, seed=3)
    path = tmp_path / "ssd_affnet_et.pt"
    torch.save({"state_dict": real}, path)
    m = create_model("affnet_et_ssdlite", pretrained=str(path)).eval()
    torch.testing.assert_close(m.ssd_heads[5].loc_cls_layer[0].bias, real["ssd_heads.5.loc_cls_layer.block.conv.bias"])
    torch.testing.assert_close(m.extra_layers["os_64"].pw_conv[1].running_var,
                               real["extra_layers.os_64.pw_conv.block.norm.running_var"])
    torch.testing.assert_close(m.backbone.model.stem[0].weight, real["encoder.conv_1.block.conv.weight"])


def test_tiny_forward_priors_and_predict() -> None:
    model = create_model("test_aff_ssdlite").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    maps = [(8, 12), (4, 6), (2, 3), (1, 1)]
    p = 4 * sum(h * w for h, w in maps)
    assert out.cls_logits.shape == (2, p, 3) and out.box_deltas.shape == (2, p, 4)
    torch.testing.assert_close(out.priors, ssd_priors(maps, (64, 96), [[2]] * 4, 0.2, 0.95))
    assert out.image_size.tolist() == [64, 96]
    model.train()
    dets = model.predict(x)
    assert model.training  # mode restored
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    for d in dets:
        assert ((d["boxes"][:, 0::2] >= 0) & (d["boxes"][:, 0::2] <= 96)).all()
        assert ((d["labels"] >= 0) & (d["labels"] < 2)).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all() and len(d["scores"]) <= model.max_detections


def test_bad_inputs_and_config_errors() -> None:
    model = create_model("test_aff_ssdlite").eval()
    check_bad_inputs(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="one entry per level"):
        SSDLite("test_aff", output_strides=(8, 16), aspect_ratios=((2,),), proj_channels=(8, 8))
    with pytest.raises(ValueError, match="reductions"):
        SSDLite("test_aff", output_strides=(12, 16), aspect_ratios=((2,),) * 2, proj_channels=(8, 8))
    with pytest.raises(ValueError, match="must be last"):
        SSDLite("test_aff", output_strides=(32, -1, 64), aspect_ratios=((2,),) * 3, proj_channels=(8, 8, 8))
    with pytest.raises(ValueError, match="double"):
        SSDLite("test_aff", output_strides=(32, 128), aspect_ratios=((2,),) * 2, proj_channels=(8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        SSDLite("test_aff", num_classes=0)


def test_state_dict_bf16_and_channels_last() -> None:
    torch.manual_seed(0)
    model = create_model("test_aff_ssdlite")
    x = torch.randn(2, 3, 64, 64)
    model.train()
    model(x)  # move BN statistics away from their defaults
    check_state_dict_roundtrip(model, lambda: create_model("test_aff_ssdlite"), x)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(x)
        for a, b in zip(yb[:2], ref[:2]):
            assert torch.isfinite(a.float()).all()
            assert (a.float() - b).abs().max() < 0.1 * b.abs().max() + 0.05
        assert yb.priors.dtype == torch.float32
        m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ycl = m_cl(x.contiguous(memory_format=torch.channels_last))
        for a, b in zip(ycl[:3], ref[:3]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_torch_export_matches_eager() -> None:
    """The detector (frequency filters, priors built in forward) exports to one graph; the SSDOutput round-trips."""
    model = create_model("test_aff_ssdlite").eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 64, 64),))
    x = torch.randn(2, 3, 64, 64)
    out = ep.module()(x)
    with torch.no_grad():
        ref = model(x)
    assert isinstance(out, SSDOutput)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---- learning check ------------------------------------------------------------------------------------------
def shapes_batch(n: int, g: torch.Generator, size: int = 64) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Synthetic detection data: 1-3 non-overlapping objects of side 12-28 px on N(0, 0.25^2) noise, class 0 =
    filled square, class 1 = filled disc; each object gets a random colour (channel values +-[0.5, 1.5]), so the
    class is told by shape only and the box by the object's extent."""
    x = 0.25 * torch.randn(n, 3, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    targets = []
    for i in range(n):
        want = int(torch.randint(1, 4, (1,), generator=g))
        boxes: list[torch.Tensor] = []
        labels: list[int] = []
        for _ in range(50):
            if len(boxes) == want:
                break
            s = int(torch.randint(12, 29, (1,), generator=g))
            x1, y1 = (int(v) for v in torch.randint(0, size - s + 1, (2,), generator=g))
            b = torch.tensor([x1, y1, x1 + s, y1 + s], dtype=torch.float32)
            if boxes and box_iou(b[None], torch.stack(boxes)).max() > 0:
                continue
            c = int(torch.randint(0, 2, (1,), generator=g))
            colour = (0.5 + torch.rand(3, generator=g)) * torch.where(torch.rand(3, generator=g) < 0.5, -1.0, 1.0)
            if c == 0:
                mask = (xx >= x1) & (xx < x1 + s) & (yy >= y1) & (yy < y1 + s)
            else:
                mask = (xx - x1 - s / 2) ** 2 + (yy - y1 - s / 2) ** 2 <= (s / 2) ** 2
            x[i][:, mask] = colour[:, None]
            boxes.append(b)
            labels.append(c)
        targets.append({"boxes": torch.stack(boxes), "labels": torch.tensor(labels)})
    return x, targets


@pytest.mark.slow
def test_learns_synthetic_shapes_detection() -> None:
    """Tiny AFFNet + SSDLite (``test_aff_ssdlite``), 300 AdamW steps of 16 synthetic 64x64 images (squares vs
    discs, random colours): VOC mAP@0.5 on 64 held-out images >= 0.6 (measured 0.81, COCO mAP 0.64; other seeds
    0.88 / 0.84; untrained 0.01; 200 steps give 0.63). About 13 s of one idle CPU core for the training."""
    torch.manual_seed(0)
    model = create_model("test_aff_ssdlite")
    task = DetectionTask()
    steps, lr = 300, 1e-2
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(1)
    xv, tv = shapes_batch(64, torch.Generator().manual_seed(123))
    untrained = mean_average_precision(model.predict(xv), tv, 2)["map50_voc"]
    for _ in range(steps):
        x, t = shapes_batch(16, g)
        loss = task.loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    result = mean_average_precision(model.predict(xv), tv, 2)
    assert untrained < 0.1, untrained
    assert result["map50_voc"] >= 0.6, result


def test_trains_and_evaluates_with_the_engine() -> None:
    """The generic Trainer / evaluate run the detection task end to end (DataLoader with detection_collate)."""
    from torch.utils.data import DataLoader

    from convatlas.engine.trainer import TrainConfig, Trainer, evaluate
    from convatlas.tasks.detection import detection_collate

    x, t = shapes_batch(8, torch.Generator().manual_seed(5))
    items = list(zip(x, t))
    loader = DataLoader(items, batch_size=4, collate_fn=detection_collate)
    model = create_model("test_aff_ssdlite")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, device="cpu", warmup_epochs=0)
    Trainer(model, "detection", loader, config=cfg).fit()
    m = evaluate(model, DetectionTask(), loader)
    assert {"loss", "map50_voc", "map_coco"} <= set(m) and m["loss"] > 0
