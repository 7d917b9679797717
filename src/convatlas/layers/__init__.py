"""Reusable nn.Modules shared across model families."""

from convatlas.layers.drop_path import DropPath, drop_path, drop_path_rates
from convatlas.layers.mlp import ConvMlp, Mlp
from convatlas.layers.norm import LayerNorm, LayerNorm2d, LayerNormGeneral
from convatlas.layers.validation import check_input

__all__ = [
    "DropPath",
    "drop_path",
    "drop_path_rates",
    "Mlp",
    "ConvMlp",
    "LayerNorm",
    "LayerNorm2d",
    "LayerNormGeneral",
    "check_input",
]
