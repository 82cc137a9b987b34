"""Append results to a JSONL file as each finishes, and find what an earlier run already did."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from genprm.errors import InputError


class ResultWriter:
    """Appends one JSON line per finished record and flushes it to disk at once.

    A run killed mid-write can leave a partial last line; opening the file again cuts it off, so
    only whole records count as done. Records already written are never rewritten.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = self._load_and_repair()
        self._file = self.path.open("a", encoding="utf-8")

    def _load_and_repair(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        done: dict[str, dict[str, Any]] = {}
        good_bytes = 0
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    raise InputError("not a genprm result line", path=str(self.path), line=lineno) from None
                if isinstance(obj, dict) and obj.get("key"):
                    done[obj["key"]] = obj
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)
        return done

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and make it durable before returning."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if record.get("key"):
            self.done[record["key"]] = record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json_atomic(path: str | Path, value: Any) -> Path:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file.

    The temporary file's name is unique to this call, so writers finishing together (shards of one
    run) never rename each other's half-written file; the last rename wins, whole.
    """
    target = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(json.dumps(value, indent=1, ensure_ascii=False))
        os.chmod(tmp, 0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
