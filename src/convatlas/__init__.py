"""convatlas: every convolutional system from 76 research papers in one tested, fast PyTorch package.

Public API::

    import convatlas
    model = convatlas.create_model("convnext_tiny", num_classes=10)
    convatlas.list_models("convnext*")
"""

from convatlas.registry import (
    ModelEntry,
    Reported,
    UnknownModelError,
    create_model,
    example_inputs,
    get_entry,
    list_models,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "ModelEntry",
    "Reported",
    "UnknownModelError",
    "create_model",
    "example_inputs",
    "get_entry",
    "list_models",
    "register_model",
    "load_weights",
    "verify",
    "__version__",
]


def load_weights(model, path, **kwargs):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Load a local checkpoint into ``model`` (see :func:`convatlas.engine.checkpoint.load_weights`)."""
    from convatlas.engine.checkpoint import load_weights as _load

    return _load(model, path, **kwargs)


def verify(*slugs: str, **kwargs):  # noqa: ANN201 - thin lazy re-export
    """Recompute and check papers' figures and identities (see :func:`convatlas.verify.verify_papers`)."""
    from convatlas.verify import verify_papers

    return verify_papers(list(slugs) or None, **kwargs)
