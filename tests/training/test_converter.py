"""llama.cpp's converter is taken from a llama-cpp-python sdist (or source folder) and cached once."""

from __future__ import annotations

import io
import sys
import tarfile

import pytest

from genprm.training import converter
from genprm.training.converter import SOURCE_ENV, ConverterError, ensure_converter

pytest.importorskip("llama_cpp")

FILES = {
    "convert_hf_to_gguf.py": "import sys\nprint('converter ran', file=sys.stderr)\nsys.exit(3)\n",
    "conversion/__init__.py": "",
    "conversion/base.py": "X = 1\n",
    "gguf-py/gguf/__init__.py": "",
    "README.md": "not needed",
    "ggml/src/ggml.c": "int main;",
}


def _sdist(path, prefix="llama_cpp_python-0.0.0/vendor/llama.cpp/"):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "genprm" / "llama.cpp-converter" / converter.llama_cpp_version()


def test_the_three_parts_come_from_the_sdist_and_are_cached(tmp_path, monkeypatch, cache):
    sdist = _sdist(tmp_path / "llama_cpp_python-0.0.0.tar.gz")
    monkeypatch.setenv(SOURCE_ENV, str(sdist))
    script = ensure_converter()
    assert script == cache / "convert_hf_to_gguf.py"
    assert (cache / "conversion" / "base.py").read_text() == "X = 1\n"
    assert (cache / "gguf-py" / "gguf" / "__init__.py").is_file()
    assert not (cache / "README.md").exists() and not (cache / "ggml").exists()
    sdist.unlink()
    monkeypatch.delenv(SOURCE_ENV)
    assert ensure_converter() == script, "the cache is used; nothing is fetched again"


def test_a_source_folder_works_and_a_wrong_one_is_named(tmp_path, monkeypatch, cache):
    source = tmp_path / "llama.cpp"
    for name, text in FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    monkeypatch.setenv(SOURCE_ENV, str(source))
    assert ensure_converter().is_file()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
    (source / "conversion" / "base.py").unlink()
    (source / "conversion" / "__init__.py").unlink()
    (source / "conversion").rmdir()
    with pytest.raises(ConverterError, match="missing conversion"):
        ensure_converter()


def test_a_failing_conversion_reports_the_converters_words(tmp_path, monkeypatch, cache):
    monkeypatch.setenv(SOURCE_ENV, str(_sdist(tmp_path / "s.tar.gz")))
    with pytest.raises(ConverterError, match="converter ran"):
        converter.convert(tmp_path, tmp_path / "out.gguf")


def test_the_module_prints_the_converter_path(tmp_path, cache):
    import os
    import subprocess

    env = {**os.environ, SOURCE_ENV: str(_sdist(tmp_path / "s.tar.gz")), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "genprm.training.converter"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cache / "convert_hf_to_gguf.py")
