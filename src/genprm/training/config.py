"""One typed record for a training run; the CLI fills the same record.

Defaults follow the GenPRM paper for full fine-tuning (plain SFT on assistant turns, learning rate
2e-6, global batch 64, cosine schedule). ``lora`` (the default on a machine without a GPU) trains
``peft`` adapters instead, with a higher learning rate, as adapters need.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PAPER_LEARNING_RATE = 2e-6
LORA_LEARNING_RATE = 1e-4

SETTINGS_FILE = "train_config.json"
RESUME_NEUTRAL = ("report_to", "save_total_limit", "logging_steps", "skip_invalid", "out", "data")
"""Settings a resumed run may change: they do not change what is trained (the data is compared by its
fingerprint, not its path)."""


class TrainConfig(BaseModel):
    """Everything ``genprm train`` needs; ``None`` means "choose for this machine"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    base_model: str = Field(min_length=1)
    """A Hugging Face model folder or Hub id."""
    out: Path
    lora: bool | None = None
    """LoRA adapters instead of full fine-tuning; default: LoRA when no GPU is present."""
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides ``epochs``)."""
    learning_rate: float | None = Field(None, gt=0)
    """Default: 2e-6 (the paper) for full fine-tuning, 1e-4 for LoRA."""
    global_batch_size: int = Field(64, gt=0)
    """Conversations per optimizer step, over all devices, reached by gradient accumulation."""
    per_device_batch_size: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_scheduler: str = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(8192, gt=0)
    """Tokens per conversation; longer ones are truncated (and counted)."""
    lora_rank: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str = "all-linear"
    save_steps: int = Field(50, gt=0)
    """Checkpoint every this many optimizer steps (a killed run resumes from the last one)."""
    save_total_limit: int | None = Field(2, gt=0)
    seed: int = 0
    skip_invalid: bool = False
    training_template: Path | None = None
    """A chat template with ``{% generation %}`` marks, for a model genprm and TRL have no copy for."""
    report_to: tuple[str, ...] = ()
    """Passed to TRL: ``tensorboard``, ``wandb``, ..."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, 10-20% slower."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: bfloat16 on a GPU that has it, float32 otherwise."""
    deepspeed: Path | None = None
    """A DeepSpeed JSON config, passed to the trainer (with ``accelerate launch``)."""
    logging_steps: int = Field(1, gt=0)

    def uses_lora(self, has_gpu: bool) -> bool:
        return (not has_gpu) if self.lora is None else self.lora

    def learning_rate_for(self, lora: bool) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return LORA_LEARNING_RATE if lora else PAPER_LEARNING_RATE

    def gradient_accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step so that one step sees ``global_batch_size`` conversations."""
        return max(1, math.ceil(self.global_batch_size / (self.per_device_batch_size * world_size)))

    def resume_key(self) -> dict[str, object]:
        """The settings a resumed run must share with the stored one."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RESUME_NEUTRAL}
