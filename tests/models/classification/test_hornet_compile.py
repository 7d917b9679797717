"""HorNet (card: hornet): torch.compile of the tiniest variant agrees with eager (one compile test per family)."""

from __future__ import annotations

import pytest
import torch

from convatlas import create_model


@pytest.mark.slow
def test_compiled_tiny_hornet_matches_eager() -> None:
    """test_hornet (GF in stages 3-4, orders 2-5), inductor, eval, no grad: max abs difference to eager <= 1e-4."""
    torch.manual_seed(0)
    model = create_model("test_hornet").eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad():
        ref, out = model(x), compiled(x)
    assert (out - ref).abs().max().item() <= 1e-4
