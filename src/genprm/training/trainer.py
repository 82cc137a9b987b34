"""``train(config)``: supervised fine-tuning of a verifier on GenPRM conversations, with TRL.

TRL's ``SFTTrainer`` does the loop (assistant-only loss, gradient accumulation, checkpoints,
resume); this module prepares what it needs and keeps the run folder (:mod:`.run_folder`):

1. read and validate the conversations (:mod:`.data`);
2. pick the marked training template and prove it renders every conversation byte-identically to
   the model's own template as genprm's verifier renders it (:mod:`.templates`);
3. build the ``SFTConfig`` (paper defaults; on a CPU ``use_cpu`` and float32) and the LoRA config;
4. resume from the newest complete checkpoint if the folder holds one of the same run (same
   settings, same data: the trainer's seeded sampler then replays the same data order);
5. save the model (or adapter) with the *inference* template to ``final/``.

Multi-GPU: ``accelerate launch -m genprm.cli.main train ...``; gradient accumulation is computed
over the processes so the global batch stays ``global_batch_size``. Only the main process writes
the run folder's own files.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genprm.errors import MissingDependencyError
from genprm.io import write_json_atomic
from genprm.protocol.chat import ChatTemplate
from genprm.training.config import TrainConfig
from genprm.training.data import TrainingData, read_training_data
from genprm.training.run_folder import RESULT, RunFolder, check_same_run, keep_metrics_up_to, latest_checkpoint
from genprm.training.templates import TrainingTemplate, check_renders_identically, training_template_for


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (also ``OUT/train_result.json``)."""

    out: str
    model_dir: str
    base_model: str
    lora: bool
    steps: int
    conversations: int
    skipped: int
    truncated: int
    template: str
    train_loss: float | None
    tokens: int
    seconds: float
    """The whole call: reading, checking, loading, training, saving."""
    train_seconds: float
    """Inside the trainer's loop (this process's share when resumed)."""
    resumed_from_step: int | None


def _require() -> None:
    for module in ("torch", "transformers", "trl", "datasets", "peft", "accelerate"):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependencyError(module, "train") from exc


