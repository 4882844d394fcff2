"""The sampler: kernels against a plain NumPy reference, the Python API, and `charrnn sample`."""

from __future__ import annotations

import inspect
import itertools
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import reference
from click.testing import CliRunner

from charrnn import sampling
from charrnn.cli import main
from charrnn.errors import InputError, ModelFormatError
from charrnn.kernels import stepgemm
from charrnn.kernels.sampler import draw_one, run_parts
from charrnn.model import checkpoint
from charrnn.model.checkpoint import load_model, save_model
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.sampling import BatchSampler, iter_sample, iter_samples, sample_text
from charrnn.sampling.batch import FIRST_CHUNK

REPO = Path(__file__).resolve().parent.parent
CHARS = tuple("\n !,.:ORaehilnostw")  # sorted by code point, as a Vocab requires


def make_params(hidden=10, chars=CHARS, seed=0, cell="rnn", layers=1):
    # input_scale 1.5 makes the next-character distributions far from uniform, so filters matter;
    # the biases start at zero in init_params, so give them values that would be missed.
    rng = np.random.default_rng(seed)
    params = init_params(ModelSpec(cell, layers, hidden, len(chars)), rng, input_scale=1.5)
    for name in params.names():
        if params[name].ndim == 1:
            params[name][...] += rng.normal(0.0, 0.5, size=params[name].shape)
    params.b_y[...] = rng.normal(0.0, 1.0, size=params.b_y.shape)
    return params


CELL_CASES = [("rnn", 1), ("rnn", 2), ("gru", 1), ("gru", 3), ("lstm", 1), ("lstm", 2)]


@pytest.fixture
def vocab():
    return Vocab(CHARS)


@pytest.fixture
def params():
    return make_params()


@pytest.fixture
def model_dir(tmp_path, params, vocab):
    directory = tmp_path / "model"
    save_model(directory, params, vocab, {"step": 0})
    return directory


# ----------------------------------------------------------------------------------------------
# A plain NumPy sampler in float64, written from the definitions, to check the kernels against.


def reference_filtered_order(probs, top_k, top_p):
    """Ids kept by top-k then top-p, in the order the inverse CDF walks them."""
    vocab_size = probs.size
    if (top_k <= 0 or top_k >= vocab_size) and top_p >= 1.0:
        return np.arange(vocab_size)
    order = np.argsort(-probs, kind="stable")
    if 0 < top_k < vocab_size:
        order = order[:top_k]
    if top_p < 1.0:
        mass = np.cumsum(probs[order])
        order = order[: int(np.argmax(mass >= top_p * mass[-1])) + 1]
    return order


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(p, spec, state, char_id):
    """The state (L, K, H) after reading one character, in float64, from the definitions in
    charrnn.model.spec: one-hot inputs, each layer reading the one below."""
    H = spec.hidden
    state = state.copy()
    x = reference.one_hot(np.array([char_id]), spec.vocab_size)[0]  # (vocab,)
    for layer in range(spec.layers):
        h = state[layer, 0]
        U, W, b = p[f"U.{layer}"], p[f"W.{layer}"], p[f"b.{layer}"]
        if spec.cell == "rnn":
            new_h = np.tanh(x @ U + h @ W + b)
        elif spec.cell == "lstm":
            a = x @ U + h @ W + b
            i, f, g, o = sigmoid(a[:H]), sigmoid(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), sigmoid(a[3 * H :])
            state[layer, 1] = f * state[layer, 1] + i * g
            new_h = o * np.tanh(state[layer, 1])
        else:
            a_x, a_h = x @ U + b, h @ W
            r = sigmoid(a_x[:H] + a_h[:H])
            z = sigmoid(a_x[H : 2 * H] + a_h[H : 2 * H])
            n = np.tanh(a_x[2 * H :] + r * (a_h[2 * H :] + p[f"b_hn.{layer}"]))
            new_h = (1 - z) * n + z * h
        state[layer, 0] = new_h
        x = new_h
    return state


