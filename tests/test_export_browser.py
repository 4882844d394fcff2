"""The exported web page (charrnn export --format html) in headless Chromium (Selenium, Debian's
chromium + chromedriver, as tests/test_serve_browser.py): logProbs against the model's own forward
pass on each engine (WebAssembly relaxed SIMD, plain SIMD, JavaScript), seeded generation through
the API and the page's controls, and no request beyond the page itself."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import numpy as np
import pytest
from browser_support import headless_chromium
from logprobs_reference import logprobs, random_model

from charrnn.export.html_format import write
from charrnn.model.checkpoint import Model

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHARS = "abcdé\n ;—ü"
# (cell, layers, hidden): 8 units take the 8-row SIMD product, 12 the 4-row one
SHAPES = [("rnn", 1, 8), ("rnn", 2, 8), ("gru", 1, 8), ("gru", 2, 8), ("lstm", 1, 8), ("lstm", 2, 8), ("lstm", 2, 12)]
ENGINES = {"": "wasm-relaxed-simd", "#simd": "wasm-simd", "#js": "js"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requests.append(self.path)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    models = {}
    for cell, layers, hidden in SHAPES:
        params, vocab = random_model(cell, layers, hidden, CHARS, seed=layers + hidden)
        model = Model(vocab, params, {"best_val_bpc": 2.5})
        name = f"{cell}-{layers}-{hidden}"
        write(model, root / f"{name}.html", name)
        models[name] = model
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", models, server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def open_page(browser, base, name, engine=""):
    browser.get("about:blank")
    browser.get(f"{base}/{name}.html{engine}")
    deadline = time.monotonic() + 30
    while not browser.execute_script("return !!window.charrnn"):
        assert time.monotonic() < deadline, "the page never set window.charrnn"
        time.sleep(0.05)


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_log_probs_match_charrnn(browser, site, shape, engine):
    base, models, _ = site
    name = "-".join(map(str, shape))
    model = models[name]
    open_page(browser, base, name, engine)
    assert browser.execute_script("return window.charrnn.engine") == ENGINES[engine]
    text = "aé—ü;b\ncd üabba;\n" * 3
    theirs = np.array(browser.execute_script("return window.charrnn.logProbs(arguments[0])", text))
    ids = [model.vocab.index(c) for c in text]
    ours = logprobs(model.params, ids)[np.arange(len(ids) - 1), ids[1:]] / np.log(2.0)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)


def generate(browser, **options):
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.charrnn.generate(arguments[0]).then(r => done(r), e => done({error: e.message}));",
        options,
    )


def test_seeded_generation_and_the_controls(browser, site):
    base, models, server = site
    server.requests.clear()
    open_page(browser, base, "lstm-2-8")
    first = generate(browser, prime="ab", length=300, seed=7, temperature=0.9, topK=5, topP=0.9)
    again = generate(browser, prime="ab", length=300, seed=7, temperature=0.9, topK=5, topP=0.9)
    other = generate(browser, prime="ab", length=300, seed=8, temperature=0.9, topK=5, topP=0.9)
    assert first["chars"] == 300 and len(first["text"]) == 300 and not first["stopped"]
    assert first["text"] == again["text"] and first["text"] != other["text"]
    assert set(first["text"]) <= set(CHARS)
    greedy_ish = generate(browser, prime="", length=50, seed=1, topK=1)
    assert len(set(greedy_ish["text"])) <= 50 and greedy_ish["chars"] == 50
    bad = generate(browser, prime="xyz", length=5, seed=1)
    assert "not in the model's vocabulary" in bad["error"] and "'x'" not in bad["error"]
    # the page's own controls
    for field, value in (
        ("prime", "ba"),
        ("length", "200"),
        ("seed", "3"),
        ("topk", "0"),
        ("topp", "1"),
        ("temperature", "1"),
    ):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "go").click()
    deadline = time.monotonic() + 30
    while "per second" not in browser.find_element(By.ID, "status").text:
        assert time.monotonic() < deadline, browser.find_element(By.ID, "status").text
        time.sleep(0.05)
    shown = browser.find_element(By.ID, "output").get_property("textContent")
    assert shown.startswith("ba") and len(shown) == 202
    assert shown[2:] == generate(browser, prime="ba", length=200, seed=3)["text"]
    # nothing but the page itself was asked for
    assert server.requests == ["/lstm-2-8.html"]
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_draw_order_is_the_comparator_sorts_on_ties(browser, site):
    """draw() sorts the probabilities by an insertion sort starting from the previous character's
    order: it must give the order of the comparator sort it replaced (most likely first, ties by
    index), whatever order it starts from, so that a seed draws the same characters."""
    base, models, _ = site
    open_page(browser, base, "lstm-2-8")
    n = len(models["lstm-2-8"].vocab.chars)
    rng = np.random.default_rng(3)
    cases = [
        [0.5] * n,
        list(np.linspace(0, 1, n)),
        list(np.linspace(1, 0, n)),
        [0.0] * (n // 2) + [1.0] * (n - n // 2),
    ]
    cases += [list(rng.choice([0.0, 0.1, 0.3, 1.0], size=n)) for _ in range(20)]
    cases += [list(rng.random(n)) for _ in range(5)]
    for p in cases:  # one after another: each sort starts from the order the one before left
        ours = browser.execute_script("return window.charrnn._order(arguments[0])", p)
        comparator = browser.execute_script(
            "const p = arguments[0];"
            "return Array.from({length: p.length}, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);",
            p,
        )
        assert ours == comparator == sorted(range(n), key=lambda i: (-p[i], i)), p
