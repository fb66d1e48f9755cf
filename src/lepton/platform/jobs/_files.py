"""One job's folder: its worker (:mod:`lepton.platform.jobs._worker`) keeps everything there,
the scheduler (:mod:`lepton.platform.jobs._scheduler`) adds notes and reads the outcome::

    home/jobs/<id>/
      log.txt          stdout + stderr of every attempt, and the scheduler's notes
      result.json      the outcome, written atomically as the worker's last act
      checkpoints/     one per epoch: a retry resumes from the newest
      output/          model.safetensors, manifest.json, dataset.json (train jobs)

Example:
    >>> folder = JobFolder(home / "jobs", 7)  # doctest: +SKIP
    >>> folder.note("attempt 1 of 3 starting")  # doctest: +SKIP
    >>> folder.read_log(0, 65536)  # (text, next offset, size) or None  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lepton._fs import make_dirs, open_private

__all__ = ["DatasetSummary", "JobFolder"]

logger = logging.getLogger("lepton.platform.jobs")


class DatasetSummary:
    """The parts of a training dataset the registry records, read from ``dataset.json``."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name = str(raw["name"])
        self.rows = int(raw["rows"])
        self._fingerprint = str(raw["fingerprint"])
        self.preprocessing = list(raw.get("preprocessing") or [])
        self.input_shape = tuple(int(n) for n in raw["input_shape"])
        self.task = raw.get("task")
        self.classes = raw.get("classes")

    def __len__(self) -> int:
        return self.rows

    def fingerprint(self) -> str:
        return self._fingerprint


class JobFolder:
    """The folder of job ``job_id`` under ``jobs_dir`` (it need not exist yet)."""

    def __init__(self, jobs_dir: Path, job_id: int) -> None:
        self.job_id = int(job_id)
        self.path = jobs_dir / str(self.job_id)

    def new_attempt(self) -> None:
        """Make the folder, and remove a former attempt's outcome."""
        make_dirs(self.path)
        (self.path / "result.json").unlink(missing_ok=True)

    def result(self) -> dict[str, Any] | None:
        """The worker's ``result.json``; ``None`` when it is missing or unreadable."""
        try:
            raw = json.loads((self.path / "result.json").read_text())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def note(self, text: str) -> None:
        """Append a scheduler line to the job's log (what happened between attempts)."""
        if not text:
            return
        path = self.path / "log.txt"
        try:
            with open_private(path, "a", encoding="utf-8") as log:
                log.write(f"[lepton {time.strftime('%H:%M:%S')}] {text}\n")
        except OSError as exc:
            logger.warning("cannot write to the log of job %s: %s", self.job_id, exc)

    def read_log(self, offset: int, limit: int) -> tuple[str, int, int] | None:
        """Up to ``limit`` bytes of the log from byte ``offset``, never a split character.

        Returns:
            ``(text, next_offset, size)``, or ``None`` when there is no log yet.

        Raises:
            OSError: The log cannot be read (it is not a plain file, say).
        """
        try:
            fd = os.open(self.path / "log.txt", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, limit, offset) if offset < size else b""
        finally:
            os.close(fd)
        cut = _utf8_complete(data) or len(data)  # leave a split character for the next call
        end = min(offset, size) + cut
        return data[:cut].decode("utf-8", errors="replace"), end, size

    def output(self) -> tuple[dict[str, Any], DatasetSummary, dict[str, Any]]:
        """What a succeeded train job saved: its manifest, its dataset, its weights.

        Raises:
            OSError, ValueError, KeyError: The output is missing or damaged.
        """
        from safetensors.torch import load_file

        out = self.path / "output"
        manifest = json.loads((out / "manifest.json").read_text())
        dataset = DatasetSummary(json.loads((out / "dataset.json").read_text()))
        weights = load_file(str(out / "model.safetensors"))
        return manifest, dataset, weights


def _utf8_complete(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character starts here
            size = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if size > back else len(data)
    return len(data)
