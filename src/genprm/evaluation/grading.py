"""Answer grading with ``math-verify``, only where its signal-based timeouts are safe.

math-verify bounds parsing and comparison with ``signal.alarm``, which works only in a process's
main thread. Callers on the main thread grade in place; anywhere else the work goes to a
one-process pool whose worker grades on its own main thread.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from genprm.errors import ConfigError

TIMEOUT_S = 5


def _math_verify():  # type: ignore[no-untyped-def]
    try:
        import math_verify
    except ImportError:
        raise ConfigError(
            "grading", "math-verify", "is not installed: pip install 'genprm[eval]' (or pip install math-verify)"
        ) from None
    return math_verify


def _gold_text(gold: str) -> str:
    """Bare gold answers ("420", "\\frac{1}{2}") parse best as inline math."""
    text = gold.strip()
    return text if ("$" in text or "\\boxed" in text) else f"${text}$"


def _grade_pair(pair: tuple[str, str]) -> tuple[bool, str | None]:
    """``(the response's final answer equals gold mathematically, that answer's normal form for votes)``.

    Main thread only (math-verify's timeouts); the response is parsed once for both.
    """
    gold, response = pair
    mv = _math_verify()
    parsed = mv.parse(response, parsing_timeout=TIMEOUT_S)
    if not parsed:
        return False, None
    parsed_gold = mv.parse(_gold_text(gold), parsing_timeout=TIMEOUT_S)
    correct = bool(parsed_gold) and bool(mv.verify(parsed_gold, parsed, timeout_seconds=TIMEOUT_S))
    return correct, str(parsed[0])


def grade_all(pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, str | None]]:
    """``(correct, answer key)`` for each ``(gold, response)``; safe to call from any thread."""
    if threading.current_thread() is threading.main_thread():
        return [_grade_pair(p) for p in pairs]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_grade_pair, pairs, chunksize=16))
