"""Write training conversations to Parquet or JSONL, atomically (a reader never sees half a file).

Each row is ``{"conversations": [{"role", "content"}, ...], ...metadata}``. The ``conversations``
column is GenPRM-MATH-Data's (axolotl's chat format); ``messages`` carries the same turns under the
name TRL's SFT trainer reads. Metadata columns (problem id, first error, source run, ...) pass through.
Parquet needs ``pyarrow`` (the ``synth`` extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genprm.errors import ConfigError

CONVERSATIONS = "conversations"
MESSAGES = "messages"
SUFFIXES = (".parquet", ".jsonl")


def write_conversations(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``rows`` to ``path`` (format by suffix); returns how many rows were written."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError("out", str(target), f"the file must end in {' or '.join(SUFFIXES)}")
    if suffix == ".parquet":
        _pyarrow(target)  # before any work, and naming the user's path rather than the temporary file
    table = [_row(row, i) for i, row in enumerate(rows)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".parquet":
            _write_parquet(table, tmp)
        else:
            _write_jsonl(table, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return len(table)


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """Read back what :func:`write_conversations` wrote (both formats), as a list of rows."""
    target = Path(path)
    if target.suffix.lower() == ".parquet":
        _, pq = _pyarrow(target)
        return list(pq.read_table(target).to_pylist())
    with target.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _row(row: dict[str, Any], index: int) -> dict[str, Any]:
    """The row with its turns checked and the ``messages`` alias added."""
    turns = row.get(CONVERSATIONS)
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and set(t) == {"role", "content"} and all(isinstance(v, str) for v in t.values())
        for t in turns
    ):
        raise ValueError(f"row {index}: '{CONVERSATIONS}' must be a list of {{role, content}} string dicts")
    clean = [{"role": t["role"], "content": t["content"]} for t in turns]
    metadata = {k: v for k, v in row.items() if k not in (CONVERSATIONS, MESSAGES)}
    return {CONVERSATIONS: clean, MESSAGES: clean, **metadata}


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _pyarrow(path: Path) -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or a one-line fix naming ``path``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError("out", str(path), "Parquet needs pyarrow: pip install 'genprm[synth]'") from exc
    return pa, pq


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    pa, pq = _pyarrow(path)
    turn = pa.struct([("content", pa.string()), ("role", pa.string())])
    columns: dict[str, Any] = {
        CONVERSATIONS: pa.array([r[CONVERSATIONS] for r in rows], type=pa.list_(turn)),
        MESSAGES: pa.array([r[MESSAGES] for r in rows], type=pa.list_(turn)),
    }
    extra = dict.fromkeys(k for r in rows for k in r if k not in columns)  # first-seen order
    for key in extra:
        columns[key] = pa.array([r.get(key) for r in rows])
    pq.write_table(pa.table(columns), path)
