"""Training engine: :class:`~convatlas.engine.trainer.Trainer` (any task, through its adapter), checkpoints
(safetensors + JSON, exact resume, safe loading), EMA, warm-up/cosine schedule, DDP helpers."""

from convatlas.engine.checkpoint import load_weights, model_from_checkpoint, read_metadata, save_weights
from convatlas.engine.trainer import NonFiniteLossError, TrainConfig, Trainer, evaluate, seed_everything

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_weights",
    "model_from_checkpoint",
    "read_metadata",
    "save_weights",
    "seed_everything",
]
