"""Learning check (card `convnext`): convnext_atto trained with the convatlas trainer on the embedded digits.

Card: timm's tiny ConvNeXt reaches 0.980 test accuracy on digits at 32x32 in 15 epochs; expect >= 0.95.
Here: the real convnext_atto (3.38 M params with 10 classes), AdamW + warm-up/cosine, fixed seed.
"""

from __future__ import annotations

import pytest
import torch

from convatlas import create_model, list_models
from convatlas.data.digits import load_digits_dataset
from convatlas.engine.trainer import Trainer, TrainConfig, seed_everything
from engine_testutils import one_thread  # noqa: F401 (autouse fixture: 1 intra-op thread)

THRESHOLD = 0.95


@pytest.mark.slow
@pytest.mark.skipif("convnext_atto" not in list_models(), reason="convnext_atto is not registered yet")
def test_convnext_atto_learns_digits(tmp_path):
    seed_everything(0)
    model = create_model("convnext_atto", num_classes=10)
    cfg = TrainConfig(epochs=8, batch_size=64, lr=3e-3, warmup_epochs=1, weight_decay=0.05,
                      progress=False, device="cpu", seed=0)
    trainer = Trainer(model, "classification", load_digits_dataset("train", size=32),
                      load_digits_dataset("val", size=32), cfg, out_dir=tmp_path, model_name="convnext_atto",
                      model_kwargs={"num_classes": 10})
    hist = trainer.fit()
    acc = hist[-1]["val_accuracy"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    print(f"convnext_atto digits: val accuracy per epoch {[round(r['val_accuracy'], 4) for r in hist]}")
    assert acc >= THRESHOLD, f"convnext_atto digits val accuracy {acc:.4f} < {THRESHOLD} ({hist})"
    assert trainer.best_value >= acc and (tmp_path / "best.safetensors").is_file()