def reference_sample(params, prime_ids, uniforms, temperature=1.0, top_k=0, top_p=1.0, greedy=False):
    spec = params.spec
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    state = np.zeros(spec.state_shape(1)[1:])  # (L, K, H)
    for char_id in prime_ids:
        state = reference_step(p, spec, state, char_id)
    out = []
    for u in uniforms:
        logits = state[-1, 0] @ p["V"] + p["b_y"]
        if greedy:
            char_id = int(np.argmax(logits))
        else:
            weights = np.exp((logits - logits.max()) / temperature)
            order = reference_filtered_order(weights / weights.sum(), top_k, top_p)
            mass = np.cumsum(weights[order])
            char_id = int(order[np.searchsorted(mass, u * mass[-1], side="right")])
        out.append(char_id)
        state = reference_step(p, spec, state, char_id)
    return out


# ----------------------------------------------------------------------------------------------
# Kernels


@pytest.mark.parametrize("cell, layers", CELL_CASES)
@pytest.mark.parametrize("hidden", [8, 10, 13])  # 10 and 13 leave rows over from the 4-row blocks
def test_read_matches_reference_forward(cell, layers, hidden):
    params = make_params(hidden, cell=cell, layers=layers)
    ids = np.random.default_rng(1).integers(0, len(CHARS), size=30)
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    expected = np.zeros(params.spec.state_shape(1)[1:])
    for char_id in ids:
        expected = reference_step(p, params.spec, expected, char_id)
    sampler = BatchSampler(params, Vocab(CHARS))
    states = sampler.new_states(3)
    sampler.read(states, 1, ids)
    np.testing.assert_allclose(states[1], expected, rtol=0, atol=2e-6)
    assert not states[0].any() and not states[2].any()  # only its own row moved


@pytest.mark.parametrize("cell, layers", CELL_CASES)
@pytest.mark.parametrize("n, hidden", [(5, 12), (9, 13), (11, 32)])
def test_a_row_draws_the_same_alone_or_in_a_batch(cell, layers, n, hidden):
    """A stream's characters and state do not depend on the other streams of its batch. At 32
    units the recurrent products take the packed register-blocked path where the CPU has
    AVX-512: 11 streams are a block of 8 and 3 taken one by one."""
    params = make_params(hidden, cell=cell, layers=layers)
    sampler = BatchSampler(params, Vocab(CHARS))
    assert sampler._packed == (hidden == 32 and stepgemm.AVX512)
    rng = np.random.default_rng(2)
    k = 40
    states = sampler.new_states(n)
    for row in range(n):
        sampler.read(states, row, rng.integers(0, len(CHARS), size=row + 1))
    uniforms = rng.random((n, k))
    options = (
        rng.uniform(0.5, 1.3, n),
        rng.integers(3, 9, n) * (rng.random(n) < 0.5),
        rng.uniform(0.8, 1.0, n),
        np.arange(n) == n - 1,
    )
    alone = states.copy()
    together = np.empty((n, k), dtype=np.int64)
    sampler.draw(states, uniforms, *options, together)
    for row in range(n):
        one_state = np.ascontiguousarray(alone[row : row + 1])
        one_ids = np.empty((1, k), dtype=np.int64)
        sampler.draw(
            one_state,
            np.ascontiguousarray(uniforms[row : row + 1]),
            *(np.ascontiguousarray(o[row : row + 1]) for o in options),
            one_ids,
        )
        np.testing.assert_array_equal(one_ids[0], together[row])
        np.testing.assert_array_equal(one_state[0], states[row])
    assert len({tuple(r) for r in together}) == n


