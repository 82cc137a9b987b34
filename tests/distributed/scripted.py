"""A deterministic verifier on the scripted engine for the Ray tests, and a small ProcessBench copy.

Replies and verdicts depend on the prompt and the request's seed, so a path run on the wrong
replica, with the wrong seed or history, or twice, shows in the stored transcripts. The model writes
code at every step, so each replica's own sandbox runs it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from genprm.executor import RoleSpec
from genprm.store import RunStore

DELAY_S = 0.0
"""Seconds each reply takes (a test that must stop a run midway raises it; Ray carries it by value)."""


def respond(prompt: str, request: Any) -> str:
    if DELAY_S:
        time.sleep(DELAY_S)
    seed = (request.params.seed or 0) % 1000
    if prompt.endswith("step by step: "):
        return f"seed {seed} reads {len(prompt)} chars\n</analyze>\n"
    if prompt.endswith("```python\n"):
        return f"print({seed} + {len(prompt) % 97})\n```\n"
    return f"checked {seed}\n</verify>\n<output>"


def verdict(prompt: str) -> tuple[float, float]:
    p = (len(prompt) * 7 % 89 + 5) / 100
    return math.log(p), math.log(1 - p)


def verifier_spec(**options: Any) -> RoleSpec:
    return RoleSpec("scripted", "scripted-verifier", tuple(sorted({"respond": respond, "verdict": verdict,
                                                                    **options}.items())))


def write_processbench(folder: Path, per_subset: int = 6) -> Path:
    """``gsm8k.json`` and ``math.json`` in ProcessBench's format: half with an error, half without."""
    folder.mkdir(parents=True, exist_ok=True)
    for subset in ("gsm8k", "math"):
        records = []
        for i in range(per_subset):
            steps = [f"{subset} {i}: {i} + {i} = {2 * i}.", f"Then {2 * i} * 3 = {6 * i + (i % 2)}.",
                     f"So the answer is {6 * i}."]
            label = 1 if i < per_subset // 2 else -1
            records.append({"id": f"{subset}-{i}", "generator": "test", "problem": f"What is 3 * ({i} + {i})?",
                            "steps": steps, "final_answer_correct": label == -1, "label": label})
        records.sort(key=lambda r: r["label"] == -1)
        (folder / f"{subset}.json").write_text(json.dumps(records), encoding="utf-8")
    return folder


TIMING = ("seconds", "created")


def without_timing(value: Any) -> Any:
    """``value`` with every timing field left out (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def stored_paths(run: Path) -> dict[tuple[str, int], Any]:
    """Every stored path of a run folder, by (sample, path index), without timing."""
    with RunStore(run) as store:
        rows = store._db.execute("SELECT sample, path, steps FROM paths").fetchall()
    return {(sample, int(path)): without_timing(json.loads(steps)) for sample, path, steps in rows}


def path_rows(run: Path) -> int:
    with RunStore(run) as store:
        return store.count_paths()
