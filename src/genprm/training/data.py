"""Read training conversations (Parquet or JSONL) and check each against the protocol.

Accepted inputs: what ``genprm synth export`` writes (Parquet with a ``conversations`` column of
``{role, content}`` lists and a ``messages`` alias, or JSONL with the same fields), and
GenPRM-MATH-Data's Parquet (``conversations``); a JSON file may hold a list of such records.
Every conversation goes through :func:`genprm.protocol.validate.validate_conversation`; a bad one
stops the run before any training, naming its record and field, unless ``skip_invalid``, which
drops it and counts it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprm.errors import InputError
from genprm.io import read_objects
from genprm.protocol.validate import validate_conversation

Message = dict[str, str]
COLUMNS = ("conversations", "messages")
"""Where a record's conversation may be, in order of preference."""


@dataclass(frozen=True)
class SkippedRecord:
    """A record dropped by ``skip_invalid``: where it was and why."""

    record: int
    reason: str


@dataclass
class TrainingData:
    """The valid conversations of one input file, and what was dropped."""

    path: Path
    conversations: list[list[Message]]
    skipped: list[SkippedRecord] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """A digest of the conversations in order: a resumed run must see the same data."""
        digest = hashlib.sha256()
        for messages in self.conversations:
            digest.update(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode())
        return digest.hexdigest()[:20]

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for skipped in self.skipped:
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        return {
            "path": str(self.path), "conversations": len(self.conversations), "skipped": len(self.skipped),
            "skipped_examples": [{"record": s.record, "reason": s.reason} for s in self.skipped[:20]],
            "fingerprint": self.fingerprint,
        }


def _parquet_rows(path: Path) -> Iterator[tuple[Any, int, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pyarrow comes with the train extra (datasets)
        raise InputError("reading Parquet needs pyarrow: pip install 'genprm[train]'", path=str(path)) from exc
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise InputError(f"cannot read as Parquet: {exc}", path=str(path)) from None
    column = next((c for c in COLUMNS if c in schema.names), None)
    if column is None:
        raise InputError(f"has no {' or '.join(repr(c) for c in COLUMNS)} column (columns: {', '.join(schema.names)})",
                         path=str(path))
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    for position, value in enumerate(values):
        yield value, position, column


def _json_rows(path: Path) -> Iterator[tuple[Any, int, str]]:
    for obj, position, line in read_objects(path):
        if not isinstance(obj, dict):
            raise InputError(f"expected an object with a {COLUMNS[0]!r} list, got {type(obj).__name__}",
                             path=str(path), line=line, record=position)
        column = next((c for c in COLUMNS if c in obj), None)
        if column is None:
            raise InputError(f"missing (or {COLUMNS[1]!r})", path=str(path), line=line, record=position,
                             field=COLUMNS[0])
        yield obj[column], position, column


def read_training_data(path: str | Path, *, skip_invalid: bool = False) -> TrainingData:
    """Every valid conversation of ``path``; raise :class:`InputError` at the first invalid one.

    With ``skip_invalid`` invalid conversations are dropped and listed in ``skipped`` instead. The
    error of a file with invalid records also says how many there are, so one run tells the user
    the size of the problem.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError("no such file", path=str(source))
    rows = _parquet_rows(source) if source.suffix == ".parquet" else _json_rows(source)
    data = TrainingData(path=source, conversations=[])
    first_error: InputError | None = None
    for value, position, column in rows:
        try:
            data.conversations.append(validate_conversation(value, record=position, field=column, path=str(source)))
        except InputError as exc:
            first_error = first_error or exc
            data.skipped.append(SkippedRecord(position, f"{exc.field}: {exc.reason}"))
    if first_error is not None and not skip_invalid:
        others = len(data.skipped) - 1
        more = f" ({others} more invalid record{'s' if others != 1 else ''})" if others else ""
        raise InputError(f"{first_error.reason}{more}; --skip-invalid drops invalid records",
                         path=first_error.path, record=first_error.record, field=first_error.field)
    if not data.conversations:
        raise InputError("has no valid conversation to train on", path=str(source))
    return data
