"""The installed llama.cpp build runs on this CPU: on an AMX CPU it must not carry llama.cpp 0.3.36's AMX
kernels, which segfault on the first prompt longer than a few tokens (scripts/llamacpp-flags builds
without them; the engine refuses such a build with the fix)."""

from __future__ import annotations

import pytest

from genprm.engines import llamacpp_build
from genprm.errors import EngineError

pytest.importorskip("llama_cpp")


@pytest.mark.skipif("amx_tile" not in llamacpp_build.cpu_flags(), reason="this CPU has no AMX")
def test_an_amx_cpu_gets_a_llama_cpp_build_without_the_faulting_amx_kernels():
    library_dir = llamacpp_build.installed_library_dir()
    assert list(library_dir.glob("libggml-cpu*.so*")), "llama-cpp-python has no libggml-cpu"
    assert llamacpp_build.faulting_amx_libraries(library_dir) == [], "re-run `bash scripts/setup`"


def test_a_build_with_the_amx_kernels_is_refused_on_an_amx_cpu_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "libggml-cpu.so").write_bytes(b"\0ELF..." + llamacpp_build.AMX_KERNEL + b"\0")
    (tmp_path / "libggml-base.so").write_bytes(b"\0ELF...")
    monkeypatch.setattr(llamacpp_build, "cpu_flags", lambda: frozenset({"avx2", "amx_tile"}))
    with pytest.raises(EngineError, match="libggml-cpu.so.*CMAKE_ARGS=.*GGML_NATIVE=OFF"):
        llamacpp_build.check_build.__wrapped__(tmp_path)
    monkeypatch.setattr(llamacpp_build, "cpu_flags", lambda: frozenset({"avx2"}))
    llamacpp_build.check_build.__wrapped__(tmp_path)  # no AMX on the CPU: the kernels never run


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert llamacpp_build.cpu_flags(info) == {"fpu", "sse", "avx2", "amx_tile"}
    assert llamacpp_build.cpu_flags(tmp_path / "missing") == frozenset()
