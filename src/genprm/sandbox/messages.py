"""The exact strings spliced into the transcript inside the code-output fence.

They reproduce upstream GenPRM's in-process executor (``exec`` + ``redirect_stdout``) byte for
byte, because the verifier model was trained on transcripts containing them. The protocol layer
imports the same constants, so there is one source of truth.
"""

from __future__ import annotations

NO_CODE_FOUND = "Code format error: No code found."
"""Upstream's text when a step asked for code execution but held no ```python block."""

ERROR_TEMPLATE = "Code execute Error: {name}: {message}"
"""Upstream's text for an exception raised by the model's code (``type(e).__name__``, ``str(e)``)."""

TIMEOUT_TEMPLATE = "Code execute time out: {message}"
"""Upstream's text when its ``TimeoutError`` fired; ``message`` is the exception text."""

TIMEOUT_MESSAGE = TIMEOUT_TEMPLATE.format(message="Code execution timed out")
"""What the sandbox returns when the wall-clock limit killed the code."""

TRUNCATION_TEMPLATE = "\n... [output truncated: {count} more characters]"
"""Appended when the output exceeded ``SandboxConfig.max_output_chars`` (not upstream: it was unbounded)."""

WORKER_DIED_NAME = "SandboxWorkerDied"
"""Exception name shown when the code killed its own process (``os._exit``, segfault, CPU limit)."""


def format_error(name: str, message: str) -> str:
    """Render an exception of the model's code the way upstream did."""
    return ERROR_TEMPLATE.format(name=name, message=message)


def format_timeout(message: str = "Code execution timed out") -> str:
    """Render a timeout the way upstream did."""
    return TIMEOUT_TEMPLATE.format(message=message)


def format_truncation(count: int) -> str:
    """The marker that tells the reader how much output was dropped."""
    return TRUNCATION_TEMPLATE.format(count=count)
