"""The installed llama.cpp build runs on this CPU: on an AMX CPU it must not carry llama.cpp 0.3.36's AMX
kernels, which segfault on the first prompt longer than a few tokens (scripts/llamacpp-flags builds
without them). A segfault would take the whole test session down with it; this names the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif("amx_tile" not in _cpu_flags(), reason="this CPU has no AMX")
def test_an_amx_cpu_gets_a_llama_cpp_build_without_the_faulting_amx_kernels():
    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu.so*"))
    assert libraries, "llama-cpp-python has no libggml-cpu"
    faulting = [lib.name for lib in libraries if b"ggml_backend_amx_mul_mat" in lib.read_bytes()]
    assert not faulting, (f"{faulting} carry llama.cpp's AMX kernels, which segfault on this CPU: "
                          "re-run `bash scripts/setup` (it rebuilds llama-cpp-python without them)")
