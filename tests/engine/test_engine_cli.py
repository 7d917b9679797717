"""`convatlas train / eval / predict` end to end on a tiny registered ConvNeXt."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from convatlas import list_models
from convatlas.cli import train_cmds
from engine_testutils import one_thread  # noqa: F401 (autouse fixture: 1 intra-op thread)

MODEL = "test_convnext"
pytestmark = pytest.mark.skipif(MODEL not in list_models(include_test=True),
                                reason="the tiny ConvNeXt test variant is not registered")


def run(argv: list[str]) -> int:
    """Run through the real `convatlas` entry point if present, else through train_cmds alone."""
    try:
        from convatlas.cli.main import main
    except ImportError:  # pragma: no cover
        main = train_cmds.main
    return main(argv)


def test_add_subcommands_on_plain_argparse():
    parser = argparse.ArgumentParser()
    train_cmds.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "m", "--data", "digits", "--epochs", "3", "--batch-size", "32", "--lr", "0.1",
                              "--out", "o", "--resume", "--bf16", "--ema", "--accum", "2", "--seed", "3",
                              "--img-size", "16", "--num-classes", "10"])
    assert (args.epochs, args.batch_size, args.accum, args.resume, args.bf16, args.ema) == (3, 32, 2, True, True, True)
    assert args.func is train_cmds.cmd_train
    assert parser.parse_args(["eval", "c.safetensors"]).func is train_cmds.cmd_eval
    assert parser.parse_args(["predict", "c.safetensors", "a.png", "b.png"]).images == ["a.png", "b.png"]


def test_train_eval_predict_resume_digits(tmp_path, capsys):
    out = tmp_path / "run"
    common = [MODEL, "--data", "digits", "--epochs", "1", "--batch-size", "350", "--lr", "5e-3", "--out", str(out),
              "--no-progress", "--img-size", "32"]
    assert run(["train", *common, "--max-steps", "2"]) == 0
    assert not (out / "best.safetensors").exists()  # stopped mid-epoch: only the resumable last state
    assert run(["train", *common, "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["epochs_done"] == 1
    meta = json.loads((out / "best.json").read_text())
    assert meta["model_name"] == MODEL and meta["model_kwargs"] == {"num_classes": 10, "in_chans": 3}
    assert meta["data"]["name"] == "digits" and meta["data"]["img_size"] == 32

    assert run(["eval", str(out / "best.safetensors"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 397 and res["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])
    assert run(["eval", str(out / "last.safetensors")]) == 0
    assert "accuracy=" in capsys.readouterr().out

    # predict: digits written as 8-bit PNGs go through the same transform as the embedded data
    from PIL import Image

    from convatlas.data.digits import digits_split_indices, load_digits_arrays, load_digits_dataset
    from convatlas.data.image_folder import load_image
    from convatlas.engine.checkpoint import model_from_checkpoint

    images, labels = load_digits_arrays()
    val_idx = digits_split_indices("val")[:3]
    paths = []
    for i in val_idx:
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(np.round(images[i].astype(np.float32) * 255 / 16).astype(np.uint8)).save(p)
        paths.append(str(p))
    ds = load_digits_dataset("val")
    assert (load_image(paths[0], 32) - ds.tensors[0][0]).abs().max() < 0.01
    assert run(["predict", str(out / "best.safetensors"), *paths]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert [r["image"] for r in lines] == paths
    model, _ = model_from_checkpoint(out / "best.safetensors")
    with torch.no_grad():
        probs = model(torch.stack([load_image(p, 32) for p in paths])).softmax(-1)
    for r, pr in zip(lines, probs):
        assert r["class"] == int(pr.argmax()) and r["label"] == str(r["class"])
        assert r["probability"] == pytest.approx(float(pr.max()), abs=1e-5)


def test_train_on_image_folder_and_errors(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, c in enumerate(["circle", "square"]):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            arr = (rng.integers(0, 60, (20, 20)) + 150 * ci).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    out = tmp_path / "run"
    assert run(["train", MODEL, "--data", str(tmp_path / "imgs"), "--epochs", "1", "--batch-size", "4",
                "--img-size", "32", "--out", str(out), "--no-progress", "--ema", "--bf16"]) == 0
    meta = json.loads((out / "last.json").read_text())
    assert meta["data"]["classes"] == ["circle", "square"] and meta["model_kwargs"]["num_classes"] == 2
    assert meta["weights"] == "ema" and meta["config"]["bf16"] is True
    assert run(["eval", str(out / "last.safetensors"), "--json"]) == 0  # data folder taken from the metadata
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 2
    capsys.readouterr()

    def fails(argv, pattern):
        rc = run(argv)
        err = capsys.readouterr().err.strip()
        assert rc != 0 and pattern in err and len(err.splitlines()) == 1, (rc, err)

    fails(["train", MODEL, "--data", str(tmp_path / "nowhere"), "--out", str(out)], "nowhere")
    fails(["train", MODEL, "--data", str(tmp_path / "imgs"), "--num-classes", "5", "--out", str(out)],
          "--num-classes 5")
    fails(["train", MODEL, "--model-kwargs", "{bad", "--out", str(out)], "JSON")
    fails(["eval", str(tmp_path / "missing.safetensors")], "missing.safetensors")
    fails(["predict", str(out / "last.safetensors"), str(tmp_path / "none.png")], "none.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    fails(["predict", str(out / "last.safetensors"), str(tmp_path / "bad.png")], "bad.png")
