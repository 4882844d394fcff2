"""Where the exported page's time per character goes, in headless Chromium: step(), output() and
draw() timed separately over many characters, and the matrix-vector products alone; optionally
A/B against another page.js (e.g. an older one from git show) alternating in the same session.

    python bench/profile_html.py [MODEL] [--chars 3000] [--rounds 3] [--other OLD_PAGE.js]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_html import browser  # noqa: E402

from charrnn.export import html_format  # noqa: E402
from charrnn.sampling import load, resolve_model_dir  # noqa: E402

HOOK = "window.charrnn = { logProbs: logProbs,"
EXPOSE = HOOK + " _parts: { step: step, output: output, draw: draw, mv: mv, off: off, H: H, GH: GH, L: L,"
EXPOSE += " h: h, ax: ax, logitsP: logitsP, vAt: vAt, NVP: NVP },"

PROFILE = """
const n = arguments[0], p = window.charrnn._parts, now = () => performance.now();
const T = { loop: 0, gates_alone: 0, step: 0, products_step: 0, output: 0, products_output: 0, draw: 0 };
const z = Float32Array.from(p.output());
let u = 0.123, t0 = 0;
const B = 100;  // blocks of B characters, the parts interleaved so that load hits them alike
let id = 0;
for (let done = 0; done < n; done += B) {
  t0 = now();
  for (let k = 0; k < B; k++) { id = p.draw(p.output(), 1, 0, 1, u); u = (u + 0.618034) % 1; p.step(id); }
  T.loop += now() - t0;
  t0 = now();
  for (let k = 0; k < B; k++) p.step(k % 60);
  T.step += now() - t0;
  t0 = now();
  for (let k = 0; k < B; k++) {
    for (let l = 0; l < p.L; l++) {
      if (l > 0) p.mv(p.h[l - 1], p.H, p.off.U[l], p.GH, p.ax);
      p.mv(p.h[l], p.H, p.off.W[l], p.GH, p.ax);
    }
  }
  T.products_step += now() - t0;
  t0 = now();
  for (let k = 0; k < B; k++) p.output();
  T.output += now() - t0;
  t0 = now();
  for (let k = 0; k < B; k++) p.mv(p.h[p.L - 1], p.H, p.vAt, p.NVP, p.logitsP);
  T.products_output += now() - t0;
  t0 = now();
  for (let k = 0; k < B; k++) { p.draw(z, 1, 0, 1, u); u = (u + 0.618034) % 1; }
  T.draw += now() - t0;
  // the LSTM's gate arithmetic of one character (L layers of H units), as page.js's step does it
  t0 = now();
  let sink = 0;
  for (let k = 0; k < B; k++) {
    for (let l = 0; l < p.L; l++) {
      const a = p.ax, H = p.H;
      for (let j = 0; j < H; j++) {
        const i = 1 / (1 + Math.exp(-a[j])), f = 1 / (1 + Math.exp(-a[H + j]));
        const g = Math.tanh(a[2 * H + j]), o = 1 / (1 + Math.exp(-a[3 * H + j]));
        sink += o * Math.tanh(f * 0.5 + i * g + k * 1e-9);
      }
    }
  }
  T.gates_alone += now() - t0;
  if (sink === 12345.678) T.sink = sink;
}
for (const key in T) T[key] = Math.round(1000 * T[key] / n);
return T;
"""


def page(model, name: str, script: str | None) -> str:
    text = html_format.render(model, name)
    if script is not None:
        current = (Path(html_format.__file__).parent / "page.js").read_text(encoding="utf-8")
        text = text.replace(current, script)
    assert HOOK in text
    return text.replace(HOOK, EXPOSE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="shakespeare-lstm")
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gen", type=int, default=10000, help="characters generated per page per round")
    parser.add_argument("--other", type=Path, help="another page.js to alternate with")
    args = parser.parse_args()
    model = load(args.model)
    name = resolve_model_dir(args.model).resolve().name
    with tempfile.TemporaryDirectory() as tmp:
        pages = {"current": Path(tmp) / "current.html"}
        pages["current"].write_text(page(model, name, None), encoding="utf-8")
        if args.other:
            pages["other"] = Path(tmp) / "other.html"
            pages["other"].write_text(page(model, name, args.other.read_text(encoding="utf-8")), encoding="utf-8")
        driver = browser(Path(tmp) / "profile")
        try:
            for rnd in range(args.rounds):
                print(f"round {rnd + 1}, load average {os.getloadavg()[0]:.2f}")
                for label, path in pages.items():
                    driver.get("about:blank")
                    driver.get(path.as_uri())
                    while not driver.execute_script("return !!window.charrnn"):
                        time.sleep(0.02)
                    parts = driver.execute_script(PROFILE, args.chars)
                    result = driver.execute_async_script(
                        "const done = arguments[arguments.length - 1];"
                        "window.charrnn.generate({prime: 'ROMEO:', length: arguments[0], seed: 1})"
                        ".then(r => done([r.chars, r.seconds, r.text]), e => done(String(e)));",
                        args.gen,
                    )
                    chars, seconds, text = result
                    crc = zlib.crc32(text.encode())
                    split = ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
                    print(
                        f"  {label:8s} {driver.execute_script('return window.charrnn.engine')}: "
                        f"us/char: {split}; generate {chars / seconds:,.0f} chars/s; text crc {crc:08x}"
                    )
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
