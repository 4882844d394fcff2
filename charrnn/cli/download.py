"""`charrnn corpora` and `charrnn download`: list and fetch public-domain training texts.

Only the paths of the texts go to stdout, so `charrnn train "$(charrnn download NAME)"` works;
the progress bar, warnings and messages go to stderr.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from charrnn.corpus.download import (
    DEFAULT_MAX_BYTES,
    FetchPolicy,
    download,
    load_catalog,
    local_corpora,
    resolve_source,
)

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # what click.progressbar returns

_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


class ByteSize(click.ParamType):
    """A byte count: 200000000, 200MB, 1.5G, 512KiB."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            self.fail(f"{value!r} is not a size (e.g. 200MB, 1.5GB, 500000)", param, ctx)
        size = int(float(match.group(1)) * _UNITS[unit])
        if size <= 0:
            self.fail("must be positive", param, ctx)
        return size


def _human_size(size: int | None, approximate: bool = False) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            text = f"{size / scale:.{0 if size >= 100 * scale else 1}f} {unit}"
            break
    else:
        text = f"{size} B"
    return f"~{text}" if approximate else text


class _ProgressRenderer:
    """Draws a click progress bar on stderr from on_progress(done, total) calls; a restarted
    download (done goes back) or a new expected size starts a fresh bar."""

    def __init__(self, label: str, enabled: bool, file=None):
        self.label = label
        self.enabled = enabled
        self.file = file
        self._bar: ProgressBar[str] | None = None
        self._done = 0
        self._total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None or total != self._total or done < self._done:
            self.close()
            self._total = total
            self._done = 0
            self._bar = click.progressbar(
                length=total if total else None,
                iterable=None if total else (_ for _ in ()),
                label=self.label,
                file=self.file or sys.stderr,
                show_percent=bool(total),
                show_eta=bool(total),
                item_show_func=lambda item: item,
            )
            self._bar.__enter__()
        total_text = f" / {_human_size(total)}" if total else ""
        self._bar.update(done - self._done, f"{_human_size(done)}{total_text}")
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.command("download")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("corpora"),
    show_default=True,
    help="Folder for the texts (created if missing).",
)
@click.option("--force", is_flag=True, help="Replace a text that is already there.  [default: off]")
@click.option(
    "--mirror",
    metavar="URL",
    envvar="CHARRNN_GUTENBERG_MIRROR",
    help="Project Gutenberg mirror serving /cache/epub/ID/pgID.txt [default: https://www.gutenberg.org; "
    "env CHARRNN_GUTENBERG_MIRROR].",
)
@click.option(
    "--max-bytes",
    type=ByteSize(),
    default=DEFAULT_MAX_BYTES,
    help="Refuse bodies larger than this many bytes; units kB, MB, GB, KiB, MiB, GiB are fine.  [default: 200MB]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Connect and read timeout in seconds.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="Retries of a request after a connection error, 429 or 5xx.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages (warnings still shown).  [default: off]")
def download_command(names, directory, force, mirror, max_bytes, timeout, retries, quiet):
    """Fetch training text and print the path of the file written.

    NAME is a catalog name (see `charrnn corpora`), gutenberg:ID for any Project Gutenberg book,
    or an http(s) URL of a plain-text file. Gutenberg boilerplate is removed; the text is saved
    as clean UTF-8 in --dir as NAME.txt beside NAME.meta.json (source, sha256, encoding, licence).

    \b
        charrnn train "$(charrnn download tiny-shakespeare)"

    The environment variable CHARRNN_CATALOG=FILE names a catalog (JSON, the format of the
    shipped corpora/catalog.json) to use instead of the shipped one.
    """
    catalog = load_catalog()
    policy = FetchPolicy(connect_timeout=timeout, read_timeout=timeout, retries=retries, max_bytes=max_bytes)
    # Resolve every name before fetching anything, so a typo costs no download.
    sources = [resolve_source(name, catalog, mirror=mirror) for name in names]
    for source in sources:
        if not quiet:
            click.echo(f"downloading {source.name} from {source.url}", err=True)
        # Off a terminal click draws no bar, only the label: the line above says it all.
        progress = _ProgressRenderer(source.name, enabled=not quiet and sys.stderr.isatty())
        try:
            result = download(
                source,
                directory,
                force=force,
                policy=policy,
                on_progress=progress,
                on_warning=lambda message: click.echo(f"warning: {message}", err=True),
            )
        finally:
            progress.close()
        if not quiet:
            if result.downloaded:
                record = result.record or {}
                click.echo(
                    f"wrote {result.path} ({record.get('text_bytes', 0):,} bytes, {record.get('encoding')}, "
                    f"sha256 {record.get('text_sha256')})",
                    err=True,
                )
            else:
                click.echo(f"kept the existing {result.path} (--force replaces it)", err=True)
        click.echo(str(result.path))


@click.command("corpora")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("corpora"),
    show_default=True,
    help="Folder to look in for downloaded texts.",
)
def corpora_command(directory):
    """List the corpus catalog and the texts already downloaded.

    The environment variable CHARRNN_CATALOG=FILE names a catalog to list instead of the shipped one.
    """
    catalog = load_catalog()
    rows = [("NAME", "TITLE", "SOURCE", "SIZE", "LICENCE")]
    for entry in catalog.values():
        rows.append(
            (entry.name, entry.title, entry.source, _human_size(entry.size, entry.bytes is None), entry.licence)
        )
    click.echo("Catalog (charrnn download NAME; also gutenberg:ID or an http(s) URL):")
    _echo_table(rows)

    local = local_corpora(directory, catalog)
    click.echo("")
    if not local:
        click.echo(f"Nothing downloaded in {directory} yet.")
        return
    click.echo(f"Downloaded in {directory}:")
    _echo_table([("PATH", "BYTES", "SHA256")] + [(str(c.path), f"{c.bytes:,}", c.sha256) for c in local])


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  " + "  ".join(cells).rstrip())


COMMANDS = [corpora_command, download_command]
