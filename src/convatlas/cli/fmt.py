"""Small text-formatting helpers for the CLI (aligned tables, numbers, relative errors)."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["table", "fmt_params", "fmt_num", "fmt_rel", "mark", "shorten"]


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], *, right: Sequence[int] = (), indent: int = 0
          ) -> str:
    """Plain aligned table; ``right`` lists column indices to right-align (numbers); ``indent`` spaces."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        parts = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(header))]
        lines.append(" " * indent + "  ".join(parts).rstrip())
        if k == 0:
            lines.append(" " * indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt_params(n: float | None) -> str:
    """Parameter count with thousands separators (``28,589,128``)."""
    if n is None:
        return "-"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:,.1f}"


def fmt_num(x: float | None, digits: int = 4) -> str:
    """Number with ``digits`` significant digits; '-' for None/nan."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def fmt_rel(err: float | None) -> str:
    """Signed relative error in percent (``+0.12%``); '-' for None."""
    if err is None:
        return "-"
    if math.isinf(err):
        return "inf"
    if err != 0 and abs(err) < 5e-5:
        return f"{err * 100:+.0e}%"
    return f"{err * 100:+.2f}%"


def mark(ok: bool | None) -> str:
    """``ok`` / ``FAIL`` / ``no ref``."""
    return "ok" if ok is True else ("FAIL" if ok is False else "no ref")
