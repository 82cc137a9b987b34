"""Token-sequence helpers shared by the protocol and every engine, so each rule lives once."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (KV-cache reuse, the verdict split)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def with_bos(ids: list[int], bos: int | None) -> list[int]:
    """Prepend ``bos`` unless it is ``None`` (the model wants none) or already there; edits ``ids``."""
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids
