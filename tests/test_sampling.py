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
from click.testing import CliRunner

import reference
from charrnn import sampling
from charrnn.checkpoint import load_model, save_model
from charrnn.cli import main
from charrnn.errors import InputError, ModelFormatError
from charrnn.params import init_params
from charrnn.sampling import iter_sample, sample_text
from charrnn.vocab import Vocab

REPO = Path(__file__).resolve().parent.parent
CHARS = tuple("\n !,.:ORaehilnostw")     # sorted by code point, as a Vocab requires


def make_params(hidden=10, chars=CHARS, seed=0):
    # input_scale 1.5 makes the next-character distributions far from uniform, so filters matter;
    # the biases start at zero in init_params, so give them values that would be missed.
    rng = np.random.default_rng(seed)
    params = init_params(len(chars), hidden, rng, input_scale=1.5)
    params.b_h[...] = rng.normal(0.0, 0.5, size=params.b_h.shape)
    params.b_y[...] = rng.normal(0.0, 1.0, size=params.b_y.shape)
    return params


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
        order = order[:int(np.argmax(mass >= top_p * mass[-1])) + 1]
    return order


def reference_sample(params, prime_ids, uniforms, temperature=1.0, top_k=0, top_p=1.0,
                     greedy=False):
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    vocab_size = p["U"].shape[0]
    h = np.zeros((1, params.hidden))
    for char_id in prime_ids:
        _, (_, hs, _) = reference.forward(p, np.array([[char_id]]), np.array([[0]]), h)
        h = hs[-1]
    out = []
    for u in uniforms:
        logits = (h @ p["V"] + p["b_y"])[0]
        if greedy:
            char_id = int(np.argmax(logits))
        else:
            weights = np.exp((logits - logits.max()) / temperature)
            order = reference_filtered_order(weights / weights.sum(), top_k, top_p)
            mass = np.cumsum(weights[order])
            char_id = int(order[np.searchsorted(mass, u * mass[-1], side="right")])
        out.append(char_id)
        x = reference.one_hot(np.array([char_id]), vocab_size)
        h = np.tanh(x @ p["U"] + h @ p["W"] + p["b_h"])
    return out


# ----------------------------------------------------------------------------------------------
# Kernels

@pytest.mark.parametrize("hidden", [8, 10, 13])   # 10 and 13 leave rows over from the 4-row blocks
def test_advance_kernel_matches_reference_forward(hidden):
    params = make_params(hidden)
    ids = np.random.default_rng(1).integers(0, len(CHARS), size=(1, 30))
    p = {name: a.astype(np.float64) for name, a in params.arrays().items()}
    _, (_, hs, _) = reference.forward(p, ids, ids, np.zeros((1, hidden)))
    h = np.zeros(hidden, dtype=np.float32)
    sampling.advance_kernel(params.U, params.W, params.b_h, h, ids[0].astype(np.int64))
    np.testing.assert_allclose(h, hs[-1][0], rtol=0, atol=2e-6)


def test_tanh_is_accurate_over_the_float32_range():
    tiny = np.geomspace(1e-30, 1e-2, 300)
    x = np.concatenate([np.linspace(-30, 30, 20001), tiny, -tiny])
    got = np.array([sampling._tanh(np.float32(v)) for v in x])
    exact = np.tanh(x.astype(np.float32).astype(np.float64))
    assert np.abs(got - exact).max() < 6e-8
    small = np.abs(exact) < 1e-2
    assert (np.abs(got[small] - exact[small]) <= 1e-6 * np.abs(exact[small])).all()


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
    return np.array([sampling._draw(logits, u, 1.0 / temperature, top_k, top_p, greedy, weights)
                     for u in uniforms])


GRID = (np.arange(1000) + 0.5) / 1000     # evenly spaced draws: counts are exact proportions
PROBS = np.array([0.1, 0.4, 0.2, 0.3])


@pytest.mark.parametrize("options, expected", [
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
])
def test_draw_follows_the_filtered_distribution(options, expected):
    ids = draw_all(np.log(PROBS) + 3.0, GRID, **options)
    counts = np.bincount(ids, minlength=4) / GRID.size
    np.testing.assert_allclose(counts, expected, atol=1.5e-3)


@pytest.mark.parametrize("options, order", [
    (dict(), [0, 1, 2, 3]),                      # unfiltered: the walk goes in id order
    (dict(top_p=0.9999), [1, 3, 2, 0]),          # filtered: most likely first
])
def test_draw_is_the_inverse_cdf_at_the_uniform(options, order):
    mass = np.cumsum(PROBS[order])[:-1]          # where one character gives way to the next
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
        args = (logits, rng.random(), 1.0 / rng.uniform(0.3, 2.0), int(rng.integers(0, 14)),
                float(rng.uniform(0.05, 1.0)), bool(rng.random() < 0.1), weights)
        assert sampling._draw(*args) == sampling._draw.py_func(*args)


