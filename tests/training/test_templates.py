"""The marked training templates render exactly what the verifier renders, and are picked by exact match."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, R1_SPECIAL
from genprm.errors import ConfigError, InputError
from genprm.protocol.chat import AssistantHeader, ChatTemplate
from genprm.training.synthetic import synthetic_conversations
from genprm.training.templates import (
    SHIPPED,
    check_renders_identically,
    has_generation_marks,
    shipped_template,
    training_template_for,
)

from .helpers import MISSING, requires_train

CONVERSATIONS = synthetic_conversations(6, seed=7, detail=1)
THINKING = [{**m, "content": "<think>draft</think>" + m["content"]} if m["role"] == "assistant" else m
            for m in CONVERSATIONS[0]]


def _prefixes(conversation):
    """Every prefix the verifier renders: the history up to each user turn, and each whole history."""
    return [conversation[:end] for end in range(2, len(conversation) + 1)]


def _model_templates():
    from conftest import demo_model_path

    templates = {"deepseek-r1-distill-qwen": ((FIXTURES / "r1_distill_qwen_chat_template.jinja").read_text(
        encoding="utf-8"), R1_SPECIAL)}
    demo = demo_model_path()
    if demo is not None and not MISSING:
        import gguf

        field = gguf.GGUFReader(str(demo)).fields["tokenizer.chat_template"]
        templates["smollm2"] = (bytes(field.parts[field.data[0]]).decode(), {})
    return templates


def test_the_shipped_originals_are_the_models_own_templates():
    templates = _model_templates()
    if "smollm2" not in templates:
        pytest.skip("the demo model or gguf is missing: cannot read SmolLM2's template")
    for name, (template, _) in templates.items():
        assert shipped_template(name, training=False) == template, name
        assert not has_generation_marks(template)
        assert has_generation_marks(shipped_template(name, training=True))


@requires_train
@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_marked_copy_renders_byte_identically(name, smollm2_tokenizer):
    """Rendered by transformers (what TRL tokenizes) against genprm's own renderer (what verify prompts)."""
    tokenizer = smollm2_tokenizer
    variables = R1_SPECIAL if name.startswith("deepseek") else {}
    original = ChatTemplate(shipped_template(name, training=False), variables)
    marked = shipped_template(name, training=True)
    checked = 0
    for conversation in [*CONVERSATIONS, THINKING]:
        for messages in _prefixes(conversation):
            for generation_prompt in (False, True):
                want = original.render(messages, add_generation_prompt=generation_prompt)
                got = tokenizer.apply_chat_template(messages, chat_template=marked, tokenize=False,
                                                    add_generation_prompt=generation_prompt, **variables)
                assert got == want
                checked += 1
            if messages[-1]["role"] == "user":
                # the verifier's prompt for the next step is a prefix of the trained rendering
                prompt = original.prompt_for(messages, AssistantHeader.TEMPLATE)
                full = tokenizer.apply_chat_template(
                    conversation[: len(messages) + 1], chat_template=marked, tokenize=False, **variables)
                assert full.startswith(prompt)
    assert checked > 40


def test_the_model_template_picks_the_shipped_copy():
    for name in SHIPPED:
        chosen = training_template_for(shipped_template(name, training=False))
        assert chosen.source == f"genprm:{name}"
        assert chosen.training == shipped_template(name, training=True)


def test_a_template_one_byte_off_is_not_matched():
    template = shipped_template("smollm2", training=False) + " "
    with pytest.raises(ConfigError, match="--training-template FILE"):
        training_template_for(template)
    chosen = training_template_for(template, trl_copy=lambda: "{% generation %}x{% endgeneration %}")
    assert chosen.source == "trl"


def test_override_and_already_marked_templates(tmp_path):
    marked = tmp_path / "marked.jinja"
    marked.write_text(shipped_template("smollm2", training=True), encoding="utf-8")
    chosen = training_template_for("anything", override=marked)
    assert chosen.source == str(marked) and chosen.inference == "anything"
    plain = tmp_path / "plain.jinja"
    plain.write_text("{{ messages }}", encoding="utf-8")
    with pytest.raises(ConfigError, match="no {% generation %}"):
        training_template_for("anything", override=plain)
    assert training_template_for(shipped_template("smollm2", training=True)).source == "model"
    with pytest.raises(ConfigError, match="has no chat template"):
        training_template_for(None)


def test_a_rendering_difference_names_the_conversation():
    def render(messages):
        return "".join(m["content"] for m in messages)

    def shifted(messages):
        return render(messages) if len(messages) < 7 else render(messages) + "!"

    lengths = [len(c) for c in CONVERSATIONS]
    with pytest.raises(InputError) as caught:
        check_renders_identically(CONVERSATIONS, render, shifted, source="test")
    assert caught.value.record == lengths.index(7)
    check_renders_identically(CONVERSATIONS, render, render, source="test")


@requires_train
def test_trl_copy_of_qwen_renders_identically(qwen_tokenizer):
    """Qwen2.5's template: genprm ships no copy, TRL's is taken, and it must render like the original."""
    from trl.chat_template_utils import get_training_chat_template

    chosen = training_template_for(qwen_tokenizer.chat_template, trl_copy=lambda: get_training_chat_template(
        qwen_tokenizer))
    assert chosen.source == "trl"
    original = ChatTemplate(chosen.inference)
    check_renders_identically(
        CONVERSATIONS, original.render,
        lambda m: qwen_tokenizer.apply_chat_template(m, chat_template=chosen.training, tokenize=False), source="trl")
