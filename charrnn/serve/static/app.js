// The charrnn playground: picks a model, posts /api/generate with "stream": true, and writes the
// server-sent events into the page as they arrive. No libraries, nothing from other servers.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("controls");
  const modelSelect = $("model");
  const modelInfo = $("model-info");
  const output = $("output");
  const statusLine = $("status");
  const errorBox = $("error");
  const generateButton = $("generate");
  const stopButton = $("stop");
  const copyButton = $("copy");

  const CELL_NAMES = { rnn: "vanilla RNN", gru: "GRU", lstm: "LSTM" };
  let models = [];
  let controller = null;     // the AbortController of the request running, if any
  let generated = 0;         // characters received after the prime

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function setStatus(message) {
    statusLine.textContent = message;
  }

  function setRunning(running) {
    generateButton.disabled = running;
    stopButton.disabled = !running;
    output.classList.toggle("running", running);
    output.setAttribute("aria-busy", running ? "true" : "false");
    if (running) {
      stopButton.focus();
    } else if (document.activeElement === stopButton || document.activeElement === document.body) {
      generateButton.focus();
    }
  }

  function describe(model) {
    const parts = [CELL_NAMES[model.cell] || model.cell,
      `${model.layers} layer${model.layers === 1 ? "" : "s"}`,
      `${model.hidden} units`, `${model.vocab_size} characters`];
    if (typeof model.best_val_bpc === "number") {
      parts.push(`${model.best_val_bpc.toFixed(3)} bits per character on held-out text`);
    }
    return parts.join(" · ");
  }

  function showModelInfo() {
    const model = models.find((m) => m.name === modelSelect.value);
    modelInfo.textContent = model ? describe(model) : "";
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch("/api/models", { headers: { Accept: "application/json" } });
    } catch (error) {
      showError("Cannot reach the charrnn server. Is `charrnn serve` still running?");
      return;
    }
    let data = null;
    try { data = await response.json(); } catch (error) { /* reported below */ }
    if (!response.ok || !data || !Array.isArray(data.models)) {
      showError((data && data.error) || `The server answered ${response.status} for the model list.`);
      return;
    }
    models = data.models;
    modelSelect.textContent = "";
    for (const model of models) {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = `${model.name} (${CELL_NAMES[model.cell] || model.cell}, ${model.hidden})`;
      modelSelect.append(option);
    }
    if (!models.length) {
      showError("This server offers no model.");
    }
    showModelInfo();
  }

  // The value of a number field: undefined when empty (the server's default), or an error.
  function numberField(id, label, whole) {
    const input = $(id);
    if (input.validity.badInput) {
      throw new Error(`${label}: enter a number.`);
    }
    if (input.value.trim() === "") {
      return undefined;
    }
    const value = Number(input.value);
    if (!Number.isFinite(value) || (whole && !Number.isInteger(value))) {
      throw new Error(`${label}: enter a ${whole ? "whole " : ""}number.`);
    }
    return value;
  }

  function request() {
    const body = { model: modelSelect.value, prime: $("prime").value, stream: true };
    const fields = [["length", "length", "Length", true], ["temperature", "temperature", "Temperature", false],
      ["top_k", "top-k", "Top-k", true], ["top_p", "top-p", "Top-p", false], ["seed", "seed", "Seed", true]];
    for (const [name, id, label, whole] of fields) {
      const value = numberField(id, label, whole);
      if (value !== undefined) {
        body[name] = value;
      }
    }
    return body;
  }

  function startOutput(prime) {
    output.textContent = "";
    const primeSpan = document.createElement("span");
    primeSpan.className = "prime";
    primeSpan.textContent = prime;
    const text = document.createTextNode("");
    output.append(primeSpan, text);
    return text;
  }

  function append(node, text) {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 24;
    node.appendData(text);
    generated += text.length;
    if (atBottom) {
      output.scrollTop = output.scrollHeight;
    }
  }

  // Parses one server-sent event ("event: x\ndata: {...}") into [type, data].
  function parseEvent(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) {
        type = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
    return [type, data.length ? JSON.parse(data.join("\n")) : null];
  }

  async function generate(event) {
    if (event) {
      event.preventDefault();
    }
    if (controller) {
      return;
    }
    showError("");
    let body;
    try {
      body = request();
    } catch (error) {
      showError(error.message);
      return;
    }
    if (!body.model) {
      showError("Choose a model first.");
      return;
    }
    controller = new AbortController();
    const mine = controller;
    generated = 0;
    let primeShown = false;
    let textNode = startOutput("");
    copyButton.disabled = true;
    setRunning(true);
    setStatus("Generating…");
    let finished = false;
    try {
      const response = await fetch("/api/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: mine.signal,
      });
      if (!response.ok) {
        let message = `The server answered ${response.status} ${response.statusText}.`;
        try {
          const data = await response.json();
          if (data && data.error) {
            message = data.error;
          }
        } catch (error) { /* keep the status line */ }
        showError(message);
        setStatus("");
        finished = true;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const [type, data] = parseEvent(block);
          if (type === "message" && data && data.index === 0) {
            if (!primeShown && data.text === body.prime && body.prime) {
              textNode = startOutput(data.text);   // the first event is the prime
              primeShown = true;
            } else {
              primeShown = true;
              append(textNode, data.text);
            }
          } else if (type === "end") {
            finished = true;
            setStatus(`Done: ${generated} characters with seed ${data.seed}` +
              (body.seed === undefined ? " (type it under Seed to get the same text again)." : "."));
          } else if (type === "error") {
            finished = true;
            showError((data && data.error) || "The server stopped the generation.");
            setStatus("");
          }
        }
      }
      if (!finished) {
        showError("The connection to the server was cut before the text was finished.");
        setStatus("");
        finished = true;
      }
    } catch (error) {
      if (error.name === "AbortError") {
        setStatus(`Stopped after ${generated} characters.`);
      } else {
        showError(`Cannot reach the charrnn server (${error.message}). Is \`charrnn serve\` still running?`);
        setStatus("");
      }
    } finally {
      if (controller === mine) {
        controller = null;
      }
      copyButton.disabled = output.textContent.length === 0;
      setRunning(false);
    }
  }

  function stop() {
    if (controller) {
      controller.abort();
    }
  }

  async function copyText() {
    const text = output.textContent;
    try {
      await navigator.clipboard.writeText(text);
      setStatus("Copied the text.");
    } catch (error) {
      // No clipboard API (an insecure context, or denied): select the text for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(output);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      output.focus();
      setStatus("The text is selected: press Ctrl+C (or ⌘C) to copy it.");
    }
  }

  form.addEventListener("submit", generate);
  stopButton.addEventListener("click", stop);
  copyButton.addEventListener("click", copyText);
  modelSelect.addEventListener("change", showModelInfo);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) {
      event.preventDefault();
      stop();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)
               && document.body.dataset.view !== "analyse") {
      event.preventDefault();
      generate();
    }
  });
  loadModels();
}());