def test_python_version_of_the_kernels_gives_the_same_text(params, vocab):
    """The kernels run as plain Python (what NUMBA_DISABLE_JIT=1 does) give the same characters."""
    h_jit = np.zeros(params.hidden, dtype=np.float32)
    h_py = h_jit.copy()
    prime = vocab.encode("Rose, Olio").astype(np.int64)
    sampling.advance_kernel(params.U, params.W, params.b_h, h_jit, prime)
    sampling.advance_kernel.py_func(params.U, params.W, params.b_h, h_py, prime)
    V_t = np.ascontiguousarray(params.V.T)
    uniforms = np.random.default_rng(0).random(80)
    for options in [(1.0, 0, 1.0, False), (1 / 0.7, 5, 0.9, False), (1.0, 0, 1.0, True)]:
        ids_jit = np.empty(80, dtype=np.int64)
        ids_py = np.empty(80, dtype=np.int64)
        h1, h2 = h_jit.copy(), h_py.copy()
        sampling.sample_kernel(params.U, params.W, V_t, params.b_h, params.b_y, h1, uniforms,
                               *options, ids_jit)
        sampling.sample_kernel.py_func(params.U, params.W, V_t, params.b_h, params.b_y, h2,
                                       uniforms, *options, ids_py)
        assert (ids_jit == ids_py).all()
        np.testing.assert_allclose(h1, h2, atol=1e-6)


def test_same_text_with_numba_jit_disabled(model_dir):
    code = ("import sys, numpy as np; from charrnn.sampling import sample; "
            "sys.stdout.write(repr(sample(sys.argv[1], 120, prime='Rose', temperature=0.8, "
            "top_k=6, top_p=0.9, rng=np.random.default_rng(11))))")
    outputs = []
    for disable in ("0", "1"):
        env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_DISABLE_JIT=disable)
        result = subprocess.run([sys.executable, "-c", code, str(model_dir)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert len(eval(outputs[0])) == 120


# ----------------------------------------------------------------------------------------------
# Python API

def test_sample_text_signature_is_what_the_training_loop_calls():
    sig = inspect.signature(sample_text)
    assert list(sig.parameters) == ["params", "vocab", "length", "prime", "temperature", "top_k",
                                    "top_p", "greedy", "rng"]
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
    pieces = list(iter_sample(params, vocab, 700, prime="Rose", top_p=0.9,
                              rng=np.random.default_rng(4), chunk_size=chunk_size))
    assert "".join(pieces) == whole
    assert len(pieces) > 1 or chunk_size >= 700
    assert len(pieces[0]) == min(chunk_size, sampling.FIRST_CHUNK)


def test_iterating_characters(params, vocab):
    chars = list(itertools.chain.from_iterable(
        iter_sample(params, vocab, 40, rng=np.random.default_rng(0))))
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


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=-1), "length must be 0 or more"),
    (dict(length=2.5), "length must be a whole number"),
    (dict(temperature=0), "temperature must be above 0"),
    (dict(temperature=-1.0), "temperature must be above 0"),
    (dict(temperature=float("nan")), "temperature must be above 0"),
    (dict(temperature=1e-320), "too small"),
    (dict(top_k=-2), "top-k must be 0"),
    (dict(top_p=0.0), "top-p must be in (0, 1]"),
    (dict(top_p=1.01), "top-p must be in (0, 1]"),
    (dict(top_p=float("nan")), "top-p must be in (0, 1]"),
    (dict(greedy="yes"), "greedy must be True or False"),
    (dict(rng=np.random.RandomState(0)), "rng must be a numpy.random.Generator"),
    (dict(prime="Rose\u00e9Z"), "not in the model's vocabulary: '\u00e9' 'Z'"),
    (dict(prime=5), "prime must be a string"),
])
def test_bad_arguments_raise_one_line_input_errors(params, vocab, kwargs, message):
    arguments = dict(length=10, rng=np.random.default_rng(0))
    arguments.update(kwargs)
    length = arguments.pop("length")
    with pytest.raises(InputError) as error:
        iter_sample(params, vocab, length, **arguments)      # checked before the first piece
    assert message in str(error.value) and "\n" not in str(error.value)


def test_mismatched_or_broken_weights_are_refused(params, vocab):
    with pytest.raises(InputError, match="vocabulary has"):
        sample_text(make_params(chars=CHARS[:-1]), vocab, 5, rng=np.random.default_rng(0))
    broken = params.copy()
    broken.W[0, 0] = np.nan
    with pytest.raises(InputError, match="not finite"):
        sample_text(broken, vocab, 5, rng=np.random.default_rng(0))


