"""Upstream GenPRM output semantics, in whichever isolation mode this machine supports."""

from __future__ import annotations

import dataclasses

import pytest
from sandbox_support import FAST, FAST_RLIMITS, pool_fixture, requires_rlimits  # noqa: F401

from genprm.sandbox import (
    NO_CODE_FOUND,
    TIMEOUT_MESSAGE,
    CodeSession,
    SandboxConfig,
    WorkerPool,
)
from genprm.sandbox.messages import format_error, format_truncation


def test_print_output_is_stripped(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("print()\nprint('  hi  ')\nprint('there')\nprint()") == "hi  \nthere"
        assert s.run("x = 1") == ""


def test_namespace_persists_across_runs(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("x = 2\nprint(x + 1)") == "3"
        assert s.run("print(x * 10)") == "20"
        assert s.run("def f(y):\n    return y * x\n") == ""
        assert s.run("print(f(21))") == "42"


def test_namespace_is_upstream_empty_dict(pool: WorkerPool) -> None:
    # upstream ran exec(code, {}): __name__ is 'builtins', so __main__ guards do not fire
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("print(__name__)") == "builtins"


def test_sessions_do_not_share_namespaces(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as a, CodeSession(FAST, pool=pool) as b:
        a.run("secret = 1")
        assert b.run("print(secret)") == "Code execute Error: NameError: name 'secret' is not defined"


def test_exception_text_is_exact(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("1/0") == "Code execute Error: ZeroDivisionError: division by zero"


def test_stdout_before_an_exception_is_discarded(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("print('partial')\nraise ValueError('bad')") == "Code execute Error: ValueError: bad"
        assert s.run("print('again')") == "again"


def test_syntax_error_is_data(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("def (:").startswith("Code execute Error: SyntaxError: ")


def test_system_exit_and_keyboard_interrupt_are_data(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("import sys\nsys.exit(3)") == "Code execute Error: SystemExit: 3"
        assert s.run("raise KeyboardInterrupt('stop')") == "Code execute Error: KeyboardInterrupt: stop"
        assert s.run("print('alive')") == "alive"
        assert s.restarts == 0


def test_user_raised_timeout_error_matches_upstream(pool: WorkerPool) -> None:
    # upstream caught TimeoutError before Exception, so a user TimeoutError printed the time-out line
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("raise TimeoutError('slow')") == "Code execute time out: slow"


def test_timeout_text_is_exact_and_next_run_restarts(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        s.run("kept = 5")
        assert s.run("import time\ntime.sleep(30)") == "Code execute time out: Code execution timed out"
        assert s.run("print(1 + 1)") == "2"
        assert s.restarts == 1
        assert s.run("print(kept)") == "5"  # replayed into the fresh worker (see test_sandbox_replay.py)


def test_stderr_is_not_part_of_the_output(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        code = "import sys, os\nprint('err', file=sys.stderr)\nos.write(2, b'x')\nos.write(1, b'y')"
        assert s.run(code) == ""


def test_output_is_truncated_with_a_marker(pool: WorkerPool) -> None:
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, max_output_chars=1000)
    with CodeSession(cfg, pool=pool) as s:
        out = s.run("print('a' * 1500 + '   ')")
        assert out == "a" * 1000 + "\n... [output truncated: 500 more characters]"
        assert out.endswith(format_truncation(500))
        assert s.run("print('b' * 1000 + '\\n\\n')") == "b" * 1000  # only blanks dropped: no marker
        long_error = s.run("raise ValueError('e' * 5000)")
        assert long_error.startswith(format_error("ValueError", "e" * 1000))
        assert long_error.endswith(format_truncation(4000))


def test_sympy_numpy_scipy_are_preimported_and_usable(pool: WorkerPool) -> None:
    with CodeSession(SandboxConfig(pool_size=0), pool=pool) as s:
        assert s.worker_info["preimported"] == ["sympy", "numpy", "scipy"]
        assert s.run("import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 4, x))") == "[-2, 2]"
        numpy_check = "import numpy as np\nprint(np.linalg.det(np.array([[1, 2], [3, 4]])).round(6))"
        assert s.run(numpy_check) == "-2.0"
        scipy_check = "from scipy import optimize\nprint(round(optimize.brentq(lambda t: t*t - 2, 0, 2), 6))"
        assert s.run(scipy_check) == "1.414214"


def test_run_after_close_and_bad_argument_raise(pool: WorkerPool) -> None:
    s = CodeSession(FAST, pool=pool)
    with pytest.raises(TypeError):
        s.run(b"print(1)")  # type: ignore[arg-type]
    s.close()
    assert s.closed
    with pytest.raises(RuntimeError):
        s.run("print(1)")


def test_session_without_with_block_starts_lazily(pool: WorkerPool) -> None:
    s = CodeSession(FAST, pool=pool)
    assert s.isolation is None
    assert s.run("print(7)") == "7"
    assert s.isolation in ("bwrap", "rlimits")
    s.close()


def test_message_constants() -> None:
    assert NO_CODE_FOUND == "Code format error: No code found."
    assert TIMEOUT_MESSAGE == "Code execute time out: Code execution timed out"


@requires_rlimits
def test_rlimits_mode_basics_timeout_truncation(pool: WorkerPool) -> None:
    cfg = dataclasses.replace(FAST_RLIMITS, max_output_chars=100)
    with CodeSession(cfg, pool=pool) as s:
        assert s.isolation == "rlimits"
        assert s.run("x = 2\nprint(x + 1)") == "3"
        assert s.run("print(x * 10)") == "20"
        assert s.run("1/0") == "Code execute Error: ZeroDivisionError: division by zero"
        assert s.run("while True: pass") == TIMEOUT_MESSAGE
        assert s.run("print('z' * 150)") == "z" * 100 + format_truncation(50)
        assert s.restarts == 1


@requires_rlimits
def test_rlimits_mode_sees_no_parent_environment(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENPRM_TEST_SECRET", "hunter2")
    with CodeSession(FAST_RLIMITS, pool=pool) as s:
        out = s.run("import os\nprint(dict(os.environ))")
        assert "hunter2" not in out and "GENPRM_TEST_SECRET" not in out
