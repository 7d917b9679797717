"""Sound event detection task adapter (card: phnn SEDnet): loss, frame metrics on a worked example, predict."""

from __future__ import annotations

import pytest
import torch

from convatlas.data.synthetic_sed import synthetic_sed
from convatlas.tasks import get_task


def _logits(active: torch.Tensor) -> torch.Tensor:
    return torch.where(active.bool(), torch.tensor(5.0), torch.tensor(-5.0))


def test_worked_example_metrics() -> None:
    # 3 frames x 2 classes. ref: [1,0],[1,1],[0,0]; est: [1,1],[0,1],[0,1]
    ref = torch.tensor([[[1, 0], [1, 1], [0, 0]]], dtype=torch.float32)
    est = torch.tensor([[[1, 1], [0, 1], [0, 1]]], dtype=torch.float32)
    acc = get_task("sound_event_detection").metrics()
    acc.update(_logits(est), ref)
    m = acc.compute()
    # TP 2, FP 2, FN 1 -> P 0.5, R 2/3, F1 4/7; frames: (fn,fp) = (0,1),(1,0),(0,1) -> S 0, D 1, I 2, N 3 -> ER 1.
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7) and m["error_rate"] == pytest.approx(1.0)
    acc2 = get_task("sound_event_detection").metrics()
    acc2.load_state(acc.state())
    assert acc2.compute() == m


def test_loss_predict_and_shape() -> None:
    task = get_task("sound_event_detection")
    y = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert task.loss(_logits(y), y) < 0.01 < task.loss(_logits(1 - y), y)
    with pytest.raises(ValueError, match="sound_event_detection"):
        task.loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 3))
    rec = task.predict(_logits(y), labels=["dog", "bell"])
    assert rec[0]["events"] == [{"class": "dog", "onset_frame": 0, "offset_frame": 2},
                                {"class": "bell", "onset_frame": 2, "offset_frame": 3}]
    assert task.expected_output_shape((torch.zeros(2, 4, 256, 4800),), 42) == (2, 600, 42)


def test_synthetic_sed_is_deterministic_and_shaped() -> None:
    x, y = synthetic_sed(4, seed=3)
    x2, y2 = synthetic_sed(4, seed=3)
    assert x.shape == (4, 4, 32, 64) and y.shape == (4, 8, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and set(y.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="divisible"):
        synthetic_sed(1, frames=30)


def test_engine_trains_and_evaluates_sed() -> None:
    """The generic Trainer / evaluate run the task by name on a registered SED model (2 steps, metrics present)."""
    from torch.utils.data import TensorDataset

    from convatlas import create_model
    from convatlas.engine.trainer import TrainConfig, Trainer, evaluate

    x, y = synthetic_sed(8, freq=16, frames=32, hop=8, seed=0)
    ds = TensorDataset(x, y)
    torch.manual_seed(0)
    model = create_model("test_phnn_sednet")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_epochs=0, progress=False, device="cpu")
    Trainer(model, "sound_event_detection", ds, ds, cfg).fit()
    m = evaluate(model, get_task("sound_event_detection"), ds, batch_size=4)
    assert {"f1", "precision", "recall", "error_rate", "loss"} <= set(m) and 0.0 <= m["f1"] <= 1.0
