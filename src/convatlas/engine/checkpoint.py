"""Checkpoints: safetensors weights + JSON metadata, resumable training state, and safe weight loading.

Files written by the trainer in ``out_dir``:

- ``last.safetensors`` / ``best.safetensors``: the evaluated weights (EMA weights when EMA is on). The JSON
  metadata (model name, ``create_model`` kwargs, convatlas version, epoch/step, metrics, config, data) is stored
  both in the safetensors header (key ``"convatlas"``) and beside it as ``last.json`` / ``best.json``.
- ``last.train.safetensors``: everything ``--resume`` needs: raw model weights, optimizer state tensors, EMA
  weights and RNG states as tensors; optimizer hyper-parameters, scheduler, Python/NumPy RNG and loop counters
  as JSON in the header. No pickle anywhere.

Every file is written atomically: a temporary file in the same directory, ``fsync``, then ``os.replace``.

:func:`load_weights` is what ``create_model(..., pretrained=path)`` calls. It accepts ``.safetensors`` or
``.pth/.pt/.bin`` (``torch.load(weights_only=True)``: a pickle carrying code is refused, never executed),
unwraps common wrappers (``state_dict``, ``model``, ``model_ema``, DDP ``module.`` prefixes), applies the
family's ``checkpoint_filter_fn`` key converter, and validates every key and shape before copying anything:
a failed load leaves the model untouched.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
from collections import namedtuple
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "atomic_write_bytes",
    "save_weights",
    "read_metadata",
    "save_training_state",
    "load_training_state",
    "load_state_dict_file",
    "load_weights",
    "model_from_checkpoint",
    "LoadResult",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "convatlas-checkpoint-v1"
TRAIN_STATE_FORMAT = "convatlas-train-state-v1"
LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_ema", "state_dict_ema", "ema")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
_PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


# ----------------------------------------------------------------------------------------------- atomic IO
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


def _to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.dtype):
        return str(o)
    if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")


def _tensors_for_safetensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies; tensors sharing storage (tied weights) are cloned so safetensors accepts them."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"checkpoint entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen or t.numel() != t.untyped_storage().nbytes() // max(t.element_size(), 1):
            t = t.clone()  # shared or larger storage (tied weights, views): give it its own
        seen.add(key)
        out[k] = t
    return out


def _safetensors_bytes(tensors: Mapping[str, Tensor], header: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save(_tensors_for_safetensors(tensors), metadata={"convatlas": _to_json(header)})


def save_weights(path: str | Path, state_dict: Mapping[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Write weights to ``path`` (.safetensors) and ``metadata`` to the header and to ``path.with_suffix('.json')``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights are written as .safetensors")
    meta = {"format": CHECKPOINT_FORMAT, **metadata}
    atomic_write_bytes(path, _safetensors_bytes(state_dict, meta))
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
                                                   + "\n").encode())
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint: the JSON beside it, else the safetensors header; ``{}`` if there is none."""
    path = Path(path)
    side = path.with_suffix(".json")
    if side.is_file() and side != path:
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{side}: corrupt checkpoint metadata ({e})") from None
    if path.suffix == ".safetensors" and path.is_file():
        header = _safetensors_header(path)
        if "convatlas" in header:
            return json.loads(header["convatlas"])
    return {}


def _safetensors_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise ValueError(f"{path}: not a readable safetensors file ({_short(e)})") from None


def _short(e: BaseException, n: int = 160) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:n]}{'...' if len(msg) > n else ''}"


