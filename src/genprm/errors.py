"""The few exceptions genprm raises, so callers can catch by kind.

Model-written code failing is *not* an error here: it is data in the transcript. Only
"the input is bad", "the engine failed" and "the sandbox itself could not run" raise.
"""

from __future__ import annotations


class GenPRMError(Exception):
    """Base class of every error genprm raises on purpose."""


class InputError(GenPRMError, ValueError):
    """Bad user input; names the file, line, record and field so the user can fix it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        record: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.record = record
        self.field = field
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path) + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class ConfigError(GenPRMError, ValueError):
    """A setting has a bad value; names the parameter and the value."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        super().__init__(f"{parameter}={value!r}: {reason}")


class ModelNotFoundError(GenPRMError):
    """The model named by the user cannot be located or loaded."""


class EngineError(GenPRMError):
    """An inference engine failed (a server answered badly, a backend crashed)."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        self.status = status
        self.body = body
        detail = f" (status {status})" if status is not None else ""
        super().__init__(message + detail)


class ContextOverflowError(EngineError):
    """A prompt does not fit the model's context: deterministic, so a path hitting it is recorded as
    unreadable (reason ``context``) rather than retried or allowed to stop the run.
    """

    def __init__(self, prompt_tokens: int, context: int) -> None:
        super().__init__(f"prompt of {prompt_tokens} tokens does not fit the context of {context}")
        self.prompt_tokens = prompt_tokens
        self.context = context


class MissingDependencyError(GenPRMError, ImportError):
    """An optional backend was chosen but its package is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"this needs '{package}': pip install 'genprm[{extra}]'")
        self.package = package
        self.extra = extra


class SandboxUnavailableError(GenPRMError):
    """The sandbox itself could not start or talk to its worker (not: the model's code failed)."""


class SandboxRefusedError(SandboxUnavailableError):
    """Model code would run without the isolation asked for, so genprm refuses: the same on every
    retry until the machine or the setting changes (its message says how to fix it).
    """


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may go away on a retry: a server or engine failing, the sandbox unable to
    start, the machine out of memory. Anything else (bad input or settings, a prompt too long for the
    context, a bug) happens again the same way, so a resumed run does not retry it unless asked.
    """
    if isinstance(exc, (ContextOverflowError, SandboxRefusedError)):
        return False
    return isinstance(exc, (EngineError, SandboxUnavailableError, MemoryError, OSError, TimeoutError))
