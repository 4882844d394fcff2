"""Filesystem faults end cleanly: a full disk, a read-only or unwritable folder, a file where a
folder should be, an unreadable corpus or model file.

Each case ends in a one-line error and a non-zero exit, with no traceback; the previous model,
checkpoint, download or picture stays byte-for-byte as it was; no temporary file is left behind.

Every case runs everywhere with the fault injected at the call that meets it (a subprocess whose
`tempfile.mkstemp`, `os.fsync`, `open` or `Path.mkdir` fails for one file name), and, as root,
for real as well on a small tmpfs mounted by the test (skipped with the reason otherwise).
Commands run in a subprocess, as a user runs them, so "no traceback" means something.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_text

import charrnn.corpus.download as download_module
from charrnn import atomic
from charrnn.cli import main
from charrnn.errors import DownloadError, describe_os_error

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "32", "--seq-length", "16", "--batch-size", "4", "--threads", "1"]
MODEL_FILES = ("model.npz", "meta.json", "training_state.npz", "metrics.jsonl")
ROOT_ONLY = "needs root, which may mount a tmpfs"

# Run as `python -c FAULT_RUNNER ARGS...`: charrnn ARGS, with one call failing for the file names
# in $CHARRNN_TEST_FAULT ({"call": "mkstemp"|"fsync"|"open"|"mkdir", "names": [...],
# "errno": N, "after": K}): the (K+1)-th matching call and every later one fail, as a disk that
# has filled up stays full.
FAULT_RUNNER = r"""
import builtins, errno, io, json, os, pathlib, sys, tempfile

fault = json.loads(os.environ["CHARRNN_TEST_FAULT"])
names, code, after, call = fault["names"], fault["errno"], fault.get("after", 0), fault["call"]
matched = [0]
temporaries = {}   # fd -> name, of the files tempfile.mkstemp made

def hits(path):
    base = os.path.basename(str(path))
    if not any(base == name or base.startswith("." + name + ".") for name in names):
        return False
    matched[0] += 1
    return matched[0] > after

def failure(path=None):
    return OSError(code, os.strerror(code), *([str(path)] if path is not None else []))

real_mkstemp = tempfile.mkstemp
def mkstemp(suffix=None, prefix=None, dir=None, text=False):
    if call == "mkstemp" and hits(prefix or ""):
        raise failure(os.path.join(dir or ".", (prefix or "") + "x1y2z3" + (suffix or "")))
    fd, name = real_mkstemp(suffix, prefix, dir, text)
    temporaries[fd] = name
    return fd, name
tempfile.mkstemp = mkstemp

real_fsync = os.fsync
def fsync(fd):
    if call == "fsync" and fd in temporaries and hits(temporaries[fd]):
        raise failure()            # as a real write finds the disk full: no file name
    return real_fsync(fd)
os.fsync = fsync

real_open = builtins.open
def guarded_open(file, *args, **kwargs):
    if call == "open" and isinstance(file, (str, bytes, os.PathLike)) and hits(os.fsdecode(file)):
        raise failure(os.fsdecode(file))
    return real_open(file, *args, **kwargs)
builtins.open = io.open = guarded_open

real_mkdir = pathlib.Path.mkdir
def mkdir(self, *args, **kwargs):
    if call == "mkdir" and hits(self):
        raise failure(self)
    return real_mkdir(self, *args, **kwargs)
pathlib.Path.mkdir = mkdir

from charrnn.cli import main
main(sys.argv[1:])
"""


def charrnn(*args, cwd=None, fault: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `charrnn` command of this checkout, in a subprocess (with an injected fault)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    if fault is None:
        command = [sys.executable, "-m", "charrnn"]
    else:
        env["CHARRNN_TEST_FAULT"] = json.dumps(fault)
        command = [sys.executable, "-c", FAULT_RUNNER]
    return subprocess.run(
        [*command, *(str(a) for a in args)], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(ran: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, no traceback, and stderr exactly one line "Error: ..." holding every fragment."""
    report = f"exit {ran.returncode}\n--- stdout ---\n{ran.stdout[-2000:]}\n--- stderr ---\n{ran.stderr}"
    assert ran.returncode == 1, report
    assert "Traceback" not in ran.stderr and "Traceback" not in ran.stdout, report
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), report
    for fragment in fragments:
        assert fragment in lines[0], report
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by path relative to it, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name.endswith((".tmp", ".download")))


