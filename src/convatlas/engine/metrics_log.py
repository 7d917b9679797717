"""Per-epoch metrics as JSON lines (``metrics.jsonl``) and an optional PNG of the curves (matplotlib extra)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from convatlas.engine.checkpoint import atomic_write_bytes

__all__ = ["append_metrics", "read_metrics", "truncate_metrics", "plot_metrics", "require_matplotlib"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


def append_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (flushed and fsynced)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(path: str | Path, max_epoch: int) -> None:
    """Keep only records with ``epoch <= max_epoch`` (used when resuming from an earlier checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if int(r.get("epoch", 0)) <= max_epoch]
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep).encode())


def require_matplotlib():  # noqa: ANN201
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - environment dependent
        raise ImportError("plotting needs matplotlib: pip install 'convatlas[plot]'") from e
    return plt


def plot_metrics(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Plot every numeric metric of ``metrics.jsonl`` against the epoch: losses on the left, others right."""
    plt = require_matplotlib()
    records = read_metrics(metrics_path)
    out_png = Path(out_png)
    keys = sorted({k for r in records for k, v in r.items()
                   if isinstance(v, (int, float)) and k not in ("epoch", "step", "time_s", "lr")})
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in records]
    for k in keys:
        ys = [r.get(k) if isinstance(r.get(k), (int, float)) else float("nan") for r in records]
        (ax_l if "loss" in k else ax_m).plot(epochs, ys, marker="o", label=k)
    for ax, title in ((ax_l, "loss"), (ax_m, "metrics")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
