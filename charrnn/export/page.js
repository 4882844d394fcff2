// charrnn's model, run in the browser: the equations of charrnn.model.spec in float32 arrays.
// Configuration and weights are in the page (#charrnn-config, #charrnn-weights); nothing is fetched.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("charrnn-config").textContent);
  const b64 = document.getElementById("charrnn-weights").textContent.replace(/\s+/g, "");
  const cell = cfg.cell, L = cfg.layers, H = cfg.hidden, vocab = cfg.vocab, NV = vocab.length;
  const G = { rnn: 1, gru: 3, lstm: 4 }[cell], GH = G * H;
  const index = new Map(vocab.map((c, i) => [c, i]));
  // Offsets of every array in P (charrnn.model.spec: U.l, W.l, b.l, [b_hn.l] per layer, then V, b_y).
  const off = { U: [], W: [], b: [], bhn: [] };
  let at = 0;
  for (let l = 0; l < L; l++) {
    off.U.push(at); at += (l === 0 ? NV : H) * GH;
    off.W.push(at); at += H * GH;
    off.b.push(at); at += GH;
    if (cell === "gru") { off.bhn.push(at); at += H; }
  }
  const offV = at; at += H * NV;
  const offBy = at; at += NV;

  // One memory for the weights (the flat buffer, from byte 0) and the state and scratch arrays
  // after them, so that the WebAssembly product (cfg.wasm, see charrnn/export/wasm.py) reads
  // them all.
  const bin = atob(b64);
  if (bin.length !== 4 * at) throw new Error("charrnn: the weights do not match the model's shape");
  let floats = at;
  const take = (n) => { const start = floats; floats += n + ((4 - n % 4) % 4); return start; };
  const hAt = [], cAt = [];
  for (let l = 0; l < L; l++) { hAt.push(take(H)); cAt.push(take(H)); }
  const NVP = NV + ((4 - NV % 4) % 4);             // the output's columns, padded for SIMD
  const axAt = take(GH), ahAt = take(GH), logitsAt = take(NVP), vAt = take(H * NVP);
  const inAt = take(NV * GH);                       // layer 0's input rows with its bias added
  const memory = new WebAssembly.Memory({ initial: Math.ceil(4 * floats / 65536) + 1 });
  const bytes = new Uint8Array(memory.buffer);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const F = new Float32Array(memory.buffer);
  const P = F;                                      // the weights: F[0 : at]
  const h = hAt.map((o) => F.subarray(o, o + H)), c = cAt.map((o) => F.subarray(o, o + H));
  const ax = F.subarray(axAt, axAt + GH), ah = F.subarray(ahAt, ahAt + GH);
  const logitsP = F.subarray(logitsAt, logitsAt + NVP), logits = logitsP.subarray(0, NV);
  for (let i = 0; i < H; i++) {                     // V again, each row padded to NVP columns
    for (let j = 0; j < NV; j++) F[vAt + i * NVP + j] = P[offV + i * NV + j];
  }
  // F[inAt + id*GH + j] = b.0[j] + U.0[id, j], rounded to float32 as the step did it per character
  for (let id = 0; id < NV; id++) {
    for (let j = 0; j < GH; j++) F[inAt + id * GH + j] = P[off.b[0] + j] + P[off.U[0] + id * GH + j];
  }
  let wasm = null, wasm8 = null;
  let engine = "js";
  // "#js" at the end of the address: the JavaScript loop; "#simd": SIMD without relaxed SIMD.
  const tries = location.hash === "#js" ? [] : location.hash === "#simd" ? ["wasm"]
    : ["wasm_relaxed", "wasm"];
  for (const name of tries) {
    try {
      const code = Uint8Array.from(atob(cfg[name]), (ch) => ch.charCodeAt(0));
      const exports = new WebAssembly.Instance(new WebAssembly.Module(code),
                                               { env: { mem: memory } }).exports;
      wasm = exports.mv;
      wasm8 = exports.mv8;                          // for cfg.wasm_cols (G*H) columns
      engine = name === "wasm" ? "wasm-simd" : "wasm-relaxed-simd";
      break;
    } catch (error) {
      wasm = wasm8 = null;                          // not supported here: the next one
    }
  }

  // out[0:cols] += x[0:rows] @ P[base : base + rows*cols] (row-major); x and out are views of F.
  function mv(x, rows, base, cols, out) {
    if (wasm8 !== null && cols === cfg.wasm_cols && rows % 8 === 0) {
      wasm8(x.byteOffset, rows, 4 * base, out.byteOffset);
      return;
    }
    if (wasm !== null && rows % 4 === 0 && cols % 4 === 0) {
      wasm(x.byteOffset, rows, 4 * base, cols, out.byteOffset);
      return;
    }
    let i = 0;
    for (; i + 4 <= rows; i += 4) {
      const x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
      const o0 = base + i * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
      for (let j = 0; j < cols; j++) {
        out[j] += x0 * P[o0 + j] + x1 * P[o1 + j] + x2 * P[o2 + j] + x3 * P[o3 + j];
      }
    }
    for (; i < rows; i++) {
      const xi = x[i], o = base + i * cols;
      for (let j = 0; j < cols; j++) out[j] += xi * P[o + j];
    }
  }
  const sig = (a) => 1 / (1 + Math.exp(-a));

  function reset() {
    for (let l = 0; l < L; l++) { h[l].fill(0); c[l].fill(0); }
  }

  // Read one character (its id): every layer's state moves on.
  function step(id) {
    for (let l = 0; l < L; l++) {
      if (l === 0) {
        ax.set(F.subarray(inAt + id * GH, inAt + (id + 1) * GH));
      } else {
        ax.set(F.subarray(off.b[l], off.b[l] + GH));
        mv(h[l - 1], H, off.U[l], GH, ax);
      }
      const hl = h[l], cl = c[l];
      if (cell === "gru") {
        ah.fill(0);
        mv(hl, H, off.W[l], GH, ah);
        const bhn = off.bhn[l];
        for (let j = 0; j < H; j++) {
          const r = sig(ax[j] + ah[j]);
          const z = sig(ax[H + j] + ah[H + j]);
          const n = Math.tanh(ax[2 * H + j] + r * (ah[2 * H + j] + P[bhn + j]));
          hl[j] = (1 - z) * n + z * hl[j];
        }
      } else {
        mv(hl, H, off.W[l], GH, ax);
        if (cell === "rnn") {
          for (let j = 0; j < H; j++) hl[j] = Math.tanh(ax[j]);
        } else {
          for (let j = 0; j < H; j++) {
            const i = sig(ax[j]), f = sig(ax[H + j]), g = Math.tanh(ax[2 * H + j]), o = sig(ax[3 * H + j]);
            cl[j] = f * cl[j] + i * g;
            hl[j] = o * Math.tanh(cl[j]);
          }
        }
      }
    }
  }

  // The logits of the next character, from the top layer's state.
  function output() {
    logits.set(F.subarray(offBy, offBy + NV));
    mv(h[L - 1], H, vAt, NVP, logitsP);
    return logits;
  }

  function ids(text, what) {
    const chars = Array.from(text), out = [], unknown = [];
    for (const ch of chars) {
      if (index.has(ch)) out.push(index.get(ch)); else if (!unknown.includes(ch)) unknown.push(ch);
    }
    if (unknown.length) {
      throw new Error(what + " has characters not in the model's vocabulary: " +
                      unknown.slice(0, 10).map((ch) => JSON.stringify(ch)).join(" "));
    }
    return out;
  }

  // log2 p(text[t+1] | text[0..t]) for t = 0 .. n-2, the state starting at zero.
  function logProbs(text) {
    const xs = ids(text, "the text"), out = [];
    reset();
    for (let t = 0; t + 1 < xs.length; t++) {
      step(xs[t]);
      const z = output();
      let m = -Infinity;
      for (let j = 0; j < NV; j++) if (z[j] > m) m = z[j];
      let s = 0;
      for (let j = 0; j < NV; j++) s += Math.exp(z[j] - m);
      out.push((z[xs[t + 1]] - m - Math.log(s)) / Math.LN2);
    }
    return out;
  }

  // A seeded generator of uniforms in [0, 1) (mulberry32 over the seed's 32 low bits).
  function rng(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  const probs = new Float64Array(NV);
  const order = Int32Array.from({ length: NV }, (_, i) => i);
  // order: most likely first, ties by index (the order the comparator sort
  // (a, b) => probs[b] - probs[a] || a - b gave). An insertion sort starting from the previous
  // character's order, which is mostly right already; the order is total, so the result is the
  // same whatever it starts from.
  function sortOrder() {
    for (let k = 1; k < NV; k++) {
      const a = order[k], pa = probs[a];
      let m = k - 1;
      while (m >= 0) {
        const b = order[m], pb = probs[b];
        if (pb > pa || (pb === pa && b < a)) break;
        order[m + 1] = b;
        m--;
      }
      order[m + 1] = a;
    }
  }
  // One character from logits: softmax at the temperature, cut to the top_k most likely, then to
  // the smallest most likely set whose mass reaches top_p of what is left; inverse CDF.
  function draw(z, temperature, topK, topP, u) {
    let m = -Infinity;
    for (let j = 0; j < NV; j++) if (z[j] > m) m = z[j];
    for (let j = 0; j < NV; j++) probs[j] = Math.exp((z[j] - m) / temperature);
    sortOrder();
    let keep = topK > 0 ? Math.min(topK, NV) : NV;
    let total = 0;
    for (let k = 0; k < keep; k++) total += probs[order[k]];
    if (topP < 1) {
      let mass = 0;
      for (let k = 0; k < keep; k++) {
        mass += probs[order[k]];
        if (mass >= topP * total) { keep = k + 1; total = mass; break; }
      }
    }
    let target = u * total;
    for (let k = 0; k < keep; k++) {
      target -= probs[order[k]];
      if (target < 0) return order[k];
    }
    return order[keep - 1];
  }

  let running = null;
  // Generate `length` characters after `prime`; onText(piece) gets them as they come (a piece
  // every few milliseconds, the page staying responsive). Resolves to the generated text.
  async function generate(options) {
    const o = Object.assign({ prime: "", length: 500, temperature: 1, topK: 0, topP: 1,
                              seed: null, onText: null }, options || {});
    if (!(o.temperature > 0)) throw new Error("temperature must be above 0");
    if (!(o.topP > 0 && o.topP <= 1)) throw new Error("top-p must be in (0, 1]");
    if (!(Number.isInteger(o.topK) && o.topK >= 0)) throw new Error("top-k must be 0 (off) or more");
    if (!(Number.isInteger(o.length) && o.length >= 0)) throw new Error("length must be 0 or more");
    const seed = o.seed === null || o.seed === undefined || o.seed === ""
      ? (crypto.getRandomValues(new Uint32Array(1))[0]) : Number(o.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new Error("seed must be a whole number of 0 or more");
    const primeIds = ids(o.prime, "the prime");
    const token = {};
    running = token;
    const random = rng(seed);
    reset();
    for (const id of primeIds) step(id);
    const pieces = [];
    let done = 0;
    const started = performance.now();
    while (done < o.length && running === token) {
      const until = performance.now() + 30;
      let piece = "";
      do {
        const id = draw(output(), o.temperature, o.topK, o.topP, random());
        piece += vocab[id];
        step(id);
        done++;
      } while (done < o.length && performance.now() < until);
      pieces.push(piece);
      if (o.onText) o.onText(piece);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    if (running === token) running = null;
    const seconds = (performance.now() - started) / 1000;
    return { text: pieces.join(""), seed: seed, chars: done, seconds: seconds,
             stopped: done < o.length };
  }

  window.charrnn = { logProbs: logProbs, generate: generate, stop: () => { running = null; },
                     vocab: vocab, info: cfg,
                     engine: engine,
                     // for tests: the order draw() sorts the probabilities p into
                     _order: (p) => { probs.set(p); sortOrder(); return Array.from(order); } };

  // The page's controls.
  const $ = (id) => document.getElementById(id);
  const out = $("output"), status = $("status");
  $("go").addEventListener("click", async () => {
    out.textContent = "";
    const prime = $("prime").value.replace(/\r\n/g, "\n");
    out.appendChild(document.createTextNode(prime));
    status.textContent = "writing...";
    try {
      const result = await generate({
        prime: prime, length: parseInt($("length").value, 10),
        temperature: parseFloat($("temperature").value), topK: parseInt($("topk").value || "0", 10),
        topP: parseFloat($("topp").value), seed: $("seed").value.trim(),
        onText: (piece) => out.appendChild(document.createTextNode(piece)),
      });
      status.textContent = (result.stopped ? "stopped: " : "") + result.chars.toLocaleString() +
        " characters in " + result.seconds.toFixed(2) + " s (" +
        Math.round(result.chars / Math.max(result.seconds, 1e-3)).toLocaleString() +
        " per second), seed " + result.seed;
    } catch (error) {
      status.textContent = error.message;
    }
  });
  $("stop").addEventListener("click", () => { running = null; });
  status.textContent = "ready";
})();
