"""Whether the installed llama.cpp build can run on this CPU, checked before a model loads.

llama-cpp-python 0.3.36 built natively on an AMX CPU (Sapphire Rapids and later) carries llama.cpp's
AMX matmul kernels, and those fault (``ldtilecfg`` on a tile config that is half uninitialised): the
process dies with a segfault on the first prompt longer than a few tokens, with nothing saved. Refuse
such a build up front with the one-line fix instead (``scripts/setup`` builds without AMX there).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from genprm.errors import EngineError

AMX_KERNEL = b"ggml_backend_amx_mul_mat"
REBUILD = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" pip install '
           '--force-reinstall --no-deps --no-cache-dir llama-cpp-python (or: bash scripts/setup)')


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    return frozenset(flag for line in text.splitlines() if line.startswith("flags")
                     for flag in line.split(":", 1)[1].split())


def installed_library_dir() -> Path:
    """Where the installed llama-cpp-python keeps its native libraries."""
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def faulting_amx_libraries(library_dir: Path) -> list[str]:
    """The ggml CPU libraries in ``library_dir`` that carry the AMX kernels."""
    return [lib.name for lib in sorted(library_dir.glob("libggml-cpu*.so*")) if AMX_KERNEL in lib.read_bytes()]


@cache
def check_build(library_dir: Path) -> None:
    """Raise :class:`EngineError` if this CPU has AMX and the build in ``library_dir`` has its kernels."""
    if "amx_tile" not in cpu_flags():
        return
    faulting = faulting_amx_libraries(library_dir)
    if faulting:
        raise EngineError(f"this llama-cpp-python build ({', '.join(faulting)}) has llama.cpp's AMX kernels, "
                          f"which segfault on this AMX CPU; rebuild it without them: {REBUILD}")
