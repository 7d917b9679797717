"""PHC SEDnet (card: phnn, sound event detection) and the synthetic SED learning check."""

from __future__ import annotations

import pytest
import torch

from convatlas import create_model, list_models
from convatlas.analysis.complexity import count_params
from convatlas.data.synthetic_sed import synthetic_sed
from convatlas.models.audio.phnn_sednet import _COUNTS, PHCSEDnet, sednet_param_count
from convatlas.registry import get_entry
from convatlas.tasks import get_task

SED = list_models("*sednet*")


def test_every_official_configuration_is_registered() -> None:
    assert sorted(SED) == sorted(_COUNTS)
    assert all(get_entry(n).task == "sound_event_detection" for n in SED)


@pytest.mark.parametrize("name", SED)
def test_param_counts_match_official_layer_shapes(name: str) -> None:
    """Built on the meta device: params == the registered official count == the closed form."""
    with torch.device("meta"):
        model = create_model(name)
    n = model.n
    assert count_params(model) == _COUNTS[name] == get_entry(name).reported.params
    assert _COUNTS[name] == sednet_param_count(model.in_chans, n, model.algebra, model.phm_head)


def test_cnn_is_one_nth_and_official_cnn_counts() -> None:
    """The official ``count_parameters`` (CNN only, incl. 960 unused PHC biases): real 1,555,776, n=2/4/8
    779,360 / 391,360 / 199,040."""
    with torch.device("meta"):
        counts = {n: count_params(create_model(f"phc_sednet_n{n}_8ch").cnn) + 960 for n in (2, 4, 8)}
        real = count_params(create_model("sednet_real_8ch").cnn)
    assert counts == {2: 779_360, 4: 391_360, 8: 199_040} and real == 1_555_776
    assert sednet_param_count(8, 8, official=True) - sednet_param_count(8, 8) == 960


def test_official_shapes_on_meta() -> None:
    with torch.device("meta"):
        model = create_model("phc_sednet_n8_8ch")
        out = model(torch.empty(2, 8, 256, 96))
    assert out.shape == (2, 12, 42)  # T/8 label frames (4800 STFT frames -> 600 x 100 ms), 14 classes x 3 slots


def _tiny() -> PHCSEDnet:
    torch.manual_seed(0)
    return create_model("test_phnn_sednet").eval()


