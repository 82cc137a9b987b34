"""Load a benchmark script from ``bench/`` as a module: the scripts are not part of the package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def load_bench_script(name: str) -> ModuleType:
    """``bench/<name>.py``, registered as ``genprm_bench_<name>`` (its dataclasses need a module to live in)."""
    spec = importlib.util.spec_from_file_location(f"genprm_bench_{name}", BENCH_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
