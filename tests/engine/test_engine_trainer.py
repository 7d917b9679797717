"""Trainer: learning, metrics/checkpoint files, schedule, weight-decay groups, accumulation, bf16, EMA, custom tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from convatlas.engine import checkpoint as ckpt
from convatlas.engine.schedule import WarmupCosineSchedule, warmup_cosine_factor
from convatlas.engine.trainer import TrainConfig, Trainer, evaluate, param_groups_weight_decay
from convatlas.tasks.base import MetricAccumulator, TaskAdapter
from engine_testutils import TinyNet, state_equal, synthetic_dataset, one_thread  # noqa: F401 (autouse fixture)

FAST = dict(progress=False, device="cpu")


def test_fit_learns_and_writes_files(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    cfg = TrainConfig(epochs=4, batch_size=16, lr=2e-2, warmup_epochs=0.5, **FAST)
    tr = Trainer(model, "classification", synthetic_dataset(64), synthetic_dataset(32, seed=1), cfg,
                 out_dir=tmp_path, model_name="tiny", model_kwargs={"num_classes": 4})
    hist = tr.fit()
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4] and tr.step == 16
    assert hist[-1]["val_accuracy"] >= 0.9, hist
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(hist))
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.train.safetensors"):
        assert (tmp_path / name).is_file(), name
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["model_name"] == "tiny" and best["model_kwargs"] == {"num_classes": 4}
    assert best["task"] == "classification" and best["config"]["lr"] == 2e-2 and best["convatlas_version"]
    assert best["metrics"]["accuracy"] == max(r["val_accuracy"] for r in hist)
    assert best["epoch"] == tr.best_epoch
    last = ckpt.read_metadata(tmp_path / "last.safetensors")
    assert last["epoch"] == 4 and last["step"] == 16
    reloaded = TinyNet()
    ckpt.load_weights(reloaded, tmp_path / "last.safetensors")
    assert state_equal(reloaded.state_dict(), model.state_dict())
    again = evaluate(reloaded, tr.task, synthetic_dataset(32, seed=1), batch_size=7)
    assert again["accuracy"] == pytest.approx(hist[-1]["val_accuracy"])


def test_schedule_warmup_then_cosine():
    f = [warmup_cosine_factor(s, 4, 20, 0.1) for s in range(21)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0) and f[12] == pytest.approx(0.1 + 0.9 * 0.5) and f[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=0.5)
    sch = WarmupCosineSchedule(opt, 4, 20)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.125)
    for _ in range(3):
        sch.step()
    state = sch.state_dict()
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=0.5)
    sch2 = WarmupCosineSchedule(opt2, 4, 20)
    sch2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_trainer_lr_follows_schedule_per_step():
    lrs = []
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, warmup_steps=2, min_lr=0.0, **FAST)
    tr = Trainer(TinyNet(), "classification", synthetic_dataset(64), None, cfg,
                 callbacks=[lambda t, ev, info: lrs.append(info["lr"]) if ev == "step_end" else None])
    tr.fit()
    expected = [0.1 * warmup_cosine_factor(s, 2, 8) for s in range(1, 9)]  # lr after each step
    assert lrs == pytest.approx(expected)


def test_weight_decay_groups():
    class M(TinyNet):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(1, 3, 2, 2))

        def no_weight_decay(self):
            return {"pos"}

    m = M()
    groups = param_groups_weight_decay(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = sorted(names[id(p)] for p in groups[0]["params"])
    no = sorted(names[id(p)] for p in groups[1]["params"])
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == ["conv1.weight", "conv2.weight", "head.weight"]
    assert no == ["conv1.bias", "conv2.bias", "gamma", "head.bias", "pos"]
    # and the trainer really uses them: 1-D params are not shrunk when their gradient is zero
    m2 = TinyNet()
    m2.gamma.requires_grad_(True)
    tr = Trainer(m2, "classification", synthetic_dataset(16), None,
                 TrainConfig(epochs=1, batch_size=16, weight_decay=0.5, **FAST))
    wds = sorted(g["weight_decay"] for g in tr.optimizer.param_groups)
    assert wds == [0.0, 0.5]


def test_gradient_accumulation_matches_full_batch():
    def run(accum):
        torch.manual_seed(0)
        m = TinyNet()
        Trainer(m, "classification", synthetic_dataset(64), None,
                TrainConfig(epochs=2, batch_size=16, accum_steps=accum, lr=1e-2, **FAST)).fit()
        return m.state_dict()

    a, b = run(1), run(4)
    assert state_equal(a, b, atol=1e-5)
    assert not state_equal(a, TinyNet().state_dict(), atol=1e-3)


def test_bf16_autocast_on_cpu():
    seen = []

    class Probe(TinyNet):
        def forward(self, x):
            seen.append((torch.is_autocast_enabled("cpu"), self.conv1(x).dtype))
            return super().forward(x)

    torch.manual_seed(0)
    tr = Trainer(Probe(), "classification", synthetic_dataset(32), synthetic_dataset(16, seed=1),
                 TrainConfig(epochs=1, batch_size=16, bf16=True, lr=1e-2, **FAST))
    hist = tr.fit()
    assert seen and all(on and dt == torch.bfloat16 for on, dt in seen)
    assert math.isfinite(hist[0]["train_loss"]) and math.isfinite(hist[0]["val_loss"])
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())  # master weights stay fp32


def test_ema_is_evaluated_and_saved(tmp_path):
    torch.manual_seed(0)
    tr = Trainer(TinyNet(), "classification", synthetic_dataset(64), synthetic_dataset(32, seed=1),
                 TrainConfig(epochs=3, batch_size=16, lr=2e-2, ema=True, ema_decay=0.9, **FAST), out_dir=tmp_path)
    tr.fit()
    ema_sd, raw_sd = tr.ema.state_dict(), tr.model.state_dict()
    assert not state_equal(ema_sd, raw_sd, atol=1e-6)
    saved = TinyNet()
    ckpt.load_weights(saved, tmp_path / "last.safetensors")
    assert state_equal(saved.state_dict(), ema_sd)
    assert ckpt.read_metadata(tmp_path / "last.safetensors")["weights"] == "ema"
    assert tr.history[-1]["val_accuracy"] == pytest.approx(tr.evaluate()["accuracy"])


def test_grad_clip_is_applied(monkeypatch):
    calls = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return orig(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    Trainer(TinyNet(), "classification", synthetic_dataset(32), None,
            TrainConfig(epochs=1, batch_size=16, grad_clip=0.5, **FAST)).fit()
    assert calls == [0.5, 0.5]


def test_label_smoothing_goes_through_the_adapter():
    tr = Trainer(TinyNet(), "classification", synthetic_dataset(16), None,
                 TrainConfig(epochs=1, batch_size=16, label_smoothing=0.1, **FAST))
    assert tr.task.label_smoothing == 0.1
    with pytest.raises(ValueError, match="label smoothing"):
        Trainer(nn.Linear(3, 1), _RegressionTask(), _RegressionData(), None,
                TrainConfig(epochs=1, batch_size=8, label_smoothing=0.1, **FAST))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        Trainer(TinyNet(), "classification", synthetic_dataset(64), None,
                TrainConfig(batch_size=10, accum_steps=4, **FAST))
    with pytest.raises(ValueError, match="too small"):
        Trainer(TinyNet(), "classification", synthetic_dataset(8), None, TrainConfig(batch_size=16, **FAST))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0).validate()


# ----------------------------------------------------------------------------------- a non-classification task
class _MSE(MetricAccumulator):
    def __init__(self):
        self.s = torch.zeros(2, dtype=torch.float64)

    def update(self, outputs, targets):
        self.s += torch.tensor([((outputs.float() - targets) ** 2).sum().item(), targets.numel()],
                               dtype=torch.float64)

    def compute(self):
        return {"mse": self.s[0].item() / max(self.s[1].item(), 1)}

    def state(self):
        return self.s.clone()

    def load_state(self, state):
        self.s = state.clone()


class _RegressionTask(TaskAdapter):
    name = "test_regression"
    primary_metric = "mse"
    higher_is_better = False

    def split_batch(self, batch):  # dict batches: the trainer must not unpack (x, y) itself
        return (batch["x"],), batch["y"]

    def loss(self, outputs, targets):
        return nn.functional.mse_loss(outputs.float(), targets)

    def metrics(self):
        return _MSE()

    def predict(self, outputs, labels=None):
        return [{"value": v} for v in outputs.flatten().tolist()]

    def expected_output_shape(self, inputs, num_classes):
        return None


class _RegressionData(Dataset):
    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def test_trainer_with_custom_task_lower_is_better(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    tr = Trainer(model, _RegressionTask(), _RegressionData(), _RegressionData(32, seed=1),
                 TrainConfig(epochs=8, batch_size=8, lr=0.2, weight_decay=0.0, warmup_epochs=0, **FAST),
                 out_dir=tmp_path, model_name="linear")
    hist = tr.fit()
    mses = [r["val_mse"] for r in hist]
    assert mses[-1] < 0.05 * mses[0], mses
    assert tr.best_value == min(mses) and tr.best_epoch == 1 + mses.index(min(mses))
    assert json.loads((tmp_path / "best.json").read_text())["metrics"]["mse"] == min(mses)


def test_trainer_accepts_a_dataloader():
    torch.manual_seed(0)
    loader = DataLoader(synthetic_dataset(64), batch_size=16, shuffle=True)
    tr = Trainer(TinyNet(), "classification", loader, DataLoader(synthetic_dataset(32, seed=1), batch_size=8),
                 TrainConfig(epochs=3, batch_size=16, lr=2e-2, **FAST))
    hist = tr.fit()
    assert tr.step == 12 and hist[-1]["val_accuracy"] >= 0.75


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs the plot extra")
    Trainer(TinyNet(), "classification", synthetic_dataset(32), synthetic_dataset(16),
            TrainConfig(epochs=2, batch_size=16, plot=True, **FAST), out_dir=tmp_path).fit()
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_progress_bar_can_be_disabled(capsys):
    Trainer(TinyNet(), "classification", synthetic_dataset(32), None,
            TrainConfig(epochs=1, batch_size=16, progress=False, device="cpu")).fit()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    Trainer(TinyNet(), "classification", synthetic_dataset(32), None,
            TrainConfig(epochs=1, batch_size=16, progress=True, device="cpu")).fit()
    out = capsys.readouterr()
    assert "epoch 1/1" in out.err and "train_loss=" in out.out


def test_fresh_run_restarts_metrics_file(tmp_path):
    for _ in range(2):
        Trainer(TinyNet(), "classification", synthetic_dataset(32), None,
                TrainConfig(epochs=2, batch_size=16, **FAST), out_dir=tmp_path).fit()
    assert [json.loads(s)["epoch"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_model_ema_update_rule():
    from convatlas.engine.ema import ModelEma

    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEma(m, decay=0.9, warmup=False)
    w0 = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    m[1].num_batches_tracked.fill_(7)
    ema.update(m)
    assert torch.allclose(ema.module[0].weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers are copied
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    warm = ModelEma(m, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with pytest.raises(ValueError):
        ModelEma(m, decay=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training(tmp_path):
    torch.manual_seed(0)
    tr = Trainer(TinyNet(), "classification", synthetic_dataset(64), synthetic_dataset(32, seed=1),
                 TrainConfig(epochs=3, batch_size=16, lr=2e-2, bf16=True, ema=True, progress=False, device="cuda"),
                 out_dir=tmp_path)
    hist = tr.fit()
    assert next(tr.model.parameters()).is_cuda and hist[-1]["val_accuracy"] >= 0.75
    saved = TinyNet()
    ckpt.load_weights(saved, tmp_path / "last.safetensors")  # CUDA tensors are saved as CPU safetensors
    assert state_equal(saved.state_dict(), {k: v.cpu() for k, v in tr.ema.state_dict().items()})
