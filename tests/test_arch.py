"""Architecture strings with recurrent layers (bpcore/layers/arch.py): rnn, gru, lstm
and bidirectional(...) parse, infer their sizes, train a step, and bad strings say
what is wrong. (The MNIST-1D CNN/MLP strings are tested in tests/test_mnist1d.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import bpcore as bp
from bpcore.layers import output_shape
from bpcore.layers.arch import MNIST1D_GRU, build


def test_the_papers_gru_from_its_string() -> None:
    net = build(MNIST1D_GRU, (40,))
    layers = net.config["layers"]
    assert [c["name"] for c in layers] == ["reshape", "bidirectional", "flatten", "dense"]
    assert layers[0]["shape"] == [40, 1]  # 40 steps of one value
    assert layers[1]["layer"] == {"name": "gru", "n_in": 1, "hidden": 6,
                                  "return_sequences": True, "truncate": None,
                                  "initial_state": "zeros", "reverse": False}
    assert (layers[3]["n_in"], layers[3]["n_out"]) == (480, 10)
    # the same network as written by hand (same config, same initial weights)
    by_hand = bp.sequential(bp.reshape((40, 1)), bp.bidirectional(bp.gru(1, 6)), bp.flatten(),
                            bp.dense(480, 10))
    assert net.config == by_hand.config
    for a, b in zip(bp.tree.leaves(net.init(3)), bp.tree.leaves(by_hand.init(3))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("spec", "in_shape", "out", "kinds"),
    [
        ("gru(5),flatten,dense(3)", (7, 2), (3,), ["gru", "flatten", "dense"]),
        ("lstm(4,return_sequences=False),dense(3)", (7, 2), (3,), ["lstm", "dense"]),
        ("rnn(4),gru(3, truncate=2),flatten,dense(2)", (6,), (2,),
         ["reshape", "rnn", "gru", "flatten", "dense"]),
        ("bidirectional(lstm(4, return_sequences=False)),dense(2)", (5, 3), (2,),
         ["bidirectional", "dense"]),
        ("bidirectional(rnn(3, initial_state='learned')),layer_norm,flatten,dense(2)", (5, 1),
         (2,), ["bidirectional", "layer_norm", "flatten", "dense"]),
        ("gru(3, reverse=True, return_sequences=False),dense(4)", (6,), (4,),
         ["reshape", "gru", "dense"]),
        ("conv1d(4,3,padding=1),relu,reshape(6,4),gru(5,return_sequences=False),dense(2)",
         (6,), (2,), ["reshape", "conv1d", "relu", "reshape", "gru", "dense"]),
    ],
)
def test_recurrent_strings_build_and_train_a_step(
    spec: str, in_shape: tuple[int, ...], out: tuple[int, ...], kinds: list[str]
) -> None:
    net = build(spec, in_shape)
    assert [c["name"] for c in net.config["layers"]] == kinds
    assert output_shape(net, in_shape) == out
    assert bp.from_config(net.config).config == net.config
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, *in_shape)), rng.integers(0, out[0], 4)
    opt = bp.adam(1e-2)
    params = net.init(0, dtype="float64")
    state = opt.init(params)
    step = bp.train_step(net, "softmax_cross_entropy", opt)
    before = bp.tree.leaves(params)
    before = [np.array(a, copy=True) for a in before]
    params, state, value = step(params, state, x, t)
    assert np.isfinite(float(value))
    moved = [not np.array_equal(a, b) for a, b in zip(before, bp.tree.leaves(params))]
    assert all(moved)  # every weight (recurrent ones included) got a gradient


def test_a_recurrent_string_in_a_model() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 12)), rng.integers(0, 3, 30)
    model = bp.Model(build("bidirectional(gru(4)),flatten,dense(3)", (12,)), optimizer="adam",
                     lr=1e-2, batch_size=10, dtype="float64")
    model.fit(X, y, epochs=2, verbose=0)
    assert model.predict_proba(X).shape == (30, 3) and model.epoch == 2


@pytest.mark.parametrize(
    ("spec", "in_shape", "message"),
    [
        ("bidirectional(relu)", (4,), r"bidirectional\(relu\): bidirectional wraps one rnn, "
         r"gru or lstm layer, e.g. bidirectional\(gru\(6\)\)"),
        ("bidirectional(gru(3), gru(2))", (4,), r"bidirectional wraps one rnn, gru or lstm"),
        ("bidirectional(gru(3), return_sequences=False)", (4,),
         r"bidirectional wraps one rnn, gru or lstm layer"),
        ("bidirectional", (4,), r"bidirectional wraps one rnn, gru or lstm layer"),
        ("bidirectional(gru(3, reverse=True))", (4,),
         r"bidirectional\(\) takes a forward layer \(reverse=False\)"),
        ("bidirectinal(gru(3))", (4,), r"unknown layer 'bidirectinal' \(did you mean "
         r"bidirectional\?\)"),
        ("gru(3)", (2, 3, 4), r"gru takes samples of shape \(time, features\) but gets "
         r"\(2, 3, 4\); put reshape\(time, features\) before it"),
        ("gru()", (4,), r"gru\(\): gru\(\) missing 1 required positional argument: 'hidden'"),
        ("lstm(3, bias=False)", (4,), r"lstm\(\) got an unexpected keyword argument 'bias'"),
        ("rnn(0)", (4,), r"rnn\(0\): rnn\(\): hidden must be a positive int"),
        ("gru(3, return_sequences=1)", (4,), r"return_sequences must be True or False, got 1"),
        ("gru(3, truncate=0)", (4,), r"truncate"),
        ("gru(3, initial_state='random')", (4,), r"initial_state must be 'zeros' or 'learned'"),
        ("gru(3), dense(2)", (4,), r"dense takes flat samples but gets \(4, 3\): put flatten"),
    ],
)
def test_bad_recurrent_strings_say_what_is_wrong(
    spec: str, in_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(bp.SettingError, match=message):
        build(spec, in_shape)


def test_docstring_examples_run() -> None:
    import doctest

    from bpcore.layers import arch

    failures, tried = doctest.testmod(arch)
    assert failures == 0 and tried >= 6
