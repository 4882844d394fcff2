"""The model directory: every file written to a temporary name and renamed into place.

    model.npz            the best model by validation (float32): format 2 names its arrays as
                         charrnn.model.spec says (U.0, W.0, b.0, ..., V, b_y); format 1 (read, never
                         written) held a one-layer vanilla RNN's U, W, V, b_h, b_y
    meta.json            format version, vocabulary, sizes, config, step, best validation bpc, corpus
    training_state.npz   what resuming needs: last weights, optimizer moments, carried hidden state,
                         and a JSON record (step, data position, RNG state, ...) in one atomic file
    metrics.jsonl        one JSON object per evaluation

Nothing is ever unpickled: arrays are read with allow_pickle=False and everything else is JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn import __version__
from charrnn.atomic import atomic_write, atomic_write_all, finish_interrupted
from charrnn.errors import ModelFormatError, StorageError, describe_os_error
from charrnn.jsontypes import JSONObject
from charrnn.model.legacy import FORMAT1_NAMES, format1_meta, format1_params
from charrnn.model.npz_check import check_arrays, read_headers
from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.resources import DEFAULT_MODEL, bundled_model_dir, bundled_model_names

FORMAT = "charrnn-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.npz"
META_FILE = "meta.json"
STATE_FILE = "training_state.npz"
METRICS_FILE = "metrics.jsonl"
PAIR_JOURNAL = ".model-pair.json"  # present only while a save renames model.npz and meta.json


def finish_interrupted_save(directory: str | Path) -> None:
    """If a save of model.npz and meta.json was killed between their renames, complete it (a
    directory we may not write to is read as it is)."""
    with contextlib.suppress(OSError):
        finish_interrupted(Path(directory) / PAIR_JOURNAL)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete temporary files a killed process left half-written (never a finished file)."""
    finish_interrupted_save(directory)
    for name in (MODEL_FILE, META_FILE, STATE_FILE, METRICS_FILE, PAIR_JOURNAL):  # the journal's too:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):  # one not yet renamed means no rename began
            tmp.unlink(missing_ok=True)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)  # numbers only: nothing a reader would unpickle
    return buffer.getvalue()


def _json_bytes(obj: JSONObject) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing") from None
    except (PermissionError, IsADirectoryError) as error:
        raise StorageError(describe_os_error(error, path)) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ModelFormatError(f"{path}: not a readable .npz file ({error})") from None
    except MemoryError:
        raise ModelFormatError(f"{path}: too large to load in this machine's memory") from None


def _expected_spec(directory: Path, meta: JSONObject, vocab: Vocab, headers: dict[str, Any]) -> ModelSpec:
    """The spec model.npz must match: format 2's meta.json, or (format 1) a one-layer vanilla RNN
    whose size U's header gives; the arrays' names and shapes checked against it."""
    path = directory / MODEL_FILE
    if meta["format_version"] == 1:
        u = headers.get("U")
        if u is None or len(u.shape) != 2:
            raise ModelFormatError(f"{path}: U is missing or not a (vocab, hidden) matrix")
        try:
            spec = ModelSpec("rnn", 1, u.shape[1], u.shape[0])
        except ValueError as error:
            raise ModelFormatError(f"{path}: {error}") from None
        shapes = {old: spec.array_shapes()[new] for old, new in FORMAT1_NAMES.items()}
    else:
        spec = model_spec(meta, directory / META_FILE)
        if spec.vocab_size != len(vocab):
            raise ModelFormatError(
                f"{directory / META_FILE}: vocab_size {spec.vocab_size} but its vocabulary has {len(vocab)} characters"
            )
        shapes = spec.array_shapes()
    check_arrays(path, headers, shapes, spec.describe())
    return spec


@dataclass(frozen=True)
class Model:
    vocab: Vocab
    params: Params
    meta: JSONObject

    @property
    def spec(self) -> ModelSpec:
        return self.params.spec

    @property
    def hidden(self) -> int:
        return self.params.hidden


