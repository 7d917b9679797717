"""The ``convatlas`` command line (``convatlas --help``; also ``python -m convatlas``). Entry point: :func:`main`."""

from convatlas.cli.main import main

__all__ = ["main"]