@pytest.mark.parametrize("cell, hidden", [("rnn", 32), ("lstm", 8), ("rnn", 64), ("gru", 32)])
def test_an_output_layer_of_several_strips_samples_as_the_reference(cell, hidden):
    """49 characters: the output layer's columns make two strips of 32. Where the layers' G*H
    columns make exactly one strip (vanilla H=32, LSTM H=8) the sampler packed its operands on
    any CPU, and without AVX-512 OpenBLAS then read the packed output layer as a plain matrix."""
    chars = tuple(sorted(set("\n !,.:;?ABCDEFGHIJKLMNOPRSTWYabcdefghilmnorstuvwy")))
    assert len(chars) == 49
    params = make_params(hidden, chars=chars, cell=cell, seed=4)
    vocab = Vocab(chars)
    assert BatchSampler(params, vocab)._packed == (hidden * params.spec.gates % 32 == 0 and stepgemm.AVX512)
    text = sample_text(params, vocab, 120, prime="Rose", temperature=0.9, rng=np.random.default_rng(3))
    uniforms = np.random.default_rng(3).random(120)
    assert text == vocab.decode(reference_sample(params, vocab.encode("Rose"), uniforms, temperature=0.9))


@pytest.mark.parametrize("hidden", [9, 32])  # 32: the packed product (with AVX-512)
@pytest.mark.parametrize("cell, layers", CELL_CASES[1:])
def test_gated_and_deep_models_sample_as_the_reference(cell, layers, hidden):
    params = make_params(hidden, cell=cell, layers=layers, seed=4)
    vocab = Vocab(CHARS)
    text = sample_text(params, vocab, 120, prime="Rose", temperature=0.9, top_k=8, rng=np.random.default_rng(3))
    uniforms = np.random.default_rng(3).random(120)
    expected = reference_sample(params, vocab.encode("Rose"), uniforms, temperature=0.9, top_k=8)
    assert text == vocab.decode(expected)


def test_num_samples_are_those_drawn_one_after_another(params, vocab):
    rng = np.random.default_rng(6)
    one_by_one = [sample_text(params, vocab, 70, prime="Ro", top_p=0.9, rng=rng) for _ in range(4)]
    pieces = list(iter_samples(params, vocab, 70, num=4, prime="Ro", top_p=0.9, rng=np.random.default_rng(6)))
    together = ["".join(piece[i] for piece in pieces) for i in range(4)]
    assert together == one_by_one and len(set(together)) == 4


OPTIONS = [
    dict(),
    dict(temperature=0.6),
    dict(temperature=1.7, top_k=4),
    dict(top_p=0.7),
    dict(temperature=0.9, top_k=6, top_p=0.8),
    dict(greedy=True),
]


def options_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "plain"


@pytest.mark.parametrize("options", OPTIONS, ids=options_id)
def test_sample_text_matches_reference_sampler(params, vocab, options):
    prime = "ROlo, "
    text = sample_text(params, vocab, 150, prime=prime, rng=np.random.default_rng(5), **options)
    uniforms = np.random.default_rng(5).random(150)
    expected = reference_sample(params, vocab.encode(prime), uniforms, **options)
    assert text == vocab.decode(expected)


def draw_all(logits, uniforms, temperature=1.0, top_k=0, top_p=1.0, greedy=False):
    logits = np.asarray(logits, dtype=np.float32)
    weights = np.empty(logits.size)
    return np.array([draw_one(logits, u, 1.0 / temperature, top_k, top_p, greedy, weights) for u in uniforms])


GRID = (np.arange(1000) + 0.5) / 1000  # evenly spaced draws: counts are exact proportions
PROBS = np.array([0.1, 0.4, 0.2, 0.3])


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(), [0.1, 0.4, 0.2, 0.3]),
        (dict(temperature=0.5), np.array([0.01, 0.16, 0.04, 0.09]) / 0.30),
        (dict(top_k=2), [0, 0.4 / 0.7, 0, 0.3 / 0.7]),
        (dict(top_k=4), [0.1, 0.4, 0.2, 0.3]),
        (dict(top_k=9), [0.1, 0.4, 0.2, 0.3]),
        (dict(top_p=0.5), [0, 0.4 / 0.7, 0, 0.3 / 0.7]),
        (dict(top_p=0.35), [0, 1, 0, 0]),
        (dict(top_p=0.85), [0, 0.4 / 0.9, 0.2 / 0.9, 0.3 / 0.9]),
        (dict(top_k=3, top_p=0.5), [0, 0.4 / 0.7, 0, 0.3 / 0.7]),
        (dict(greedy=True), [0, 1, 0, 0]),
    ],
)
def test_draw_follows_the_filtered_distribution(options, expected):
    ids = draw_all(np.log(PROBS) + 3.0, GRID, **options)
    counts = np.bincount(ids, minlength=4) / GRID.size
    np.testing.assert_allclose(counts, expected, atol=1.5e-3)