def test_model_conveniences(model_dir, params, vocab):
    expected = sample_text(params, vocab, 60, prime="Rose", rng=np.random.default_rng(9))
    assert sampling.sample(model_dir, 60, prime="Rose", seed=9) == expected
    rng = np.random.default_rng(9)
    assert sampling.sample(str(model_dir), 60, prime="Rose", rng=rng) == expected
    model = load_model(model_dir)
    assert "".join(sampling.stream(model, 60, prime="Rose", seed=9)) == expected
    with pytest.raises(InputError, match="not both"):
        sampling.sample(model, 5, seed=1, rng=np.random.default_rng(1))


def test_missing_bundled_model_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "shakespeare").mkdir()
    monkeypatch.setattr(sampling, "bundled_model_dir", lambda: tmp_path / "shakespeare")
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
    expected = sample_text(params, vocab, 120, prime="Rose", temperature=0.8,
                           rng=np.random.default_rng(3))
    assert result.stdout == "Rose" + expected + "\n"


def test_cli_options_reach_the_sampler(model_dir, params, vocab):
    result = run_cli(model_dir, "--prime", "Rose", "--no-prime-echo", "-n", "90", "-t", "1.3",
                     "--top-k", "5", "--top-p", "0.9", "--seed", "4")
    expected = sample_text(params, vocab, 90, prime="Rose", temperature=1.3, top_k=5, top_p=0.9,
                           rng=np.random.default_rng(4))
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
    samples = ["Ro" + sample_text(params, vocab, 60, prime="Ro", temperature=0.8, rng=rng)
               for _ in range(3)]
    assert result.stdout == "\n\n".join(samples) + "\n"
    assert len(set(samples)) == 3


@pytest.mark.parametrize("args, message", [
    (["--temperature", "0"], "--temperature must be above 0"),
    (["--temperature", "-0.5"], "--temperature must be above 0"),
    (["--length", "-1"], "--length must be 0 or more"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.2"], "--top-p must be in (0, 1]"),
    (["--top-k", "-1"], "--top-k must be 0"),
    (["--num", "0"], "--num must be 1 or more"),
    (["--seed", "-3"], "--seed must be 0 or more, got -3"),
    (["--prime", "Rose\u00e9Z!x"], "not in the model's vocabulary: '\u00e9' 'Z' 'x'; remove them "
                                  "from --prime, or pass --unknown skip"),
    (["--interactive", "--prime", "Ro"], "--prime does not go with --interactive"),
])
def test_cli_bad_options_are_one_line_errors(model_dir, monkeypatch, args, message):
    if "--prime" not in args:   # refused before any model is read
        monkeypatch.setattr(sampling, "load_model", None)
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
    monkeypatch.setattr(sampling, "bundled_model_dir", lambda: tmp_path / "shakespeare")
    result = run_cli("--prime", "ROMEO:")
    assert result.exit_code == 1
    assert "no bundled model" in result.stderr and result.stderr.count("\n") == 1


def test_cli_without_model_dir_uses_the_bundled_model(model_dir, monkeypatch):
    monkeypatch.setattr(sampling, "bundled_model_dir", lambda: model_dir)
    bundled = run_cli("--seed", "1", "-n", "30")
    assert bundled.exit_code == 0
    assert bundled.stdout == run_cli(model_dir, "--seed", "1", "-n", "30").stdout


def test_cli_unknown_skip_drops_characters_with_a_warning(model_dir, params, vocab):
    result = run_cli(model_dir, "--prime", "RoZse\u00e9", "--unknown", "skip", "-n", "40",
                     "--seed", "1")
    assert result.exit_code == 0
    assert ("warning: dropped characters not in the model's vocabulary: 'Z' '\u00e9'"
            in result.stderr)
    expected = sample_text(params, vocab, 40, prime="Rose", temperature=0.8,
                           rng=np.random.default_rng(1))
    assert result.stdout == "Rose" + expected + "\n"


def test_cli_interactive_loop(model_dir, params, vocab):
    result = run_cli(model_dir, "--interactive", "-n", "30", "--seed", "5",
                     input="Rose\nRoZ\nOil\n\nnot read\n")
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
    env.pop("PYTHONUNBUFFERED", None)    # stdout block-buffered, as for any pipe: flushing is ours
    return subprocess.Popen([sys.executable, "-m", "charrnn", "sample", *map(str, args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


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
            first += os.read(proc.stdout.fileno(), 1 << 16)      # whatever is there already
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
    proc = start_cli(model_dir, "--interactive", "--length", "20", "--seed", "2",
                     stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"Rose\n")
        proc.stdin.flush()
        answer = read_within(proc, 4 + 20 + 1)  # arrives before the next prime is sent
        assert answer.startswith(b"Rose") and answer.endswith(b"\n")
        assert proc.poll() is None
        proc.stdin.write(b"\n")                # an empty line quits
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
        out, err = proc.communicate(b"\n", timeout=60)   # back at the prompt: an empty line quits
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and b"Traceback" not in err and b"Aborted" not in err
    assert err.count(b"prime> ") == 2 and out.endswith(b"\n")