def fill(folder: Path, leave_pages: int) -> Path:
    """Fill the filesystem of `folder` until only `leave_pages` blocks are free."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    size = max(0, (stats.f_bavail - leave_pages) * stats.f_frsize)
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    return filler


# ---------------------------------------------------------------------------------------------
# A small tmpfs, mounted by the test (root only)


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) -> a fresh mount point of that size under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str = "256k", name: str = "fs") -> Path:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a tmpfs {ROOT_ONLY}; the injected-fault tests cover this case")
        point = tmp_path / name
        point.mkdir()
        ran = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if ran.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({ran.stderr.strip() or ran.returncode}); "
                "the injected-fault tests cover this case"
            )
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def make_read_only(point: Path) -> None:
    ran = subprocess.run(["mount", "-o", "remount,ro", str(point)], capture_output=True, text=True)
    if ran.returncode != 0:
        pytest.skip(f"cannot remount {point} read-only ({ran.stderr.strip()})")


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(3000))
    return path


# ---------------------------------------------------------------------------------------------
# describe_os_error: the one line every layer uses


def test_describe_os_error_names_the_path_and_what_to_do():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert describe_os_error(full, "models/x/model.npz", then="resume with: charrnn train --out models/x --resume") == (
        "models/x/model.npz: No space left on device; free some space, then resume with: "
        "charrnn train --out models/x --resume"
    )
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/models")
    assert describe_os_error(denied, then="try again") == (
        "/srv/models: Permission denied; check its permissions, or choose another place, then try again"
    )
    # A path that can never work gets no "then": only what to do instead.
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/m")
    assert describe_os_error(read_only, then="try again") == (
        "/mnt/ro/m: Read-only file system; choose a place on a writable filesystem"
    )
    odd = OSError("something\nodd")
    assert describe_os_error(odd) == "something odd"


# ---------------------------------------------------------------------------------------------
# atomic_write: the old file whole, no temporary, the error naming the target


class _FailingFile:
    """A file object whose write fails (by default as a full disk does)."""

    def __init__(self, real, error: BaseException | None = None):
        self.real = real
        self.error = error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()

    def fileno(self):
        return self.real.fileno()

    def write(self, data):
        raise self.error

    def flush(self):
        self.real.flush()


def _inject(monkeypatch, where: str, error: BaseException) -> None:
    def fail(*args, **kwargs):
        raise error

    if where == "mkstemp":
        monkeypatch.setattr(atomic.tempfile, "mkstemp", fail)
    elif where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _FailingFile(real_fdopen(fd, *a, **k), error))
    else:  # chmod, fsync, replace
        monkeypatch.setattr(atomic.os, where, fail)


@pytest.mark.parametrize("where", ["mkstemp", "chmod", "write", "fsync", "replace"])
@pytest.mark.parametrize(
    "make_error",
    [
        lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        lambda: PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
        KeyboardInterrupt,
    ],
    ids=["ENOSPC", "EACCES", "Ctrl-C"],
)
@pytest.mark.parametrize("existed", [True, False], ids=["over-a-file", "new-file"])
def test_atomic_write_fails_cleanly_wherever_it_fails(tmp_path, monkeypatch, where, make_error, existed):
    error = make_error()
    target = tmp_path / "meta.json"
    if existed:
        target.write_bytes(b"old")
    _inject(monkeypatch, where, error)
    with pytest.raises(type(error)) as info:
        atomic.atomic_write(target, b"new" * 1000)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["meta.json"] if existed else [])
    if existed:
        assert target.read_bytes() == b"old"
    if isinstance(error, OSError) and where != "mkstemp":  # mkstemp's name is outside the folder
        assert info.value.filename == str(target), "the error names the file, not its temporary"


def test_atomic_write_names_the_target_when_its_folder_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        atomic.atomic_write(tmp_path / "gone" / "model.npz", b"x")
    assert info.value.filename == str(tmp_path / "gone" / "model.npz")


def test_atomic_write_on_a_full_tmpfs(tmpfs):
    disk = tmpfs("64k")
    target = disk / "model.npz"
    target.write_bytes(b"old model")
    with pytest.raises(OSError) as info:
        atomic.atomic_write(target, os.urandom(200_000))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in disk.iterdir()) == ["model.npz"]


def test_atomic_write_on_a_read_only_tmpfs(tmpfs):
    disk = tmpfs("64k")
    target = disk / "model.npz"
    target.write_bytes(b"old model")
    make_read_only(disk)
    with pytest.raises(OSError) as info:
        atomic.atomic_write(target, b"new")
    assert info.value.errno == errno.EROFS and info.value.filename == str(target)
    assert target.read_bytes() == b"old model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text(make_text(3000))
    out = root / "m"
    ran = charrnn("train", root / "corpus.txt", "--out", out, *TINY, "--steps", 10, "--eval-every", 5)
    assert ran.returncode == 0, ran.stderr
    return out


def _copy(trained: Path, destination: Path) -> Path:
    destination.mkdir()
    for name, data in snapshot(trained).items():
        (destination / name).write_bytes(data)
    return destination


# ---------------------------------------------------------------------------------------------
# charrnn train: a full disk at the first save, and at a later save over a good model


def test_train_disk_full_at_the_first_save_injected(corpus, tmp_path):
    out = tmp_path / "m"
    ran = charrnn(
        "train",
        corpus,
        "--out",
        out,
        *TINY,
        "--steps",
        10,
        "--eval-every",
        5,
        fault={"call": "fsync", "names": ["model.npz"], "errno": errno.ENOSPC},
    )
    assert_one_line_error(
        ran, f"{out / 'model.npz'}: No space left on device", "free some space", "run the same command again"
    )
    assert "model.npz" not in os.listdir(out) and temporaries(tmp_path) == []
    again = charrnn("train", corpus, "--out", out, *TINY, "--steps", 10, "--eval-every", 5)
    assert again.returncode == 0, again.stderr  # as the message says: run it again


def test_train_disk_full_at_the_first_save_on_a_tmpfs(corpus, tmpfs):
    disk = tmpfs("8k")  # two pages: model.npz (14 kB at 32 units) cannot fit
    out = disk / "m"
    ran = charrnn("train", corpus, "--out", out, *TINY, "--steps", 10, "--eval-every", 5)
    assert_one_line_error(ran, "No space left on device", str(out), "free some space")
    assert temporaries(disk) == [] and not (out / "model.npz").exists()


def _good_model(trained: Path, out: Path) -> dict[str, bytes]:
    """A copy of a model trained 10 steps (saved at steps 5 and 10) at `out`; its files' bytes."""
    _copy(trained, out)
    files = snapshot(out)
    assert set(MODEL_FILES) <= set(files)
    return files


