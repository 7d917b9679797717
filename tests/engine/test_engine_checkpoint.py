"""Checkpoint IO: safetensors + JSON, atomic writes, safe .pth loading, all-or-nothing validation."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types

import pytest
import torch
from torch import nn

from convatlas.engine import checkpoint as ckpt
from engine_testutils import TinyNet, state_equal, one_thread  # noqa: F401 (autouse fixture)


def _clone_state(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_save_weights_roundtrip_and_metadata(tmp_path):
    torch.manual_seed(0)
    a, b = TinyNet(), TinyNet()
    path = ckpt.save_weights(tmp_path / "w.safetensors", a.state_dict(),
                             {"model_name": "tiny", "model_kwargs": {"num_classes": 4}, "epoch": 3})
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["model_name"] == "tiny" and meta["epoch"] == 3 and meta["format"] == ckpt.CHECKPOINT_FORMAT
    os.remove(tmp_path / "w.json")  # the header carries the same metadata
    assert ckpt.read_metadata(path)["model_kwargs"] == {"num_classes": 4}
    assert not state_equal(a.state_dict(), b.state_dict())
    res = ckpt.load_weights(b, path)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert state_equal(a.state_dict(), b.state_dict())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    ckpt.atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_tied_weights_are_saved(tmp_path):
    m = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    m[1].weight = m[0].weight
    ckpt.save_weights(tmp_path / "t.safetensors", m.state_dict(), {})
    m2 = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    ckpt.load_weights(m2, tmp_path / "t.safetensors")
    assert torch.equal(m2[0].weight, m[0].weight) and torch.equal(m2[1].weight, m[0].weight)


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "model_ema", "ddp"])
def test_load_pth_unwraps_common_wrappers(tmp_path, wrapper):
    torch.manual_seed(1)
    src, dst = TinyNet(), TinyNet()
    sd = src.state_dict()
    if wrapper == "ddp":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrapper == "model_ema":
        obj = {"model_ema": sd, "epoch": 5, "args": {"lr": 0.1}}
    elif wrapper:
        obj = {wrapper: sd, "epoch": 5, "optimizer": {"state": {}}}
    else:
        obj = sd
    torch.save(obj, tmp_path / "c.pth")
    ckpt.load_weights(dst, tmp_path / "c.pth")
    assert state_equal(src.state_dict(), dst.state_dict())


def test_use_ema_prefers_ema_weights(tmp_path):
    a, b, dst = TinyNet(), TinyNet(), TinyNet()
    torch.save({"model": a.state_dict(), "model_ema": b.state_dict()}, tmp_path / "c.pt")
    ckpt.load_weights(dst, tmp_path / "c.pt")
    assert state_equal(dst.state_dict(), a.state_dict())
    ckpt.load_weights(dst, tmp_path / "c.pt", use_ema=True)
    assert state_equal(dst.state_dict(), b.state_dict())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    m = TinyNet()
    before = _clone_state(m)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": m.state_dict(), "x": _Evil(marker)}, path)
    raw = tmp_path / "evil_raw.pt"  # a plain (non-zip) pickle too
    raw.write_bytes(pickle.dumps({"a": _Evil(marker)}))
    for p in (path, raw):
        with pytest.raises(ValueError, match="refused") as e:
            ckpt.load_weights(m, p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists(), "the pickle's code ran"
    assert state_equal(before, m.state_dict())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_is_rejected(tmp_path, suffix):
    m = TinyNet()
    path = tmp_path / f"c{suffix}"
    if suffix == ".safetensors":
        ckpt.save_weights(path, m.state_dict(), {})
    else:
        torch.save(m.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _clone_state(m)
    with pytest.raises(ValueError, match="corrupt or truncated") as e:
        ckpt.load_weights(m, path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert state_equal(before, m.state_dict())


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        ckpt.load_weights(TinyNet(), tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported"):
        ckpt.load_weights(TinyNet(), tmp_path / "w.npz")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="no state dict"):
        ckpt.load_weights(TinyNet(), tmp_path / "meta.pth")


def test_other_model_state_dict_rejected_without_half_loading(tmp_path):
    torch.manual_seed(0)
    other = TinyNet(num_classes=7, width=6)  # shapes differ everywhere
    sd = dict(other.state_dict())
    sd["extra.weight"] = torch.zeros(2)
    # Put the keys that still fit FIRST so a naive loader would copy them before failing.
    ok = TinyNet()
    sd_mixed = {"conv1.weight": torch.full_like(ok.conv1.weight, 7.0), **sd}
    sd_mixed["conv1.weight"] = torch.full_like(ok.conv1.weight, 7.0)
    del sd_mixed["head.bias"]
    ckpt.save_weights(tmp_path / "o.safetensors", sd_mixed, {})
    before = _clone_state(ok)
    with pytest.raises(ValueError) as e:
        ckpt.load_weights(ok, tmp_path / "o.safetensors", model_name="tinynet")
    msg = str(e.value)
    assert "\n" not in msg and "o.safetensors" in msg and "tinynet" in msg
    assert "missing (head.bias)" in msg and "unexpected (extra.weight)" in msg and "shape mismatch" in msg
    assert "conv2.weight (12, 6, 3, 3) vs (16, 8, 3, 3)" in msg
    assert state_equal(before, ok.state_dict()), "a failed load changed the model"
    # strict=False tolerates missing/unexpected keys but never a shape mismatch
    with pytest.raises(ValueError, match="shape mismatch"):
        ckpt.load_weights(ok, tmp_path / "o.safetensors", strict=False)
    assert state_equal(before, ok.state_dict())


def test_non_strict_partial_load(tmp_path):
    src, dst = TinyNet(), TinyNet()
    sd = src.state_dict()
    del sd["head.weight"], sd["head.bias"]
    ckpt.save_weights(tmp_path / "p.safetensors", sd, {})
    with pytest.raises(ValueError, match="2 missing"):
        ckpt.load_weights(dst, tmp_path / "p.safetensors")
    head_before = dst.head.weight.clone()
    res = ckpt.load_weights(dst, tmp_path / "p.safetensors", strict=False)
    assert res.missing_keys == ["head.bias", "head.weight"]
    assert torch.equal(dst.conv1.weight, src.conv1.weight) and torch.equal(dst.head.weight, head_before)


def test_family_checkpoint_filter_fn_is_applied(tmp_path, monkeypatch):
    """A module-level ``checkpoint_filter_fn`` of the model's module converts foreign key layouts."""
    mod = types.ModuleType("fake_family_mod")

    def checkpoint_filter_fn(state_dict, model):
        return {k.replace("legacy_", ""): v for k, v in state_dict.items()}

    mod.checkpoint_filter_fn = checkpoint_filter_fn
    monkeypatch.setitem(sys.modules, "fake_family_mod", mod)
    Fam = type("Fam", (TinyNet,), {"__module__": "fake_family_mod"})
    src, dst = Fam(), Fam()
    torch.save({"model": {f"legacy_{k}": v for k, v in src.state_dict().items()}}, tmp_path / "off.pth")
    ckpt.load_weights(dst, tmp_path / "off.pth")
    assert state_equal(src.state_dict(), dst.state_dict())

    # a staticmethod on the class works as well, and a failing converter gives a one-line error
    class Broken(TinyNet):
        @staticmethod
        def checkpoint_filter_fn(state_dict, model):
            raise KeyError("weird layout")

    with pytest.raises(ValueError, match="key conversion"):
        ckpt.load_weights(Broken(), tmp_path / "off.pth")


