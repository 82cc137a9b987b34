"""The layout of a training run folder, and what makes it resumable.

``OUT/`` holds ``train_config.json`` (the settings, checked on resume), ``data.json`` (conversations
used and dropped, the data's fingerprint), ``inference_template.jinja`` / ``training_template.jinja``,
``checkpoints/checkpoint-N`` (the trainer's own: weights, optimizer, scheduler, RNG states),
``metrics.jsonl`` (one line per logged step), ``final/`` (the trained model or adapter, with the
inference template) and ``train_result.json`` once done.

A run killed with ``kill -9`` resumes from its newest *complete* checkpoint: the trainer writes
``trainer_state.json`` last, so a checkpoint without a readable one was cut off mid-save; it is moved
aside (never deleted) and the one before it is used. Metric lines past the resumed step are dropped,
since those steps run again.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.errors import ConfigError

CONFIG = "train_config.json"
DATA = "data.json"
INFERENCE_TEMPLATE = "inference_template.jinja"
TRAINING_TEMPLATE = "training_template.jinja"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
FINAL = "final"
RESULT = "train_result.json"
EXPORT = "export.json"

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one training run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def data(self) -> Path:
        return self.root / DATA

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def final(self) -> Path:
        return self.root / FINAL

    @property
    def result(self) -> Path:
        return self.root / RESULT

    def template(self, training: bool) -> Path:
        return self.root / (TRAINING_TEMPLATE if training else INFERENCE_TEMPLATE)

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        if not path.is_file():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))


def _step_of_complete(folder: Path) -> int | None:
    """The global step a checkpoint folder holds, or ``None`` when it was cut off mid-save."""
    match = _CHECKPOINT.match(folder.name)
    state = folder / "trainer_state.json"
    if match is None or not state.is_file():
        return None
    try:
        step = int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    except (ValueError, KeyError, TypeError):
        return None
    return step if step == int(match.group(1)) else None


def latest_checkpoint(checkpoints: Path, *, move_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint; with ``move_incomplete`` newer cut-off ones are renamed
    ``*.incomplete-<time>`` (only the main process does that; the others just skip them).
    """
    if not checkpoints.is_dir():
        return None
    folders = sorted((p for p in checkpoints.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)),
                     key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for folder in folders:
        if _step_of_complete(folder) is not None:
            return folder
        if move_incomplete:
            folder.rename(folder.with_name(f"{folder.name}.incomplete-{int(time.time())}"))
    return None


def keep_metrics_up_to(metrics: Path, step: int) -> list[dict[str, Any]]:
    """Drop metric lines of steps after ``step`` (and a torn last line); return the kept ones."""
    if not metrics.is_file():
        return []
    kept: list[dict[str, Any]] = []
    for raw in metrics.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            break
        if int(line.get("step", 0)) > step:
            break
        kept.append(line)
    metrics.write_text("".join(json.dumps(line) + "\n" for line in kept), encoding="utf-8")
    return kept


def check_same_run(stored: dict[str, Any] | None, wanted: dict[str, Any], out: Path) -> None:
    """A run folder resumes only the run it holds: refuse other settings or other data."""
    if stored is None:
        return
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:4])
        raise ConfigError("--out", str(out), f"holds a run with other settings or data ({detail}); "
                          "resume it with the same ones or train into a new folder")
