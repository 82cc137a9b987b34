"""Read what an evaluation run left in its folder: the result files and, if present, the store.

The report only reads: it never opens a store that is not there (``RunStore`` would create one),
and it takes each result file as the plain JSON its writer documents, so a report can be made of
a run that is still going or of one written by an older version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.errors import InputError
from genprm.store.sqlite import STORE_FILE

PROCESSBENCH_FILE = "processbench.json"
BON_FILE = "bon.json"
REFINE_FILE = "refine.json"

Json = dict[str, Any]


@dataclass(frozen=True)
class RunResults:
    """One run folder's result files (``None`` where a benchmark was not run)."""

    dir: Path
    processbench: Json | None
    bon: Json | None
    refine: Json | None

    @property
    def store_path(self) -> Path | None:
        path = self.dir / STORE_FILE
        return path if path.is_file() else None


def load_run(run_dir: str | Path) -> RunResults:
    """Read the result files of ``run_dir``; at least one must be there."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise InputError("no such run folder", path=str(folder))
    run = RunResults(
        folder, _read(folder / PROCESSBENCH_FILE), _read(folder / BON_FILE), _read(folder / REFINE_FILE)
    )
    if run.processbench is None and run.bon is None and run.refine is None:
        raise InputError(
            f"nothing to report: none of {PROCESSBENCH_FILE}, {BON_FILE}, {REFINE_FILE} is here "
            "(run `genprm eval processbench --run RUN` first)",
            path=str(folder),
        )
    return run


def _read(path: Path) -> Json | None:
    """A result file's JSON object; ``None`` when the file is absent."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", path=str(path))
    return value
