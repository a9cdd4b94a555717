"""Split a long page into chunks on paragraph boundaries within a token budget.

A chunk is a run of whole paragraphs whose token count stays within the budget. A paragraph longer than
the budget on its own is split at sentence ends, then at spaces, and only as a last resort (text with no
spaces, such as Chinese or Japanese) inside a word. Joining a document's chunks with "\n" gives back its
paragraphs in order, so per-chunk answers are reassembled in the same order.

Tokens are counted with `pipeline.llm.tokens.TokenCounter`: the served model's own tokenizer when its
folder is on this machine, else a documented estimate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from pipeline.llm.tokens import TokenCounter

# A sentence ends after ., !, ? (optionally a closing quote or bracket) and the spaces that follow, or right
# after a CJK full stop / exclamation / question mark (no space follows those).
_SENTENCE = re.compile(r".+?(?:[.!?][\"'\u201d\u2019)\]]?\s+|[\u3002\uff01\uff1f]\s*|$)", re.DOTALL)
_WORD = re.compile(r"\S+\s*|\s+")
PARAGRAPH_SEPARATOR = "\n"


def split_paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs (trafilatura writes one per line), stripped, in order."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def _split_long(piece: str, budget: int, count: Callable[[list[str]], list[int]]) -> list[str]:
    """Split one over-budget paragraph into pieces within the budget: sentences, then words, then characters.
    The pieces keep their trailing spaces, so joining them gives back the paragraph."""
    for pattern in (_SENTENCE, _WORD):
        parts = [m.group(0) for m in pattern.finditer(piece) if m.group(0)]
        if len(parts) > 1:
            return [chunk.strip() for chunk in _pack(parts, budget, count, "") if chunk.strip()]
    # One unbreakable run: cut it into character windows that fit (halving the window until one does).
    pieces: list[str] = []
    start = 0
    window = max(1, len(piece) // max(1, math.ceil(count([piece])[0] / budget)))
    while start < len(piece):
        size = window
        while size > 1 and count([piece[start : start + size]])[0] > budget:
            size //= 2
        pieces.append(piece[start : start + size])
        start += size
    return pieces


def _pack(parts: list[str], budget: int, count: Callable[[list[str]], list[int]], joiner: str) -> list[str]:
    """Greedily join consecutive parts while the sum of their counts (plus one per joiner) fits the budget.

    Counts are added rather than recounted after each join (BPE counts are near-additive at whitespace),
    which keeps chunking linear in the page length."""
    counts = count(parts)
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for part, n in zip(parts, counts):
        if n > budget:
            if current:
                chunks.append(joiner.join(current))
                current, used = [], 0
            chunks.extend(_split_long(part, budget, count))
            continue
        extra = n + (1 if current and joiner else 0)
        if current and used + extra > budget:
            chunks.append(joiner.join(current))
            current, used, extra = [], 0, n
        current.append(part)
        used += extra
    if current:
        chunks.append(joiner.join(current))
    return chunks


def chunk_text(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """The page as chunks of whole paragraphs, each within `budget` tokens, in order."""
    if budget < 1:
        raise ValueError(f"chunk budget must be at least 1 token, got {budget}")
    paragraphs = split_paragraphs(text)
    if not paragraphs:
        return []
    return _pack(paragraphs, budget, counter.count_many, PARAGRAPH_SEPARATOR)
