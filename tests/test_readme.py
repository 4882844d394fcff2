"""Every shell command of README.md, run as a user would, so the README cannot rot.

Each line of each ```sh block runs with `bash -c` in one temporary directory, in order. `charrnn`
on the PATH is a shim (this file, run as a script) that makes the run tiny and then execs
`python -m charrnn` with the rewritten arguments:
- `charrnn train`: `--minutes M` becomes `--steps 3M`, a new run gets a tiny network
  (--hidden 16 --batch-size 4 --seq-length 16 --eval-every 10), `--sample-every` becomes 10;
- `charrnn sample`: `--length` at most 200;
- `charrnn serve`: on a free port; the shim asks it for its models, then stops it with Ctrl-C;
- `charrnn download`: the catalog (CHARRNN_CATALOG) and the Gutenberg mirror point at a local
  HTTP server that serves a small made-up play; a URL to anywhere else is refused. Proxies point
  at a closed port, so nothing reaches the internet.
A README command the shim cannot make tiny (a training run with no step budget, a download from
the internet) fails its test. The only skips: `charrnn sample` on the bundled model while
models/shakespeare holds none, and the picture from `charrnn plot` where matplotlib is missing
(after checking that the command says how to install it).

The two install lines at the top (venv, pip install) run whole, in a fresh virtualenv with a
wheel install of a copy of the checkout, in the slow test; the default run covers their
`charrnn` commands.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LOG_ENV = "CHARRNN_README_LOG"  # where the shim records what it ran (JSON lines)
STEP_ENV = "CHARRNN_README_STEP"  # which README step is running, for that record
SKIP_EXIT = 77  # the shim's exit status for "needs the bundled model"
SKIP_MARK = "README test skip:"
REFUSED_EXIT = 3  # the shim's exit status for a command it cannot make tiny
STDIN = "ROMEO:\n\n"  # what --interactive reads: one prime, then an empty line (quit)

TINY_NETWORK = {"--hidden": "16", "--batch-size": "4", "--seq-length": "16", "--eval-every": "10"}
STEPS_PER_MINUTE = 3
MAX_SAMPLE_LENGTH = 200
STEP_TIMEOUT = 180  # seconds; a cold Numba cache compiles the kernels in the first training step


# ---------------------------------------------------------------------------------------------
# The shim: argument rewriting (runs in the `charrnn` stand-in process, so keep imports light)


class CannotRunTiny(Exception):
    """A README command this test does not know how to run on tiny settings."""


def _value(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def _without(args: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _set(args: list[str], name: str, value: str) -> list[str]:
    return _without(args, name) + [name, value]


def tiny_arguments(args: list[str]) -> list[str]:
    """The arguments of a README `charrnn` command, rewritten to run in seconds."""
    if not args or args[0].startswith("-"):
        return list(args)
    command, rest = args[0], list(args[1:])
    if command == "train" and not {"-h", "--help"} & set(rest):
        minutes = _value(rest, "--minutes")
        if minutes is not None:
            rest = _without(rest, "--minutes")
            if _value(rest, "--steps") is None:
                rest += ["--steps", str(max(1, round(float(minutes) * STEPS_PER_MINUTE)))]
        resume = "--resume" in rest
        if not resume:
            for name, value in TINY_NETWORK.items():
                rest = _set(rest, name, value)
        if _value(rest, "--sample-every") is not None:
            rest = _set(rest, "--sample-every", "10")
        if _value(rest, "--epochs") is not None or (_value(rest, "--steps") is None and not resume):
            raise CannotRunTiny(
                "a training run needs a --minutes or --steps budget here "
                "(teach tests/test_readme.py how to make this budget tiny)"
            )
    elif command == "sample":
        length = _value(rest, "--length", "-n")
        if length is not None and int(length) > MAX_SAMPLE_LENGTH:
            rest = _set(_without(rest, "-n"), "--length", str(MAX_SAMPLE_LENGTH))
    elif command == "serve" and not {"-h", "--help"} & set(rest):
        rest = _set(rest, "--port", "0")  # any free port; the shim stops it (serve_briefly)
    elif command == "download":
        for arg in rest:
            if "://" in arg and not arg.startswith(("http://127.0.0.1:", "http://localhost:")):
                raise CannotRunTiny(
                    f"{arg} is on the internet, which tests never reach (use a catalog name, or gutenberg:ID)"
                )
    return [command, *rest]


def positional_arguments(args: list[str]) -> dict:
    """The positional arguments of a `charrnn` command line, by name, as click parses them."""
    import click

    from charrnn.cli import main

    command = main.get_command(None, args[0])
    # The group's settings too: click keeps the help option a command first builds (-h with them).
    context = command.make_context(args[0], list(args[1:]), resilient_parsing=True, **main.context_settings)
    return {p.name: context.params.get(p.name) for p in command.params if isinstance(p, click.Argument)}


def samples_the_bundled_model(args: list[str]) -> bool:
    """`charrnn sample` without a MODEL_DIR."""
    return bool(args) and args[0] == "sample" and not any(positional_arguments(args).values())


def holds_a_model(directory: Path) -> bool:
    return (directory / "meta.json").is_file() and (directory / "model.npz").is_file()


def _needs_missing_bundled_model(args: list[str]) -> bool:
    if not samples_the_bundled_model(args):
        return False
    from charrnn.resources import bundled_model_dir

    return not holds_a_model(bundled_model_dir())


def shim_main(args: list[str]) -> None:
    record = {"step": os.environ.get(STEP_ENV), "argv": args, "complete": os.environ.get("_CHARRNN_COMPLETE")}
    try:
        record["run"] = tiny_arguments(args)
    except CannotRunTiny as error:
        record["refused"] = str(error)
    if "run" in record and _needs_missing_bundled_model(record["run"]):
        record["skipped"] = "bundled model missing"
    with open(os.environ[LOG_ENV], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    shown = " ".join(["charrnn", *args])
    if "refused" in record:
        print(f"README test cannot run `{shown}`: {record['refused']}", file=sys.stderr)
        sys.exit(REFUSED_EXIT)
    if "skipped" in record:
        print(f"{SKIP_MARK} `{shown}` needs the bundled model, and models/shakespeare holds none yet", file=sys.stderr)
        sys.exit(SKIP_EXIT)
    if record["run"][:1] == ["serve"] and "--port" in record["run"]:
        sys.exit(serve_briefly(record["run"]))
    os.execv(sys.executable, [sys.executable, "-m", "charrnn", *record["run"]])


def serve_briefly(args: list[str]) -> int:
    """`charrnn serve`: start it, print what GET /api/models answers, stop it with Ctrl-C."""
    import http.client
    import signal
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    port = None
    for line in process.stderr:  # ends when the server prints its address, or dies
        sys.stderr.write(line)
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            port = int(found.group(1))
            break
    if port is not None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/api/models")
        print(connection.getresponse().read().decode())
        connection.close()
        process.send_signal(signal.SIGINT)
    sys.stderr.write(process.stderr.read())
    return process.wait(60)


if __name__ == "__main__":
    shim_main(sys.argv[1:])
    raise SystemExit(0)


# ---------------------------------------------------------------------------------------------
# The README's commands

import pytest  # noqa: E402  (the shim above does without it)


@dataclass(frozen=True)
class ReadmeLine:
    number: int  # 1-based line of README.md where the command starts
    text: str  # the command, continuation lines joined


def readme_lines(text: str) -> list[ReadmeLine]:
    """The commands in the ```sh blocks: one per line (a trailing backslash continues it);
    blank lines and whole-line comments are not commands."""
    found: list[ReadmeLine] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not in_block:
            in_block = re.fullmatch(r"```(sh|bash|shell)", stripped) is not None
            continue
        if stripped.startswith("```"):
            assert not pending, f"README.md:{start}: a command ends with a backslash"
            in_block = False
            continue
        if not pending:
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        found.append(ReadmeLine(start, pending + stripped))
        pending = ""
    assert not in_block, "README.md: a ```sh block is not closed"
    return found


