"""A run directory: everything needed to resume a geo-distributed run after a crash.

``geodml train --run-dir DIR`` writes

* ``run.json``: the run's settings (the command's options), written once;
* ``journal/<site>.journal``: every call to every site, streamed and checksummed
  (:mod:`geodml.federation.journal`);
* ``checkpoint.json``: progress (iteration, objective, rounds, the meters, how many
  journal records each site has), rewritten atomically at most every
  ``checkpoint_seconds`` and at the end;
* ``audit.jsonl``, ``record.jsonl`` and, when the run ends, the model and ``done``
  in ``checkpoint.json``.

The JSON files are written to a temporary file, ``fsync``-ed, then renamed over the
old one (the rename is atomic), and hold a BLAKE2b checksum of their content: a torn
or edited file is a :class:`RunDirError` naming it, never a silent fresh start.

``geodml train --resume DIR`` reads the settings, checks the checkpoint against the
journal (a journal shorter than the checkpoint says is an error), reruns the method
with its calls answered from the journal (the optimizer state is rebuilt exactly,
since the method is deterministic given the sites' replies), and continues live.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from geodml.errors import GeodmlError
from geodml.federation.journal import Journal

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.json"
FORMAT = "geodml-run"


class RunDirError(GeodmlError):
    """A run directory that cannot be used; names the file and what is wrong."""


def _digest(data: object) -> str:
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=16).hexdigest()


def write_checked_json(path: Path, data: dict) -> None:
    """Write ``{"format", "checksum", "data"}`` atomically: temp file, fsync, rename."""
    body = {"format": FORMAT, "checksum": _digest(data), "data": data}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def read_checked_json(path: Path) -> dict:
    """The ``data`` of a file written by :func:`write_checked_json`, verified."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: unreadable, the file is corrupt ({e})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or "data" not in body:
        raise RunDirError(f"{path}: not a geodml run file")
    if body.get("checksum") != _digest(body["data"]):
        raise RunDirError(f"{path}: checksum mismatch, the file is corrupt or was edited")
    return body["data"]


class RunDir:
    """A run directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, checkpoint_seconds: float = 1.0):
        self.path = Path(path)
        self.checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint = 0.0

    @property
    def audit_path(self) -> Path:
        return self.path / "audit.jsonl"

    @property
    def record_path(self) -> Path:
        return self.path / "record.jsonl"

    @property
    def journal_dir(self) -> Path:
        return self.path / "journal"

    @classmethod
    def create(cls, path: str | os.PathLike, settings: dict) -> RunDir:
        """A new run directory; refuses one that already holds a run."""
        run = cls(path)
        if (run.path / RUN_FILE).exists():
            raise RunDirError(f"{run.path} already holds a run: resume it with "
                              f"--resume {run.path}, or choose another --run-dir")
        run.path.mkdir(parents=True, exist_ok=True)
        write_checked_json(run.path / RUN_FILE, {"settings": settings, "created": time.time()})
        return run

    def settings(self) -> dict:
        return read_checked_json(self.path / RUN_FILE)["settings"]

    def checkpoint(self) -> dict | None:
        """The last checkpoint, verified; None if the run stopped before its first."""
        path = self.path / CHECKPOINT_FILE
        return read_checked_json(path) if path.exists() else None

    def open_journal(self, resume: bool) -> Journal:
        """The run's journal; on resume, checked against the last checkpoint."""
        journal = Journal(self.journal_dir, resume=resume)
        checkpoint = self.checkpoint() if resume else None
        if checkpoint is not None:
            for site, records in checkpoint["journal"].items():
                have = journal.site(site).records
                if have < records:
                    journal.close()
                    raise RunDirError(
                        f"{self.journal_dir / (site + '.journal')}: {have} calls, but "
                        f"{CHECKPOINT_FILE} says {records} were made: the journal was "
                        "truncated or replaced")
        return journal

    def save_checkpoint(self, progress: dict, force: bool = False) -> bool:
        """Write ``checkpoint.json`` if ``checkpoint_seconds`` have passed (or forced)."""
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.checkpoint_seconds:
            return False
        write_checked_json(self.path / CHECKPOINT_FILE, {**progress, "time": time.time()})
        self._last_checkpoint = now
        return True
