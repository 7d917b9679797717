"""The ``convatlas`` command.

Subcommands::

    convatlas list [PATTERN] [--paper SLUG] [--task TASK]   registered models and their reported figures
    convatlas info MODEL                                     metadata, measured vs reported params/MACs/activations
    convatlas papers [--area A] [--group G]                  the 76-paper atlas with live status
    convatlas verify SLUG [SLUG ...] | --all                 recompute figures, run identities (exit 1 on failure)
    convatlas bench MODEL [--batch 1,16] [--dtype fp32,bf16] latency, throughput, GFLOP/s, fraction of peak
    convatlas train / eval / predict ...                     (from convatlas.cli.train_cmds, when installed)

Errors from bad input are printed as ONE line on stderr (``convatlas: error: ...``) with a non-zero exit code;
``--debug`` shows the traceback instead.

Extending: a module may add subcommands with ``add_subcommands(subparsers)``; each parser must call
``set_defaults(func=handler)`` where ``handler(args) -> int | None`` (None means 0). ``train_cmds`` does this.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

__all__ = ["main", "build_parser"]

_PROG = "convatlas"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block), pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from convatlas import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs)."""
    from convatlas.cli.bench_cmd import add_bench_parser
    from convatlas.cli.commands import cmd_info, cmd_list, cmd_papers, cmd_verify

    parser = _Parser(
        prog=_PROG,
        description="convatlas: every convolutional system from 76 research papers in one PyTorch package. "
        "Start with `convatlas papers` (the atlas), `convatlas list` (models) and `convatlas verify convnext`.",
        epilog="Run `convatlas COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models",
                       description="List registered models (glob or substring PATTERN) with the paper they "
                       "implement, their task and the paper's reported params/MACs.")
    p.add_argument("pattern", nargs="?", help="glob (e.g. 'convnext*') or substring")
    p.add_argument("--paper", help="only models of this atlas slug")
    p.add_argument("--task", help="only models of this task (classification, segmentation3d, ...)")
    p.add_argument("--include-test", action="store_true", help="include tiny test-only variants")
    p.add_argument("-q", "--quiet", action="store_true", help="names only")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show one model: metadata, measured vs reported figures, feature_info",
                       description="Build MODEL on the meta device (no memory, no time) and print its paper, "
                       "task, input size, normalisation, params/MACs/activations measured vs reported (relative "
                       "error) and its feature_info.")
    p.add_argument("model", help="registered model name")
    p.add_argument("--resolution", type=int, default=None, help="measure at this image side instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("papers", help="the 76-paper atlas with live status",
                       description="Print the atlas: one row per paper with its status computed now: planned "
                       "(nothing registered), implemented, or verified (every variant's params/MACs match the "
                       "paper and every identity passes).")
    p.add_argument("--area", help="filter by area (classification, segmentation, ...)")
    p.add_argument("--group", help="filter by group (e.g. 'Foundation', 'ConvNet backbones')")
    p.add_argument("--no-checks", action="store_true",
                   help="do not run checks (fast; registered papers are shown as implemented)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_papers)

    p = sub.add_parser("verify", help="recompute papers' figures and run their identities",
                       description="For every registered variant of each paper: params, MACs (and activations "
                       "where reported) measured on the meta device vs the paper's figures, with relative error; "
                       "then every identity of the paper. Exit code 1 if any check fails.")
    p.add_argument("slugs", nargs="*", metavar="SLUG", help="atlas slugs (see `convatlas papers`)")
    p.add_argument("--all", action="store_true", help="all 76 papers")
    p.add_argument("--no-identities", action="store_true", help="only params/MACs")
    p.add_argument("-q", "--quiet", action="store_true", help="only failures and summaries")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_verify)

    add_bench_parser(sub)
    _add_optional_subcommands(sub)
    return parser


_OPTIONAL_ERRORS: list[str] = []


def _add_optional_subcommands(sub: argparse._SubParsersAction) -> None:
    """train / eval / predict live in convatlas.cli.train_cmds (written separately); skip if absent."""
    _OPTIONAL_ERRORS.clear()
    import importlib

    try:
        train_cmds = importlib.import_module("convatlas.cli.train_cmds")
    except ModuleNotFoundError as exc:
        if exc.name in ("convatlas.cli.train_cmds",):
            return
        _OPTIONAL_ERRORS.append(f"train/eval/predict unavailable: {type(exc).__name__}: {exc}")
        return
    except Exception as exc:  # a broken optional module must not take the whole CLI down
        _OPTIONAL_ERRORS.append(f"train/eval/predict unavailable: {type(exc).__name__}: {exc}")
        return
    try:
        train_cmds.add_subcommands(sub)
    except Exception as exc:
        _OPTIONAL_ERRORS.append(f"train/eval/predict unavailable: {type(exc).__name__}: {exc}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, FileNotFoundError, PermissionError, TypeError)) or not text:
        return first
    return f"{type(exc).__name__}: {first}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code (never raises on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("CONVATLAS_DEBUG"))
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, argparse errors
            if exc.code:
                for msg in _OPTIONAL_ERRORS:
                    sys.stderr.write(f"{_PROG}: note: {msg}\n")
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        func = getattr(args, "func", None)
        if func is None:
            parser.parse_args([args.command, "--help"])
            return 2
        rc = func(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"{_PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `convatlas list | head`
        return 0
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(f"{_PROG}: error: {_one_line(exc)}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
