"""The one text normalisation used when training and when predicting.

fastText reads one example per line, and `predict` rejects text containing a newline, so a document's lines
are joined with spaces, exactly as DCLM's quality filter does (`text.replace("\\n", " ")`). Nothing else
changes: fastText already splits words on ASCII whitespace (space, tab, \\r, \\v, \\f, \\0), so collapsing
whitespace would change no token, and case and punctuation are part of what the model learns. A plain
`fasttext` or datatrove (`newline_replacement=" "`) user therefore feeds the model exactly the text it was
trained on. It is also cheap: scoring is bounded by fastText itself, not by this step.
"""

from __future__ import annotations


def normalize_text(text: str | None) -> str:
    """A document as one line (newlines become spaces); "" for a missing or blank text."""
    if not text or text.isspace():
        return ""
    return text.replace("\n", " ")


def normalize_many(texts: list[str | None]) -> list[str]:
    return [normalize_text(text) for text in texts]
