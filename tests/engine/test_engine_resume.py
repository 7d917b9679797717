"""Exact resume, Ctrl-C checkpoints and NaN stops."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from convatlas.engine import checkpoint as ckpt
from convatlas.engine.trainer import NonFiniteLossError, TrainConfig, Trainer
from engine_testutils import TinyNet, state_equal, synthetic_dataset, one_thread  # noqa: F401 (autouse fixture)

# dropout + EMA + accumulation: resuming must restore RNG, optimizer, schedule, EMA and data position
CFG = dict(epochs=3, batch_size=16, accum_steps=2, lr=2e-2, ema=True, ema_decay=0.9, warmup_epochs=0.5,
           progress=False, device="cpu")
DATA = dict(train_data=synthetic_dataset(48), val_data=synthetic_dataset(16, seed=1))  # 3 steps / epoch


class _Recorder:
    def __init__(self, stop_after: int | None = None):
        self.losses: dict[int, float] = {}
        self.stop_after = stop_after

    def __call__(self, trainer, event, info):
        if event == "step_end":
            self.losses[info["step"]] = info["loss"]
            if info["step"] == self.stop_after:
                raise KeyboardInterrupt  # what Ctrl-C raises mid-run


def _trainer(out, rec, seed=0):
    torch.manual_seed(seed)
    return Trainer(TinyNet(dropout=0.3), "classification", config=TrainConfig(**CFG), out_dir=out,
                   callbacks=[rec], model_name="tiny", **DATA)


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch and exactly at an epoch boundary
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stop_after):
    ref_rec = _Recorder()
    ref = _trainer(tmp_path / "ref", ref_rec)
    ref.fit()
    assert ref.step == 9

    rec1 = _Recorder(stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "run", rec1).fit()
    state = ckpt.load_training_state(tmp_path / "run" / "last.train.safetensors")
    assert state["extra"]["step"] == stop_after

    rec2 = _Recorder()
    resumed = _trainer(tmp_path / "run", rec2, seed=123)  # a different init: everything must come from the file
    resumed.fit(resume=True)
    assert resumed.step == 9
    assert min(rec2.losses) == stop_after + 1
    assert rec2.losses[stop_after + 1] == ref_rec.losses[stop_after + 1]  # next-step loss, bit for bit
    assert [rec2.losses[s] for s in range(stop_after + 1, 10)] == [ref_rec.losses[s] for s in range(stop_after + 1, 10)]
    assert state_equal(resumed.model.state_dict(), ref.model.state_dict())
    assert state_equal(resumed.ema.state_dict(), ref.ema.state_dict())
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    run_lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strip = [lambda s: {k: v for k, v in json.loads(s).items() if k != "time_s"}][0]
    assert [strip(s) for s in run_lines] == [strip(s) for s in ref_lines]


def test_resume_rejects_a_different_setup(tmp_path):
    rec = _Recorder(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, rec).fit()
    torch.manual_seed(0)
    other = Trainer(TinyNet(), "classification", synthetic_dataset(48), None,
                    TrainConfig(**{**CFG, "batch_size": 8}), out_dir=tmp_path)
    with pytest.raises(ValueError, match="steps per epoch"):
        other.fit(resume=True)
    with pytest.raises(FileNotFoundError):
        _trainer(tmp_path / "empty", _Recorder()).fit(resume=True)


class _InterruptingData(Dataset):
    """A data source that raises KeyboardInterrupt (like Ctrl-C inside a loader) at the n-th item."""

    def __init__(self, base, at):
        self.base, self.at, self.count = base, at, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.count += 1
        if self.count == self.at:
            raise KeyboardInterrupt
        return self.base[i]


def test_keyboard_interrupt_in_loader_saves_and_reraises(tmp_path, capsys):
    torch.manual_seed(0)
    data = _InterruptingData(synthetic_dataset(64), at=16 * 5 + 3)  # during step 6 (4 steps per epoch)
    model = TinyNet()
    tr = Trainer(model, "classification", data, None, TrainConfig(epochs=3, batch_size=16, progress=False),
                 out_dir=tmp_path, model_name="tiny")
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert tr.step == 5
    meta = ckpt.read_metadata(tmp_path / "last.safetensors")
    assert meta["step"] == 5 and meta["epoch"] == 1
    saved = TinyNet()
    ckpt.load_weights(saved, tmp_path / "last.safetensors")
    assert state_equal(saved.state_dict(), model.state_dict())
    assert ckpt.load_training_state(tmp_path / "last.train.safetensors")["extra"]["step"] == 5
    assert "interrupted at step 5" in capsys.readouterr().out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    after_epoch1 = {}

    def poison(trainer, event, info):
        if event == "epoch_end" and info["epoch"] == 1:
            after_epoch1.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        if event == "step_end" and info["step"] == 6:
            trainer.model.nan = True  # the 7th step produces NaN

    tr = Trainer(model, "classification", synthetic_dataset(64), synthetic_dataset(16),
                 TrainConfig(epochs=3, batch_size=16, progress=False), out_dir=tmp_path, callbacks=[poison])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7 \(epoch 2\)") as e:
        tr.fit()
    assert "last good checkpoint" in str(e.value) and "last.safetensors" in str(e.value)
    assert tr.step == 6
    saved = TinyNet()
    ckpt.load_weights(saved, tmp_path / "last.safetensors")
    assert state_equal(saved.state_dict(), after_epoch1)
    assert all(torch.isfinite(v).all() for v in saved.state_dict().values())
    assert ckpt.read_metadata(tmp_path / "last.safetensors")["step"] == 4
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    # the model itself was not updated with NaN gradients
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sigint_finishes_the_step_then_saves(tmp_path):
    """A real SIGINT (Ctrl-C) during training: the current step completes, a checkpoint is written, then
    KeyboardInterrupt propagates."""
    import os
    import signal

    def ctrl_c(trainer, event, info):
        if event == "step_end" and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    torch.manual_seed(0)
    tr = Trainer(TinyNet(), "classification", synthetic_dataset(64), None,
                 TrainConfig(epochs=2, batch_size=16, progress=False), out_dir=tmp_path, callbacks=[ctrl_c])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert tr.step == 2 and signal.getsignal(signal.SIGINT) is handler  # handler restored
    assert ckpt.load_training_state(tmp_path / "last.train.safetensors")["extra"]["step"] == 2
