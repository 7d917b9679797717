"""``convatlas train / eval / predict``: the training engine from the command line.

    convatlas train MODEL --data digits|DIR [--epochs N --batch-size B --lr LR --out DIR --resume [PATH]
                          --bf16 --ema --accum A --seed S --img-size PX --num-classes K ...]
    convatlas eval CHECKPOINT [--data digits|DIR] [--split val|train]
    convatlas predict CHECKPOINT IMAGE [IMAGE ...]          one JSON line per image

``--data digits`` is the embedded scikit-learn digits set (1400 train / 397 val); ``--data DIR`` reads
``DIR/<class>/*.png`` (or ``DIR/train`` + ``DIR/val``; needs Pillow). Checkpoints record the model name and
``create_model`` kwargs, so eval/predict rebuild the model by themselves. Under ``torchrun`` training runs
with DDP (gloo on CPU, nccl on CUDA). Bad input raises ValueError/FileNotFoundError, which ``convatlas``
prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_subcommands", "cmd_train", "cmd_eval", "cmd_predict", "main"]


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``predict`` to an argparse subparsers object."""
    from convatlas.engine.optim import OPTIMIZERS

    p = subparsers.add_parser(
        "train", help="train a registered model (digits or an image folder)",
        description="Train MODEL with AdamW (or --opt sgd/lion/kar3/kar2) + warm-up/cosine schedule; writes metrics.jsonl, last/best "
        ".safetensors (+ .json metadata) and a resumable last.train.safetensors to --out. Ctrl-C saves a "
        "checkpoint; --resume continues exactly.")
    p.add_argument("model", help="registered model name (see `convatlas list`)")
    p.add_argument("--data", default="digits", help="'digits' (embedded) or a folder DIR/<class>/<images>")
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=64, help="global batch per optimizer step")
    p.add_argument("--lr", type=_positive_float, default=2e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--opt", default="adamw", choices=OPTIMIZERS, help="optimizer (default adamw)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--clip-grad", type=_positive_float, default=None, help="max gradient norm")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="resume from OUT/last.train.safetensors (or PATH)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU and CUDA)")
    p.add_argument("--ema", action="store_true", help="keep and evaluate an EMA of the weights")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--accum", type=_positive_int, default=1, help="gradient accumulation steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img-size", type=_positive_int, default=None,
                   help="image side (default 32 for digits, the model's input size for folders)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--num-classes", type=_positive_int, default=None, help="default: number of data classes")
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of create_model overrides, e.g. "
                   "'{\"drop_path_rate\": 0.1}'")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (image folders)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch intra-op CPU threads (default: torch's; use 1 on a busy shared machine)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many steps")
    p.add_argument("--plot", action="store_true", help="write curves.png (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint", description="Rebuild the model recorded in CHECKPOINT and "
        "print its metrics on the validation (or training) split of --data (default: the training data).")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by `convatlas train`")
    p.add_argument("--data", default=None, help="'digits' or a folder (default: as recorded in the checkpoint)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "predict", help="predict images with a checkpoint",
        description="Print one JSON line per IMAGE (the task adapter's prediction record + the path). Images "
        "get the training transform: resized to the recorded size, scaled to [-1, 1] (needs Pillow). Models trained "
        "on --data digits expect light digits on a dark background (ink = 255), like the embedded data.")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)


