"""The training engine: one loop for every task, driven by a :class:`~convatlas.tasks.base.TaskAdapter`.

Recipe (ConvNeXt/DeiT style): AdamW with decoupled weight decay on >=2-D weights only (biases, norm weights
and layer-scale vectors are exempt, as is anything listed by ``model.no_weight_decay()``), linear warm-up then
cosine decay stepped per optimizer step, label smoothing through the adapter, gradient clipping, optional EMA
of the weights (then the EMA weights are evaluated and saved), bf16 autocast on CPU and CUDA, gradient
accumulation, DDP under torchrun.

``TrainConfig.batch_size`` is the *global* batch per optimizer step: with ``accum_steps`` A and W processes,
each forward sees ``batch_size / (A * W)`` samples. Changing A or W therefore does not change the optimisation
(up to float rounding and batch-dependent layers such as BatchNorm).

Outputs in ``out_dir``: ``metrics.jsonl`` (one JSON line per epoch), ``last.safetensors`` + ``last.json``,
``best.safetensors`` + ``best.json`` (by the adapter's primary metric), ``last.train.safetensors`` (resume
state), optionally ``curves.png``. ``fit(resume=True)`` continues exactly where ``last.train.safetensors``
stopped, mid-epoch included. Ctrl-C saves a checkpoint and re-raises ``KeyboardInterrupt``; a NaN/inf loss
raises :class:`NonFiniteLossError` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

import convatlas
from convatlas.engine import checkpoint as ckpt
from convatlas.engine.distributed import DistInfo, all_reduce_metrics, all_reduce_sum, barrier, get_dist_info
from convatlas.engine.ema import ModelEma
from convatlas.engine.metrics_log import append_metrics, plot_metrics, require_matplotlib, truncate_metrics
from convatlas.engine.optim import OPTIMIZERS, build_optimizer
from convatlas.engine.schedule import WarmupCosineSchedule
from convatlas.tasks.base import TaskAdapter, get_task

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "seed_everything", "param_groups_weight_decay",
           "evaluate"]

Callback = Callable[["Trainer", str, dict], None]


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Training hyper-parameters (all recorded in checkpoints).

    Attributes:
        epochs: passes over the training data.
        batch_size: global samples per optimizer step (split over accumulation steps and processes).
        lr: peak learning rate (after warm-up).
        weight_decay: weight decay for >=2-D weights (decoupled for AdamW/Lion, L2 for SGD, unused by Kar).
        optimizer: ``adamw`` (default), ``sgd``, ``lion``, ``kar3`` or ``kar2`` (see :mod:`convatlas.engine.optim`).
        momentum / nesterov: SGD momentum and Nesterov flag.
        warmup_epochs: linear warm-up length in epochs (fractional allowed); ``warmup_steps`` overrides it.
        min_lr: learning rate at the end of the cosine decay.
        betas / eps: AdamW moments (betas also for Lion / Kar).
        label_smoothing: passed to the task adapter (must support it).
        grad_clip: max global gradient norm (None: no clipping).
        ema: keep an EMA of the weights and evaluate/save it; ``ema_decay`` its decay.
        bf16: bf16 autocast for forward/loss (CPU and CUDA).
        accum_steps: gradient accumulation steps per optimizer step.
        seed: seeds Python/NumPy/torch RNGs and the data order.
        eval_batch_size: evaluation batch (default: ``batch_size``).
        num_workers: DataLoader workers for non-tensor datasets.
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        progress: tqdm progress bars.
        plot: write ``curves.png`` after every epoch (needs matplotlib).
        save_every_steps: also write ``last`` every N optimizer steps (0: at epoch ends only).
        max_steps: stop after this many optimizer steps in total (None: run all epochs); the schedule still
            spans ``epochs``.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    ema: bool = False
    ema_decay: float = 0.999
    bf16: bool = False
    accum_steps: int = 1
    seed: int = 0
    eval_batch_size: int | None = None
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    plot: bool = False
    save_every_steps: int = 0
    max_steps: int | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.accum_steps < 1:
            raise ValueError(f"batch_size and accum_steps must be >= 1, got {self.batch_size}, {self.accum_steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.nesterov and not self.momentum > 0:
            raise ValueError(f"nesterov needs momentum > 0, got {self.momentum}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ValueError("warm-up must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups_weight_decay(model: nn.Module, weight_decay: float,
                              no_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed (>=2-D weights) and not decayed (biases, 1-D params such as norm weights and
    layer-scale, and names in ``no_decay`` or ``model.no_weight_decay()``; a listed name also exempts its
    sub-parameters)."""
    skip = set(no_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    decay, no = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or any(name == s or name.startswith(s + ".") for s in skip)
        (no if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _resolve_device(spec: str, info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank if info.distributed else torch.cuda.current_device())
    return dev


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


class _Batches:
    """Iterates the given micro-batches (lists of sample indices) of one epoch, or a user DataLoader as is."""

    def __init__(self, data: Dataset | DataLoader, index_batches: list[list[int]] | None, num_workers: int) -> None:
        self.data, self.index_batches, self.num_workers = data, index_batches, num_workers

    def __iter__(self) -> Iterator[Any]:
        if self.index_batches is None:  # a user DataLoader: iterate it as it is
            yield from self.data
            return
        ds = self.data
        if isinstance(ds, TensorDataset):  # fast path: one gather per tensor, no per-item collate
            for idx in self.index_batches:
                it = torch.as_tensor(idx, dtype=torch.long)
                yield tuple(t[it] for t in ds.tensors)
            return
        if not self.index_batches:
            return
        yield from DataLoader(ds, batch_sampler=self.index_batches, num_workers=self.num_workers)


def evaluate(model: nn.Module, task: TaskAdapter, data: Dataset | DataLoader, *, batch_size: int = 256,
             device: str | torch.device = "cpu", bf16: bool = False, progress: bool = False,
             num_workers: int = 0) -> dict[str, float]:
    """Evaluate ``model`` with ``task.metrics()`` over ``data``; metrics are all-reduced across DDP ranks
    (each rank takes a disjoint, unpadded shard of a dataset, so every sample counts exactly once)."""
    info = get_dist_info()
    device = torch.device(device)
    if isinstance(data, DataLoader):
        batches: Iterable[Any] = data
    else:
        idx = list(range(info.rank, len(data), info.world_size))
        batches = _Batches(data, [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)], num_workers)
    acc = task.metrics()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device, bf16):
            for batch in _progress(batches, progress and info.is_main, "eval"):
                inputs, targets = task.split_batch(batch)
                outputs = task.forward(model, _to_device(inputs, device))
                acc.update(outputs, _to_device(targets, device))
    finally:
        model.train(was_training)
    return all_reduce_metrics(acc)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _progress(it: Iterable, enabled: bool, desc: str, total: int | None = None, **kw: Any) -> Iterable:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)


