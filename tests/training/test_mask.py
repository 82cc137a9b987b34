"""The loss mask TRL builds covers exactly the assistant turns, each with its end-of-turn token.

TRL's own dataset preparation runs (a real ``SFTTrainer`` on a tiny randomly initialised model, so no
weights are needed): its labels are -100 wherever the loss is masked out. The masked-in spans,
decoded, must be the assistant turns' contents plus the end-of-turn token, and nothing else: no
system prompt, no user turn, no assistant header.
"""

from __future__ import annotations

import pytest

from genprm.training.synthetic import synthetic_conversations
from genprm.training.templates import training_template_for

from .helpers import one_turn_conversations, r1_tokenizer, requires_train

pytestmark = requires_train

CONVERSATIONS = synthetic_conversations(4, seed=11) + one_turn_conversations(2, seed=5)


def _trl_labels(tokenizer, training_template, conversations, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer.chat_template = training_template
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, max_length=None, use_cpu=True, bf16=False,
                     report_to="none", activation_checkpointing=False, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"messages": conversations}),
                         processing_class=tokenizer)
    return [(row["input_ids"], row["labels"]) for row in trainer.train_dataset]


def _masked_in_spans(input_ids, labels):
    spans, current = [], []
    for token, label in zip(input_ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def _check(tokenizer, end_of_turn, tmp_path):
    chosen = training_template_for(tokenizer.chat_template)
    assert chosen.source.startswith("genprm:")
    rows = _trl_labels(tokenizer, chosen.training, CONVERSATIONS, tmp_path)
    for conversation, (input_ids, labels) in zip(CONVERSATIONS, rows):
        decoded = [tokenizer.decode(span, clean_up_tokenization_spaces=False)
                   for span in _masked_in_spans(input_ids, labels)]
        expected = [m["content"] + end_of_turn for m in conversation if m["role"] == "assistant"]
        assert decoded == expected
        trained = sum(label != -100 for label in labels)
        assert 0 < trained < len(input_ids)


def test_r1_distill_mask_on_the_fixture_template(smollm2_tokenizer, tmp_path):
    tokenizer = r1_tokenizer(smollm2_tokenizer)
    _check(tokenizer, "<｜end▁of▁sentence｜>", tmp_path)


def test_r1_distill_mask_on_qwen2s_vocabulary(qwen_tokenizer, tmp_path):
    """The same on the Qwen2 vocabulary R1-distill-Qwen really uses (when its GGUF is here)."""
    _check(r1_tokenizer(qwen_tokenizer), "<｜end▁of▁sentence｜>", tmp_path)


def test_smollm2_mask(smollm2_tokenizer, tmp_path):
    import copy

    _check(copy.deepcopy(smollm2_tokenizer), "<|im_end|>", tmp_path)


def test_an_unmarked_template_would_train_nothing_and_trl_refuses_it(smollm2_tokenizer, tmp_path):
    """Why the marks matter: TRL stops on SmolLM2's own template (it knows no marked copy of it)."""
    import copy

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    with pytest.raises(ValueError, match="not training-compatible"):
        _trl_labels(tokenizer, tokenizer.chat_template, CONVERSATIONS[:1], tmp_path)
