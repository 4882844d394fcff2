"""The playground's Analyse view in a real headless browser (Debian's chromium + chromedriver,
Selenium), against a real server on a loopback port: the colours follow the API's bits and
activations, hovering shows the guesses, a selection lists the units that track it."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from test_serve_support import TINY_TEXT, live_server, wait_until

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402
from test_serve_browser import browser as browser_fixture  # noqa: E402  (the fixture, under its name below)
from test_serve_browser import el, fill  # noqa: E402

browser = browser_fixture

TEXT = TINY_TEXT * 4


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from charrnn.model.checkpoint import save_model
    from charrnn.model.params import init_params
    from charrnn.model.spec import ModelSpec
    from charrnn.model.vocab import Vocab

    # A random 2-layer LSTM whose output layer is scaled up, so its surprisal varies widely.
    vocab = Vocab(tuple(sorted(set(TINY_TEXT))))
    params = init_params(ModelSpec("lstm", 2, 24, len(vocab)), np.random.default_rng(3), input_scale=1.0)
    params["V"][...] *= 12.0
    directory = tmp_path_factory.mktemp("analyse-models") / "tiny-lstm"
    save_model(directory, params, vocab, {"step": 1})
    with live_server({"tiny-lstm": directory}, bundled=False, max_text=20000, max_body=200_000) as server:
        yield server


def api_score(live, text, **options):
    status, _, data = live.request("POST", "/api/score", {"model": "tiny-lstm", "text": text, **options})
    assert status == 200, data
    return data


def analyse(browser, live, text, size=(1200, 1000)):
    browser.set_window_size(*size)
    browser.get(live.base + "/")
    assert wait_until(
        lambda: (
            len(Select(el(browser, "a-model")).options) >= 1
            and el(browser, "a-model").get_property("value") == "tiny-lstm"
        ),
        20,
    )
    el(browser, "tab-analyse").click()
    assert el(browser, "a-text").is_displayed() and not el(browser, "output").is_displayed()
    browser.execute_script("document.getElementById('a-text').value = arguments[0]", text)
    el(browser, "analyse").click()
    assert wait_until(lambda: "bits per character" in el(browser, "a-status").text, 60), (
        el(browser, "a-status").text + el(browser, "a-error").text
    )


def classes(browser):
    return browser.execute_script("return Array.from(document.getElementById('a-output').children, s => s.className)")


def test_the_colours_follow_the_bits_and_hover_shows_the_guesses(browser, live):
    analyse(browser, live, TEXT)
    data = api_score(live, TEXT, top=5)
    assert el(browser, "a-output").get_property("textContent") == TEXT
    shown = classes(browser)
    assert len(shown) == len(TEXT)
    expected = [""] + [f"s{min(15, int(b // 0.5))}" for b in data["bits"][1:]]
    assert [c.replace(" nl", "").replace(" picked", "") for c in shown] == expected
    assert len(set(expected)) > 3  # a test that could fail
    assert f"{data['bpc']:.3f} bits per character over {len(TEXT) - 1:,}" in el(browser, "a-status").text
    legend = el(browser, "a-legend").text
    assert "surprisal, bits" in legend and "7.5+" in legend
    # Hover a character: its bits and the model's guesses for it.
    spans = el(browser, "a-output").find_elements(By.TAG_NAME, "span")
    ActionChains(browser).move_to_element(spans[9]).perform()
    assert wait_until(lambda: "Character 9" in el(browser, "a-details").text, 10)
    details = el(browser, "a-details").text
    assert f"{data['bits'][9]:.2f} bits" in details
    guesses = browser.execute_script(
        "return Array.from(document.querySelectorAll('#a-guesses tr'), r => r.cells[0].textContent)"
    )
    shown_chars = {"\n": "↵", " ": "␣", "\t": "→"}
    assert guesses == [shown_chars.get(g, g) for g, _ in data["top"][9]]
    # The first character is only read.
    ActionChains(browser).move_to_element(spans[0]).perform()
    assert wait_until(lambda: "only read" in el(browser, "a-details").text, 10)


def test_colouring_by_a_unit_shows_that_units_activation(browser, live):
    analyse(browser, live, TEXT)
    data = api_score(live, TEXT, layer=1, packed=True, top=0)
    acts = np.frombuffer(base64.b64decode(data["activations"]["h"]), dtype=np.int8)
    acts = acts.reshape(24, len(TEXT))
    Select(el(browser, "a-colour")).select_by_value("unit")
    for unit in (3, 17):
        fill(browser, "a-unit", unit)
        assert wait_until(lambda unit=unit: el(browser, "a-output").get_attribute("data-colour") == f"unit {unit}", 10)
        expected = [f"u{min(20, max(0, round((v / 127 + 1) * 10)))}" for v in acts[unit]]
        shown = [c.split()[0] for c in classes(browser)]
        assert shown == expected
        assert len(set(expected)) > 2
        assert f"unit {unit} of layer 1" in el(browser, "a-legend").text
    Select(el(browser, "a-colour")).select_by_value("surprisal")
    assert classes(browser)[0] == ""


def test_a_selection_lists_the_units_that_track_it(browser, live):
    analyse(browser, live, TEXT)
    data = api_score(live, TEXT, layer=1, packed=True, top=0)
    acts = np.frombuffer(base64.b64decode(data["activations"]["h"]), dtype=np.int8)
    acts = acts.reshape(24, len(TEXT)).astype(np.float64) / 127
    a, b = TEXT.index("JULIET"), TEXT.index("JULIET") + 9
    browser.execute_script(
        """
        const spans = document.getElementById('a-output').children;
        const range = document.createRange();
        range.setStart(spans[arguments[0]].firstChild, 0);
        range.setEnd(spans[arguments[1]].firstChild, 1);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);""",
        a,
        b,
    )
    assert wait_until(lambda: el(browser, "a-units").get_attribute("data-range") == f"{a}-{b}", 10)
    listed = browser.execute_script(
        "return Array.from(document.querySelectorAll('#a-units button'), b => Number(b.dataset.unit))"
    )
    inside = np.zeros(len(TEXT))
    inside[a : b + 1] = 1
    r = np.array([np.corrcoef(acts[u], inside)[0, 1] for u in range(24)])
    assert listed == list(np.argsort(-np.abs(r), kind="stable")[:10])
    first = el(browser, "a-units").find_element(By.TAG_NAME, "button")
    first.click()
    assert el(browser, "a-output").get_attribute("data-colour") == f"unit {listed[0]}"


def test_a_20000_character_text_on_a_phone_sized_screen(browser, live):
    text = (TINY_TEXT * 300)[:20000]
    analyse(browser, live, text, size=(390, 844))
    assert len(classes(browser)) == 20000
    render_ms = float(el(browser, "a-output").get_attribute("data-render-ms"))
    print(f"rendered 20,000 characters in {render_ms:.0f} ms")  # measured, not asserted
    width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1]  # nothing wider than the phone
    panels = [el(browser, "a-details").rect, el(browser, "a-units").rect]
    assert panels[1]["y"] > panels[0]["y"]  # stacked, not side by side
    SCREENSHOT = __import__("pathlib").Path(__file__).resolve().parent.parent / ".pytest_cache"
    SCREENSHOT.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT / "analyse-phone.png"))


def test_an_api_error_shows_in_the_view(browser, live):
    analyse(browser, live, TEXT)
    browser.execute_script("document.getElementById('a-text').value = 'x'")
    el(browser, "analyse").click()
    assert wait_until(lambda: el(browser, "a-error").is_displayed(), 10)
    assert "fewer than 2 characters" in el(browser, "a-error").text
