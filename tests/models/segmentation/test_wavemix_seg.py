"""WaveMix segmentation heads (card: wavemix): counts from the official layer shapes, shapes, safety, keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "classification"))
from backbone_checks import check_bad_inputs, check_bf16_and_channels_last, check_state_dict_roundtrip  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import count_params  # noqa: E402
from convatlas.models.segmentation.wavemix_seg import WaveMixSegmentation, checkpoint_filter_fn  # noqa: E402
from convatlas.registry import get_entry  # noqa: E402

# trunk (classification count minus its 1000-class head) + decoder, by hand from the official scripts
_BY_HAND = {
    "wavemix_seg_256_16_l4": 62_764_776 - 257_000 + (256 * 128 * 16 + 128) + (128 * 64 * 16 + 64) + (64 * 20 + 20),
    "wavemix_seg_192_16_l3": 27_857_608 - 193_000 + (192 * 128 * 16 + 128) + (128 * 64 * 16 + 64) + (64 * 20 + 20),
}


@pytest.mark.parametrize("name", list_models("*seg*", paper="wavemix"))
def test_counts(name: str) -> None:
    with torch.device("meta"):
        m = create_model(name)
        out = m(torch.empty(1, 3, 128, 256))
    assert out.shape == (1, 20, 128, 256) and get_entry(name).task == "segmentation2d"
    assert count_params(m) == get_entry(name).reported.params == _BY_HAND.get(name, count_params(m))


def test_tiny_safety_roundtrip_bf16() -> None:
    torch.manual_seed(0)
    m = create_model("test_wavemix_seg").eval()
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 5, 32, 32)
    check_bad_inputs(m, x, name="WaveMixSegmentation")
    with pytest.raises(ValueError, match="multiple of 16"):  # stem stride 4 x 2^level (2)
        m(torch.randn(1, 3, 40, 40))
    check_state_dict_roundtrip(m, lambda: create_model("test_wavemix_seg"), x)
    check_bf16_and_channels_last(m, x)
    with pytest.raises(ValueError, match="power of two"):
        WaveMixSegmentation(stem="pachify", patch_size=3, final_dim=16, ff_channel=16)


def test_official_keys() -> None:
    m = create_model("test_wavemix_seg")
    sd = {("conv." + k[5:] if k.startswith("stem.") else "expand." + k[8:] if k.startswith("decoder.") else k): v
          for k, v in m.state_dict().items()}
    m.load_state_dict(checkpoint_filter_fn(sd), strict=True)
