"""The atlas: 76 papers as data, and status computed from the registry (planned -> implemented -> verified)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from torch import nn

from convatlas import atlas, identities, registry
from convatlas.registry import ModelEntry, Reported

verify = importlib.import_module("convatlas.verify")

# shared/ (the atlas and the paper cards) sits beside the repository checkout.
SHARED = next(
    (p for p in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")) if (p / "ATLAS.md").exists()),
    Path("/work/shared"),
)
SLUG = "zz-fake-atlas"


def test_76_unique_papers_numbered_in_order():
    assert len(atlas.PAPERS) == 76
    assert [p.number for p in atlas.PAPERS] == list(range(1, 77))
    slugs = [p.slug for p in atlas.PAPERS]
    assert len(set(slugs)) == 76
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s) for s in slugs)
    assert all(re.fullmatch(r"\d{4}\.\d{4,5}", p.arxiv) for p in atlas.PAPERS)
    assert len({p.arxiv for p in atlas.PAPERS}) == 76
    assert atlas.get_paper("convnext").arxiv == "2201.03545"
    assert atlas.get_paper("dico").number == 73 and atlas.get_paper("dico").group == "Generative and multimodal"
    assert len(atlas.GROUPS) == 11 and atlas.GROUPS[0] == "Foundation"
    assert atlas.get_paper("convnext").url == "https://arxiv.org/abs/2201.03545"


@pytest.mark.skipif(not (SHARED / "ATLAS.md").exists(), reason="shared atlas/cards not present on this machine")
def test_matches_atlas_md_and_cards():
    rows = []
    for line in (SHARED / "ATLAS.md").read_text().splitlines():
        m = re.match(r"\| (\d+) \| ([\w-]+) \| (.+?) \| (\w+) \| (.+?) \|$", line.strip())
        if m:
            rows.append((int(m[1]), m[2], m[3], m[4], m[5]))
    assert len(rows) == 76
    for (num, slug, title, area, group), p in zip(rows, atlas.PAPERS):
        assert (p.number, p.slug, p.title, p.area, p.group) == (num, slug, title, area, group)
        header = (SHARED / "papers" / f"{slug}.md").read_text().splitlines()[1]
        assert f"slug: {slug} " in header
        assert f"arXiv: {p.arxiv}" in header, (slug, header)
    cards = {f.stem for f in (SHARED / "papers").glob("*.md")}
    assert cards == {p.slug for p in atlas.PAPERS}


def test_filters_and_unknown():
    assert [p.slug for p in atlas.list_papers(group="foundation")] == ["convnext"]
    assert len(atlas.list_papers(area="audio")) == 3
    assert len(atlas.list_papers(group="ViT hybrids", area="dense")) == 2
    with pytest.raises(ValueError, match="choose from"):
        atlas.list_papers(area="cooking")
    with pytest.raises(atlas.UnknownPaperError, match="did you mean convnext"):
        atlas.get_paper("convnxt")


@pytest.fixture
def fake(monkeypatch):
    registry._discover()
    monkeypatch.setitem(atlas._BY_SLUG, SLUG, atlas.Paper(998, SLUG, "Fake", "Fake", "0000.00001", 2020,
                                                         "layers", "Foundation"))
    monkeypatch.setitem(identities._IDENTITIES, SLUG, [])
    monkeypatch.setitem(identities._COMPONENTS, SLUG, {})
    verify.clear_cache()
    yield monkeypatch
    verify.clear_cache()


def _linear(**kw):
    return nn.Linear(4, 3)


def _add_model(mp, name, reported):
    mp.setitem(registry._REGISTRY, name, ModelEntry(name=name, builder=_linear, paper=SLUG, input_size=(4,),
                                                     num_classes=3, reported=reported, family="fake"))


def test_status_planned_implemented_verified(fake):
    assert atlas.paper_status(SLUG) == "planned" and atlas.components(SLUG) == []
    # a component alone: implemented (nothing checked yet)
    identities.register_component(SLUG, nn.Identity, name="FakeLayer")
    assert atlas.is_registered(SLUG) and atlas.components(SLUG) == ["FakeLayer"]
    assert atlas.paper_status(SLUG) == "implemented"
    # a model whose figures match (15 params, 12 MACs): verified
    _add_model(fake, "zz_atlas_lin", Reported(params=15, gmacs=12e-9, resolution=(4,), params_exact=True))
    verify.clear_cache()
    assert atlas.paper_status(SLUG) == "verified"
    assert atlas.components(SLUG) == ["zz_atlas_lin", "FakeLayer"]
    assert atlas.paper_status(SLUG, run_checks=False) == "implemented"
    # a failing identity: back to implemented
    identities.register_identity(SLUG, "always fails")(lambda: (_ for _ in ()).throw(AssertionError("err 1.0")))
    verify.clear_cache()
    assert atlas.paper_status(SLUG) == "implemented"
    row = atlas.atlas_rows([SLUG])[0]
    assert row["status"] == "implemented" and row["failed"] == 1 and row["passed"] == 2


def test_identity_alone_is_implemented_and_can_verify(fake):
    identities.register_identity(SLUG, "holds")(lambda: "max abs error 0")
    assert atlas.is_registered(SLUG)
    assert atlas.paper_status(SLUG) == "verified"


def test_wrong_figure_is_not_verified(fake):
    _add_model(fake, "zz_atlas_wrong", Reported(params=16, resolution=(4,), params_exact=True))
    assert atlas.paper_status(SLUG) == "implemented"


def test_rows_cover_all_papers_without_checks():
    rows = atlas.atlas_rows(run_checks=False)
    assert len(rows) == 76 and {r["status"] for r in rows} <= set(atlas.STATUSES)
    for r in rows:
        registered = atlas.is_registered(r["slug"])
        assert (r["status"] == "planned") == (not registered)


def _load_make_atlas():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_atlas.py"
    if not path.exists():
        pytest.skip("scripts/make_atlas.py not present")
    spec = importlib.util.spec_from_file_location("make_atlas", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_atlas_renders_76_rows_with_failures(monkeypatch):
    """The generated table: one row per paper, status from the results, failing checks listed."""
    mk = _load_make_atlas()
    ok = verify.CheckResult("params", "m_ok", True, measured=10, reported=10, rel_err=0.0, exact=True)
    bad = verify.CheckResult("gmacs", "m_bad", False, measured=1.1, reported=1.0, rel_err=0.1, tol=0.03)
    results = []
    for p in atlas.PAPERS:
        r = verify.PaperResult(slug=p.slug)
        if p.slug == "convnext":
            r.registered = True
            r.variants = [verify.VariantResult("m_ok", 224, [ok]), verify.VariantResult("m_bad", 224, [bad])]
        results.append(r)
    monkeypatch.setattr(atlas, "is_registered", lambda slug: slug == "convnext")
    text = mk.render(results, when="now", version="x", identities=True)
    rows = [ln for ln in text.splitlines() if re.match(r"\| \d+ \| `", ln)]
    assert len(rows) == 76
    assert "| 1 | `convnext` |" in rows[0] and "**implemented**" in rows[0] and "1/1 ok" in rows[0]
    assert all("**planned**" in r for r in rows[1:])
    assert "0 verified, 1 implemented, 75 planned" in text
    assert "`convnext` `m_bad` gmacs: measured 1.1 vs reported 1 (+10.00%)" in text


def test_generated_atlas_doc_lists_every_paper():
    doc = Path(__file__).resolve().parents[1] / "docs" / "atlas.md"
    if not doc.exists():
        pytest.skip("docs/atlas.md not generated yet (make atlas)")
    text = doc.read_text()
    for p in atlas.PAPERS:
        assert f"| {p.number} | `{p.slug}` |" in text, p.slug
