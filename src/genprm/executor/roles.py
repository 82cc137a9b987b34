"""Role models as worker resources: the models a caller already holds, or ones loaded from specs.

A :class:`RoleSpec` is how to start one role's model (engine name, model, options, an overriding
chat template): small and picklable, so a Ray actor can load the same model on its own machine.
:class:`Roles` loads each distinct (engine, model, options) once, on first use, and is what both a
local command and every replica actor hold.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genprm.engines import Engine, load_engine
from genprm.executor.base import Resources

if TYPE_CHECKING:
    from genprm.evaluation.chat import ChatModel

EngineLoad = tuple[str, str, tuple[tuple[str, Any], ...]]


@dataclass(frozen=True)
class RoleSpec:
    """How to start one role's model."""

    engine: str
    model: str
    options: tuple[tuple[str, Any], ...] = ()
    chat_template: str | None = None
    """A Jinja template overriding the model's own."""

    @property
    def loads(self) -> EngineLoad:
        """What identifies the loaded engine (the template is applied per role)."""
        return self.engine, self.model, self.options


class Roles(Resources):
    """The role models, each engine loaded on first use and only once; close() releases them."""

    def __init__(self, specs: Mapping[str, RoleSpec]) -> None:
        super().__init__()
        self.specs = dict(specs)
        self._engines: dict[EngineLoad, Engine] = {}
        self._stack = ExitStack()
        self._loading = threading.Lock()

    def engine(self, role: str) -> Engine:
        """The engine of ``role``, loaded now if no role loaded it yet."""
        spec = self.specs.get(role)
        if spec is None:
            raise LookupError(f"no model plays '{role}' here (roles: {', '.join(self.specs) or 'none'})")
        with self._loading:  # a threaded worker's first units may ask at once: load once
            engine = self._engines.get(spec.loads)
            if engine is None:
                engine = self._stack.enter_context(load_engine(spec.engine, spec.model, **dict(spec.options)))
                self._engines[spec.loads] = engine
        return engine

    def chat(self, role: str) -> ChatModel:
        from genprm.evaluation.chat import ChatModel

        return ChatModel(self.engine(role), self.specs[role].chat_template)

    @property
    def loaded(self) -> int:
        return len(self._engines)

    def close(self) -> None:
        super().close()
        self._stack.close()

    def __enter__(self) -> Roles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeldModels(Resources):
    """Resources of this process: the chat models a caller already holds, by role."""

    def __init__(self, **chats: ChatModel) -> None:
        super().__init__()
        self._chats = chats

    def chat(self, role: str) -> ChatModel:
        found = self._chats.get(role)
        if found is None:
            raise LookupError(f"no model plays '{role}' here (roles: {', '.join(self._chats) or 'none'})")
        return found