def _device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def _load_data(data: str, size: int, channels: int, seed: int = 0) -> tuple[Any, Any]:
    if data == "digits":
        from convatlas.data.digits import load_digits_dataset

        return (load_digits_dataset("train", size=size, channels=channels),
                load_digits_dataset("val", size=size, channels=channels))
    path = Path(data)
    if not path.is_dir():
        raise FileNotFoundError(f"--data {data}: not 'digits' and not an existing folder")
    from convatlas.data.image_folder import split_image_folder

    return split_image_folder(path, size=size, channels=channels, seed=seed)


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``convatlas train``."""
    from convatlas.engine.distributed import cleanup_distributed, init_distributed
    from convatlas.engine.trainer import Trainer, TrainConfig, seed_everything
    from convatlas.registry import create_model, get_entry

    entry = get_entry(args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if entry.task != "classification":
        raise ValueError(
            f"{args.model}: task {entry.task!r}; `convatlas train --data` reads labelled images (classification). "
            "Use convatlas.engine.trainer.Trainer with a dataset for other tasks"
        )
    try:
        overrides = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON ({e})") from None
    if not isinstance(overrides, dict):
        raise ValueError("--model-kwargs must be a JSON object")
    size = args.img_size or (32 if args.data == "digits" else int(entry.input_size[-1]))
    train_ds, val_ds = _load_data(args.data, size, args.channels, args.seed)
    n_cls = len(train_ds.classes)
    if args.num_classes is not None and args.num_classes != n_cls:
        raise ValueError(f"--num-classes {args.num_classes} but the data has {n_cls} classes")
    info = init_distributed(args.device)
    try:
        seed_everything(args.seed)
        model_kwargs = {"num_classes": n_cls, "in_chans": args.channels, **overrides}
        model = create_model(args.model, **model_kwargs)
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            optimizer=args.opt, momentum=args.momentum, nesterov=args.nesterov, warmup_epochs=args.warmup_epochs, min_lr=args.min_lr, label_smoothing=args.label_smoothing,
            grad_clip=args.clip_grad, ema=args.ema, ema_decay=args.ema_decay, bf16=args.bf16,
            accum_steps=args.accum, seed=args.seed, num_workers=args.workers, device=args.device,
            progress=not args.no_progress, plot=args.plot, max_steps=args.max_steps,
        )
        out = Path(args.out or f"runs/{args.model}")
        trainer = Trainer(model, entry.task, train_ds, val_ds, cfg, out_dir=out, model_name=args.model,
                          model_kwargs=model_kwargs)
        history = trainer.fit(resume=args.resume)
        if info.is_main:
            summary = {
                "model": args.model, "epochs_done": trainer.step // trainer.steps_per_epoch, "step": trainer.step,
                "best_" + trainer.task.primary_metric: trainer.best_value, "best_epoch": trainer.best_epoch,
                "best": str(out / "best.safetensors"), "last": str(out / "last.safetensors"),
                "final": history[-1] if history else None,
            }
            print(json.dumps(summary, sort_keys=True), flush=True)
    finally:
        cleanup_distributed()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of ``convatlas eval``."""
    from convatlas.engine.checkpoint import model_from_checkpoint
    from convatlas.engine.trainer import evaluate
    from convatlas.tasks.base import get_task

    device = _device(args.device)
    model, meta = model_from_checkpoint(args.checkpoint, device=device)
    dinfo = meta.get("data") or {}
    data = args.data or (dinfo.get("root") if dinfo.get("name") == "folder" else dinfo.get("name")) or "digits"
    size = int(dinfo.get("img_size") or model.pretrained_cfg["input_size"][-1])
    channels = int(dinfo.get("channels") or meta.get("model_kwargs", {}).get("in_chans", 3))
    train_ds, val_ds = _load_data(data, size, channels, int(dinfo.get("seed", 0) or 0))
    ds = val_ds if args.split == "val" else train_ds
    if dinfo.get("classes") and list(ds.classes) != list(dinfo["classes"]):
        raise ValueError(f"{data}: classes {ds.classes} differ from the checkpoint's {dinfo['classes']}")
    task = get_task(meta.get("task", "classification"))
    metrics = evaluate(model, task, ds, batch_size=args.batch_size, device=device, bf16=args.bf16)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "data": data, "split": args.split,
                          "samples": len(ds), **metrics}, sort_keys=True))
    else:
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{args.checkpoint} on {data}/{args.split} ({len(ds)} samples): {shown}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of ``convatlas predict``."""
    import torch

    from convatlas.data.image_folder import load_image
    from convatlas.engine.checkpoint import model_from_checkpoint
    from convatlas.tasks.base import get_task

    for img in args.images:  # fail before loading the model
        if not Path(img).is_file():
            raise FileNotFoundError(f"{img}: no such image file")
    device = _device(args.device)
    model, meta = model_from_checkpoint(args.checkpoint, device=device)
    dinfo = meta.get("data") or {}
    size = int(dinfo.get("img_size") or model.pretrained_cfg["input_size"][-1])
    channels = int(dinfo.get("channels") or meta.get("model_kwargs", {}).get("in_chans", 3))
    task = get_task(meta.get("task", "classification"))
    labels = dinfo.get("classes")
    with torch.inference_mode():
        for img in args.images:
            x = load_image(img, size, channels)[None].to(device)
            record = task.predict(task.forward(model, (x,)), labels=labels)[0]
            print(json.dumps({"image": str(img), **record}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m convatlas.cli.train_cmds train ...``); ``convatlas`` is the usual one."""
    parser = argparse.ArgumentParser(prog="convatlas")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        sys.stderr.write(f"convatlas: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
