"""Characters per second of the exported web page (charrnn export --format html) in headless
Chromium (Debian's chromium + chromedriver, driven by Selenium), and the page's size.

    python bench/bench_html.py [MODEL] [--chars 20000] [--repeats 3] [--other OLD_PAGE.js]

--other alternates, in the same browser session, the page with that page.js (e.g. one from
`git show REV:charrnn/export/page.js`) and the current one, run by run, with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charrnn.export import html_format  # noqa: E402
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
    parser.add_argument("--other", type=Path, help="another page.js to alternate with, run by run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "model.html"
        model = load(args.model)
        write(model, page, resolve_model_dir(args.model).resolve().name)
        print(f"{args.model}: {model.spec.describe()}; page {page.stat().st_size / 1e6:.1f} MB")
        pages = [("current", page)]
        if args.other:
            current = (Path(html_format.__file__).parent / "page.js").read_text(encoding="utf-8")
            text = page.read_text(encoding="utf-8")
            assert current in text
            other = Path(tmp) / "other.html"
            other.write_text(text.replace(current, args.other.read_text(encoding="utf-8")), encoding="utf-8")
            pages.insert(0, ("other", other))
        driver = browser(Path(tmp) / "profile")
        try:
            for repeat in range(args.repeats):
                for label, path in pages:
                    started = time.perf_counter()
                    driver.get("about:blank")
                    driver.get(path.as_uri())
                    driver.execute_async_script(
                        "const done = arguments[0];"
                        "(function wait() { window.charrnn ? done(true) : setTimeout(wait, 20); })();"
                    )
                    if repeat == 0:
                        print(f"{label}: page loaded and weights decoded in {time.perf_counter() - started:.2f} s")
                        print(
                            driver.execute_script("return navigator.userAgent"),
                            "engine:",
                            driver.execute_script("return window.charrnn.engine"),
                        )
                    result = driver.execute_async_script(
                        "const done = arguments[arguments.length - 1];"
                        "window.charrnn.generate({prime: 'ROMEO:', length: arguments[0], seed: arguments[1]})"
                        ".then(r => done([r.chars, r.seconds]), e => done(String(e)));",
                        args.chars,
                        repeat,
                    )
                    chars, seconds = result
                    print(
                        f"run {repeat + 1} {label}: {chars:,} characters in {seconds:.2f} s: "
                        f"{chars / seconds:,.0f} chars/s (load average {os.getloadavg()[0]:.2f})"
                    )
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
