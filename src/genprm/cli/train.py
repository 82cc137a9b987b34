"""``genprm train`` and ``genprm export``: thin layers over :func:`genprm.training.train` and ``export``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genprm.cli.common import err, fail_on_errors
from genprm.training import TrainConfig, train

if TYPE_CHECKING:  # the module imports transformers: the CLI must start without the train extra
    from genprm.training.progress import TrainProgress


def train_command(
    data: Annotated[Path, typer.Option(help="Conversations: the Parquet/JSONL of `genprm synth export`, or "
                                       "GenPRM-MATH-Data's Parquet (a 'conversations' column).")],
    base_model: Annotated[str, typer.Option(help="The model to fine-tune: a Hugging Face folder or Hub id.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, metrics.jsonl, final/. Re-running with the "
                                      "same folder resumes from its last checkpoint.")],
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapters or full fine-tuning "
                                              "(default: LoRA without a GPU, full with one).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 3.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps "
                                                  "(overrides --epochs).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default: 2e-6 full (the paper), 1e-4 LoRA.")] = None,
    global_batch_size: Annotated[int, typer.Option(help="Conversations per optimizer step over all devices "
                                                   "(gradient accumulation); the paper's is 64.")] = 64,
    per_device_batch_size: Annotated[int, typer.Option(help="Conversations per forward pass and device.")] = 1,
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps with a linear warmup.")] = 0.05,
    max_length: Annotated[int, typer.Option(help="Tokens per conversation; longer ones are truncated.")] = 8192,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N optimizer steps.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the data order and the initialisation.")] = 0,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Drop conversations that break the "
                                               "protocol (and count them) instead of stopping.")] = False,
    training_template: Annotated[Path | None, typer.Option(help="The model's chat template with {% generation %} "
                                                           "marks, for a template genprm and TRL do not know.")] = None,
    report_to: Annotated[list[str] | None, typer.Option(help="Also log to: tensorboard, wandb (repeatable).")] = None,
    activation_checkpointing: Annotated[bool, typer.Option("--activation-checkpointing", help="Less memory, "
                                                           "10-20% slower.")] = False,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on a GPU that has it, else float32), float32, bfloat16, "
                                       "float16.")] = "auto",
    deepspeed: Annotated[Path | None, typer.Option(help="A DeepSpeed JSON config (with accelerate launch).")] = None,
) -> None:
    """Fine-tune a verifier on GenPRM conversations (assistant turns only), with TRL; resumable."""
    with fail_on_errors():
        config = TrainConfig(
            data=data, base_model=base_model, out=out, lora=lora, epochs=epochs, max_steps=max_steps,
            learning_rate=learning_rate, global_batch_size=global_batch_size,
            per_device_batch_size=per_device_batch_size, warmup_ratio=warmup_ratio, max_length=max_length,
            lora_rank=lora_rank, lora_alpha=lora_alpha, save_steps=save_steps, seed=seed, skip_invalid=skip_invalid,
            training_template=training_template, report_to=tuple(report_to or ()),
            activation_checkpointing=activation_checkpointing, dtype=dtype, deepspeed=deepspeed,
        )
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"), console=err,
    ) as bar:
        task = bar.add_task("preparing", total=None, note="")
        plain = not bar.console.is_terminal

        def report(event: TrainProgress) -> None:
            if event.note:
                bar.console.print(event.note, highlight=False)
            note = ""
            if event.loss is not None:
                note = f"loss {event.loss:.4f}  {event.tokens_per_s or 0:.0f} tok/s"
            bar.update(task, description=event.phase, completed=event.step, total=event.total_steps or None, note=note)
            if plain and note:
                bar.console.print(f"step {event.step}/{event.total_steps}: {note}", highlight=False)

        with fail_on_errors():
            result = train(config, on_progress=report)
    err.print(
        f"trained {result.steps} steps on {result.conversations} conversations "
        f"({result.skipped} skipped, {result.truncated} truncated) in {result.seconds:.0f} s; "
        f"loss {result.train_loss if result.train_loss is not None else '-'}; model in {result.model_dir}",
        highlight=False,
    )
    err.print(f"next: genprm export {out} --gguf {out / 'model.gguf'}", highlight=False)


def export_command(
    run: Annotated[Path, typer.Argument(help="The run folder of `genprm train --out`.")],
    gguf: Annotated[Path | None, typer.Option(help="Also write a GGUF here, for `genprm verify --model`.")] = None,
    gguf_type: Annotated[str, typer.Option(help="f16, bf16, f32, q8_0 (llama.cpp's converter) or a llama.cpp "
                                           "quantization such as Q4_K_M.")] = "f16",
    hf: Annotated[Path | None, typer.Option(help="Folder for the merged Hugging Face model (for vLLM). "
                                            "Default: RUN/hf.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Export this checkpoint folder instead of the "
                                                    "finished model.")] = None,
) -> None:
    """Merge a LoRA adapter into a Hugging Face folder and write a GGUF, chat template carried over."""
    from genprm.training.export import export

    started = time.monotonic()
    with fail_on_errors():
        result = export(run, hf_dir=hf, gguf=gguf, gguf_type=gguf_type, checkpoint=checkpoint)
    err.print(f"Hugging Face folder: {result.hf_dir}" + (" (LoRA merged)" if result.merged_lora else ""),
              highlight=False)
    if result.gguf:
        err.print(f"GGUF ({result.gguf_type}, {(result.gguf_bytes or 0) / 1e6:.0f} MB): {result.gguf}", highlight=False)
        err.print(f"next: genprm verify SOLUTIONS.jsonl --model {result.gguf}", highlight=False)
    err.print(f"({time.monotonic() - started:.0f} s)", highlight=False)