@pytest.mark.parametrize(
    "options, order",
    [
        (dict(), [0, 1, 2, 3]),  # unfiltered: the walk goes in id order
        (dict(top_p=0.9999), [1, 3, 2, 0]),  # filtered: most likely first
    ],
)
def test_draw_is_the_inverse_cdf_at_the_uniform(options, order):
    mass = np.cumsum(PROBS[order])[:-1]  # where one character gives way to the next
    below = draw_all(np.log(PROBS), mass - 1e-5, **options)
    above = draw_all(np.log(PROBS), mass + 1e-5, **options)
    assert list(below) == order[:-1] and list(above) == order[1:]
    assert list(draw_all(np.log(PROBS), [0.0, 1 - 1e-12], **options)) == [order[0], order[-1]]


def test_draw_with_tiny_temperature_and_ties():
    # At a very low temperature everything but the peak underflows to zero weight.
    assert set(draw_all([0.0, 5.0, 4.999, -3.0], GRID, temperature=1e-4)) == {1}
    # Greedy takes the first of equal logits.
    assert set(draw_all([1.0, 2.0, 2.0, 0.0], GRID, greedy=True)) == {1}
    # A stable sort: top-k 1 keeps the first of equal logits.
    assert set(draw_all([1.0, 2.0, 2.0, 0.0], GRID, top_k=1)) == {1}


def test_draw_kernel_agrees_with_its_python_version():
    rng = np.random.default_rng(3)
    weights = np.empty(12)
    for _ in range(300):
        logits = (rng.normal(size=12) * 3).astype(np.float32)
        args = (
            logits,
            rng.random(),
            1.0 / rng.uniform(0.3, 2.0),
            int(rng.integers(0, 14)),
            float(rng.uniform(0.05, 1.0)),
            bool(rng.random() < 0.1),
            weights,
        )
        assert draw_one(*args) == draw_one.py_func(*args)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("lstm", 2), ("gru", 2)])
