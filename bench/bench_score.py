"""Per-character scoring (`charrnn score`, POST /api/score, the Analyse view) against eval's pass.

    python bench/bench_score.py [--model shakespeare-lstm] [--text tinyshakespeare.txt] [--chars 20000]
                                [--repeats 3] [--repo DIR] [--browser]

Scores the first --chars characters of the text with charrnn.analysis: score_text with its top 5
guesses (what `charrnn score` prints), score_text with every unit of the last layer (what the
Analyse view asks for), and find_units over every unit of every layer (`--find-units`); and, for
scale, eval's exact pass (charrnn.training.evaluate.exact_bpc) on the same characters. Prints the
best chars/s of --repeats runs of each, after one untimed run that compiles or loads the kernels,
and the machine's load average. --repo times the charrnn of another checkout (e.g. the main
branch, for before and after in one session). --browser also times the Analyse view in headless
Chromium (Debian's chromium + chromedriver, Selenium) against a real server on a loopback port:
the request from the button to the status line, and the page's own render time after the
response arrived (the view's data-render-ms).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def best_rate(function, chars: int, repeats: int) -> tuple[float, float]:
    """(best chars/s, its seconds) over `repeats` runs of function()."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return chars / best, best


def library_rates(model, text: str, repeats: int) -> None:
    import numpy as np

    from charrnn.analysis import Scorer, encode_for_scoring, find_units, score_text
    from charrnn.training.evaluate import exact_bpc

    kept, ids, _ = encode_for_scoring(text, model.vocab, "skip")
    last = model.spec.layers - 1
    score_text(model, text[:300], unknown="skip", layer=last)  # compile or load, untimed
    scorer = Scorer(model)
    cases = [
        ("eval's exact pass (exact_bpc)", lambda: exact_bpc(model.params, model.vocab, ids.astype(np.int64))),
        ("score_text, top 5 (charrnn score)", lambda: score_text(model, kept, unknown="skip")),
        (
            f"score_text, top 5 + layer {last}'s {model.spec.hidden} units (Analyse)",
            lambda: score_text(model, kept, unknown="skip", layer=last, units="all"),
        ),
        ("find_units, every unit (--find-units line-position)", lambda: find_units(scorer, kept, ids, "line-position")),
    ]
    print("| pass | seconds | chars/s |\n|---|---|---|")
    for name, function in cases:
        rate, seconds = best_rate(function, len(kept), repeats)
        print(f"| {name} | {seconds:.2f} | {rate:,.0f} |")
    exact = exact_bpc(model.params, model.vocab, ids.astype(np.int64))
    print(f"bpc: eval {exact:.6f}, score_text {score_text(model, kept, unknown='skip', top=0).bpc:.6f}")


def browser_rates(model_name: str, text: str, repeats: int, repo: Path) -> None:
    sys.path.insert(0, str(repo / "tests"))
    from browser_support import headless_chromium  # noqa: E402
    from selenium.webdriver.support.ui import Select  # noqa: E402
    from test_serve_support import live_server, wait_until  # noqa: E402

    from charrnn.resources import bundled_model_dir

    models = {model_name: bundled_model_dir(model_name) if "/" not in model_name else Path(model_name)}
    with (
        live_server(models, bundled=False, max_text=len(text), max_body=8 * len(text) + 4096) as live,
        tempfile.TemporaryDirectory() as profile,
        headless_chromium(Path(profile), (1200, 1000)) as driver,
    ):
        driver.get(live.base + "/")
        chosen = Path(model_name).name
        assert wait_until(
            lambda: any(
                o.get_property("value") == chosen for o in Select(driver.find_element("id", "a-model")).options
            ),
            30,
        )
        Select(driver.find_element("id", "a-model")).select_by_value(chosen)
        driver.find_element("id", "tab-analyse").click()
        driver.execute_script("document.getElementById('a-text').value = arguments[0]", text)
        print("| Analyse run | button to status line, s | render after the response, ms |\n|---|---|---|")
        for run in range(repeats + 1):
            driver.execute_script("document.getElementById('a-status').textContent = ''")
            start = time.perf_counter()
            driver.find_element("id", "analyse").click()
            assert wait_until(lambda: "bits per character" in driver.find_element("id", "a-status").text, 600)
            seconds = time.perf_counter() - start
            render = driver.find_element("id", "a-output").get_attribute("data-render-ms")
            label = "first (compiles or loads)" if run == 0 else str(run)
            print(f"| {label} | {seconds:.2f} | {render} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare-lstm")
    parser.add_argument("--text", default=str(REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"))
    parser.add_argument("--chars", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose charrnn is timed")
    parser.add_argument("--browser", action="store_true", help="also time the Analyse view in headless Chromium")
    parser.add_argument("--browser-only", action="store_true", help="time only the Analyse view")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.repo).resolve()))
    import charrnn
    from charrnn.model.checkpoint import load

    model = load(args.model)
    text = Path(args.text).read_text(encoding="utf-8")[: args.chars]
    print(
        f"charrnn from {Path(charrnn.__file__).parent}; model {args.model} ({model.spec.describe()}); "
        f"{len(text):,} characters; load average {os.getloadavg()[0]:.2f} "
        f"(taken on a shared machine: other processes may be running)"
    )
    if not args.browser_only:
        library_rates(model, text, args.repeats)
    if args.browser or args.browser_only:
        browser_rates(args.model, text, args.repeats, Path(args.repo).resolve())


if __name__ == "__main__":
    main()
