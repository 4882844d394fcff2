"""Makes docs/analyse.png: the playground's Analyse view on the bundled shakespeare-lstm, in
headless chromium (Selenium), as the README shows it. Run from the checkout:
    python docs/make_analyse_png.py
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TEXT = """PROSPERO:
Thou liest, malignant thing! Hast thou forgot
The foul witch Sycorax, who with age and envy
Was grown into a hoop? hast thou forgot her?

ARIEL:
No, sir.

PROSPERO:
Thou hast. Where was she born? speak; tell me.

ARIEL:
Sir, in Argier.
"""


def main() -> None:
    from browser_support import FLAGS
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from test_serve_support import live_server, wait_until

    from charrnn.resources import bundled_model_dir

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1000,1020")
    options.add_argument("--force-device-scale-factor=1")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        with live_server({"shakespeare-lstm": bundled_model_dir("shakespeare-lstm")}, bundled=False) as live:
            driver.get(live.base + "/")
            assert wait_until(
                lambda: driver.find_element(By.ID, "a-model").get_property("value") == "shakespeare-lstm", 30
            )
            driver.find_element(By.ID, "tab-analyse").click()
            driver.execute_script("document.getElementById('a-text').value = arguments[0]", TEXT)
            driver.find_element(By.ID, "analyse").click()
            assert wait_until(lambda: "bits per character" in driver.find_element(By.ID, "a-status").text, 120)
            spans = driver.find_element(By.ID, "a-output").find_elements(By.TAG_NAME, "span")
            a = TEXT.index("ARIEL:\nNo")
            driver.execute_script(
                """
                const spans = document.getElementById('a-output').children;
                const range = document.createRange();
                range.setStart(spans[arguments[0]].firstChild, 0);
                range.setEnd(spans[arguments[1]].firstChild, 1);
                getSelection().removeAllRanges();
                getSelection().addRange(range);""",
                a,
                a + 5,
            )
            time.sleep(0.5)
            ActionChains(driver).move_to_element(spans[TEXT.index("Sycorax") + 2]).perform()
            time.sleep(0.3)
            driver.execute_script(
                "window.scrollTo(0, document.getElementById('a-status').getBoundingClientRect().top + scrollY - 10)"
            )
            time.sleep(0.3)
            png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = ROOT / "docs" / "analyse.png"
    image.save(out, optimize=True)
    print(f"{out}: {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
