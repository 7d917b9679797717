"""The convatlas command, run in-process: every subcommand, exit codes, one-line errors with suggestions."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import pytest
from torch import nn

from convatlas import atlas, identities, registry
from convatlas.cli.main import main
from convatlas.registry import ModelEntry, Reported

verify = importlib.import_module("convatlas.verify")
SLUG = "zz-fake-cli"


def _tiny(**kw) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


@pytest.fixture
def fake(monkeypatch):
    """Fake paper with a matching model (zz_cli_good), a wrong one (zz_cli_bad) optional, and an identity."""
    registry._discover()
    paper = atlas.Paper(997, SLUG, "Fake CLI paper", "Fake", "0000.00002", 2020, "layers", "Foundation")
    monkeypatch.setitem(atlas._BY_SLUG, SLUG, paper)
    monkeypatch.setattr(atlas, "PAPERS", atlas.PAPERS + (paper,))
    monkeypatch.setitem(identities._IDENTITIES, SLUG, [identities.Identity(SLUG, "fake identity", lambda: "err 0")])
    good = ModelEntry(name="zz_cli_good", builder=_tiny, paper=SLUG, input_size=(3, 8, 8), num_classes=5,
                      family="fake", reported=Reported(params=137, gmacs=6932e-9, resolution=8, params_exact=True))
    monkeypatch.setitem(registry._REGISTRY, "zz_cli_good", good)
    verify.clear_cache()

    def add_bad():
        monkeypatch.setitem(registry._REGISTRY, "zz_cli_bad", ModelEntry(
            name="zz_cli_bad", builder=_tiny, paper=SLUG, input_size=(3, 8, 8), num_classes=5, family="fake",
            reported=Reported(params=150, gmacs=6932e-9, resolution=8)))
        verify.clear_cache()

    yield add_bad
    verify.clear_cache()


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_and_version(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "verify" in out and "bench" in out and "papers" in out
    if importlib.util.find_spec("convatlas.cli.train_cmds") is not None:
        assert "train" in out and "predict" in out
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("convatlas ")
    rc, out, _ = run(capsys)
    assert rc == 2 and "COMMAND" in out


def test_list(capsys, fake):
    rc, out, _ = run(capsys, "list", "zz_cli*")
    assert rc == 0 and "zz_cli_good" in out and "137" in out
    rc, out, _ = run(capsys, "list", "--paper", SLUG, "-q")
    assert rc == 0 and out.split() == ["zz_cli_good"]
    rc, out, _ = run(capsys, "list", "cli_go", "--json")
    assert rc == 0 and json.loads(out)[0]["reported"]["params"] == 137
    rc, _, err = run(capsys, "list", "--paper", "convnxt")
    assert rc != 0 and "did you mean convnext" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run(capsys, "list", "zz_no_such_*")
    assert rc != 0 and "no model matches" in err


def test_info(capsys, fake):
    rc, out, _ = run(capsys, "info", "zz_cli_good")
    assert rc == 0
    for text in ("Fake CLI paper", "0000.00002", "classification", "(3, 8, 8)", "137", "exact", "6.932e-06"):
        assert text in out, text
    rc, out, _ = run(capsys, "info", "zz_cli_good", "--json")
    d = json.loads(out)
    assert d["figures"][0] == {"figure": "params", "measured": 137, "reported": 137, "rel_err": 0.0, "exact": True}
    assert d["figures"][2]["measured"] == pytest.approx(261e-6)


def test_unknown_model_one_line_with_suggestion(capsys, fake):
    rc, out, err = run(capsys, "info", "zz_cli_goood")
    assert rc != 0 and out == ""
    assert err.strip().splitlines() == ["convatlas: error: unknown model 'zz_cli_goood'; did you mean zz_cli_good?"]
    rc, _, err = run(capsys, "bench", "zz_cli_goood")
    assert rc != 0 and "did you mean zz_cli_good" in err and "Traceback" not in err


def test_bad_arguments_one_line(capsys):
    rc, _, err = run(capsys, "bench", "x", "--dtype", "fp33")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "unknown dtype" in err
    rc, _, err = run(capsys, "nosuchcommand")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "invalid choice" in err
    rc, _, err = run(capsys, "verify")
    assert rc != 0 and "--all" in err


def test_verify_pass_and_fail(capsys, fake):
    rc, out, _ = run(capsys, "verify", SLUG)
    assert rc == 0, out
    assert "137 vs 137 (exact) ok" in out and "fake identity: err 0" in out and "[verified]" in out
    assert "6.932e-06 vs 6.932e-06 (+0.00%) ok" in out
    fake()  # add a variant whose reported params are 9.5% off
    rc, out, _ = run(capsys, "verify", SLUG)
    assert rc == 1 and "-8.67%) FAIL" in out and "FAILED: " + SLUG in out and "[implemented]" in out
    rc, out, _ = run(capsys, "verify", SLUG, "--json")
    d = json.loads(out)
    assert rc == 1 and d["ok"] is False and d["papers"][0]["counts"]["failed"] == 1
    rc, _, err = run(capsys, "verify", "convnex")
    assert rc != 0 and "did you mean convnext" in err
    rc, _, err = run(capsys, "verify", "zz_cli_good")
    assert rc != 0 and f"run `convatlas verify {SLUG}`" in err


def test_papers(capsys, fake):
    rc, out, _ = run(capsys, "papers", "--no-checks")
    lines = [ln for ln in out.splitlines() if ln[:3].strip().isdigit()]
    assert rc == 0 and len(lines) == 76 + 1  # + the fake paper
    rc, out, _ = run(capsys, "papers", "--group", "foundation", "--area", "layers", "--json")
    (row,) = json.loads(out)  # convnext is in Foundation too, but its area is classification
    assert rc == 0 and row["slug"] == SLUG and row["status"] == "verified" and row["components"] == ["zz_cli_good"]
    assert row["passed"] == 3 and row["failed"] == 0
    rc, out, _ = run(capsys, "papers", "--group", "foundation", "--area", "layers")
    assert rc == 0 and "zz-fake-cli" in out and "verified" in out and "1 verified" in out
    rc, _, err = run(capsys, "papers", "--area", "cooking")
    assert rc != 0 and "choose from" in err


def test_bench_json(capsys, fake):
    rc, out, _ = run(capsys, "bench", "zz_cli_good", "--batch", "1,2", "--reps", "1", "--warmup", "0",
                     "--peak-n", "64", "--json", "--threads", "1")
    assert rc == 0
    d = json.loads(out)
    assert [r["batch"] for r in d["rows"]] == [1, 2]
    for key in ("latency_ms", "throughput", "gmacs", "gflops_s", "frac_peak"):
        assert d["rows"][0][key] > 0
    rc, out, _ = run(capsys, "bench", "zz_cli_good", "--reps", "1", "--warmup", "0", "--no-peak",
                     "--channels-last")
    assert rc == 0 and "samples/s" in out and "load average" in out


def test_verify_convnext_passes(capsys):
    assert "convnext_tiny" in registry.list_models(paper="convnext")
    rc, out, _ = run(capsys, "verify", "convnext")
    assert rc == 0, out
    assert "convnext_tiny" in out and "FAIL" not in out


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "convatlas", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "convatlas" in r.stdout


def test_broken_optional_subcommands_do_not_break_the_cli(capsys, monkeypatch):
    import types

    broken = types.ModuleType("convatlas.cli.train_cmds")  # no add_subcommands -> AttributeError
    monkeypatch.setitem(sys.modules, "convatlas.cli.train_cmds", broken)
    rc, out, _ = run(capsys, "list", "-q", "--paper", "convnext")
    assert rc == 0 and "convnext_tiny" in out.split()
    rc, _, err = run(capsys, "train", "convnext_atto")
    assert rc == 2 and "invalid choice" in err and "train/eval/predict unavailable" in err