def _assert_intact(out: Path, before: dict[str, bytes], line: str) -> None:
    assert f"resume with: charrnn train --out {out} --resume" in line
    assert snapshot(out) == before, "the saved model, checkpoint and log are byte-for-byte as they were"
    assert temporaries(out) == []


SAVED = ["model.npz", "meta.json", "training_state.npz"]


def test_train_disk_full_at_a_later_save_injected(trained, tmp_path):
    out = tmp_path / "m"
    before = _good_model(trained, out)
    ran = charrnn(
        "train",
        "--out",
        out,
        "--resume",
        "--threads",
        "1",
        "--steps",
        20,
        fault={"call": "fsync", "names": SAVED, "errno": errno.ENOSPC},
    )
    line = assert_one_line_error(ran, "No space left on device", "free some space")
    _assert_intact(out, before, line)
    advice = line.split("resume with: ", 1)[1].split()
    assert advice[0] == "charrnn"
    resumed = charrnn(*advice[1:], "--threads", 1, "--steps", 20)  # as the message says
    assert resumed.returncode == 0 and "Done: 20 steps" in resumed.stdout, resumed.stderr


def test_train_disk_full_at_a_later_save_on_a_tmpfs(trained, tmpfs):
    disk = tmpfs("512k")
    out = disk / "m"
    before = _good_model(trained, out)
    fill(disk, leave_pages=2)  # room to rewrite the log on resuming, not for a model
    ran = charrnn("train", "--out", out, "--resume", "--threads", "1", "--steps", 20)
    line = assert_one_line_error(ran, "No space left on device", "free some space")
    _assert_intact(out, before, line)