# ------------------------------------------------------------------------------------------- training state
def save_training_state(
    path: str | Path,
    *,
    model_state: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    ema_state: Mapping[str, Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a resumable training state to one safetensors file (tensors + a JSON header, no pickle)."""
    import random

    import numpy as np

    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model_state.items()}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    osd = optimizer.state_dict()
    optim_json: dict[str, Any] = {"param_groups": osd["param_groups"], "state": {}}
    for pid, st in osd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v
                entry[k] = {"tensor": f"optim.{pid}.{k}"}
            else:
                entry[k] = {"value": v}
        optim_json["state"][str(pid)] = entry
    tensors["rng.torch"] = torch.get_rng_state()
    n_cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
        n_cuda = torch.cuda.device_count()
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    header = {
        "format": TRAIN_STATE_FORMAT,
        "optimizer": optim_json,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "has_ema": ema_state is not None,
        "rng": {
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "cuda_devices": n_cuda,
        },
        "extra": extra or {},
    }
    path = Path(path)
    atomic_write_bytes(path, _safetensors_bytes(tensors, header))
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_training_state`.

    Returns a dict with ``model`` (state dict), ``ema`` (state dict or None), ``optimizer`` (a state dict for
    ``Optimizer.load_state_dict``), ``scheduler``, ``extra`` and ``rng`` (pass it to :func:`restore_rng`).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    header_raw = _safetensors_header(path)
    try:
        header = json.loads(header_raw["convatlas"])
        if header.get("format") != TRAIN_STATE_FORMAT:
            raise KeyError("format")
        tensors = load_file(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a convatlas training state ({_short(e)})") from None
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} if header["has_ema"] else None
    oj = header["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in oj["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in entry.items()}
    rng = dict(header["rng"])
    rng["torch"] = tensors["rng.torch"]
    rng["numpy_key"] = tensors["rng.numpy"]
    rng["cuda"] = [tensors[f"rng.cuda.{i}"] for i in range(rng.get("cuda_devices", 0)) if f"rng.cuda.{i}" in tensors]
    return {
        "model": model,
        "ema": ema,
        "optimizer": {"state": state, "param_groups": oj["param_groups"]},
        "scheduler": header["scheduler"],
        "extra": header["extra"],
        "rng": rng,
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore the Python, NumPy, torch CPU (and CUDA, where saved) generators from :func:`load_training_state`."""
    import random

    import numpy as np

    v, st, gauss = rng["python"]
    random.setstate((v, tuple(st), gauss))
    name, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, rng["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"][: torch.cuda.device_count()])


# ------------------------------------------------------------------------------------------- weight loading
def load_state_dict_file(path: str | Path, use_ema: bool = False) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth/.pt/.bin`` (never executing pickled code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt/truncated file, a pickle that holds anything but tensors and containers, or no state
            dict inside; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: corrupt or truncated safetensors file ({_short(e)})") from None
    elif suffix in _PTH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{path}: refused to load: the pickle holds objects other than tensors (possibly code); "
                f"only weights_only checkpoints are accepted ({_short(e, 120)})"
            ) from None
        except Exception as e:
            raise ValueError(f"{path}: corrupt or truncated checkpoint ({_short(e)})") from None
    else:
        raise ValueError(f"{path}: unsupported checkpoint format {suffix!r} (use .safetensors, .pth or .pt)")
    return _unwrap_state_dict(obj, path, use_ema)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _unwrap_state_dict(obj: Any, path: Path, use_ema: bool) -> dict[str, Tensor]:
    for _ in range(3):
        if _is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        order = (_EMA_KEYS + _WRAPPER_KEYS) if use_ema else _WRAPPER_KEYS
        key = next((k for k in order if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(
                f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))}; "
                f"expected tensors or one of {', '.join(_WRAPPER_KEYS)})"
            )
        obj = obj[key]
    if not _is_state_dict(obj):
        raise ValueError(f"{path}: no state dict of tensors found")
    sd = {str(k): v for k, v in obj.items()}
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _find_filter_fn(model: nn.Module) -> Callable | None:
    fn = getattr(type(model), "checkpoint_filter_fn", None)
    if fn is None:
        mod = sys.modules.get(type(model).__module__)
        fn = getattr(mod, "checkpoint_filter_fn", None) if mod is not None else None
    return fn if callable(fn) else None


def _fmt_keys(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def load_weights(
    model: nn.Module,
    path: str | Path,
    model_name: str | None = None,
    strict: bool = True,
    use_ema: bool = False,
) -> LoadResult:
    """Load a local checkpoint into ``model`` in place, all-or-nothing.

    Args:
        model: the target model.
        path: ``.safetensors``, or ``.pth/.pt`` (loaded with ``weights_only=True``; wrapper dicts with
            ``state_dict``/``model``/``model_ema`` keys are unwrapped, ``module.`` prefixes stripped).
        model_name: used in error messages (defaults to ``model.pretrained_cfg['architecture']``).
        strict: require exactly the model's keys. With ``strict=False`` missing/unexpected keys are allowed
            (and returned) but shape mismatches still fail.
        use_ema: prefer the EMA weights of a wrapper dict (``model_ema``/``state_dict_ema``).

    Returns:
        ``LoadResult(missing_keys, unexpected_keys)``.

    Raises:
        FileNotFoundError / ValueError with a one-line message naming the file; the model is unchanged then.
    """
    path = Path(path)
    name = model_name or getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    sd = load_state_dict_file(path, use_ema=use_ema)
    target = model.state_dict()

    def matches(d: Mapping[str, Tensor]) -> bool:
        return d.keys() == target.keys() and all(tuple(d[k].shape) == tuple(target[k].shape) for k in d)

    if not matches(sd):
        fn = _find_filter_fn(model)
        if fn is not None:
            try:
                sd = dict(fn(sd, model))
            except Exception as e:
                raise ValueError(f"{path}: key conversion for {name} failed ({_short(e)})") from None
    missing = sorted(k for k in target if k not in sd)
    unexpected = sorted(k for k in sd if k not in target)
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)
    ]
    not_tensor = [k for k in sd if not isinstance(sd[k], Tensor)]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing ({_fmt_keys(missing)})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_fmt_keys(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (checkpoint vs model: {_fmt_keys(mismatched, 3)})")
    if not_tensor:
        problems.append(f"{len(not_tensor)} non-tensor entries ({_fmt_keys(not_tensor)})")
    if problems:
        head_only = mismatched and all(m.split(".")[0] in ("head", "fc", "classifier") for m in mismatched)
        hint = ("; to fine-tune with another number of classes, build the model with the checkpoint's "
                "num_classes, load, then call model.reset_classifier(n)") if head_only else ""
        raise ValueError(f"{path}: weights do not fit {name}: " + "; ".join(problems) + hint)
    if not missing and not unexpected and not sd and target:
        raise ValueError(f"{path}: empty state dict")
    # Everything validated: this cannot fail half-way.
    model.load_state_dict({k: v for k, v in sd.items() if k in target}, strict=False)
    return LoadResult(missing, unexpected)


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in a convatlas checkpoint (``create_model(name, **kwargs)``) and load it.

    Returns ``(model in eval mode, metadata)``.
    """
    from convatlas.registry import create_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    meta = read_metadata(path)
    if not meta.get("model_name"):
        raise ValueError(f"{path}: no convatlas metadata (model name) beside or inside the checkpoint")
    model = create_model(meta["model_name"], **meta.get("model_kwargs", {}))
    load_weights(model, path, model_name=meta["model_name"])
    return model.to(device).eval(), meta
