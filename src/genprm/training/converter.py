"""llama.cpp's own Hugging Face -> GGUF converter, at the version genprm's llama.cpp engine uses.

We never write a converter: ``convert_hf_to_gguf.py`` (with its ``conversion/`` package and the
``gguf-py/`` it imports) ships inside the llama-cpp-python sdist under ``vendor/llama.cpp/``. We
take those three parts from the sdist of the *installed* llama-cpp-python version, so a GGUF we
write is one the engine reads, and cache them under ``~/.cache/genprm/llama.cpp-converter/VERSION``.

Where the parts come from: the cache; else ``$GENPRM_LLAMA_CPP_SOURCE`` (a llama.cpp source folder
or a llama-cpp-python sdist ``.tar.gz`` of the same version, for machines without a package index);
else ``pip download`` of the sdist (a one-time ~75 MB download). The converter then needs only
``torch``, ``sentencepiece`` and ``protobuf`` besides its own ``gguf-py`` (the train extra has them);
do not install its ``requirements.txt``, which pins another torch. ``python -m
genprm.training.converter`` fetches it ahead of time (scripts/setup does).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from genprm.errors import GenPRMError, MissingDependencyError

SCRIPT = "convert_hf_to_gguf.py"
PARTS = (SCRIPT, "conversion", "gguf-py")
SOURCE_ENV = "GENPRM_LLAMA_CPP_SOURCE"
_COMPLETE = ".complete"


class ConverterError(GenPRMError):
    """The converter could not be found, fetched or run."""


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError as exc:
        raise MissingDependencyError("llama-cpp-python", "llamacpp") from exc


def cache_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "genprm" / "llama.cpp-converter" / version


def _copy_parts(llama_cpp: Path, target: Path) -> None:
    missing = [part for part in PARTS if not (llama_cpp / part).exists()]
    if missing:
        raise ConverterError(f"{llama_cpp} is not a llama.cpp source folder (missing {', '.join(missing)})")
    for part in PARTS:
        source = llama_cpp / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        else:
            shutil.copy2(source, target / part)


def _extract_sdist(sdist: Path, target: Path) -> None:
    with tarfile.open(sdist) as tar, tempfile.TemporaryDirectory() as tmp:
        marker = "/vendor/llama.cpp/"
        members = [m for m in tar.getmembers()
                   if marker in m.name and m.name.split(marker, 1)[1].split("/")[0] in PARTS]
        if not members:
            raise ConverterError(f"{sdist} holds no vendor/llama.cpp/{SCRIPT}")
        tar.extractall(tmp, members=members, filter="data")
        root = next(Path(tmp).glob("*/vendor/llama.cpp"))
        _copy_parts(root, target)


def _download_sdist(version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               "--disable-pip-version-check", f"llama-cpp-python=={version}", "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ConverterError(f"could not download the llama-cpp-python {version} sdist for its converter "
                             f"({' '.join(tail)}); set {SOURCE_ENV} to a llama.cpp source folder or the sdist")
    return found[0]


def ensure_converter() -> Path:
    """The path of ``convert_hf_to_gguf.py`` for the installed llama-cpp-python, fetched once."""
    override = os.environ.get(SOURCE_ENV)
    version = llama_cpp_version()
    target = cache_dir(version)
    if (target / _COMPLETE).is_file():
        return target / SCRIPT
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "parts"
        staging.mkdir()
        if override:
            source = Path(override).expanduser()
            if source.is_dir():
                _copy_parts(source, staging)
            else:
                _extract_sdist(source, staging)
        else:
            _extract_sdist(_download_sdist(version, Path(tmp)), staging)
        (staging / _COMPLETE).write_text(version, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target / SCRIPT


def convert(hf_dir: Path, outfile: Path, outtype: str = "f16") -> None:
    """Run llama.cpp's converter on a Hugging Face folder, in its own process."""
    script = ensure_converter()
    command = [sys.executable, str(script), str(hf_dir), "--outfile", str(outfile), "--outtype", outtype]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the converter's own gguf-py
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not outfile.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ConverterError(f"convert_hf_to_gguf.py failed on {hf_dir}:\n{tail}")


if __name__ == "__main__":
    print(ensure_converter())
