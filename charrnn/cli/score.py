"""`charrnn score`: per-character surprisal, the model's guesses and its units' activations."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from charrnn.errors import InputError

PROPERTY_NAMES = ("in-quotes", "line-position", "in-parens")  # charrnn.analysis.PROPERTIES
SPARKS = "▁▂▃▄▅▆▇█"
ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_char(ch: str) -> str:
    r"""A character as a TSV field: backslash, tab, newline and carriage return as \\ \t \n \r,
    other control characters as \xNN (or \uNNNN), everything else as itself."""
    if ch in ESCAPES:
        return ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def shown_char(ch: str) -> str:
    """A character for a one-line display: newline as ↵, tab as →, other controls escaped."""
    return {"\n": "↵", "\t": "→"}.get(ch) or tsv_char(ch)


def _read_text(text_file: str, encoding: str) -> str:
    """The text of a file, or of standard input for "-"; InputError (one line) if it is not."""
    if text_file == "-":
        import codecs

        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None
        data = sys.stdin.buffer.read()
        if not data:
            raise InputError("standard input is empty; nothing to score")
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as error:
            raise InputError(
                f"standard input: byte 0x{data[error.start]:02x} at offset "
                f"{error.start} is not valid {encoding}; pass --encoding"
            ) from None
        if "\0" in text:
            raise InputError("standard input looks like a binary file (it contains NUL characters)")
        return text
    import numpy as np

    from charrnn.corpus.text import load_corpus

    if not Path(text_file).exists():
        raise InputError(f"{text_file}: no such file")
    vocab, ids = load_corpus(text_file, encoding)
    codes = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)
    return codes[ids].tobytes().decode("utf-32-le")


def _parse_activations(value: str | None):
    """LAYER[:UNITS] -> (layer, units string or None)."""
    if value is None:
        return None, None
    layer, _, units = value.partition(":")
    try:
        number = int(layer)
    except ValueError:
        raise InputError(
            f"--activations: {layer!r} is not a layer number; give LAYER or LAYER:UNITS, e.g. 1 or 1:0,5,10-20"
        ) from None
    return number, (units or None)


def _fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def _write_rows(result, vocab, fmt: str) -> None:
    chars = vocab.chars
    text, k = result.text, result.top_ids.shape[1]
    h, c = result.h, result.c
    out = sys.stdout
    lines: list[str] = []
    if fmt == "tsv":
        head = ["pos", "char", "bits"]
        for i in range(1, k + 1):
            head += [f"guess{i}", f"p{i}"]
        head += [f"h{u}" for u in result.units] if h is not None else []
        head += [f"c{u}" for u in result.units] if c is not None else []
        lines.append("\t".join(head))
    for t in range(len(text)):
        guesses = [(chars[i], float(p)) for i, p in zip(result.top_ids[t], result.top_probs[t], strict=True) if i >= 0]
        bits = float(result.bits[t])
        if fmt == "tsv":
            fields = [str(t), tsv_char(text[t]), _fmt(bits)]
            for i in range(k):
                fields += [tsv_char(guesses[i][0]), f"{guesses[i][1]:.4f}"] if guesses else ["", ""]
            if h is not None:
                fields += [f"{v:.4f}" for v in h[t]]
            if c is not None:
                fields += [f"{v:.4f}" for v in c[t]]
            lines.append("\t".join(fields))
        else:
            row = {
                "pos": t,
                "char": text[t],
                "bits": None if math.isnan(bits) else round(bits, 4),
                "top": [[g, round(p, 4)] for g, p in guesses],
            }
            if h is not None:
                row["h"] = [round(float(v), 4) for v in h[t]]
            if c is not None:
                row["c"] = [round(float(v), 4) for v in c[t]]
            lines.append(json.dumps(row, ensure_ascii=False))
        if len(lines) >= 4096:
            out.write("\n".join(lines) + "\n")
            lines = []
    if lines:
        out.write("\n".join(lines) + "\n")
    out.flush()


def _summary(result, most: int = 10) -> dict:
    """Overall bits per character, per line, and the most surprising characters."""
    import numpy as np

    text, bits = result.text, result.bits
    lines, start = [], 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        stop = start + len(line)
        scored = bits[max(start, 1) : stop]
        lines.append(
            {
                "line": number,
                "chars": int(scored.size),
                "bpc": round(float(scored.mean()), 4) if scored.size else None,
                "text": line.rstrip("\r\n"),
            }
        )
        start = stop
    order = np.argsort(-np.nan_to_num(bits, nan=-1.0), kind="stable")[:most]
    line_starts = np.concatenate(
        [[0], np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == 10) + 1]
    )
    surprising = []
    for t in order:
        if math.isnan(bits[t]):
            continue
        line = int(np.searchsorted(line_starts, t, side="right"))
        surprising.append(
            {
                "pos": int(t),
                "line": line,
                "column": int(t - line_starts[line - 1]),
                "char": text[t],
                "bits": round(float(bits[t]), 4),
                "context": text[max(0, t - 20) : t + 21],
            }
        )
    return {
        "bpc": round(result.bpc, 4),
        "chars": result.chars,
        "skipped": result.skipped,
        "lines": lines,
        "most_surprising": surprising,
    }


def _print_summary(summary: dict) -> None:
    click.echo(f"{summary['bpc']:.4f} bits per character over {summary['chars']:,} characters")
    click.echo("\nper line:\n  line  chars     bpc  text")
    for line in summary["lines"]:
        bpc = f"{line['bpc']:7.3f}" if line["bpc"] is not None else "      -"
        shown = "".join(shown_char(ch) for ch in line["text"][:60])
        click.echo(f"{line['line']:6d} {line['chars']:6d} {bpc}  {shown}")
    click.echo("\nmost surprising characters:\n  bits  line:col  char  context")
    for item in summary["most_surprising"]:
        context = "".join(shown_char(ch) for ch in item["context"])
        click.echo(
            f"{item['bits']:6.2f}  {item['line']:>4}:{item['column']:<4} {shown_char(item['char'])!s:>4}  {context}"
        )


def _sparkline(values, lo: float, hi: float) -> str:
    span = hi - lo
    if span <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * len(SPARKS)))] for v in values)


def _print_units(search, text: str, as_json: bool) -> None:
    from charrnn.analysis import PROPERTIES

    w0, w1 = search.window
    if as_json:
        click.echo(
            json.dumps(
                {
                    "property": search.property,
                    "window": [w0, w1],
                    "text": text[w0:w1],
                    "units": [
                        {
                            "layer": m.layer,
                            "kind": m.kind,
                            "unit": m.unit,
                            "r": round(m.r, 4),
                            "preview": [round(float(v), 4) for v in m.preview],
                        }
                        for m in search.matches
                    ],
                },
                ensure_ascii=False,
            )
        )
        return
    click.echo(
        f"units that track {search.property} ({PROPERTIES[search.property][1]}), "
        f"by |correlation|; previews over characters {w0}-{w1}, low ▁ to high █"
    )
    label_width = 14
    click.echo(f"{'text':<{label_width}}        |{''.join(shown_char(c) for c in text[w0:w1])}|")
    values = search.values
    click.echo(f"{search.property:<{label_width}}        |{_sparkline(values, values.min(), values.max())}|")
    for rank, m in enumerate(search.matches, 1):
        label = f"{rank:>2}. {m.layer}:{m.unit} {m.kind}"
        preview = m.preview if m.r >= 0 else -m.preview  # high where the property is
        click.echo(f"{label:<{label_width}} {m.r:+.3f} |{_sparkline(preview, preview.min(), preview.max())}|")
    click.echo(
        "(a unit shown as LAYER:UNIT h|c; plot it with --activations LAYER:UNIT; a negative r is drawn upside down)"
    )


@click.command("score")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("text_file", type=str)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Encoding of TEXT_FILE, e.g. utf-8, latin-1, cp1252."
)
@click.option(
    "--unknown",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Characters the model does not know: stop with an error naming them, or leave them out of the text.",
)
@click.option(
    "--top",
    "top",
    type=int,
    default=5,
    show_default=True,
    help="The model's K most likely characters for each position, with their probabilities (0: none).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tsv", "jsonl"]),
    default="tsv",
    show_default=True,
    help="One row per character: tab-separated with a header row, or one JSON object a line.",
)
@click.option(
    "--summary",
    is_flag=True,
    help="Only the totals: bits per character overall and per line, and the most "
    "surprising characters.  [default: off]",
)
@click.option(
    "--activations",
    metavar="LAYER[:UNITS]",
    help="Add each unit's h (and c for an LSTM) after reading the character, for "
    "layer LAYER (0 reads the characters); UNITS like 0,5,10-20 (default all).",
)
@click.option(
    "--find-units",
    "find",
    type=click.Choice(PROPERTY_NAMES),
    metavar="PROPERTY",
    help="Rank every unit by how well its activation tracks a property of the text: " + ", ".join(PROPERTY_NAMES) + ".",
)
@click.option("--count", type=int, default=10, show_default=True, help="How many units --find-units lists.")
def score_command(model, text_file, encoding, unknown, top, fmt, summary, activations, find, count):
    r"""Score each character of TEXT_FILE (or - for standard input) under MODEL (a model
    directory or a bundled model's name): its surprisal in bits (-log2 p), and the model's
    top guesses for it. The first character is only read (its bits are empty); the mean of
    the other rows' bits is what `charrnn eval` reports for the same text.

    In tsv, a character that would break the row is escaped: backslash \\, tab \t, newline
    \n, carriage return \r, other control characters \xNN.

    \b
        charrnn score shakespeare-lstm speech.txt --top 3
        charrnn score shakespeare-lstm speech.txt --summary
        charrnn score shakespeare-lstm speech.txt --activations 1:0-9 > acts.tsv
        charrnn score shakespeare-lstm play.txt --find-units line-position
        echo "To be, or not to be" | charrnn score shakespeare-lstm - --format jsonl
    """
    from charrnn.analysis import Scorer, encode_for_scoring, find_units, score_ids
    from charrnn.sampling import load

    if top < 0:
        raise InputError(f"--top must be 0 or more, got {top}")
    if count < 1:
        raise InputError(f"--count must be 1 or more, got {count}")
    if find and (summary or activations):
        raise InputError("--find-units makes a list of its own; leave out --summary and --activations")
    layer, units = _parse_activations(activations)
    if text_file != "-" and not Path(text_file).exists():
        raise InputError(f"{text_file}: no such file")
    loaded = load(model)
    if layer is not None:
        from charrnn.analysis import check_layer, parse_units

        try:
            check_layer(layer, loaded.spec.layers)
            parse_units(units, loaded.spec.hidden)
        except InputError as error:
            raise InputError(f"--activations: {error}") from None
    text = _read_text(text_file, encoding)
    where = "standard input" if text_file == "-" else text_file
    try:
        kept, ids, skipped = encode_for_scoring(text, loaded.vocab, unknown)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None
    if skipped:
        shown = " ".join(repr(c) for c in list(skipped)[:10])
        click.echo(f"skipped {sum(skipped.values()):,} characters not in the model's vocabulary: {shown}", err=True)
    scorer = Scorer(loaded)
    if find:
        _print_units(find_units(scorer, kept, ids, find, count), kept, fmt == "jsonl")
        return
    result = score_ids(scorer, kept, ids, top=0 if summary else top, layer=layer, units=units, skipped=skipped)
    if summary:
        data = _summary(result)
        if fmt == "jsonl":
            click.echo(json.dumps(data, ensure_ascii=False))
        else:
            _print_summary(data)
        return
    _write_rows(result, loaded.vocab, fmt)


COMMANDS = [score_command]
