// The playground's Analyse view: posts /api/score with every unit of a layer packed as int8,
// colours each character by its surprisal (or by a unit's activation), shows the model's guesses
// for the character pointed at, and lists the units that best track the text selected.
// No libraries, nothing from other servers. The colours are classes of app.css: s0..s15 for
// surprisal in steps of 0.5 bits (s15: 7.5 bits and more), u0..u20 for activations -1..1.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const tabs = { generate: $("tab-generate"), analyse: $("tab-analyse") };
  const views = { generate: $("generate-view"), analyse: $("analyse-view") };
  const form = $("a-controls");
  const textBox = $("a-text");
  const modelSelect = $("a-model");
  const layerSelect = $("a-layer");
  const colourSelect = $("a-colour");
  const unitInput = $("a-unit");
  const button = $("analyse");
  const errorBox = $("a-error");
  const statusLine = $("a-status");
  const legend = $("a-legend");
  const output = $("a-output");
  const details = $("a-details");
  const unitList = $("a-units");

  const BITS_STEP = 0.5, BITS_BUCKETS = 16, UNIT_BUCKETS = 21;
  let models = [];
  let result = null;   // {chars, bits, top, units, n, acts (Int8Array, unit-major), scale, mean, std}
  let spans = [];
  let picked = null;

  // ------------------------------------------------------------------------------ tabs
  function show(view) {
    for (const name of Object.keys(views)) {
      views[name].hidden = name !== view;
      tabs[name].setAttribute("aria-selected", name === view ? "true" : "false");
    }
    document.body.dataset.view = view;
  }
  tabs.generate.addEventListener("click", () => show("generate"));
  tabs.analyse.addEventListener("click", () => show("analyse"));

  // ------------------------------------------------------------------------------ helpers
  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function bitsBucket(bits) {
    return Math.min(BITS_BUCKETS - 1, Math.max(0, Math.floor(bits / BITS_STEP)));
  }

  function unitBucket(value) {       // value in [-1, 1]
    return Math.min(UNIT_BUCKETS - 1, Math.max(0, Math.round((value + 1) * 10)));
  }

  function shownChar(ch) {
    if (ch === "\n") return "↵";
    if (ch === "\t") return "→";
    if (ch === " ") return "␣";
    return ch;
  }

  function currentModel() {
    return models.find((m) => m.name === modelSelect.value);
  }

  function fillLayers() {
    const model = currentModel();
    layerSelect.textContent = "";
    if (!model) return;
    for (let layer = 0; layer < model.layers; layer++) {
      const option = document.createElement("option");
      option.value = String(layer);
      option.textContent = layer === 0 ? "0 (reads the characters)" : String(layer);
      layerSelect.append(option);
    }
    layerSelect.value = String(model.layers - 1);
    unitInput.max = String(model.hidden - 1);
  }

  async function loadModels() {
    try {
      const response = await fetch("/api/models", { headers: { Accept: "application/json" } });
      const data = await response.json();
      models = data.models || [];
    } catch (error) {
      return;       // the Generate view reports it
    }
    modelSelect.textContent = "";
    for (const model of models) {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = `${model.name} (${model.cell}, ${model.layers}×${model.hidden})`;
      modelSelect.append(option);
    }
    fillLayers();
  }

  // ------------------------------------------------------------------------------ legend
  function drawLegend() {
    legend.textContent = "";
    const bar = document.createElement("span");
    bar.className = "bar";
    const label = document.createElement("span");
    if (colourSelect.value === "unit" && result) {
      label.textContent = `unit ${unitNumber()} of layer ${result.layer}, activation:`;
      for (let k = 0; k < UNIT_BUCKETS; k++) {
        const cell = document.createElement("span");
        cell.className = `u${k}`;
        if (k === 0 || k === 10 || k === 20) {
          cell.classList.add("tick");
          cell.textContent = String((k - 10) / 10);
        }
        bar.append(cell);
      }
    } else {
      label.textContent = "surprisal, bits:";
      for (let k = 0; k < BITS_BUCKETS; k++) {
        const cell = document.createElement("span");
        cell.className = `s${k}`;
        if (k % 4 === 0 || k === BITS_BUCKETS - 1) {
          cell.classList.add("tick");
          cell.textContent = k === BITS_BUCKETS - 1 ? `${k * BITS_STEP}+` : String(k * BITS_STEP);
        }
        bar.append(cell);
      }
    }
    legend.append(label, bar);
  }

  // ------------------------------------------------------------------------------ rendering
  function unitNumber() {
    const u = Number(unitInput.value);
    return Number.isInteger(u) ? u : 0;
  }

  function unitIndex() {
    return result ? result.units.indexOf(unitNumber()) : -1;
  }

  // The class of every character for the current colouring (one pass, no layout reads).
  function colourAll() {
    if (!result) return;
    const n = result.n;
    const byUnit = colourSelect.value === "unit" && unitIndex() >= 0;
    if (colourSelect.value === "unit" && !byUnit) {
      showError(`unit must be a whole number from 0 to ${result.units.length - 1}`);
    } else {
      showError("");
    }
    if (byUnit) {
      const offset = unitIndex() * n;
      const acts = result.acts, scale = result.scale;
      for (let t = 0; t < n; t++) {
        spans[t].className = `u${unitBucket(acts[offset + t] / scale)}` +
          (result.chars[t] === "\n" ? " nl" : "");
      }
    } else {
      for (let t = 0; t < n; t++) {
        const bits = result.bits[t];
        spans[t].className = (bits === null ? "" : `s${bitsBucket(bits)}`) +
          (result.chars[t] === "\n" ? " nl" : "");
      }
    }
    output.dataset.colour = byUnit ? `unit ${unitNumber()}` : "surprisal";
    drawLegend();
  }

  function render() {
    const fragment = document.createDocumentFragment();
    spans = new Array(result.n);
    for (let t = 0; t < result.n; t++) {
      const span = document.createElement("span");
      span.textContent = result.chars[t];
      span.dataset.i = String(t);
      spans[t] = span;
      fragment.append(span);
    }
    output.textContent = "";
    picked = null;
    colourAll();
    output.append(fragment);
  }

  // ------------------------------------------------------------------------------ details
  function showDetails(t) {
    if (picked !== null && spans[picked]) spans[picked].classList.remove("picked");
    picked = t;
    spans[t].classList.add("picked");
    details.textContent = "";
    const head = document.createElement("p");
    const bits = result.bits[t];
    const code = document.createElement("code");
    code.textContent = shownChar(result.chars[t]);
    head.append(`Character ${t}: `, code, bits === null
      ? " — the first character is only read, not predicted."
      : ` — ${bits.toFixed(2)} bits (p = ${Math.pow(2, -bits).toPrecision(3)})`);
    if (unitIndex() >= 0 && colourSelect.value === "unit") {
      head.append(`; unit ${unitNumber()}: ${(result.acts[unitIndex() * result.n + t] /
        result.scale).toFixed(2)}`);
    }
    details.append(head);
    const guesses = result.top[t];
    if (guesses && guesses.length) {
      const caption = document.createElement("p");
      caption.className = "hint";
      caption.textContent = "What the model expected here:";
      const table = document.createElement("table");
      table.id = "a-guesses";
      for (const [ch, p] of guesses) {
        const row = table.insertRow();
        const cell = row.insertCell();
        const c = document.createElement("code");
        c.textContent = shownChar(ch);
        cell.append(c);
        row.insertCell().textContent = `${(100 * p).toFixed(1)}%`;
        if (ch === result.chars[t]) row.className = "actual";
      }
      details.append(caption, table);
    }
  }

  function spanIndex(node) {
    const element = node && (node.nodeType === 1 ? node : node.parentElement);
    if (!element || element.parentElement !== output || element.dataset.i === undefined) return -1;
    return Number(element.dataset.i);
  }

  output.addEventListener("mouseover", (event) => {
    const t = spanIndex(event.target);
    if (t >= 0) showDetails(t);
  });
  output.addEventListener("click", (event) => {
    const t = spanIndex(event.target);
    if (t >= 0) showDetails(t);
  });

  // ------------------------------------------------------------------------------ tracking units
  // Each unit's mean and standard deviation over the text, once per analysis.
  function unitStats() {
    const { n, acts, units, scale } = result;
    result.mean = new Float64Array(units.length);
    result.std = new Float64Array(units.length);
    for (let u = 0; u < units.length; u++) {
      let sum = 0, squares = 0;
      const offset = u * n;
      for (let t = 0; t < n; t++) {
        const v = acts[offset + t];
        sum += v;
        squares += v * v;
      }
      const mean = sum / n;
      result.mean[u] = mean / scale;
      result.std[u] = Math.sqrt(Math.max(0, squares / n - mean * mean)) / scale;
    }
  }

  // The units whose activation best separates characters a..b (inclusive) from the rest:
  // the correlation of the activation with "selected" (1 inside, 0 outside), best |r| first.
  function trackSelection(a, b) {
    const { n, acts, units, scale } = result;
    const inside = b - a + 1;
    if (inside >= n) return [];
    const p = inside / n;
    const ranked = [];
    for (let u = 0; u < units.length; u++) {
      if (result.std[u] < 1e-6) continue;
      let sum = 0;
      const offset = u * n;
      for (let t = a; t <= b; t++) sum += acts[offset + t];
      const meanIn = sum / inside / scale;
      const meanOut = (result.mean[u] * n - meanIn * inside) / (n - inside);
      const r = Math.sqrt(p * (1 - p)) * (meanIn - meanOut) / result.std[u];
      ranked.push([Math.abs(r), r, units[u]]);
    }
    ranked.sort((x, y) => y[0] - x[0]);
    return ranked.slice(0, 10);
  }

  function selectionRange() {
    const selection = window.getSelection();
    if (!selection || selection.rangeCount === 0 || selection.isCollapsed) return null;
    const range = selection.getRangeAt(0);
    if (!output.contains(range.commonAncestorContainer)) return null;
    let a = spanIndex(range.startContainer);
    let b = spanIndex(range.endContainer);
    if (a < 0) a = 0;
    if (b < 0) b = result.n - 1;
    if (range.endContainer.nodeType === 3 && range.endOffset === 0 && b > a) b -= 1;
    return a <= b ? [a, b] : null;
  }

  function showTracking() {
    if (!result) return;
    const range = selectionRange();
    if (!range) return;
    const best = trackSelection(range[0], range[1]);
    unitList.textContent = "";
    unitList.dataset.range = `${range[0]}-${range[1]}`;
    for (const [, r, unit] of best) {
      const item = document.createElement("li");
      const pick = document.createElement("button");
      pick.type = "button";
      pick.dataset.unit = String(unit);
      pick.textContent = `unit ${unit}`;
      pick.addEventListener("click", () => {
        unitInput.value = String(unit);
        colourSelect.value = "unit";
        colourAll();
      });
      item.append(pick, ` r = ${r >= 0 ? "+" : "−"}${Math.abs(r).toFixed(2)}`);
      unitList.append(item);
    }
  }

  let selectionTimer = null;
  document.addEventListener("selectionchange", () => {
    clearTimeout(selectionTimer);
    selectionTimer = setTimeout(showTracking, 120);
  });

  // ------------------------------------------------------------------------------ analysing
  function decode(base64) {
    const raw = atob(base64);
    const out = new Int8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = (raw.charCodeAt(i) << 24) >> 24;
    return out;
  }

  async function analyse(event) {
    if (event) event.preventDefault();
    const model = currentModel();
    if (!model) return;
    showError("");
    button.disabled = true;
    const text = textBox.value;
    statusLine.textContent = `Analysing ${Array.from(text).length.toLocaleString("en")} ` +
      "characters…";
    const body = { model: model.name, text, top: 5, unknown: "skip",
      layer: Number(layerSelect.value), packed: true };
    let response, data = null;
    try {
      response = await fetch("/api/score", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      try { data = await response.json(); } catch (error) { /* reported below */ }
    } catch (error) {
      showError("Cannot reach the charrnn server. Is `charrnn serve` still running?");
      statusLine.textContent = "";
      button.disabled = false;
      return;
    }
    button.disabled = false;
    if (!response.ok || !data || data.error) {
      showError((data && data.error) || `The server answered ${response.status}.`);
      statusLine.textContent = "";
      return;
    }
    const started = performance.now();
    const chars = Array.from(data.text);
    result = { chars, n: chars.length, bits: data.bits, top: data.top,
      layer: data.activations.layer, units: data.activations.units,
      acts: decode(data.activations.h), scale: data.activations.scale };
    unitStats();
    render();
    unitList.textContent = "";
    details.textContent = "";
    const elapsed = performance.now() - started;
    output.dataset.renderMs = elapsed.toFixed(1);
    const skipped = Object.keys(data.skipped || {});
    statusLine.textContent = `${data.bpc.toFixed(3)} bits per character over ` +
      `${data.chars.toLocaleString("en")} characters` +
      (skipped.length ? ` (left out, not in the model's vocabulary: ${skipped.join(" ")})` : "") +
      ` · shown in ${Math.round(elapsed)} ms`;
  }

  form.addEventListener("submit", analyse);
  colourSelect.addEventListener("change", colourAll);
  unitInput.addEventListener("input", () => { if (colourSelect.value === "unit") colourAll(); });
  modelSelect.addEventListener("change", fillLayers);
  textBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) analyse(event);
  });
  drawLegend();
  loadModels();
}());