def test_train_permission_denied_at_a_save_injected(trained, tmp_path):
    # As root, permission bits do not stop a write, so EACCES is injected where mkstemp meets it.
    out = tmp_path / "m"
    before = _good_model(trained, out)
    ran = charrnn(
        "train",
        "--out",
        out,
        "--resume",
        "--threads",
        "1",
        "--steps",
        20,
        fault={"call": "mkstemp", "names": SAVED, "errno": errno.EACCES},
    )
    line = assert_one_line_error(ran, "Permission denied", "check its permissions")
    _assert_intact(out, before, line)


# ---------------------------------------------------------------------------------------------
# charrnn train: an output folder that cannot be made or written


def test_train_out_under_a_file(corpus, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    ran = charrnn("train", corpus, "--out", tmp_path / "a-file" / "m", *TINY, "--steps", 5)
    line = assert_one_line_error(ran, str(tmp_path / "a-file"))
    assert re.search("not a (folder|directory)", line, re.IGNORECASE), line
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.parametrize(
    "code, fragment", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")]
)
def test_train_out_not_creatable_injected(corpus, tmp_path, code, fragment):
    out = tmp_path / "m"
    ran = charrnn(
        "train", corpus, "--out", out, *TINY, "--steps", 5, fault={"call": "mkdir", "names": ["m"], "errno": code}
    )
    assert_one_line_error(ran, str(out), fragment)
    assert not out.exists()


def test_train_out_on_a_read_only_tmpfs(corpus, tmpfs):
    disk = tmpfs("64k")
    make_read_only(disk)
    ran = charrnn("train", corpus, "--out", disk / "m", *TINY, "--steps", 5)
    assert_one_line_error(ran, str(disk / "m"), "Read-only file system", "writable filesystem")


# ---------------------------------------------------------------------------------------------
# Unreadable corpus and model files


def test_corpus_unreadable_injected(corpus, tmp_path):
    ran = charrnn(
        "train",
        corpus,
        "--out",
        tmp_path / "m",
        *TINY,
        "--steps",
        5,
        fault={"call": "open", "names": ["corpus.txt"], "errno": errno.EACCES},
    )
    assert_one_line_error(ran, str(corpus), "Permission denied")
    assert not (tmp_path / "m").exists()


def test_corpus_is_a_folder(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    ran = charrnn("train", folder, "--out", tmp_path / "m", *TINY, "--steps", 5)
    assert_one_line_error(ran, str(folder), "is a folder")


@pytest.mark.parametrize(
    "name, command",
    [
        ("model.npz", ["sample", "{m}", "--length", "5"]),
        ("meta.json", ["info", "{m}"]),
        ("training_state.npz", ["train", "--out", "{m}", "--resume", "--steps", "20"]),
        ("metrics.jsonl", ["plot", "{m}", "--ascii"]),
        ("metrics.jsonl", ["train", "--out", "{m}", "--resume", "--steps", "20"]),
    ],
)
@pytest.mark.parametrize("how", ["folder", "EACCES"])
def test_a_model_file_that_cannot_be_read(trained, tmp_path, name, command, how):
    model = _copy(trained, tmp_path / "m")
    fault = None
    if how == "folder":  # a folder where the file should be
        (model / name).unlink()
        (model / name).mkdir()
    else:  # unreadable (injected: root reads any file)
        fault = {"call": "open", "names": [name], "errno": errno.EACCES}
    before = snapshot(model)
    ran = charrnn(*(a.format(m=model) for a in command), fault=fault)
    assert_one_line_error(ran, name)
    assert snapshot(model) == before and temporaries(model) == []


# ---------------------------------------------------------------------------------------------
# charrnn download: a full disk while the body streams in, and while the text is written


BODY = ("".join(f"Line {n}: a plain text for a full disk.\n" for n in range(6000))).encode()  # ~250 kB


class _TextHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def text_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TextHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/book.txt"
    httpd.shutdown()
    httpd.server_close()


def _old_download(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "book.txt").write_text("the old text\n")
    (folder / "book.meta.json").write_text('{"old": true}\n')
    return snapshot(folder)


def test_download_disk_full_while_the_body_streams_in(text_url, tmp_path, monkeypatch):
    folder = tmp_path / "corpora"
    before = _old_download(folder)
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):  # the raw body's temporary fills the disk
        handle = real_fdopen(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ".download"
        return _FailingFile(handle) if name.endswith(".download") else handle

    monkeypatch.setattr(download_module.os, "fdopen", fdopen)
    source = download_module.resolve_source(text_url, {})
    with pytest.raises(DownloadError) as info:
        download_module.download(source, folder, force=True)
    message = str(info.value)
    assert "No space left on device" in message and str(folder / "book.txt") in message
    assert "free some space, then run the download again" in message
    assert snapshot(folder) == before and temporaries(folder) == []


def test_download_disk_full_while_the_text_is_written(text_url, tmp_path, monkeypatch):
    folder = tmp_path / "corpora"
    before = _old_download(folder)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(download_module.os, "fsync", fsync)
    result = CliRunner().invoke(main, ["download", "-q", "--force", "--dir", str(folder), text_url])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "No space left on device" in result.stderr and "book.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(folder) == before and temporaries(folder) == []


def test_download_on_a_full_tmpfs(text_url, tmpfs):
    disk = tmpfs("64k")
    folder = disk / "corpora"
    before = _old_download(folder)
    ran = charrnn("download", "-q", "--force", "--dir", folder, text_url)
    assert_one_line_error(ran, "No space left on device", "book.txt", "run the download again")
    assert snapshot(folder) == before and temporaries(disk) == []


def test_download_into_a_read_only_tmpfs(text_url, tmpfs):
    disk = tmpfs("64k")
    make_read_only(disk)
    ran = charrnn("download", "-q", "--dir", disk / "corpora", text_url)
    assert_one_line_error(ran, str(disk / "corpora"), "Read-only file system")


def test_download_dir_under_a_file(text_url, tmp_path):
    (tmp_path / "a-file").write_text("x")
    ran = charrnn("download", "-q", "--dir", tmp_path / "a-file" / "corpora", text_url)
    assert_one_line_error(ran, str(tmp_path / "a-file"), "not a folder")


# ---------------------------------------------------------------------------------------------
# charrnn plot: a full disk while the picture is written


def _plot_dir(folder: Path) -> Path:
    """A model directory as far as plot needs: a metrics log (no meta.json: a run killed early)."""
    folder.mkdir()
    records = [
        {"step": 10 * i, "elapsed": 1.0 * i, "train_loss": 2.0 / i, "val_bpc": 3.0 / i, "chars_per_sec": 1000.0}
        for i in range(1, 6)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "curves.png").write_bytes(b"the old picture")
    return folder


def test_plot_disk_full_injected(tmp_path):
    pytest.importorskip("matplotlib")
    model = _plot_dir(tmp_path / "m")
    before = snapshot(model)
    ran = charrnn("plot", model, fault={"call": "fsync", "names": ["curves.png"], "errno": errno.ENOSPC})
    assert_one_line_error(ran, f"{model / 'curves.png'}: No space left on device", "free some space")
    assert snapshot(model) == before and temporaries(model) == []


def test_plot_on_a_full_tmpfs(tmpfs):
    pytest.importorskip("matplotlib")
    disk = tmpfs("64k")
    model = _plot_dir(disk / "m")
    before = snapshot(disk)
    filler = fill(disk, leave_pages=1)
    before["filler"] = filler.read_bytes()
    ran = charrnn("plot", model)
    assert_one_line_error(ran, "No space left on device", "curves.png")
    assert snapshot(disk) == before and temporaries(disk) == []


def test_plot_into_a_read_only_folder_injected(tmp_path):
    pytest.importorskip("matplotlib")
    model = _plot_dir(tmp_path / "m")
    ran = charrnn("plot", model, fault={"call": "mkstemp", "names": ["curves.png"], "errno": errno.EROFS})
    assert_one_line_error(ran, str(model / "curves.png"), "Read-only file system")
    assert (model / "curves.png").read_bytes() == b"the old picture"
