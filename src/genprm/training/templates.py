"""Training copies of chat templates: the same bytes, with ``{% generation %}`` marks for the loss mask.

TRL's assistant-only loss trains exactly the tokens a chat template renders inside
``{% generation %}...{% endgeneration %}``. Models' own templates carry no such marks, and TRL only
swaps in a marked copy for templates it knows byte for byte. genprm ships marked copies for the
templates it is used with (DeepSeek-R1-Distill-Qwen, GenPRM's base, and SmolLM2, the demo model),
picks one by matching the model's template exactly, and otherwise falls back to TRL's copy, an
already marked template, or a file the user gives (``--training-template``).

A marked copy must render every training conversation byte-identically to the inference template,
or the model is trained on text genprm never prompts it with: :func:`check_renders_identically`
proves it on the data before training starts. The saved model keeps the *inference* template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from genprm.errors import ConfigError, InputError

Message = dict[str, str]
Render = Callable[[list[Message]], str]

SHIPPED = {"deepseek-r1-distill-qwen": "deepseek_r1_distill_qwen", "smollm2": "smollm2"}
"""Template name -> file stem under ``genprm/training/templates`` (``STEM.jinja`` and ``STEM_training.jinja``)."""

_GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class TrainingTemplate:
    """The template a model is trained with, and where it came from."""

    source: str
    """``genprm:NAME`` (shipped copy), ``trl`` (TRL's copy), ``model`` (already marked) or a file path."""
    inference: str
    training: str


def has_generation_marks(template: str) -> bool:
    return _GENERATION_MARK.search(template) is not None


def shipped_template(name: str, *, training: bool) -> str:
    """A shipped template's text: the inference original or its marked training copy."""
    stem = SHIPPED[name] + ("_training" if training else "")
    return resources.files("genprm.training").joinpath("templates", stem + ".jinja").read_text(encoding="utf-8")


def training_template_for(
    inference: str | None,
    *,
    override: Path | None = None,
    trl_copy: Callable[[], str | None] | None = None,
) -> TrainingTemplate:
    """The marked template to train a model whose chat template is ``inference``.

    ``trl_copy`` asks TRL for its marked copy (``None`` when TRL knows none); the CLI passes one.
    """
    if not inference:
        raise ConfigError("--base-model", "<model>", "has no chat template; GenPRM needs one to render conversations")
    if override is not None:
        try:
            text = override.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("--training-template", str(override), f"cannot read: {exc}") from None
        if not has_generation_marks(text):
            raise ConfigError("--training-template", str(override),
                              "has no {% generation %} ... {% endgeneration %} marks around the assistant turns")
        return TrainingTemplate(str(override), inference, text)
    if has_generation_marks(inference):
        return TrainingTemplate("model", inference, inference)
    for name in SHIPPED:
        if inference == shipped_template(name, training=False):
            return TrainingTemplate(f"genprm:{name}", inference, shipped_template(name, training=True))
    marked = trl_copy() if trl_copy is not None else None
    if marked is not None:
        return TrainingTemplate("trl", inference, marked)
    raise ConfigError(
        "--base-model", "<model>",
        "its chat template has no training copy with {% generation %} marks (genprm ships copies for "
        f"{', '.join(SHIPPED)}; TRL knows others). Pass --training-template FILE: the model's template with "
        "{% generation %}...{% endgeneration %} around each assistant turn's content and its end-of-turn token",
    )


def check_renders_identically(
    conversations: Sequence[list[Message]], inference: Render, training: Render, *, source: str
) -> None:
    """Raise :class:`InputError` at the first conversation the two templates render differently."""
    for index, messages in enumerate(conversations):
        want, got = inference(messages), training(messages)
        if want != got:
            at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            raise InputError(
                f"the training template ({source}) renders this conversation differently from the model's own "
                f"template from character {at}: {want[at:at + 40]!r} vs {got[at:at + 40]!r}; fix the marked copy",
                record=index,
            )