def test_python_version_of_the_kernels_gives_the_same_text(cell, layers, threads, vocab):
    """The kernel's outer loop run as plain Python (what NUMBA_DISABLE_JIT=1 does for all of
    them, tested below) gives the same characters, one part or two run one after another."""
    params = make_params(cell=cell, layers=layers)
    sampler = BatchSampler(params, vocab, threads=threads)
    assert sampler.parts == threads
    s_jit = sampler.new_states(2)
    s_py = s_jit.copy()
    prime = vocab.encode("Rose, Olio").astype(np.int64).reshape(1, -1)
    no_draws = (
        np.zeros((1, 0)),
        np.ones(1),
        np.zeros(1, dtype=np.int64),
        np.ones(1),
        np.zeros(1, dtype=bool),
        np.zeros((1, 0), dtype=np.int64),
    )
    for kernel, states in ((run_parts, s_jit), (run_parts.py_func, s_py)):
        kernel(0, sampler.parts, *sampler._arguments(sampler.parts, states[1:2], prime, *no_draws))
    np.testing.assert_allclose(s_jit, s_py, atol=1e-6)
    uniforms = np.random.default_rng(0).random((2, 80))
    no_ids = np.zeros((2, 0), dtype=np.int64)
    for inv_t, top_k, top_p, greedy in [(1.0, 0, 1.0, False), (1 / 0.7, 5, 0.9, False), (1.0, 0, 1.0, True)]:
        options = (np.full(2, inv_t), np.full(2, top_k), np.full(2, top_p), np.full(2, greedy))
        ids_jit = np.empty((2, 80), dtype=np.int64)
        ids_py = np.empty((2, 80), dtype=np.int64)
        s1, s2 = s_jit.copy(), s_py.copy()
        run_parts(0, sampler.parts, *sampler._arguments(sampler.parts, s1, no_ids, uniforms, *options, ids_jit))
        run_parts.py_func(0, sampler.parts, *sampler._arguments(sampler.parts, s2, no_ids, uniforms, *options, ids_py))
        assert (ids_jit == ids_py).all()
        np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_same_text_with_numba_jit_disabled(model_dir):
    code = (
        "import sys, numpy as np; from charrnn.sampling import sample; "
        "sys.stdout.write(repr(sample(sys.argv[1], 120, prime='Rose', temperature=0.8, "
        "top_k=6, top_p=0.9, rng=np.random.default_rng(11))))"
    )
    outputs = []
    for disable in ("0", "1"):
        env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_DISABLE_JIT=disable)
        result = subprocess.run(
            [sys.executable, "-c", code, str(model_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert len(eval(outputs[0])) == 120


# ----------------------------------------------------------------------------------------------
# Python API


def test_sample_text_signature_is_what_the_training_loop_calls():
    sig = inspect.signature(sample_text)
    assert list(sig.parameters) == [
        "params",
        "vocab",
        "length",
        "prime",
        "temperature",
        "top_k",
        "top_p",
        "greedy",
        "rng",
    ]
    keyword_only = [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert keyword_only == ["prime", "temperature", "top_k", "top_p", "greedy", "rng"]


def test_same_seed_same_text_and_different_seeds_differ(params, vocab):
    a = sample_text(params, vocab, 200, rng=np.random.default_rng(1))
    b = sample_text(params, vocab, 200, rng=np.random.default_rng(1))
    c = sample_text(params, vocab, 200, rng=np.random.default_rng(2))
    assert a == b and a != c
    assert len(a) == 200 and set(a) <= set(CHARS)


def test_prime_changes_the_continuation_and_is_not_returned(params, vocab):
    plain = sample_text(params, vocab, 100, rng=np.random.default_rng(0))
    primed = sample_text(params, vocab, 100, prime="Rose:", rng=np.random.default_rng(0))
    assert len(primed) == 100 and primed != plain


def test_without_a_prime_the_hidden_state_starts_at_zero(params, vocab):
    # h = 0 makes every logit b_y; with b_y = 0 they tie, and greedy takes the first.
    params.b_y[...] = 0.0
    assert sample_text(params, vocab, 1, greedy=True, rng=np.random.default_rng(0)) == CHARS[0]
    primed = sample_text(params, vocab, 1, prime="R", greedy=True, rng=np.random.default_rng(0))
    assert primed != CHARS[0]


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1000])
def test_chunking_does_not_change_the_text(params, vocab, chunk_size):
    whole = sample_text(params, vocab, 700, prime="Rose", top_p=0.9, rng=np.random.default_rng(4))
    pieces = list(
        iter_sample(params, vocab, 700, prime="Rose", top_p=0.9, rng=np.random.default_rng(4), chunk_size=chunk_size)
    )
    assert "".join(pieces) == whole
    assert len(pieces) > 1 or chunk_size >= 700
    assert len(pieces[0]) == min(chunk_size, FIRST_CHUNK)


def test_iterating_characters(params, vocab):
    chars = list(itertools.chain.from_iterable(iter_sample(params, vocab, 40, rng=np.random.default_rng(0))))
    assert len(chars) == 40 and all(len(c) == 1 for c in chars)


def test_length_zero_gives_empty_text(params, vocab):
    assert sample_text(params, vocab, 0, prime="Rose", rng=np.random.default_rng(0)) == ""


def test_float64_params_give_the_same_text(params, vocab):
    a = sample_text(params, vocab, 100, rng=np.random.default_rng(0))
    b = sample_text(params.astype(np.float64), vocab, 100, rng=np.random.default_rng(0))
    assert a == b


def test_the_generator_advances_so_later_samples_differ(params, vocab):
    rng = np.random.default_rng(0)
    assert sample_text(params, vocab, 80, rng=rng) != sample_text(params, vocab, 80, rng=rng)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(length=-1), "length must be a whole number, 0 or more"),
        (dict(length=2.5), "length must be a whole number"),
        (dict(temperature=0), "temperature must be a number above 0"),
        (dict(temperature=-1.0), "temperature must be a number above 0"),
        (dict(temperature=float("nan")), "temperature must be a number above 0"),
        (dict(temperature=1e-320), "too small"),
        (dict(top_k=-2), "top_k must be a whole number, 0 (off)"),
        (dict(top_p=0.0), "top_p must be a number in (0, 1]"),
        (dict(top_p=1.01), "top_p must be a number in (0, 1]"),
        (dict(top_p=float("nan")), "top_p must be a number in (0, 1]"),
        (dict(greedy="yes"), "greedy must be true or false"),
        (dict(rng=np.random.RandomState(0)), "rng must be a numpy.random.Generator"),
        (dict(prime="Rose\u00e9Z"), "not in the model's vocabulary: '\u00e9' 'Z'"),
        (dict(prime=5), "prime must be a string"),
    ],
)
def test_bad_arguments_raise_one_line_input_errors(params, vocab, kwargs, message):
    arguments = dict(length=10, rng=np.random.default_rng(0))
    arguments.update(kwargs)
    length = arguments.pop("length")
    with pytest.raises(InputError) as error:
        iter_sample(params, vocab, length, **arguments)  # checked before the first piece
    assert message in str(error.value) and "\n" not in str(error.value)