def save_model(directory: str | Path, params: Params, vocab: Vocab, meta: JSONObject) -> None:
    """Write model.npz then meta.json, in format 2 (the vocabulary, the model's shape and the
    format fields are filled in here)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in params.arrays().items()}
    full_meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charrnn_version": __version__,
        **params.spec.to_meta(),
        **meta,
        "vocab": list(vocab.chars),
    }
    # Both written before either is renamed into place: a full disk never pairs a new model.npz
    # with the old meta.json.
    atomic_write_all(
        [(directory / MODEL_FILE, _npz_bytes(arrays)), (directory / META_FILE, _json_bytes(full_meta))],
        journal=directory / PAIR_JOURNAL,
    )


def write_meta(directory: str | Path, meta: JSONObject) -> None:
    """Replace a model's meta.json (whole or not at all), its model.npz untouched."""
    atomic_write(Path(directory) / META_FILE, _json_bytes(meta))


def read_meta(directory: str | Path) -> JSONObject:
    directory = Path(directory)
    path = directory / META_FILE
    if not directory.is_dir():
        raise ModelFormatError(f"{directory}: no such model directory")
    if (directory / PAIR_JOURNAL).exists():
        finish_interrupted_save(directory)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{directory}: not a model directory (no {META_FILE})") from None
    except (PermissionError, IsADirectoryError) as error:
        raise StorageError(describe_os_error(error, path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFormatError(f"{path}: corrupt ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a charrnn model")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ModelFormatError(
            f"{path}: format version {meta.get('format_version')} is not supported "
            f"by charrnn {__version__} (it reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    return meta


def model_spec(meta: JSONObject, where: str | Path = META_FILE) -> ModelSpec:
    """The shape of the model a meta.json describes (format 1: a one-layer vanilla RNN)."""
    return ModelSpec.from_meta(format1_meta(meta), str(where))


def load_model(directory: str | Path) -> Model:
    """The model a directory holds; ModelFormatError (one line) if it is missing or corrupt."""
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        vocab = Vocab(tuple(meta["vocab"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"{directory / META_FILE}: bad vocabulary ({error})") from None
    # The listing and headers first: names, dtypes, shapes and sizes, before any data is read.
    spec = _expected_spec(directory, meta, vocab, read_headers(directory / MODEL_FILE))
    arrays = _load_npz(directory / MODEL_FILE)
    try:
        if meta["format_version"] == 1:
            params = format1_params(arrays, dtype=np.float32)
        else:
            params = Params.from_arrays(spec, arrays, dtype=np.float32)
    except ValueError as error:
        raise ModelFormatError(f"{directory / MODEL_FILE}: {error}") from None
    except MemoryError:
        raise ModelFormatError(f"{directory / MODEL_FILE}: too large to load in this machine's memory") from None
    if params.vocab_size != len(vocab):
        raise ModelFormatError(
            f"{directory}: model.npz has {params.vocab_size} characters but meta.json's vocabulary has {len(vocab)}"
        )
    if not np.isfinite(params.flat).all():
        raise ModelFormatError(f"{directory / MODEL_FILE}: weights are not finite")
    return Model(vocab, params, meta)


def save_training_state(directory: str | Path, arrays: dict[str, np.ndarray], info: JSONObject) -> None:
    """Arrays and a JSON record in one file, so a kill can never pair one save's arrays with
    another's record."""
    payload = dict(arrays)
    payload["info_json"] = np.frombuffer(_json_bytes(info), dtype=np.uint8)
    atomic_write(Path(directory) / STATE_FILE, _npz_bytes(payload))


def load_training_state(directory: str | Path) -> tuple[dict[str, np.ndarray], JSONObject]:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise ModelFormatError(f"{directory}: no training state to resume from ({STATE_FILE} missing)")
    read_headers(path, byte_arrays=("info_json",))  # refuses objects, other types and zip bombs unread
    arrays = _load_npz(path)
    try:
        info = json.loads(arrays.pop("info_json").tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFormatError(f"{path}: corrupt training record ({error})") from None
    _check_training_state(path, arrays, info)
    return arrays, info


# What the training record holds, and the type of each entry (None: any JSON value).
_RECORD: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "elapsed": (int, float),
    "optimizer_steps": int,
    "rng_state": dict,
    "config": dict,
    "corpus": dict,
    "vocab": list,
    "budget": dict,
}


def _check_training_state(path: Path, arrays: dict[str, np.ndarray], info: object) -> None:
    """ModelFormatError (one line) for a record or arrays that no run could resume from. Shapes
    are checked against the model when the run is rebuilt."""
    if not isinstance(info, dict):
        raise ModelFormatError(f"{path}: corrupt training record (not a JSON object)")
    for key, kind in _RECORD.items():
        if key not in info:
            raise ModelFormatError(f"{path}: corrupt training record (no {key!r})")
        if isinstance(info[key], bool) or not isinstance(info[key], kind):
            raise ModelFormatError(f"{path}: corrupt training record ({key!r} is {type(info[key]).__name__})")
    corpus = info["corpus"]
    if not all(isinstance(corpus.get(k), str) for k in ("path", "sha256")):
        raise ModelFormatError(f"{path}: corrupt training record (corpus path or sha256 missing)")
    if not set(info["budget"]) <= {"steps", "epochs", "minutes"}:
        raise ModelFormatError(f"{path}: corrupt training record (budget)")
    missing = [n for n in ("params", "opt_v") if n not in arrays]
    if "state" not in arrays and "hidden" not in arrays:
        missing.append("state")
    if missing:
        raise ModelFormatError(f"{path}: corrupt training state (no {', '.join(missing)} array)")


def read_metrics(directory: str | Path) -> list[JSONObject]:
    """The metrics log; a line cut short by a kill is skipped."""
    path = Path(directory) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_metrics(directory: str | Path, record: JSONObject) -> None:
    """Add a line to the log. A line left cut short by a full disk or a kill is ended first, so
    that it costs only itself (read_metrics skips it), not the record written after it."""
    path = Path(directory) / METRICS_FILE
    try:
        with open(path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            ends_cleanly = f.tell() == 0
            if not ends_cleanly:
                f.seek(-1, os.SEEK_END)
                ends_cleanly = f.read(1) == b"\n"
            f.write((("" if ends_cleanly else "\n") + json.dumps(record) + "\n").encode("utf-8"))
    except OSError as error:
        if error.filename is None:  # a failed write() names no file
            error.filename = str(path)
        raise


def truncate_metrics(directory: str | Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the save a resumed run starts from)."""
    kept = [r for r in read_metrics(directory) if r.get("step", 0) <= last_step]
    atomic_write(Path(directory) / METRICS_FILE, b"".join((json.dumps(r) + "\n").encode() for r in kept))


# Finding a model by name.


def resolve_model_dir(model: str | os.PathLike[str] | None) -> Path:
    """A model directory, a bundled model's name, or None (the default bundled model)."""
    names = bundled_model_names()
    if model is None:
        directory = bundled_model_dir(DEFAULT_MODEL)
        if not (directory / MODEL_FILE).is_file():
            raise ModelFormatError(
                f"this installation of charrnn has no bundled model "
                f"({directory} holds no {MODEL_FILE}); give a model "
                f"directory made by `charrnn train`"
            )
        return directory
    path = Path(model)
    if path.exists():
        return path
    if str(model) in names:
        return bundled_model_dir(str(model))
    if os.sep not in str(model) and names:
        raise ModelFormatError(f"{model}: no such model directory, nor a bundled model (bundled: {', '.join(names)})")
    return path


def load(model: Model | str | os.PathLike[str] | None = None) -> Model:
    """A Model as is, the model in a directory, a bundled model by name, or (None) the default
    model that ships with charrnn."""
    if isinstance(model, Model):
        return model
    return load_model(resolve_model_dir(model))
