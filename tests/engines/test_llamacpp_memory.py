"""Saved KV states must stay within the engine's byte budget, logits copies included."""

from __future__ import annotations

from genprm.engines.base import LogprobRequest
from genprm.engines.llamacpp import LlamaCppEngine, state_bytes


def test_saved_states_drop_their_logits_copy_and_respect_the_budget(demo_gguf):
    engine = LlamaCppEngine(str(demo_gguf), n_ctx=2048, n_threads=1, state_cache_mb=8)
    try:
        base = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 6)
        for i in range(6):
            tokens = base + engine.tokenize(f" Variant {i} of the sentence ends here.")[1:]
            engine.next_token_logprobs([LogprobRequest(tokens, (tokens[-1],))])
        states = list(engine._states.states.values())
        assert states, "the cache keeps recent states"
        assert all(s.scores.shape[0] == 1 for s in states), "no n_batch x vocab logits copy is kept"
        assert engine._states.bytes == sum(state_bytes(s) for s in states)
        assert engine._states.bytes <= 8 * 2**20
    finally:
        engine.close()
