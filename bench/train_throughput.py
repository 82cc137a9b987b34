"""Training throughput and peak memory: `genprm train` against plain TRL on the same data.

    python bench/train_throughput.py --model HF_DIR [--lora] [--conversations 40] [--detail 6] [--steps 4]

Both rows fine-tune the same model on the same synthetic GenPRM conversations
(genprm.training.synthetic) with the same settings: batch 1, --accumulation micro-batches per step,
float32 on a CPU, --max-length, assistant-only loss with the same marked template. Row (a) is
genprm.training.train (validation, byte-identity check, metrics, checkpoints at the end); row (b)
is a bare SFTTrainer. Each row runs in its own process, so its peak RSS is its own.

Columns: tokens/s = tokens of the conversations processed (TRL's num_tokens) / the trainer's
train_runtime; s/step; peak RSS of the process (and peak CUDA memory on a GPU); wall s of the
whole process (imports, loading, tokenising included). The load average is printed: on a shared
machine other processes slow both rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _data(path: Path, count: int, detail: int) -> None:
    from genprm.training.synthetic import synthetic_conversations

    path.write_text("".join(json.dumps({"conversations": c}) + "\n" for c in synthetic_conversations(
        count, seed=0, detail=detail)), encoding="utf-8")


def _peak() -> dict[str, float]:
    peak = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    import torch

    if torch.cuda.is_available():
        peak["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return peak


def worker_ours(args: argparse.Namespace, data: Path, out: Path) -> dict[str, float]:
    from genprm.training import TrainConfig, train

    config = TrainConfig(
        data=data, base_model=args.model, out=out, lora=args.lora, max_steps=args.steps,
        global_batch_size=args.accumulation, max_length=args.max_length, save_steps=args.steps + 1,
        activation_checkpointing=args.activation_checkpointing, seed=0,
    )
    result = train(config)
    return {"tokens": result.tokens, "train_s": result.train_seconds, "steps": result.steps, **_peak()}


def worker_trl(args: argparse.Namespace, data: Path, out: Path) -> dict[str, float]:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from genprm.training.templates import SHIPPED, shipped_template

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    for name in SHIPPED:  # TRL cannot patch these templates itself: give it the same marked copy as row (a)
        if tokenizer.chat_template == shipped_template(name, training=False):
            tokenizer.chat_template = shipped_template(name, training=True)
    gpu = torch.cuda.is_available()
    sft = SFTConfig(
        output_dir=str(out), assistant_only_loss=True, max_length=args.max_length, per_device_train_batch_size=1,
        gradient_accumulation_steps=args.accumulation, max_steps=args.steps, learning_rate=1e-4 if args.lora else 2e-6,
        lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=1, save_strategy="no", bf16=gpu,
        use_cpu=not gpu, report_to="none", activation_checkpointing=args.activation_checkpointing, seed=0,
        disable_tqdm=True,
    )
    dtype = torch.bfloat16 if gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    dataset = load_dataset("json", data_files=str(data), split="train").rename_column("conversations", "messages")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora if args.lora else None)
    output = trainer.train()
    tokens = max(int(log.get("num_tokens", 0)) for log in trainer.state.log_history)
    return {"tokens": tokens, "train_s": output.metrics["train_runtime"], "steps": trainer.state.global_step,
            **_peak()}


ROWS = {"ours": ("(a) genprm train", worker_ours), "trl": ("(b) plain TRL SFTTrainer", worker_trl)}


def _run_row(name: str, argv: list[str], data: Path, scratch: Path) -> dict[str, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", name, "--data", str(data),
                           "--scratch", str(scratch / name)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"row {name} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.monotonic() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face folder (e.g. made by ../shared/tools/gguf-to-hf)")
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 on all linear layers (default: full)")
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--detail", type=int, default=6, help="extra analysis sentences per turn (longer turns)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2, help="micro-batches of 1 per optimizer step")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--rows", default="ours,trl")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--worker", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(ROWS[args.worker][1](args, args.data, args.scratch)))
        return

    argv = [a for a in sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data = scratch / "conversations.jsonl"
        _data(data, args.conversations, args.detail)
        load_before = os.getloadavg()
        rows = {}
        for name in args.rows.split(","):
            rows[name] = _run_row(name, argv, data, scratch)
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
        load_after = os.getloadavg()
    mode = "LoRA r=16" if args.lora else "full fine-tune"
    print(f"\n{Path(args.model).name}, {mode}, {args.steps} steps x {args.accumulation} conversations, "
          f"max_length {args.max_length}, {args.conversations} synthetic conversations (detail {args.detail})")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (cores: {os.cpu_count()})\n")
    print("| row | tokens | train s | tokens/s | s/step | peak RSS GB | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {ROWS[name][0]} | {row['tokens']} | {row['train_s']:.1f} | {row['tokens'] / row['train_s']:.1f} "
              f"| {row['train_s'] / max(row['steps'], 1):.1f} | {row['peak_rss_gb']:.2f} | {row['wall_s']:.0f} |")
    if "ours" in rows and "trl" in rows:
        ratio = (rows["ours"]["tokens"] / rows["ours"]["train_s"]) / (rows["trl"]["tokens"] / rows["trl"]["train_s"])
        print(f"\ngenprm / plain TRL tokens/s: {ratio:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                        "load": [load_before, load_after]}, indent=1))


if __name__ == "__main__":
    main()