def test_mismatched_or_broken_weights_are_refused(params, vocab):
    with pytest.raises(InputError, match="vocabulary has"):
        sample_text(make_params(chars=CHARS[:-1]), vocab, 5, rng=np.random.default_rng(0))
    broken = params.copy()
    broken["W.0"][0, 0] = np.nan
    with pytest.raises(InputError, match="not finite"):
        sample_text(broken, vocab, 5, rng=np.random.default_rng(0))


def test_model_conveniences(model_dir, params, vocab):
    expected = sample_text(
        params, vocab, 60, prime="Rose", rng=np.random.default_rng(9), temperature=sampling.DEFAULT_TEMPERATURE
    )  # the conveniences' default
    assert sampling.sample(model_dir, 60, prime="Rose", seed=9) == expected
    rng = np.random.default_rng(9)
    assert sampling.sample(str(model_dir), 60, prime="Rose", rng=rng) == expected
    model = load_model(model_dir)
    assert "".join(sampling.stream(model, 60, prime="Rose", seed=9)) == expected
    with pytest.raises(InputError, match="not both"):
        sampling.sample(model, 5, seed=1, rng=np.random.default_rng(1))


def test_missing_bundled_model_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "shakespeare").mkdir()
    monkeypatch.setattr(checkpoint, "bundled_model_dir", lambda name="shakespeare": tmp_path / "shakespeare")
    with pytest.raises(ModelFormatError, match="no bundled model") as error:
        sampling.load(None)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------------------
# `charrnn sample` through click


def run_cli(*args, input=None):
    return CliRunner().invoke(main, ["sample", *map(str, args)], input=input)


def test_cli_prints_prime_then_continuation(model_dir, params, vocab):
    result = run_cli(model_dir, "--prime", "Rose", "--length", "120", "--seed", "3")
    assert result.exit_code == 0, result.output
    expected = sample_text(params, vocab, 120, prime="Rose", temperature=0.8, rng=np.random.default_rng(3))
    assert result.stdout == "Rose" + expected + "\n"


