"""Forecasting task adapter (card: unireplknet time-series)."""

from __future__ import annotations

import torch

from convatlas.tasks import get_task


def test_forecasting_metrics_and_batches() -> None:
    task = get_task("forecasting")
    assert task.primary_metric == "mse" and not task.higher_is_better
    x, mark, y = torch.randn(2, 8, 3), torch.zeros(2, 8, 4), torch.randn(2, 4, 3)
    assert task.split_batch((x, y))[0] == (x,)
    inputs, target = task.split_batch((x, mark, y))
    assert len(inputs) == 2 and target is y
    assert task.expected_output_shape((x,), 4) == (2, 4, 3)
    m = task.metrics()
    m.update(y + 1.0, y)
    m.update(y - 3.0, y)
    out = m.compute()
    assert abs(out["mse"] - 5.0) < 1e-6 and abs(out["mae"] - 2.0) < 1e-6
    m2 = task.metrics()
    m2.load_state(m.state())
    assert m2.compute() == out
    assert torch.isclose(task.loss(y + 2.0, y), torch.tensor(4.0))
    assert len(task.predict(y)) == 2
