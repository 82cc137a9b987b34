"""The CLI starts with only the base install: every command's --help works without any extra, and a
command that needs one names it with a one-line fix instead of a traceback.

Each case runs in a fresh interpreter whose optional packages are made unimportable (``sys.modules[name] =
None``: ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None, exactly as
when the package is not installed), so what the test process has imported already cannot hide a
module-level import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# every package an extra brings (pyproject.toml's optional-dependencies), by import name
OPTIONAL = ["llama_cpp", "httpx", "vllm", "math_verify", "matplotlib", "fastapi", "uvicorn", "prometheus_client",
            "ray", "pyarrow", "torch", "trl", "transformers", "peft", "datasets", "accelerate", "gguf",
            "sentencepiece", "selenium"]

_PRELUDE = textwrap.dedent(f"""
    import sys
    for name in {OPTIONAL!r}:
        sys.modules[name] = None
    import typer
    from typer.testing import CliRunner
    from genprm.cli.main import app
""")


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], capture_output=True,
                          text=True, timeout=300)


def test_every_command_shows_its_help_without_any_extra():
    done = _run("""
        import json
        def walk(command, path):
            yield path
            for name, sub in getattr(command, "commands", {}).items():
                yield from walk(sub, [*path, name])
        runner = CliRunner()
        results = {}
        for path in walk(typer.main.get_command(app), []):
            result = runner.invoke(app, [*path, "--help"])
            results[" ".join(path)] = [result.exit_code, repr(result.exception)]
        print(json.dumps(results))
    """)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"verify", "train", "serve", "synth run", "eval processbench"} <= set(results)
    failed = {command: outcome for command, outcome in results.items() if outcome[0] != 0}
    assert not failed, failed


@pytest.mark.parametrize(("args", "needs"), [
    (["verify", "{records}"], "this needs 'llama-cpp-python': pip install 'genprm[llamacpp]'"),
    (["serve", "--model", "m.gguf"], "this needs 'fastapi': pip install 'genprm[serve]'"),
    (["train", "--data", "{conversations}", "--base-model", "m", "--out", "{tmp}/train"],
     "pip install 'genprm[train]'"),
], ids=["verify", "serve", "train"])
def test_a_command_that_needs_a_missing_extra_says_which(tmp_path, args, needs):
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"problem": "1 + 1?", "steps": ["2"]}) + "\n")
    conversations = tmp_path / "conversations.jsonl"
    conversations.write_text(json.dumps({"conversations": []}) + "\n")
    argv = [a.format(records=records, conversations=conversations, tmp=tmp_path) for a in args]
    done = _run(f"""
        result = CliRunner().invoke(app, {argv!r})
        print("EXIT", result.exit_code, repr(result.exception))
        print(result.output)
    """)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout and "ModuleNotFoundError" not in done.stdout, done.stdout
    assert needs in done.stdout, done.stdout
    assert not done.stdout.startswith("EXIT 0"), done.stdout


def test_version_is_printed_without_any_extra():
    from genprm import __version__

    done = _run("""
        result = CliRunner().invoke(app, ["--version"])
        print("EXIT", result.exit_code)
        print(result.output)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["EXIT", "0", "genprm", __version__]
