"""The one text normalisation used when training and when predicting.

fastText reads one example per line, and `predict` rejects text containing a newline, so a document's lines
are joined with spaces, exactly as DCLM's quality filter does (`text.replace("\\n", " ")`). Nothing else
changes: fastText already splits words on ASCII whitespace (space, tab, \\r, \\v, \\f, \\0), so collapsing
whitespace would change no token, and case and punctuation are part of what the model learns. A plain
`fasttext` or datatrove (`newline_replacement=" "`) user therefore feeds the model exactly the text it was
trained on. It is also cheap: scoring is bounded by fastText itself, not by this step.

The text view: a classifier distilled from a teacher that read only the first N characters of a page (the
annotate stage's `annotate.max_doc_chars`) may be trained and scored on that same view (`max_chars` = N,
recorded in its config.yaml): the page is cut to its first N characters before the newlines are replaced,
as the teacher's prompt cut it (`text[:N]`).
"""

from __future__ import annotations


def normalize_text(text: str | None, max_chars: int | None = None) -> str:
    """A document as one line (newlines become spaces), cut to its first `max_chars` characters first when
    given; "" for a missing or blank text."""
    if not text:
        return ""
    if max_chars is not None:
        text = text[:max_chars]
    if text.isspace():
        return ""
    return text.replace("\n", " ")


def normalize_many(texts: list[str | None], max_chars: int | None = None) -> list[str]:
    return [normalize_text(text, max_chars) for text in texts]
