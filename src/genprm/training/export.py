"""``export(run)``: a trained run as a Hugging Face folder and a GGUF that genprm's engines load.

1. The model: a LoRA adapter is merged into its base (``peft``'s ``merge_and_unload``); a full
   fine-tune is taken as trained. It is saved in the base model's dtype with the *inference* chat
   template (never the marked training copy), so ``genprm verify --engine vllm --model HF_DIR``
   renders the prompts the model was trained on.
2. The GGUF (optional): llama.cpp's own ``convert_hf_to_gguf.py`` (:mod:`.converter`) writes f16,
   bf16, f32 or q8_0; any other llama.cpp type (``Q4_K_M``, ``Q5_K_M``, ...) is quantized from an
   f16 file with llama.cpp's quantizer. The chat template in the GGUF's metadata is then read back
   and must equal the inference template, or the export fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genprm.errors import ConfigError, GenPRMError, InputError
from genprm.io import write_json_atomic
from genprm.training.converter import convert
from genprm.training.run_folder import EXPORT, RESULT, RunFolder, latest_checkpoint

CONVERTER_TYPES = ("f16", "bf16", "f32", "q8_0")
MERGED = "hf"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote (also ``RUN/export.json``)."""

    hf_dir: str
    gguf: str | None
    gguf_type: str | None
    gguf_bytes: int | None
    merged_lora: bool
    seconds: float


def quantize_types() -> list[str]:
    """llama.cpp's quantization types by name (``Q4_K_M``, ...), from the installed llama-cpp-python."""
    import llama_cpp

    return sorted(name.removeprefix("LLAMA_FTYPE_MOSTLY_") for name in dir(llama_cpp)
                  if name.startswith("LLAMA_FTYPE_MOSTLY_"))


def _known_type(kind: str) -> str:
    if kind.lower() not in CONVERTER_TYPES and kind.upper() not in quantize_types():
        known = ", ".join(CONVERTER_TYPES + tuple(quantize_types()))
        raise ConfigError("--gguf-type", kind, f"unknown; one of {known}")
    return kind


def quantize(source: Path, target: Path, kind: str, threads: int = 0) -> None:
    """Quantize a GGUF with llama.cpp's quantizer (``kind`` as in :func:`quantize_types`)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{_known_type(kind).upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise GenPRMError(f"llama.cpp could not quantize {source} to {kind}")


def gguf_chat_template(path: Path) -> str | None:
    """The ``tokenizer.chat_template`` a GGUF file carries."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _trained_weights(folder: RunFolder, checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        if not checkpoint.is_dir():
            raise InputError("no such checkpoint folder", path=str(checkpoint))
        return checkpoint
    if (folder.root / RESULT).is_file() and folder.final.is_dir():
        return folder.final
    last = latest_checkpoint(folder.checkpoints)
    hint = f"; pass --checkpoint {last}" if last else ""
    raise InputError(f"is not a finished training run (no {RESULT}){hint}", path=str(folder.root))


def _base_dtype(base: str) -> Any:
    import torch
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(base), "dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def merge(folder: RunFolder, hf_dir: Path, checkpoint: Path | None = None) -> bool:
    """Write the trained model to ``hf_dir`` with the inference template; ``True`` if a LoRA was merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = _trained_weights(folder, checkpoint)
    settings = folder.read_json(folder.config.name) or {}
    inference_template = folder.template(training=False).read_text(encoding="utf-8")
    is_adapter = (weights / "adapter_config.json").is_file()
    if is_adapter:
        from peft import PeftModel

        base = json.loads((weights / "adapter_config.json").read_text())["base_model_name_or_path"]
        dtype = _base_dtype(base)
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), str(weights))
        model = adapted.merge_and_unload()
    else:
        base = str(settings.get("base_model", weights))
        model = AutoModelForCausalLM.from_pretrained(str(weights), dtype=_base_dtype(base))
    tokenizer = AutoTokenizer.from_pretrained(str(weights))
    tokenizer.chat_template = inference_template
    staging = hf_dir.with_name(hf_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    staging.rename(hf_dir)
    return is_adapter


def write_gguf(hf_dir: Path, gguf: Path, gguf_type: str, expected_template: str) -> None:
    """Convert ``hf_dir`` to ``gguf`` (quantizing past what the converter writes) and check its template."""
    gguf.parent.mkdir(parents=True, exist_ok=True)
    partial = gguf.with_name(gguf.name + ".partial")
    if gguf_type.lower() in CONVERTER_TYPES:
        convert(hf_dir, partial, gguf_type.lower())
    else:
        _known_type(gguf_type)
        f16 = gguf.with_name(gguf.name + ".f16.partial")
        convert(hf_dir, f16, "f16")
        try:
            quantize(f16, partial, gguf_type)
        finally:
            f16.unlink(missing_ok=True)
    carried = gguf_chat_template(partial)
    if carried != expected_template:
        partial.unlink(missing_ok=True)
        raise GenPRMError(f"the GGUF's chat template differs from the model's inference template ({hf_dir})")
    os.replace(partial, gguf)


def export(
    run: str | Path,
    *,
    hf_dir: str | Path | None = None,
    gguf: str | Path | None = None,
    gguf_type: str = "f16",
    checkpoint: str | Path | None = None,
) -> ExportResult:
    """Export a training run (``genprm train --out RUN``): merged HF folder, then optionally a GGUF."""
    started = time.monotonic()
    folder = RunFolder(Path(run))
    if not folder.config.is_file():
        raise InputError(f"is not a genprm training run (no {folder.config.name})", path=str(folder.root))
    target = Path(hf_dir) if hf_dir else folder.root / MERGED
    merged = merge(folder, target, Path(checkpoint) if checkpoint else None)
    gguf_path = Path(gguf) if gguf else None
    if gguf_path is not None:
        write_gguf(target, gguf_path, gguf_type, folder.template(training=False).read_text(encoding="utf-8"))
    result = ExportResult(
        hf_dir=str(target), gguf=str(gguf_path) if gguf_path else None, gguf_type=gguf_type if gguf_path else None,
        gguf_bytes=gguf_path.stat().st_size if gguf_path else None, merged_lora=merged,
        seconds=round(time.monotonic() - started, 2),
    )
    write_json_atomic(folder.root / EXPORT, asdict(result))
    return result