def test_cli_options_reach_the_sampler(model_dir, params, vocab):
    result = run_cli(
        model_dir,
        "--prime",
        "Rose",
        "--no-prime-echo",
        "-n",
        "90",
        "-t",
        "1.3",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--seed",
        "4",
    )
    expected = sample_text(
        params, vocab, 90, prime="Rose", temperature=1.3, top_k=5, top_p=0.9, rng=np.random.default_rng(4)
    )
    assert result.exit_code == 0 and result.stdout == expected + "\n"


def test_cli_same_seed_same_text(model_dir):
    first = run_cli(model_dir, "--seed", "7", "-n", "100").stdout
    assert first == run_cli(model_dir, "--seed", "7", "-n", "100").stdout
    assert first != run_cli(model_dir, "--seed", "8", "-n", "100").stdout


def test_cli_greedy_needs_no_seed(model_dir):
    first = run_cli(model_dir, "--greedy", "-n", "50")
    second = run_cli(model_dir, "--greedy", "-n", "50")
    assert first.exit_code == 0 and first.stdout == second.stdout


def test_cli_num_gives_independent_samples(model_dir, params, vocab):
    result = run_cli(model_dir, "--prime", "Ro", "-n", "60", "--num", "3", "--seed", "2")
    assert result.exit_code == 0
    rng = np.random.default_rng(2)
    samples = ["Ro" + sample_text(params, vocab, 60, prime="Ro", temperature=0.8, rng=rng) for _ in range(3)]
    assert result.stdout == "\n\n".join(samples) + "\n"
    assert len(set(samples)) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0"], "--temperature must be a number above 0"),
        (["--temperature", "-0.5"], "--temperature must be a number above 0"),
        (["--length", "-1"], "--length must be a whole number, 0 or more"),
        (["--top-p", "0"], "--top-p must be a number in (0, 1]"),
        (["--top-p", "1.2"], "--top-p must be a number in (0, 1]"),
        (["--top-k", "-1"], "--top-k must be a whole number, 0 (off)"),
        (["--num", "0"], "--num must be a whole number, 1 or more"),
        (["--seed", "-3"], "--seed must be a whole number from 0 to"),
        (
            ["--prime", "Rose\u00e9Z!x"],
            "not in the model's vocabulary: '\u00e9' 'Z' 'x'; remove them from --prime, or pass --unknown skip",
        ),
        (["--interactive", "--prime", "Ro"], "--prime does not go with --interactive"),
    ],
)
def test_cli_bad_options_are_one_line_errors(model_dir, monkeypatch, args, message):
    if "--prime" not in args:  # refused before any model is read
        monkeypatch.setattr(checkpoint, "load_model", None)
    result = run_cli(model_dir, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_missing_and_corrupt_model_directories(tmp_path, model_dir):
    missing = run_cli(tmp_path / "nowhere")
    assert missing.exit_code == 1 and "no such model directory" in missing.stderr
    (model_dir / "meta.json").write_text("{not json")
    corrupt = run_cli(model_dir)
    assert corrupt.exit_code == 1 and "corrupt" in corrupt.stderr
    for result in (missing, corrupt):
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_cli_truncated_weights_are_a_one_line_error(model_dir):
    (model_dir / "model.npz").write_bytes(b"PK\x03\x04 truncated")
    result = run_cli(model_dir)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1


def test_cli_without_model_dir_and_no_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "bundled_model_dir", lambda name="shakespeare": tmp_path / "shakespeare")
    result = run_cli("--prime", "ROMEO:")
    assert result.exit_code == 1
    assert "no bundled model" in result.stderr and result.stderr.count("\n") == 1


def test_cli_without_model_dir_uses_the_bundled_model(model_dir, monkeypatch):
    monkeypatch.setattr(checkpoint, "bundled_model_dir", lambda name="shakespeare": model_dir)
    bundled = run_cli("--seed", "1", "-n", "30")
    assert bundled.exit_code == 0
    assert bundled.stdout == run_cli(model_dir, "--seed", "1", "-n", "30").stdout


