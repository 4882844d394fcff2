"""The sink: an actor on the driver's node that writes trial directories into DIR/trials, reads
them back for resuming trials, and keeps each failed trial's one-line error.

Kept apart from ray_parts so the actor's process imports neither Ray Tune nor the trainer: it
starts while the first trial does, on the same cores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from charrnn.atomic import atomic_write
from charrnn.sweep.layout import META_FILE, TRIAL_FILES, is_trial_name

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class TrialSink:
    """An actor on the driver's node: writes trial directories into DIR/trials, reads them back
    for resuming trials, and keeps each failed trial's one-line error."""

    def __init__(self, trials_dir: str, corpus_path: str):
        self.trials_dir = Path(trials_dir)
        self.corpus_path = corpus_path
        self.errors: dict[str, str] = {}

    def _dir(self, name: str) -> Path:
        if not _NAME.match(name) or not is_trial_name(name):
            raise ValueError(f"bad trial name {name!r}")
        return self.trials_dir / name

    def save(self, name: str, files: dict) -> None:
        directory = self._dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        for file_name in TRIAL_FILES:
            data = files.get(file_name)
            if data is None:
                continue
            if file_name == META_FILE:
                data = self._local_corpus(data)
            atomic_write(directory / file_name, data)

    def _local_corpus(self, meta_bytes: bytes) -> bytes:
        """meta.json names the corpus by the driver's path, not the worker's temporary copy."""
        meta = json.loads(meta_bytes)
        if isinstance(meta.get("corpus"), dict):
            meta["corpus"]["path"] = self.corpus_path
        return (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def load(self, name: str) -> dict:
        directory = self._dir(name)
        return {f: (directory / f).read_bytes() for f in TRIAL_FILES if (directory / f).is_file()}

    def record_error(self, name: str, message: str) -> None:
        self.errors[name] = message

    def error(self, name: str):
        return self.errors.get(name)
