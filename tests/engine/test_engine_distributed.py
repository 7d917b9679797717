"""DDP: 2 CPU processes (gloo, 127.0.0.1) train to the same weights as one process on the same global batch."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist

from convatlas.engine.distributed import all_reduce_metrics, get_dist_info, launch_local
from convatlas.engine.trainer import TrainConfig, Trainer
from convatlas.tasks.classification import ClassificationMetrics
from engine_testutils import TinyNet, state_equal, synthetic_dataset, one_thread  # noqa: F401 (autouse fixture)

CFG = dict(epochs=2, batch_size=16, lr=2e-2, warmup_epochs=0.5, progress=False, device="cpu")


def _train(out_dir):
    torch.manual_seed(0)  # same init on every rank (DDP also broadcasts rank 0's weights)
    trainer = Trainer(TinyNet(), "classification", synthetic_dataset(64), synthetic_dataset(30, seed=1),
                      TrainConfig(**CFG), out_dir=out_dir)
    hist = trainer.fit()
    return trainer, hist


def _worker(rank, world, out_dir):
    torch.set_num_threads(1)
    info = get_dist_info()
    assert (info.rank, info.world_size) == (rank, world)
    trainer, hist = _train(out_dir)
    assert trainer.micro_batch == 8
    # every rank ends with the same weights; rank 0 writes them
    if rank == 0:
        torch.save({"state": trainer.model.state_dict(), "hist": hist}, f"{out_dir}/ddp_result.pt")
    # metric all-reduce: rank r contributes r+1 samples, all correct
    acc = ClassificationMetrics()
    n = rank + 1
    acc.update(torch.eye(4)[:n] * 5, torch.arange(n))
    m = all_reduce_metrics(acc)
    assert m["accuracy"] == 1.0 and acc.state()[3].item() == 3.0


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed + gloo")
def test_ddp_two_processes_equals_single_process(tmp_path):
    launch_local(_worker, 2, str(tmp_path))
    ddp = torch.load(tmp_path / "ddp_result.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, hist = _train(tmp_path / "single")
    finally:
        torch.set_num_threads(threads)
    assert state_equal(ddp["state"], single.model.state_dict(), atol=1e-5)
    assert not state_equal(ddp["state"], TinyNet().state_dict(), atol=1e-3)
    for a, b in zip(ddp["hist"], hist):  # train loss all-reduced, val metrics over the 30 samples exactly once
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "metrics.jsonl").is_file()
