"""Characters per second of the exported web page (charrnn export --format html) in headless
Chromium (Debian's chromium + chromedriver, driven by Selenium), and the page's size.

    python bench/bench_html.py [MODEL] [--chars 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charrnn.export.html_format import write  # noqa: E402
from charrnn.sampling import load, resolve_model_dir  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(600)
    driver.set_page_load_timeout(120)
    return driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="shakespeare-lstm")
    parser.add_argument("--chars", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "model.html"
        model = load(args.model)
        write(model, page, resolve_model_dir(args.model).resolve().name)
        print(f"{args.model}: {model.spec.describe()}; page {page.stat().st_size / 1e6:.1f} MB")
        driver = browser(Path(tmp) / "profile")
        try:
            started = time.perf_counter()
            driver.get(page.as_uri())
            driver.execute_async_script(
                "const done = arguments[0];(function wait() { window.charrnn ? done(true) : setTimeout(wait, 20); })();"
            )
            print(f"page loaded and weights decoded in {time.perf_counter() - started:.2f} s")
            print(
                driver.execute_script("return navigator.userAgent"),
                "engine:",
                driver.execute_script("return window.charrnn.engine"),
            )
            for repeat in range(args.repeats):
                result = driver.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    "window.charrnn.generate({prime: 'ROMEO:', length: arguments[0], seed: arguments[1]})"
                    ".then(r => done([r.chars, r.seconds]), e => done(String(e)));",
                    args.chars,
                    repeat,
                )
                chars, seconds = result
                print(f"run {repeat + 1}: {chars:,} characters in {seconds:.2f} s: {chars / seconds:,.0f} chars/s")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
