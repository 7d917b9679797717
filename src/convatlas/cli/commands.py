"""Handlers of ``convatlas list / info / papers / verify``. Each takes the parsed ``args`` and returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from convatlas.cli.fmt import fmt_num, fmt_params, fmt_rel, mark, shorten, table

__all__ = ["cmd_list", "cmd_info", "cmd_papers", "cmd_verify"]


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _fmt_res(res: Any) -> str:
    if res is None:
        return "-"
    if isinstance(res, int):
        return str(res)
    return "x".join(str(r) for r in res)


def _check_paper(slug: str | None) -> None:
    if slug is not None:
        from convatlas.atlas import get_paper

        get_paper(slug)  # raises with suggestions


def _check_task(task: str | None) -> None:
    if task is None:
        return
    from convatlas.registry import _all_entries

    tasks = sorted({e.task for e in _all_entries().values()})
    if task not in tasks:
        raise ValueError(f"no registered model has task {task!r}; tasks in use: {', '.join(tasks) or 'none'}")


# ---------------------------------------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    """``convatlas list [PATTERN] [--paper SLUG] [--task TASK]``: registered models with their reported figures."""
    import difflib

    from convatlas.registry import _all_entries, get_entry, list_models

    _check_paper(args.paper)
    _check_task(args.task)
    pattern = args.pattern
    if pattern and not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"  # a bare word is a substring search
    names = list_models(pattern, paper=args.paper, task=args.task, include_test=args.include_test)
    if not names:
        close = difflib.get_close_matches(args.pattern or "", list(_all_entries()), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        sys.stderr.write(f"convatlas list: no model matches the filters{hint}\n")
        return 1
    if args.json:
        _out(json.dumps([_entry_dict(get_entry(n)) for n in names], indent=2))
        return 0
    if args.quiet:
        for n in names:
            _out(n)
        return 0
    rows = []
    for n in names:
        e = get_entry(n)
        r = e.reported
        rows.append([n, e.paper, e.task, fmt_params(r.params) if r and r.params is not None else "-",
                     fmt_num(r.gmacs) if r and r.gmacs is not None else "-", _fmt_res(r.resolution if r else None)])
    _out(table(rows, ["model", "paper", "task", "params (reported)", "GMACs", "at"], right=(3, 4)))
    _out(f"\n{len(names)} model(s). `convatlas info MODEL` measures one; `convatlas verify SLUG` checks a paper.")
    return 0


def _entry_dict(e: Any) -> dict[str, Any]:
    r = e.reported
    return {
        "name": e.name,
        "paper": e.paper,
        "task": e.task,
        "family": e.family,
        "input_size": list(e.input_size),
        "num_classes": e.num_classes,
        "reference": e.reference,
        "test_only": e.test_only,
        "reported": None if r is None else {
            "params": r.params, "gmacs": r.gmacs, "resolution": r.resolution, "params_exact": r.params_exact,
            "activations": r.activations, "metrics": dict(r.metrics), "source": r.source,
        },
    }


# ---------------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    """``convatlas info MODEL``: metadata, measured vs reported complexity, feature_info."""
    import torch

    from convatlas.analysis.complexity import measure_complexity
    from convatlas.analysis.complexity import _inputs_for_resolution
    from convatlas.atlas import get_paper
    from convatlas.registry import get_entry
    from convatlas.verify import rel_error

    e = get_entry(args.model)
    r = e.reported
    resolution = args.resolution if args.resolution is not None else (r.resolution if r is not None else None)
    with torch.device("meta"):
        model = e.builder()
        inputs = _inputs_for_resolution(e, resolution)
    c = measure_complexity(model, inputs)
    feature_info = [dict(f) for f in getattr(model, "feature_info", None) or []]
    try:
        p = get_paper(e.paper)
        paper_line = f"{p.slug} — {p.title} (arXiv {p.arxiv}, {p.year})"
    except ValueError:
        paper_line = f"{e.paper} (not an atlas slug)"
    figures = []
    for label, meas, rep, exact in (
        ("params", c.params, r.params if r else None, bool(r and r.params_exact)),
        ("GMACs", c.gmacs, r.gmacs if r else None, False),
        ("activations (M)", c.mactivations, r.activations if r else None, False),
    ):
        err = rel_error(meas, rep) if rep is not None and resolution == (r.resolution if r else None) else None
        figures.append({"figure": label, "measured": meas, "reported": rep, "rel_err": err, "exact": exact})
    if args.json:
        d = _entry_dict(e)
        d.update({"paper_title": paper_line, "mean": list(e.mean), "std": list(e.std),
                  "test_input_size": list(e.test_input_size) if e.test_input_size else None,
                  "measured_at": [list(s) for s in c.input_shapes], "figures": figures,
                  "feature_info": feature_info})
        _out(json.dumps(d, indent=2, default=str))
        return 0
    _out(f"{e.name}")
    _out(f"  paper       {paper_line}")
    _out(f"  task        {e.task}    family {e.family}    num_classes {e.num_classes}")
    _out(f"  input size  {tuple(e.input_size)}    test input size {e.test_input_size}")
    _out(f"  mean / std  {tuple(round(m, 4) for m in e.mean)} / {tuple(round(s, 4) for s in e.std)}")
    if e.reference:
        _out(f"  reference   {e.reference}")
    if r is not None and r.source:
        _out(f"  reported    {r.source}")
    if r is not None and r.metrics:
        _out("  metrics     " + ", ".join(f"{k} {v}" for k, v in r.metrics.items()))
    shapes = ", ".join("x".join(map(str, s)) for s in c.input_shapes)
    _out(f"\n  measured on the meta device at input {shapes}:")
    rows = []
    for f in figures:
        meas = fmt_params(f["measured"]) if f["figure"] == "params" else fmt_num(f["measured"])
        rep = "-" if f["reported"] is None else (
            fmt_params(f["reported"]) if f["figure"] == "params" else fmt_num(f["reported"]))
        err = "exact" if f["exact"] and f["rel_err"] == 0 else fmt_rel(f["rel_err"])
        rows.append([f["figure"], meas, rep, err])
    _out(table(rows, ["figure", "measured", "reported", "rel. error"], right=(1, 2, 3), indent=2))
    if resolution != (r.resolution if r else None):
        _out("  (reported figures refer to another resolution; no relative error shown)")
    if feature_info:
        _out("\n  feature_info (features_only=True):")
        rows = [[i, f.get("num_chs"), f.get("reduction"), f.get("module", "")] for i, f in enumerate(feature_info)]
        _out(table(rows, ["index", "channels", "reduction", "module"], right=(0, 1, 2), indent=2))
    return 0


# -------------------------------------------------------------------------------------------------- papers
def cmd_papers(args: argparse.Namespace) -> int:
    """``convatlas papers [--area A] [--group G]``: the atlas with live status."""
    from convatlas.atlas import atlas_rows, is_registered, list_papers
    from convatlas.verify import verify_papers

    papers = list_papers(area=args.area, group=args.group)
    results = {}
    if not args.no_checks:
        todo = [p.slug for p in papers if is_registered(p.slug)]
        results = {r.slug: r for r in verify_papers(todo, progress=not args.json)}
    rows = atlas_rows([p.slug for p in papers], run_checks=False, results=results)
    if args.json:
        _out(json.dumps(rows, indent=2))
        return 0
    out = []
    for r in rows:
        comps = r["components"]
        checks = f"{r['passed']}/{r['passed'] + r['failed']}" if "passed" in r else "-"
        out.append([r["number"], r["slug"], shorten(r["title"], 44), r["area"], r["group"], r["status"],
                    len(comps), checks])
    _out(table(out, ["#", "slug", "title", "area", "group", "status", "components", "checks ok"],
               right=(0, 6, 7)))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("verified", "implemented", "planned")}
    _out("\n" + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(rows)} papers"
         + (" (checks not run: registered papers shown as implemented)" if args.no_checks else ""))
    return 0


# -------------------------------------------------------------------------------------------------- verify
def _print_paper_result(res: Any, verbose: bool = True) -> None:
    from convatlas.atlas import get_paper

    p = get_paper(res.slug)
    c = res.counts()
    _out(f"{p.slug} — {p.title} [{res.status}]")
    if not res.registered:
        _out("  planned: nothing registered for this paper yet")
        return
    comps = [x for x in res.components if x not in {v.name for v in res.variants}]
    if comps:
        _out("  components: " + ", ".join(comps))
    if res.variants:
        rows = []
        for v in res.variants:
            by_kind = {ch.kind: ch for ch in v.checks}
            if "build" in by_kind:
                rows.append([v.name, _fmt_res(v.resolution), "FAIL: " + by_kind["build"].message, "", ""])
                continue
            cells = [v.name, _fmt_res(v.resolution)]
            for kind in ("params", "gmacs"):
                ch = by_kind.get(kind)
                fm = fmt_params if kind == "params" else (lambda x: fmt_num(x, 4))
                if ch is None or ch.ok is None:
                    cells.append(f"{fm(ch.measured) if ch else '-'} (no ref)")
                else:
                    err = "exact" if ch.exact and ch.ok else fmt_rel(ch.rel_err)
                    cells.append(f"{fm(ch.measured)} vs {fm(ch.reported)} ({err}) {mark(ch.ok)}")
            ch = by_kind.get("activations")
            cells.append(f"{fmt_num(v.mactivations, 4)} vs {fmt_num(ch.reported)} {mark(ch.ok)}" if ch
                         else fmt_num(v.mactivations, 4))
            rows.append(cells)
        if verbose:
            _out(table(rows, ["variant", "res", "params measured vs reported", "GMACs measured vs reported",
                              "acts (M)"], indent=2))
        else:
            for row, v in zip(rows, res.variants):
                if not v.ok:
                    _out(("  " + "  ".join(str(x) for x in row if x != "")).rstrip())
    for ch in res.identities:
        if verbose or ch.ok is False:
            _out(f"  identity {mark(ch.ok):4s} {ch.name}: {ch.message} ({ch.seconds:.2f} s)")
    _out(f"  {c['passed']} passed, {c['failed']} failed, {c['no_reference']} variant(s) without reference "
         f"figures ({res.seconds:.1f} s)")


def _slug_or_hint(name: str) -> str:
    """The atlas slug ``name``; for a model name, say which paper it belongs to."""
    from convatlas.atlas import UnknownPaperError, get_paper
    from convatlas.registry import _all_entries

    try:
        return get_paper(name).slug
    except UnknownPaperError:
        entry = _all_entries().get(name)
        if entry is not None:
            raise ValueError(f"{name!r} is a model, not a paper; run `convatlas verify {entry.paper}` "
                             f"(or `convatlas info {name}`)") from None
        raise


def cmd_verify(args: argparse.Namespace) -> int:
    """``convatlas verify SLUG... | --all``: measured vs reported per variant, identities; exit 1 on a failure."""
    from convatlas.atlas import PAPERS
    from convatlas.verify import verify_papers

    if args.all and args.slugs:
        raise ValueError("give paper slugs or --all, not both")
    if not args.all and not args.slugs:
        raise ValueError("give one or more paper slugs (see `convatlas papers`) or --all")
    slugs = [p.slug for p in PAPERS] if args.all else [_slug_or_hint(s) for s in args.slugs]
    results = verify_papers(slugs, identities=not args.no_identities, progress=not args.json)
    failed = [r for r in results if r.counts()["failed"]]
    if args.json:
        _out(json.dumps({"ok": not failed, "papers": [r.to_dict() for r in results]}, indent=2, default=str))
        return 1 if failed else 0
    planned = [r.slug for r in results if not r.registered]
    for r in results:
        if args.all and not r.registered:
            continue
        _print_paper_result(r, verbose=not args.quiet)
        _out()
    if planned and args.all:
        _out(f"planned (nothing registered, {len(planned)}): " + ", ".join(planned))
    total = {"passed": 0, "failed": 0, "no_reference": 0}
    for r in results:
        for k, v in r.counts().items():
            total[k] += v
    status = {s: sum(r.status == s for r in results) for s in ("verified", "implemented", "planned")}
    _out(f"summary: {total['passed']} checks passed, {total['failed']} failed, {total['no_reference']} variant(s) "
         f"without reference; papers: " + ", ".join(f"{v} {k}" for k, v in status.items()))
    if failed:
        _out("FAILED: " + ", ".join(r.slug for r in failed))
    return 1 if failed else 0