def base_model_source(spec: str) -> str:
    """A local folder as an absolute path (adapters and exports find it from anywhere); a Hub id as is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _trl_copy(tokenizer: Any) -> str | None:
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        return None


def _pick_template(tokenizer: Any, config: TrainConfig, data: TrainingData) -> TrainingTemplate:
    template = training_template_for(
        tokenizer.chat_template, override=config.training_template, trl_copy=lambda: _trl_copy(tokenizer)
    )
    variables = {k: v for k, v in {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token}.items() if v}
    inference = ChatTemplate(template.inference, variables)
    check_renders_identically(
        data.conversations,
        inference=inference.render,
        training=lambda messages: tokenizer.apply_chat_template(
            messages, chat_template=template.training, tokenize=False
        ),
        source=template.source,
    )
    return template


def _token_counts(tokenizer: Any, template: str, data: TrainingData) -> list[int]:
    rendered = [tokenizer.apply_chat_template(m, chat_template=template, tokenize=False) for m in data.conversations]
    return [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]


def _dtype(config: TrainConfig, has_gpu: bool) -> Any:
    import torch

    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.bfloat16 if has_gpu and torch.cuda.is_bf16_supported() else torch.float32


def _sft_config(config: TrainConfig, folder: RunFolder, *, lora: bool, has_gpu: bool, world_size: int,
                dtype: Any) -> Any:
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(folder.checkpoints),
        assistant_only_loss=True,
        max_length=config.max_length,
        packing=False,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation(world_size),
        learning_rate=config.learning_rate_for(lora),
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not has_gpu,
        activation_checkpointing=config.activation_checkpointing,
        report_to=list(config.report_to) or "none",
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        disable_tqdm=True,
        dataset_num_proc=None,
    )


def _lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
    )


def _notes(config: TrainConfig, data: TrainingData, lengths: list[int], template: TrainingTemplate,
           resume: Path | None, world_size: int) -> list[str]:
    notes = [f"{len(data.conversations)} conversations, {sum(lengths)} tokens; training template: {template.source}"]
    if data.skipped:
        notes.append(f"{len(data.skipped)} invalid record(s) skipped (see data.json)")
    long = sum(n > config.max_length for n in lengths)
    if long:
        notes.append(f"{long} conversation(s) longer than max_length {config.max_length} are truncated")
    per_step = config.per_device_batch_size * world_size * config.gradient_accumulation(world_size)
    if per_step > len(data.conversations):
        notes.append(f"a step takes {per_step} conversations but there are {len(data.conversations)}: "
                     "one optimizer step per epoch (lower --global-batch-size for small data)")
    if resume is not None:
        notes.append(f"resuming from {resume.name}")
    return notes


def _write_once(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(text, encoding="utf-8")


def train(config: TrainConfig, *, on_progress: Any = None) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``config.data`` into ``config.out``; resume when it holds a run.

    ``on_progress`` receives :class:`genprm.training.progress.TrainProgress` updates. A folder whose
    run finished returns its stored result without training again.
    """
    _require()
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    from genprm.training.progress import MetricsCallback, TrainProgress

    started = time.monotonic()
    tell = on_progress or (lambda progress: None)
    folder = RunFolder(config.out)
    state = PartialState()
    main = state.is_main_process
    tell(TrainProgress("preparing"))
    data = read_training_data(config.data, skip_invalid=config.skip_invalid)
    wanted = {**config.resume_key(), "data_fingerprint": data.fingerprint}
    check_same_run(folder.read_json(folder.config.name), wanted, folder.root)
    done = folder.read_json(RESULT)
    if done is not None:
        return TrainResult(**done)
    if main:
        folder.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder.config, wanted)
        write_json_atomic(folder.data, data.summary())

    source = base_model_source(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    template = _pick_template(tokenizer, config, data)
    lengths = _token_counts(tokenizer, template.training, data)
    if main:
        _write_once(folder.template(training=False), template.inference)
        _write_once(folder.template(training=True), template.training)
    tokenizer.chat_template = template.training

    has_gpu = torch.cuda.is_available()
    lora = config.uses_lora(has_gpu)
    dtype = _dtype(config, has_gpu)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    resume = latest_checkpoint(folder.checkpoints, move_incomplete=main)
    resumed_step = int(resume.name.split("-")[1]) if resume else None
    kept = keep_metrics_up_to(folder.metrics, resumed_step or 0) if main else []
    for note in _notes(config, data, lengths, template, resume, state.num_processes):
        tell(TrainProgress("preparing", note=note))
    callback = MetricsCallback(folder.metrics, tell if main else None,
                               tokens_before=int(kept[-1]["tokens"]) if kept else 0)
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(config, folder, lora=lora, has_gpu=has_gpu, world_size=state.num_processes, dtype=dtype),
        train_dataset=Dataset.from_dict({"messages": data.conversations}),
        processing_class=tokenizer,
        peft_config=_lora_config(config) if lora else None,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # our callback reports; the trainer's would print raw dicts
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    tell(TrainProgress("saving", trainer.state.global_step, trainer.state.max_steps))
    trainer.save_model(str(folder.final))
    if not main:
        return _result(config, folder, source, lora, trainer, data, lengths, template, output, started, resumed_step)
    tokenizer.chat_template = template.inference
    tokenizer.save_pretrained(str(folder.final))
    result = _result(config, folder, source, lora, trainer, data, lengths, template, output, started, resumed_step)
    write_json_atomic(folder.result, asdict(result))
    return result


def _result(config: TrainConfig, folder: RunFolder, source: str, lora: bool, trainer: Any, data: TrainingData,
            lengths: list[int], template: TrainingTemplate, output: Any, started: float,
            resumed_step: int | None) -> TrainResult:
    metrics = [json.loads(line) for line in folder.metrics.read_text(encoding="utf-8").splitlines()] \
        if folder.metrics.is_file() else []
    return TrainResult(
        out=str(folder.root), model_dir=str(folder.final), base_model=source, lora=lora,
        steps=int(trainer.state.global_step), conversations=len(data.conversations), skipped=len(data.skipped),
        truncated=sum(n > config.max_length for n in lengths), template=template.source,
        train_loss=getattr(output, "training_loss", None), tokens=int(metrics[-1]["tokens"]) if metrics else 0,
        seconds=round(time.monotonic() - started, 2),
        train_seconds=round(float(getattr(output, "metrics", {}).get("train_runtime", 0.0)), 2),
        resumed_from_step=resumed_step,
    )
