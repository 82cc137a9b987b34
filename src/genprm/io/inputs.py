"""Read solutions to verify from JSON or JSONL, with errors that name the line, record and field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.errors import InputError


@dataclass(frozen=True)
class SolutionInput:
    """One record to verify: the problem, its steps, and every other field passed through."""

    problem: str
    steps: list[str]
    record: dict[str, Any]
    position: int
    """0-based index of the record in its file."""
    line: int | None = None

    @property
    def key(self) -> str:
        """A content key: the same problem and steps (and id, if any) verify to the same result."""
        payload = json.dumps([self.record.get("id"), self.problem, self.steps], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def validate_record(obj: Any, *, position: int, path: str | None = None, line: int | None = None) -> SolutionInput:
    """Check one decoded record; raise :class:`InputError` naming what is wrong."""

    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, record=position, field=field)

    if not isinstance(obj, dict):
        raise fail(f"expected an object with 'problem' and 'steps', got {type(obj).__name__}")
    if "problem" not in obj:
        raise fail("missing", "problem")
    if not isinstance(obj["problem"], str) or not obj["problem"].strip():
        raise fail("must be a non-empty string", "problem")
    if "steps" not in obj:
        raise fail("missing", "steps")
    steps = obj["steps"]
    if not isinstance(steps, list):
        raise fail(f"must be a list of strings, got {type(steps).__name__}", "steps")
    if not steps:
        raise fail("is empty: there is nothing to verify", "steps")
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise fail(f"must be a string, got {type(step).__name__}", f"steps[{i}]")
    return SolutionInput(problem=obj["problem"], steps=list(steps), record=obj, position=position, line=line)


def read_objects(path: str | Path, hint: str = "") -> Iterator[tuple[Any, int, int | None]]:
    """``(decoded record, position, line)`` from a JSON file (one object or a list) or a JSONL file.

    JSONL records are decoded as they are read, so a bad line late in a file stops the run only
    once the good ones before it have been handled. ``hint`` completes the missing-file message.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file{f' ({hint})' if hint else ''}", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=str(path)) from None
    stripped = text.lstrip()
    if not stripped:
        raise InputError("the file is empty", path=str(path))
    if stripped[0] == "[" or file.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
        items = data if isinstance(data, list) else [data]
        yield from ((obj, i, None) for i, obj in enumerate(items))
        return
    position = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=lineno, record=position) from None
        yield obj, position, lineno
        position += 1


def read_solutions(path: str | Path) -> Iterator[SolutionInput]:
    """Yield validated ``{problem, steps}`` records from a JSON or JSONL file."""
    for obj, position, line in read_objects(path):
        yield validate_record(obj, position=position, path=str(path), line=line)


def count_records(path: str | Path) -> int | None:
    """How many records a file holds, cheaply, for progress bars; ``None`` if unknown."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    stripped = text.lstrip()
    if stripped.startswith("[") or Path(path).suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return len(data) if isinstance(data, list) else 1
    return sum(1 for line in text.splitlines() if line.strip())