def test_bad_inputs_raise() -> None:
    m = _tiny()
    x = torch.randn(2, 4, 16, 32)
    for bad, what in [
        (x[0], "4-D"), (x[:, :3], "4 input channels"), (x[:, :, :8], "F=16"), (x[..., :30], "divisible"),
        (x.long(), "floating"), (x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN"),
    ]:
        with pytest.raises(ValueError, match="PHCSEDnet") as err:
            m(bad)
        assert what in str(err.value), (what, str(err.value))


def test_state_dict_round_trip_bf16_and_proba() -> None:
    a, x = _tiny(), torch.randn(2, 4, 16, 32)
    torch.manual_seed(1)
    b = create_model("test_phnn_sednet").eval()
    b.load_state_dict(a.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = a(x)
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        assert (y.float() - a(x)).abs().max() < 0.1
    p = a.predict_proba(x)
    assert p.shape == (2, 4, 3) and ((p >= 0) & (p <= 1)).all()


def test_quaternion_and_full_phm_variants_build() -> None:
    with torch.device("meta"):
        q = PHCSEDnet(in_chans=8, algebra="quaternion")
        f = PHCSEDnet(in_chans=8, n=4, phm_head=True)
    assert q.cnn[0][0].algebra == "quaternion" and q.cnn[0][0].bias is not None
    assert type(f.sed[0]).__name__ == "PHMLinear" and type(f.sed[-1]).__name__ == "Linear"
    with pytest.raises(ValueError, match="divisible by n"):
        PHCSEDnet(in_chans=4, n=8)


@pytest.mark.slow
def test_learns_synthetic_sed(one_thread) -> None:
    """Tiny PHC SEDnet (n = 4, 21.6 k params) on synthetic 4-channel SED (3 classes, each a *pair* of shared
    frequency bands, plus unlabelled single-band distractors and noise): held-out frame F1 >= 0.85 and error
    rate <= 0.3 after 12 epochs (measured F1 0.92, ER 0.14; untrained F1 0.0)."""
    m = _train_tiny_sed()
    assert m["f1"] >= 0.85 and m["error_rate"] <= 0.3, m


def _train_tiny_sed() -> dict[str, float]:
    torch.manual_seed(0)
    xtr, ytr = synthetic_sed(512, freq=16, frames=32, hop=4, seed=0)
    xte, yte = synthetic_sed(256, freq=16, frames=32, hop=4, seed=1)
    task = get_task("sound_event_detection", time_reduction=4)
    model = PHCSEDnet(in_chans=4, num_classes=3, freq_dim=16, pool_size=((2, 2), (2, 2), (2, 1), (2, 1)),
                      cnn_filters=(16, 16, 32, 32), rnn_size=32, n_rnn=1, fc_size=32, dropout=0.0, n=4)
    epochs, batch = 12, 32
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * (len(xtr) // batch))
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for b in range(0, len(xtr), batch):
            idx = perm[b:b + batch]
            loss = task.loss(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    acc = task.metrics()
    with torch.no_grad():
        acc.update(model(xte), yte)
    return acc.compute()


@pytest.mark.parametrize("kind", ["phc", "quat", "full"])
def test_official_state_dict_layout_loads(kind: str) -> None:
    """Synthetic official state dicts (unused PHC biases, quaternion r/i/j/k components, SED-folder PHM ``A``/``S``,
    official ``F`` shape) load strictly through ``checkpoint_filter_fn`` and give the same outputs."""
    from convatlas.models.audio.phnn_sednet import checkpoint_filter_fn

    kw = dict(in_chans=4, num_classes=3, freq_dim=16, pool_size=((2, 2), (2, 2), (2, 2), (2, 1)),
              cnn_filters=(8, 8, 16, 16), rnn_size=8, n_rnn=1, fc_size=8, dropout=0.0)
    kw.update({"phc": dict(n=4), "quat": dict(algebra="quaternion"), "full": dict(n=4, phm_head=True)}[kind])
    torch.manual_seed(0)
    src = PHCSEDnet(**kw).eval()
    sd = {}
    for k, v in src.state_dict().items():
        mod, _, leaf = k.rpartition(".")
        m = src.get_submodule(mod)
        if type(m).__name__ == "PHConv" and leaf == "F":
            if m.algebra == "quaternion":
                for c, comp in zip("rijk", v.reshape(m.filter_shape).unbind(0)):
                    sd[f"{mod}.{c}_weight"] = comp
                continue
            sd[k] = v.reshape(m.filter_shape)  # official (n, C_out/n, C_in/n, k, k)
            sd[f"{mod}.bias"] = torch.zeros(m.out_channels)  # created, never added
            continue
        if type(m).__name__ == "PHMLinear" and leaf in ("a", "s"):
            sd[f"{mod}.{leaf.upper()}"] = v
            continue
        sd[k] = v
    torch.manual_seed(1)
    dst = PHCSEDnet(**kw).eval()
    dst.load_state_dict(checkpoint_filter_fn(sd, dst), strict=True)
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_meta_gru_stand_in_counts_the_same_macs() -> None:
    """On the meta device the GRU is replaced by a loop-free stand-in with the same output shape and matmul MACs."""
    from convatlas.analysis.complexity import measure_complexity

    torch.manual_seed(0)
    kw = dict(in_chans=8, freq_dim=256, rnn_size=32, n_rnn=2, fc_size=32)
    cpu = measure_complexity(PHCSEDnet(**kw).eval(), (torch.randn(1, 8, 256, 32),)).gmacs
    with torch.device("meta"):
        meta = measure_complexity(PHCSEDnet(**kw).eval(), (torch.empty(1, 8, 256, 32),)).gmacs
    assert cpu == pytest.approx(meta, rel=1e-9)