class Trainer:
    """Trains any registered model on any task.

    Args:
        model: the model (moved to the configured device).
        task: a :class:`TaskAdapter`, or a task name (``get_task(name)``, with the config's label smoothing).
        train_data: a Dataset (exact resume and DDP sharding) or a DataLoader (iterated as given).
        val_data: optional Dataset/DataLoader evaluated after every epoch.
        config: :class:`TrainConfig`.
        out_dir: where checkpoints and metrics go (None: nothing is written, no resume).
        model_name / model_kwargs: recorded in checkpoints so ``create_model(model_name, **model_kwargs)``
            rebuilds the model (default: ``model.pretrained_cfg['architecture']``, ``{}``).
        data_info: JSON-able description of the data (default: ``train_data.data_info`` if present).
        callbacks: ``fn(trainer, event, info)`` called with events ``"step_end"`` (info: step, epoch, loss, lr)
            and ``"epoch_end"`` (info: the epoch's metrics record).
        param_groups: the optimizer's parameter groups (default: decay / no-decay split of ``model``); a group's
            ``lr`` is its peak lr under the schedule (per-group scales, frozen parts left out).

    Example::

        model = create_model("convnext_atto", num_classes=10)
        trainer = Trainer(model, "classification", load_digits_dataset("train"), load_digits_dataset("val"),
                          TrainConfig(epochs=10, lr=2e-3), out_dir="runs/x", model_name="convnext_atto",
                          model_kwargs={"num_classes": 10})
        history = trainer.fit()
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskAdapter | str,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None = None,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        model_name: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        self.config = cfg = config or TrainConfig()
        cfg.validate()
        self.dist = get_dist_info()
        self.task = self._make_task(task, cfg)
        self.device = _resolve_device(cfg.device, self.dist)
        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        cfg_meta = getattr(model, "pretrained_cfg", None) or {}
        self.model_name = model_name or cfg_meta.get("architecture")
        self.model_kwargs = dict(model_kwargs or {})
        self.data_info = data_info if data_info is not None else getattr(train_data, "data_info", None)
        self.callbacks = list(callbacks)
        if cfg.plot:
            require_matplotlib()
        if cfg.plot and self.out_dir is None:
            raise ValueError("plot=True needs an out_dir")

        world, accum = self.dist.world_size, cfg.accum_steps
        if cfg.batch_size % (world * accum):
            raise ValueError(
                f"batch_size {cfg.batch_size} must be divisible by accum_steps x processes = {accum} x {world}"
            )
        self.micro_batch = cfg.batch_size // (world * accum)
        self.steps_per_epoch = self._count_steps()
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"training set too small: {self._len_train()} samples give no full batch of {cfg.batch_size}"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch

        groups = param_groups if param_groups is not None else param_groups_weight_decay(self.model, cfg.weight_decay)
        self.optimizer = build_optimizer(cfg.optimizer, groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                         momentum=cfg.momentum, nesterov=cfg.nesterov)
        warm = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = WarmupCosineSchedule(self.optimizer, min(warm, self.total_steps), self.total_steps,
                                              min_lr_ratio=min(cfg.min_lr / cfg.lr, 1.0))
        self.ema = ModelEma(self.model, cfg.ema_decay) if cfg.ema else None
        self.ddp_model: nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # harmless (size-1 dims of depthwise kernels give "different" strides); keep the log readable
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.ddp_model = DDP(self.model, device_ids=ids)

        self.step = 0  # optimizer steps done
        self.epochs_done = 0  # epochs whose end-of-epoch work (eval, checkpoints, metrics line) is done
        self.epoch_loss_sum = 0.0  # sum of step losses in the current epoch
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.last_metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _make_task(task: TaskAdapter | str, cfg: TrainConfig) -> TaskAdapter:
        if isinstance(task, str):
            return get_task(task, label_smoothing=cfg.label_smoothing) if cfg.label_smoothing else get_task(task)
        if cfg.label_smoothing:
            if not hasattr(task, "label_smoothing"):
                raise ValueError(f"task {task.name!r} does not support label smoothing")
            task.label_smoothing = cfg.label_smoothing
        return task

    def _len_train(self) -> int:
        return len(self.train_data)  # type: ignore[arg-type]

    def _count_steps(self) -> int:
        if isinstance(self.train_data, DataLoader):
            return len(self.train_data) // self.config.accum_steps
        per_rank = math.ceil(self._len_train() / self.dist.world_size)  # DistributedSampler pads to this
        return per_rank // (self.micro_batch * self.config.accum_steps)

    def _epoch_index_batches(self, epoch: int) -> list[list[int]] | None:
        """This rank's micro-batches for ``epoch``: DistributedSampler order (seed + epoch), full steps only."""
        if isinstance(self.train_data, DataLoader):
            sampler = getattr(self.train_data, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            return None
        sampler = DistributedSampler(self.train_data, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=self.config.seed, drop_last=False)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        m = self.micro_batch
        n_micro = self.steps_per_epoch * self.config.accum_steps
        return [idx[i * m:(i + 1) * m] for i in range(n_micro)]

    # ------------------------------------------------------------------ checkpoint IO
    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _metadata(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "task": self.task.name,
            "convatlas_version": convatlas.__version__,
            "torch_version": torch.__version__,
            "epoch": epoch,
            "step": self.step,
            "metrics": metrics,
            "primary_metric": self.task.primary_metric,
            "higher_is_better": self.task.higher_is_better,
            "weights": "ema" if self.ema is not None else "model",
            "config": self.config.to_dict(),
            "data": self.data_info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save_last(self, epoch_done: int) -> None:
        """Write ``last.train.safetensors`` (resume state) then ``last.safetensors`` + ``last.json``."""
        if self.out_dir is None or not self.dist.is_main:
            return
        extra = {
            "step": self.step,
            "epochs_done": self.epochs_done,
            "epoch_loss_sum": self.epoch_loss_sum,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "last_metrics": self.last_metrics,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "ema_updates": self.ema.num_updates if self.ema is not None else 0,
        }
        ckpt.save_training_state(
            self.out_dir / "last.train.safetensors",
            model_state=self.model.state_dict(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema_state=self.ema.state_dict() if self.ema is not None else None,
            extra=extra,
        )
        ckpt.save_weights(self.out_dir / "last.safetensors", self._eval_model().state_dict(),
                          self._metadata(epoch_done, self.last_metrics))

    def _save_best(self, epoch_done: int, metrics: dict[str, Any]) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        ckpt.save_weights(self.out_dir / "best.safetensors", self._eval_model().state_dict(),
                          self._metadata(epoch_done, metrics))

    def _resume(self, path: Path) -> None:
        state = ckpt.load_training_state(path)
        extra = state["extra"]
        if extra.get("steps_per_epoch") != self.steps_per_epoch:
            raise ValueError(
                f"{path}: cannot resume: the checkpoint had {extra.get('steps_per_epoch')} steps per epoch, this "
                f"run has {self.steps_per_epoch} (same data, batch size and process count are needed)"
            )
        target = self.model.state_dict()
        bad = [k for k in target if k not in state["model"] or state["model"][k].shape != target[k].shape]
        if bad or len(state["model"]) != len(target):
            raise ValueError(f"{path}: training state does not match this model ({', '.join(bad[:4])} ...)")
        if (state["ema"] is not None) != (self.ema is not None):
            raise ValueError(f"{path}: checkpoint EMA={state['ema'] is not None} but this run has "
                             f"ema={self.ema is not None}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self.ema.num_updates = int(extra.get("ema_updates", 0))
        self.step = int(extra["step"])
        self.epochs_done = int(extra.get("epochs_done", self.step // self.steps_per_epoch))
        self.epoch_loss_sum = float(extra["epoch_loss_sum"])
        self.best_value = extra.get("best_value")
        self.best_epoch = extra.get("best_epoch")
        self.last_metrics = extra.get("last_metrics") or {}
        if self.dist.world_size == int(extra.get("world_size", 1)) and self.dist.rank == 0:
            ckpt.restore_rng(state["rng"])
        else:  # other ranks: their own RNG streams were not saved; reseed deterministically
            seed_everything(self.config.seed + 1000 * self.dist.rank + self.step)
        if self.out_dir is not None and self.dist.is_main:
            truncate_metrics(self.out_dir / "metrics.jsonl", self.step // self.steps_per_epoch)

    # ------------------------------------------------------------------ main loop
    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(self, event, info)

    def _train_step(self, micro_batches: list[Any]) -> float:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device, dtype=torch.float32)
        for j, batch in enumerate(micro_batches):
            inputs, targets = self.task.split_batch(batch)
            inputs, targets = _to_device(inputs, self.device), _to_device(targets, self.device)
            sync = j == len(micro_batches) - 1 or not self.dist.distributed
            ctx = contextlib.nullcontext() if sync else self.ddp_model.no_sync()  # type: ignore[operator]
            with ctx:
                with _autocast(self.device, cfg.bf16):
                    outputs = self.task.forward(self.ddp_model, inputs)
                    loss = self.task.loss(outputs, targets)
                (loss.float() / len(micro_batches)).backward()
            total += loss.detach().float()
        total /= len(micro_batches)
        if self.dist.distributed:
            all_reduce_sum(total)
            total /= self.dist.world_size
        value = float(total.item())
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            last = self.out_dir / "last.safetensors" if self.out_dir is not None else None
            keep = (f"; the last good checkpoint {last} (step {self._last_saved_step}) was kept"
                    if last is not None and last.exists() else "; no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"loss is {value} at step {self.step + 1} (epoch {self.step // self.steps_per_epoch + 1}); "
                f"training stopped before the update{keep}. Try a lower --lr, gradient clipping or no bf16."
            )
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return value

    def evaluate(self, data: Dataset | DataLoader | None = None) -> dict[str, float]:
        """Metrics of the evaluated weights (EMA if enabled) on ``data`` (default: the validation set)."""
        data = self.val_data if data is None else data
        if data is None:
            raise ValueError("no validation data")
        cfg = self.config
        return evaluate(self._eval_model(), self.task, data, batch_size=cfg.eval_batch_size or cfg.batch_size,
                        device=self.device, bf16=cfg.bf16, num_workers=cfg.num_workers)

    def _sigint_guard(self) -> contextlib.AbstractContextManager:
        """First Ctrl-C: finish the current optimizer step, then save and stop. Second Ctrl-C: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def guard() -> Iterator[None]:
            def handler(signum: int, frame: Any) -> None:
                if self._stop_requested:
                    raise KeyboardInterrupt
                self._stop_requested = True

            old = signal.signal(signal.SIGINT, handler)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, old)

        return guard()

    def fit(self, resume: bool | str | Path = False) -> list[dict[str, Any]]:
        """Train for ``config.epochs`` epochs (or ``max_steps``); returns the per-epoch metric records.

        Args:
            resume: True resumes from ``out_dir/last.train.safetensors``; a path resumes from that file (a
                ``last.safetensors`` path is mapped to its ``.train.safetensors`` sibling).
        """
        cfg = self.config
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            path = Path(resume) if not isinstance(resume, bool) else None
            if path is None:
                if self.out_dir is None:
                    raise ValueError("resume=True needs an out_dir")
                path = self.out_dir / "last.train.safetensors"
            elif path.name.endswith(".safetensors") and not path.name.endswith(".train.safetensors"):
                path = path.with_name(path.name[: -len(".safetensors")] + ".train.safetensors")
            self._resume(path)
        else:
            seed_everything(cfg.seed + self.dist.rank)
            if self.out_dir is not None and self.dist.is_main:  # a fresh run starts a fresh metrics file
                truncate_metrics(self.out_dir / "metrics.jsonl", 0)
        self._last_saved_step = self.step
        end_step = self.total_steps if cfg.max_steps is None else min(cfg.max_steps, self.total_steps)
        self.model.train()
        try:
            with self._sigint_guard():
                self._loop(end_step)
            if self.step % self.steps_per_epoch:  # stopped mid-epoch by max_steps: keep a resumable state
                self.save_last(self.step // self.steps_per_epoch)
        except KeyboardInterrupt:
            if self.dist.is_main:
                self.save_last(self.step // self.steps_per_epoch)
                where = self.out_dir / "last.safetensors" if self.out_dir is not None else "nowhere (no out_dir)"
                print(f"\ninterrupted at step {self.step}: checkpoint saved to {where}; resume with --resume",
                      flush=True)
            raise
        return self.history

    def _loop(self, end_step: int) -> None:
        cfg = self.config
        spe = self.steps_per_epoch
        if self.step // spe > self.epochs_done:  # interrupted after an epoch's last step, before its end work
            self._end_epoch(self.step // spe - 1, 0.0)
        while self.step < end_step:
            epoch = self.step // spe
            skip = self.step - epoch * spe
            if skip == 0:
                self.epoch_loss_sum = 0.0
            t0 = time.perf_counter()
            index_batches = self._epoch_index_batches(epoch)
            n_steps = min(spe, end_step - epoch * spe)
            if index_batches is not None:
                index_batches = index_batches[skip * cfg.accum_steps: n_steps * cfg.accum_steps]
            micro_iter = iter(_Batches(self.train_data, index_batches, cfg.num_workers))
            if index_batches is None:  # DataLoader: consume the batches already trained on
                for _ in range(skip * cfg.accum_steps):
                    next(micro_iter)
            bar = _progress(range(skip, n_steps), cfg.progress and self.dist.is_main,
                            f"epoch {epoch + 1}/{cfg.epochs}", total=spe, initial=skip)
            for _ in bar:
                if self._stop_requested:
                    raise KeyboardInterrupt
                micro = [next(micro_iter) for _ in range(cfg.accum_steps)]
                loss = self._train_step(micro)
                self.epoch_loss_sum += loss
                lr = self.optimizer.param_groups[0]["lr"]
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                self._emit("step_end", {"step": self.step, "epoch": epoch, "loss": loss, "lr": lr})
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and self.step % spe:
                    self.save_last(epoch)
                    self._last_saved_step = self.step
            if hasattr(bar, "close"):
                bar.close()
            if self.step % spe == 0:
                self._end_epoch(epoch, time.perf_counter() - t0)

    def _end_epoch(self, epoch: int, seconds: float) -> None:
        cfg = self.config
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.epoch_loss_sum / self.steps_per_epoch,
        }
        if self.val_data is not None:
            metrics = self.evaluate()
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if self.task.primary_metric not in metrics:
                raise ValueError(f"task {self.task.name!r}: metrics {sorted(metrics)} lack its primary metric "
                                 f"{self.task.primary_metric!r}")
            value = metrics[self.task.primary_metric]
            better = self.best_value is None or (
                value > self.best_value if self.task.higher_is_better else value < self.best_value
            )
            if better and math.isfinite(value):
                self.best_value, self.best_epoch = value, epoch + 1
                self.last_metrics = dict(metrics)
                self._save_best(epoch + 1, metrics)
            self.last_metrics = dict(metrics)
        record["time_s"] = round(seconds, 3)
        self.history.append(record)
        self.epochs_done = epoch + 1
        self.save_last(epoch + 1)
        self._last_saved_step = self.step
        if self.out_dir is not None and self.dist.is_main:
            append_metrics(self.out_dir / "metrics.jsonl", record)
            if cfg.plot:
                plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir / "curves.png")
        if cfg.progress and self.dist.is_main:
            shown = " ".join(f"{k}={v:.3g}" if k in ("lr", "time_s") else f"{k}={v:.4f}" if isinstance(v, float)
                             else f"{k}={v}" for k, v in record.items())
            print(shown, flush=True)
        self._emit("epoch_end", record)
        barrier()