def test_convnext_official_layout_loads_through_create_model(tmp_path):
    """create_model(pretrained=path) on an official-layout ConvNeXt checkpoint (converter of the family)."""
    from convatlas import create_model, list_models

    if "test_convnext" not in list_models(include_test=True):
        pytest.skip("ConvNeXt family not registered yet")
    import re

    torch.manual_seed(0)
    src = create_model("test_convnext")
    fb = {}
    for k, v in src.state_dict().items():  # our layout -> official FB layout
        k2 = k.replace("stem.", "downsample_layers.0.").replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k2 = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k2)
        k2 = re.sub(r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2.", k2)
        k2 = k2.replace("head.fc.", "head.").replace("head.norm.", "norm.")
        if v.ndim == 4 and v.shape[-1] == 1 and "pwconv" in k2:
            v = v.flatten(1)
        fb[k2] = v
    torch.save({"model": fb}, tmp_path / "convnext_fb.pth")
    dst = create_model("test_convnext", pretrained=tmp_path / "convnext_fb.pth")
    assert state_equal(src.state_dict(), dst.state_dict())


def test_training_state_roundtrip(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(0)
    m = TinyNet()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    ckpt.save_training_state(tmp_path / "s.train.safetensors", model_state=m.state_dict(), optimizer=opt,
                             extra={"step": 1})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    st = ckpt.load_training_state(tmp_path / "s.train.safetensors")
    ckpt.restore_rng(st["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    opt2 = torch.optim.AdamW(TinyNet().parameters(), lr=5.0)
    opt2.load_state_dict(st["optimizer"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    assert all(torch.equal(a["state"][i]["exp_avg_sq"], b["state"][i]["exp_avg_sq"]) for i in a["state"])
    assert st["extra"] == {"step": 1}
    # the file is plain safetensors: no pickle involved
    assert (tmp_path / "s.train.safetensors").read_bytes()[8:9] == b"{"


def test_head_mismatch_hints_at_reset_classifier(tmp_path):
    ckpt.save_weights(tmp_path / "k.safetensors", TinyNet(num_classes=10).state_dict(), {})
    with pytest.raises(ValueError, match="reset_classifier"):
        ckpt.load_weights(TinyNet(num_classes=4), tmp_path / "k.safetensors")