def test_cli_unknown_skip_drops_characters_with_a_warning(model_dir, params, vocab):
    result = run_cli(model_dir, "--prime", "RoZse\u00e9", "--unknown", "skip", "-n", "40", "--seed", "1")
    assert result.exit_code == 0
    assert "warning: dropped characters not in the model's vocabulary: 'Z' '\u00e9'" in result.stderr
    expected = sample_text(params, vocab, 40, prime="Rose", temperature=0.8, rng=np.random.default_rng(1))
    assert result.stdout == "Rose" + expected + "\n"


def test_cli_interactive_loop(model_dir, params, vocab):
    result = run_cli(model_dir, "--interactive", "-n", "30", "--seed", "5", input="Rose\nRoZ\nOil\n\nnot read\n")
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(5)
    first = sample_text(params, vocab, 30, prime="Rose", temperature=0.8, rng=rng)
    second = sample_text(params, vocab, 30, prime="Oil", temperature=0.8, rng=rng)
    assert result.stdout == f"Rose{first}\nOil{second}\n"
    assert "Error: the prime has characters not in the model's vocabulary: 'Z'" in result.stderr
    assert "not read" not in result.output


def test_cli_interactive_ends_at_end_of_input(model_dir):
    result = run_cli(model_dir, "-i", "-n", "10", input="Rose\n")
    assert result.exit_code == 0 and result.stdout.startswith("Rose") and len(result.stdout) == 15


# ----------------------------------------------------------------------------------------------
# `charrnn sample` as a real process: streaming, the prompt loop, a closed pipe


def start_cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTHONUNBUFFERED", None)  # stdout block-buffered, as for any pipe: flushing is ours
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", "sample", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def read_within(proc, n, timeout=30.0):
    """`n` bytes of the process's stdout; fails the test if they have not come within `timeout`."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {data!r} arrived within {timeout} s"
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, n - len(data))
            assert chunk, f"stdout ended after {data!r}"
            data += chunk
    return data


def test_output_streams_while_generating(tmp_path, vocab):
    """Pieces reach the pipe as they are made, not in one block at the end.

    8,001 bytes fit in a pipe's block buffer, and H=512 makes them take a sizeable fraction of a
    second; unflushed output would arrive all at once at exit."""
    model_dir = tmp_path / "model512"
    save_model(model_dir, make_params(hidden=512), vocab, {"step": 0})
    proc = start_cli(model_dir, "--prime", "Rose", "--no-prime-echo", "--length", "8000")
    try:
        first = read_within(proc, 1)
        if select.select([proc.stdout.fileno()], [], [], 0)[0]:
            first += os.read(proc.stdout.fileno(), 1 << 16)  # whatever is there already
        assert len(first) < 4000
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and len(first + rest) == 8000 + 1


def test_closed_pipe_ends_quietly(model_dir):
    proc = start_cli(model_dir, "--length", "10000000")
    read_within(proc, 100)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and err == b""


def test_interactive_process_answers_each_prime(model_dir):
    proc = start_cli(model_dir, "--interactive", "--length", "20", "--seed", "2", stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"Rose\n")
        proc.stdin.flush()
        answer = read_within(proc, 4 + 20 + 1)  # arrives before the next prime is sent
        assert answer.startswith(b"Rose") and answer.endswith(b"\n")
        assert proc.poll() is None
        proc.stdin.write(b"\n")  # an empty line quits
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out == b"" and b"prime> " in err


def test_interactive_ctrl_c_stops_the_continuation_not_the_session(model_dir):
    proc = start_cli(model_dir, "-i", "--length", "100000000", stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"Rose\n")
        proc.stdin.flush()
        assert read_within(proc, 100).startswith(b"Rose")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(b"\n", timeout=60)  # back at the prompt: an empty line quits
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and b"Traceback" not in err and b"Aborted" not in err
    assert err.count(b"prime> ") == 2 and out.endswith(b"\n")
