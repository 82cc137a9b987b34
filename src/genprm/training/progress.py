"""Report training as it goes: one JSONL line per logged step, and a callback for progress bars.

``tokens_per_s`` counts every token of the conversations the step processed (system and user tokens
too, as they go through the forward pass); ``tokens`` is the running total over the whole run,
resumed runs included.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


@dataclass(frozen=True)
class TrainProgress:
    """What a progress display shows."""

    phase: str
    """``preparing``, ``training`` or ``saving``."""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    note: str | None = None
    """A line worth showing once (resuming, truncation, a batch larger than the data)."""


OnProgress = Callable[[TrainProgress], None]

_KEPT = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "entropy", "epoch")


class MetricsCallback(TrainerCallback):
    """Appends each training log to ``metrics.jsonl`` and tells ``on_progress``; main process only."""

    def __init__(self, path: Path, on_progress: OnProgress | None, *, tokens_before: int = 0) -> None:
        self.path = path
        self.on_progress = on_progress
        self.tokens = tokens_before
        self._seen_in_process = 0
        self._last_time = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_time = time.monotonic()
        self._tell(TrainProgress("training", state.global_step, state.max_steps))

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now = time.monotonic()
        seen = int(logs.get("num_tokens", 0))
        new_tokens = max(0, seen - self._seen_in_process)
        self._seen_in_process = seen
        self.tokens += new_tokens
        elapsed = max(now - self._last_time, 1e-9)
        self._last_time = now
        line = {"step": state.global_step, **{k: logs[k] for k in _KEPT if k in logs},
                "tokens": self.tokens, "tokens_per_s": round(new_tokens / elapsed, 2), "time": time.time()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._tell(TrainProgress("training", state.global_step, state.max_steps, float(logs["loss"]),
                                 line["tokens_per_s"]))

    def _tell(self, progress: TrainProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