def code_of(text: str) -> str:
    """A shell line without its trailing # comment."""
    return re.sub(r"(^|\s)#.*$", "", text)


def is_install_line(line: ReadmeLine) -> bool:
    return "pip install" in code_of(line.text)


def segments(text: str) -> list[str]:
    return [part.strip() for part in text.split("&&")]


def uses_charrnn(text: str) -> bool:
    """`charrnn` as a command word, outside a # comment."""
    return re.search(r"(^|[\s;&|(`])charrnn(\s|$|\))", code_of(text)) is not None


LINES = readme_lines(README.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Step:
    id: str
    line: ReadmeLine
    command: str  # what runs with bash -c


def fast_steps() -> list[Step]:
    """Every README command, in order; an install line contributes only its `charrnn` parts
    (the slow test runs it whole)."""
    steps = []
    for line in LINES:
        parts = [p for p in segments(line.text) if uses_charrnn(p)] if is_install_line(line) else [line.text]
        for part in parts:
            shown = re.sub(r"\s+#.*$", "", part)
            steps.append(Step(f"README:{line.number}: {shown}", line, part))
    return steps


STEPS = fast_steps()


# ---------------------------------------------------------------------------------------------
# What the local server hands out


def made_up_play(n_speeches: int = 300) -> str:
    """A small play with the README's speakers, plus every printable ASCII character once, so
    any prime the README types is in the vocabulary."""
    speakers = ["ROMEO", "JULIET", "NURSE", "MERCUTIO", "FRIAR LAURENCE", "KING HENRY"]
    words = [
        "the",
        "king",
        "shall",
        "speak",
        "of",
        "love",
        "and",
        "war",
        "to",
        "thee",
        "my",
        "lord",
        "what",
        "light",
        "through",
        "yonder",
        "window",
        "breaks",
        "sweet",
        "night",
    ]
    lines = ["".join(c for c in string.printable if c not in "\t\r\x0b\x0c\n"), ""]
    for n in range(n_speeches):
        said = " ".join(words[(n * 7 + k * 3) % len(words)] for k in range(5 + n % 7))
        lines += [f"{speakers[n % len(speakers)]}:", said.capitalize() + ("?" if n % 5 == 0 else "."), ""]
    return "\n".join(lines)


PLAY = made_up_play().encode("utf-8")


def gutenberg_book(book_id: int) -> bytes:
    return (
        f"The Project Gutenberg eBook of Book {book_id}\r\n\r\nTitle: Book {book_id}\r\n\r\n"
        f"*** START OF THE PROJECT GUTENBERG EBOOK BOOK {book_id} ***\r\n\r\n"
        + made_up_play().replace("\n", "\r\n")
        + f"\r\n*** END OF THE PROJECT GUTENBERG EBOOK BOOK {book_id} ***\r\n"
        "\r\nThe Full Project Gutenberg License\r\n"
    ).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        match = re.fullmatch(r"/cache/epub/(\d+)/pg\1\.txt", self.path)
        if self.path.startswith("/corpora/"):
            body = PLAY
        elif match:
            body = gutenberg_book(int(match.group(1)))
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def local_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def local_catalog(base_url: str, path: Path) -> Path:
    """The shipped catalog with every URL entry served locally (its pins those of the play);
    Gutenberg entries go to the mirror, which is local too."""
    import hashlib

    from charrnn.resources import catalog_path

    catalog = json.loads(catalog_path().read_text(encoding="utf-8"))
    for entry in catalog["corpora"]:
        if "url" in entry:
            entry["url"] = f"{base_url}/corpora/{entry['name']}.txt"
            entry["bytes"] = len(PLAY)
            entry["sha256"] = hashlib.sha256(PLAY).hexdigest()
    path.write_text(json.dumps(catalog, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Running the steps


def package_parent() -> Path:
    import charrnn

    return Path(charrnn.__file__).resolve().parent.parent


def write_shim(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "charrnn"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    shim.chmod(0o755)


@dataclass
class Ran:
    step: Step
    returncode: int
    stdout: str
    stderr: str
    calls: list  # the shim's records for this step

    def report(self) -> str:
        runs = "\n".join("  charrnn " + " ".join(c.get("run", c["argv"])) for c in self.calls)
        return (
            f"`{self.step.command}` exited {self.returncode}\nran:\n{runs or '  (no charrnn)'}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


@dataclass
class Walkthrough:
    work: Path  # the working directory the steps shared
    ran: dict[str, Ran]  # by step id


@pytest.fixture(scope="module")
def walkthrough(local_server, tmp_path_factory) -> Walkthrough:
    """Runs every step in order in one working directory."""
    home = tmp_path_factory.mktemp("readme")
    work = home / "work"
    work.mkdir()
    write_shim(home / "bin")
    log = home / "calls.jsonl"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHARRNN_", "_CHARRNN_"))
        and key.lower() not in ("http_proxy", "https_proxy", "no_proxy")
    }
    closed_port = "http://127.0.0.1:9"  # nothing listens there: a request to the internet fails at once
    env.update(
        {
            "PATH": f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(package_parent()),
            "CHARRNN_CATALOG": str(local_catalog(local_server, home / "catalog.json")),
            "CHARRNN_GUTENBERG_MIRROR": local_server,
            "http_proxy": closed_port,
            "https_proxy": closed_port,
            "HTTP_PROXY": closed_port,
            "HTTPS_PROXY": closed_port,
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            LOG_ENV: str(log),
        }
    )
    results = {}
    for step in STEPS:
        before = len(log.read_text().splitlines()) if log.exists() else 0
        process = subprocess.run(
            ["bash", "-c", step.command],
            cwd=work,
            env={**env, STEP_ENV: step.id},
            input=STDIN,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()[before:]] if log.exists() else []
        results[step.id] = Ran(step, process.returncode, process.stdout, process.stderr, calls)
    return Walkthrough(work, results)


def _matplotlib_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is None


@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_readme_command_runs(walkthrough, step):
    ran = walkthrough.ran[step.id]
    if ran.returncode == SKIP_EXIT and SKIP_MARK in ran.stderr:
        pytest.skip(f"{step.command}: needs the bundled model; models/shakespeare holds none yet")
    picture = [c for c in ran.calls if (c.get("run") or [""])[0] == "plot" and "--ascii" not in c["run"]]
    if ran.returncode != 0 and picture and _matplotlib_missing():
        assert 'pip install "charrnn[plot]"' in ran.stderr, ran.report()
        pytest.skip(f"{step.command}: matplotlib is not installed here; checked that it says how to install it")
    assert ran.returncode == 0, ran.report()
    assert "Traceback" not in ran.stderr, ran.report()
    if uses_charrnn(step.command):
        assert ran.calls, f"`{step.command}` never ran charrnn\n" + ran.report()


def test_readme_commands_do_what_the_readme_says(walkthrough):
    """What each kind of command promises, checked on what the walk-through left behind."""
    from charrnn.model import checkpoint

    work = walkthrough.work
    checked = set()
    for ran in walkthrough.ran.values():
        # One charrnn command in the step, so its stdout is the command's own.
        if ran.returncode != 0 or len(ran.calls) != 1 or not ran.calls[0].get("run"):
            continue
        args = ran.calls[0]["run"]
        command = args[0]
        if command == "download":  # stdout: only the paths of the texts written
            paths = ran.stdout.split()
            assert paths and all((work / p).is_file() for p in paths), ran.report()
        elif command == "train":
            text_file = positional_arguments(args)["text_file"]
            out = _value(args, "--out") or f"models/{Path(text_file).stem}"
            assert checkpoint.load_model(work / out) and "Done:" in ran.stdout, ran.report()
        elif command == "info" and "--json" in args:
            assert json.loads(ran.stdout)["format"] == "charrnn-model", ran.report()
        elif command == "plot" and "--ascii" not in args:
            assert Path(ran.stdout.strip()).suffix == ".png", ran.report()
            assert (work / ran.stdout.strip()).is_file(), ran.report()
        elif command == "sample":  # stdout: the prime (from --prime, or typed at --interactive's prompt), then more
            prime = _value(args, "--prime")
            if prime is None and {"--interactive", "-i"} & set(args):
                prime = STDIN.splitlines()[0]
            assert prime, f"teach this test what `{' '.join(args)}` prints\n" + ran.report()
            if "--no-prime-echo" in args:
                assert ran.stdout.strip(), ran.report()
            else:
                assert ran.stdout.startswith(prime) and len(ran.stdout) > len(prime), ran.report()
            checked.add("interactive" if prime == STDIN.splitlines()[0] and "--prime" not in args else command)
        else:
            continue
        checked.add(command)
    expected = {"download", "train", "sample", "interactive", "info"}
    if not _matplotlib_missing():
        expected.add("plot")
    assert expected <= checked, f"no README command checked for {expected - checked}"


def test_the_readme_walks_through_every_command():
    from charrnn.cli import main

    used = {m.group(1) for line in LINES for m in re.finditer(r"\bcharrnn (\w+)", line.text)}
    commands = set(main.list_commands(None))
    assert commands <= used, f"commands missing from README.md: {commands - used}"


def test_every_readme_line_is_run_by_some_test():
    """A line is either a fast step (whole) or an install line (the slow test); no third kind."""
    whole = {s.line.number for s in STEPS if s.command == s.line.text}
    installs = {line.number for line in LINES if is_install_line(line)}
    assert {line.number for line in LINES} == whole | installs
    assert len(LINES) >= 10 and len(installs) == 2


def test_the_shim_makes_runs_tiny_and_refuses_what_it_cannot():
    assert tiny_arguments(["train", "x.txt", "--minutes", "10", "--sample-every", "1000"]) == [
        "train",
        "x.txt",
        "--steps",
        "30",
        "--hidden",
        "16",
        "--batch-size",
        "4",
        "--seq-length",
        "16",
        "--eval-every",
        "10",
        "--sample-every",
        "10",
    ]
    assert tiny_arguments(["train", "--out", "m", "--resume", "--minutes=15"]) == [
        "train",
        "--out",
        "m",
        "--resume",
        "--steps",
        "45",
    ]
    assert tiny_arguments(["sample", "m", "-n", "1000"]) == ["sample", "m", "--length", "200"]
    for refused in (["train", "x.txt"], ["train", "x.txt", "--epochs", "2"], ["download", "https://example.org/a.txt"]):
        with pytest.raises(CannotRunTiny):
            tiny_arguments(refused)
    assert tiny_arguments(["download", "gutenberg:1342"]) == ["download", "gutenberg:1342"]


def test_readme_parsing_joins_continuations_and_drops_comments():
    text = "x\n```sh\n# a comment\ncharrnn a \\\n  --b 1\n\ncharrnn c  # note\n```\n```python\nnot me\n```\n"
    assert readme_lines(text) == [ReadmeLine(4, "charrnn a --b 1"), ReadmeLine(7, "charrnn c  # note")]
    assert uses_charrnn('eval "$(_CHARRNN_COMPLETE=bash_source charrnn)"')
    assert not uses_charrnn("pip install .  # then charrnn works")


# ---------------------------------------------------------------------------------------------
# The install lines, whole, in a fresh virtualenv (slow: pip installs numpy, numba, scipy)


def _checkout_copy(destination: Path) -> Path:
    def ignore(folder, names):
        folder = Path(folder)
        dropped = {
            n
            for n in names
            if n in (".git", ".venv", ".ci-venv", "build", "dist", "__pycache__", ".pytest_cache")
            or n.endswith(".egg-info")
        }
        if folder == ROOT / "corpora":
            dropped |= set(names) - {"catalog.json"}
        if folder == ROOT / "models":  # the bundled models (pyproject's package data), not local runs
            dropped |= set(names) - {"shakespeare", "shakespeare-lstm"}
        return dropped

    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


@pytest.mark.slow
def test_install_lines_in_a_fresh_virtualenv(tmp_path):
    copy = _checkout_copy(tmp_path / "charrnn")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "NUMBA_CACHE_DIR") and not key.startswith("CHARRNN_")
    }
    has_bundled_model = holds_a_model(copy / "models" / "shakespeare")
    left_out = []
    for line in (line for line in LINES if is_install_line(line)):
        parts = segments(line.text)
        if not has_bundled_model:
            needs_model = [
                p
                for p in parts
                if shlex.split(p, comments=True)[:1] == ["charrnn"]
                and samples_the_bundled_model(shlex.split(p, comments=True)[1:])
            ]
            left_out += needs_model
            parts = [p for p in parts if p not in needs_model]
        process = subprocess.run(
            ["bash", "-c", " && ".join(parts)],
            cwd=copy,
            env=env,
            input=STDIN,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert process.returncode == 0, (
            f"README:{line.number} exited {process.returncode}\n{process.stdout[-5000:]}\n{process.stderr[-5000:]}"
        )
    # A wheel install: the package and its data live in the virtualenv, not in the copy.
    where = subprocess.run(
        [
            str(copy / ".venv" / "bin" / "python"),
            "-c",
            "import charrnn, charrnn.resources as r; print(charrnn.__file__); print(r.catalog_path())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all("site-packages" in path for path in where) and Path(where[1]).is_file()
    if left_out:
        pytest.skip(f"ran the install lines; left out {left_out}: models/shakespeare holds no bundled model yet")
