"""The playground page in a real headless browser (Debian's chromium + chromedriver, Selenium),
against a real server on a loopback port."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_support import headless_chromium
from test_serve_support import live_server, make_tiny_models, wait_until

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

SCREENSHOTS = Path(__file__).resolve().parent.parent / ".pytest_cache" / "serve-screenshots"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    dirs = make_tiny_models(tmp_path_factory.mktemp("browser-models"))
    with live_server({"tiny-lstm": dirs["tiny-lstm"]}, max_length=10**6) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile"), (1200, 1000)) as driver:
        yield driver


def open_page(browser, live, size=(1200, 1000)):
    browser.set_window_size(*size)
    browser.get(live.base + "/")
    assert wait_until(lambda: len(Select(el(browser, "model")).options) >= 2, 20)
    return browser


def el(browser, id_):
    return browser.find_element(By.ID, id_)


def fill(browser, id_, value):
    field = el(browser, id_)
    field.clear()
    if value != "":
        field.send_keys(str(value))


def output(browser) -> str:
    return el(browser, "output").get_property("textContent")


def status(browser) -> str:
    return el(browser, "status").text


def test_the_page_loads_with_the_models_and_their_shapes(browser, live):
    open_page(browser, live)
    assert browser.title == "charrnn playground"
    names = [o.get_attribute("value") for o in Select(el(browser, "model")).options]
    assert names == ["shakespeare", "tiny-lstm"]
    info = el(browser, "model-info").text
    assert "vanilla RNN · 1 layer · 1024 units · 65 characters · 2.283 bits per character" in info
    Select(el(browser, "model")).select_by_value("tiny-lstm")
    assert "LSTM · 2 layers · 24 units" in el(browser, "model-info").text
    # Nothing came from anywhere but this server.
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert origins and set(origins) == {live.base}
    assert not el(browser, "error").is_displayed()


def test_generate_streams_the_text_into_the_page(browser, live):
    open_page(browser, live)
    fill(browser, "prime", "ROMEO:")
    fill(browser, "length", 3000)
    fill(browser, "seed", 7)
    # Record the text's length at every change of the page, however fast they come.
    browser.execute_script("""
        window.seenLengths = [];
        new MutationObserver(() => window.seenLengths.push(
            document.getElementById('output').textContent.length)
        ).observe(document.getElementById('output'),
                  {childList: true, characterData: true, subtree: true});""")
    el(browser, "generate").click()
    assert wait_until(lambda: "Done" in status(browser), 120), status(browser)
    assert "Done: 3000 characters with seed 7" in status(browser)
    final = output(browser)
    seen = browser.execute_script("return window.seenLengths")
    # Seen part-way: the text arrived in pieces while it was being written.
    assert len({n for n in seen if len("ROMEO:") < n < len(final)}) >= 2, seen
    assert final == live.generate(model="shakespeare", prime="ROMEO:", length=3000, seed=7)["texts"][0]
    assert el(browser, "generate").is_enabled() and not el(browser, "stop").is_enabled()
    assert el(browser, "copy").is_enabled()
    el(browser, "copy").click()
    assert wait_until(lambda: "Copied" in status(browser) or "selected" in status(browser), 10)


def test_stop_stops_the_generation(browser, live):
    open_page(browser, live)
    fill(browser, "length", 10**6)
    el(browser, "generate").click()
    assert wait_until(lambda: len(output(browser)) > 200, 30)
    el(browser, "stop").click()
    assert wait_until(lambda: "Stopped after" in status(browser), 10)
    assert wait_until(lambda: live.engine.streams == 0, 10)  # the server stopped too
    length = len(output(browser))
    time.sleep(0.5)
    assert len(output(browser)) == length < 10**6
    assert el(browser, "generate").is_enabled()


def test_an_api_error_shows_as_a_message(browser, live):
    open_page(browser, live)
    fill(browser, "temperature", 0)
    el(browser, "generate").click()
    assert wait_until(lambda: el(browser, "error").is_displayed(), 10)
    assert "temperature must be a number above 0" in el(browser, "error").text
    fill(browser, "temperature", 0.8)
    fill(browser, "prime", "ROMEO€ says ✓")
    el(browser, "generate").click()
    assert wait_until(lambda: "'€' '✓'" in el(browser, "error").text, 10)
    assert el(browser, "error").get_attribute("role") == "alert"
    fill(browser, "prime", "ROMEO:")
    fill(browser, "length", 100)
    el(browser, "generate").click()
    assert wait_until(lambda: "Done" in status(browser), 30)
    assert not el(browser, "error").is_displayed()  # a good request clears it


def test_usable_from_the_keyboard(browser, live):
    open_page(browser, live)
    fill(browser, "length", 10**6)
    prime = el(browser, "prime")
    prime.click()
    prime.send_keys(Keys.END, "Is it", Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter generates
    assert wait_until(lambda: len(output(browser)) > 100, 30)
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # Escape stops
    assert wait_until(lambda: "Stopped after" in status(browser), 10)
    assert output(browser).startswith("ROMEO:\nIs it")
    # Every control is reached with Tab, in order, and shows where the focus is.
    el(browser, "model").click()
    order = []
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        order.append(browser.switch_to.active_element.get_attribute("id"))
    for a, b in [("prime", "length"), ("length", "temperature"), ("seed", "generate")]:
        assert order.index(a) < order.index(b), order
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_reads_well_on_a_phone(browser, live):
    open_page(browser, live, size=(390, 844))
    fill(browser, "length", 300)
    fill(browser, "seed", 3)
    el(browser, "generate").click()
    assert wait_until(lambda: "Done" in status(browser), 30)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0  # nothing wider than the screen
    for id_ in ("generate", "stop", "copy", "prime", "seed"):
        rect = el(browser, id_).rect
        assert rect["x"] >= 0 and rect["x"] + rect["width"] <= 390, (id_, rect)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "phone.png"))
    open_page(browser, live, size=(1100, 1000))
    fill(browser, "length", 400)
    fill(browser, "seed", 1)
    el(browser, "generate").click()
    assert wait_until(lambda: "Done" in status(browser), 30)
    browser.save_screenshot(str(SCREENSHOTS / "desktop.png"))
