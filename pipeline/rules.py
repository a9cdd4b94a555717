"""Heuristic quality rules: score columns plus the names of the rules a document fails.

Score first, decide later: every document gets its rule scores as columns and the list of rules it fails
(`rule_failures`); extract then drops a document for the first failure with that name as its reason.
The pass/fail decisions are datatrove's own implementations of the Gopher quality and repetition, C4 and
FineWeb rules (they run offline: their English word splitting uses spaCy's blank model). Their
thresholds are the published defaults; the document-length bounds are configurable.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline.config import RulesConfig

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
TERMINAL_PUNCTUATION = tuple(".!?\"'”’)»…。！？")


def _prefixed(prefix: str, reason: str) -> str:
    reason = reason.replace(" ", "_").replace("<", "lt").strip("_")
    return reason if reason.startswith(prefix) else f"{prefix}{reason}"


class RuleSet:
    """The enabled datatrove filters, built once per worker (filters hold compiled regexes and tokenizers)."""

    def __init__(self, cfg: RulesConfig):
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )

        self.cfg = cfg
        self.filters: list[tuple[str, Any]] = []
        if cfg.gopher_repetition:
            self.filters.append(("gopher_", GopherRepetitionFilter()))
        if cfg.gopher_quality:
            self.filters.append(("gopher_", GopherQualityFilter(min_doc_words=cfg.min_doc_words,
                                                                max_doc_words=cfg.max_doc_words)))
        if cfg.c4_quality:
            # As FineWeb uses it: keep lines without terminal punctuation (that rule removes lines, and
            # rules here only score, they never edit the text).
            self.filters.append(("c4_", C4QualityFilter(filter_no_terminal_punct=False)))
        if cfg.fineweb_quality:
            self.filters.append(("fineweb_", FineWebQualityFilter()))

    def applies_to(self, language: str | None) -> bool:
        return self.cfg.enabled and (not self.cfg.apply_to_languages or language in self.cfg.apply_to_languages)

    def failures(self, text: str, doc_id: str = "") -> list[str]:
        from datatrove.data import Document

        failed: list[str] = []
        for prefix, rule in self.filters:
            # C4's filter rewrites doc.text in place: give every rule its own Document.
            verdict = rule.filter(Document(text=text, id=doc_id))
            if verdict is True:
                continue
            reason = verdict[1] if isinstance(verdict, tuple) else rule.name
            failed.append(_prefixed(prefix, str(reason)))
        return failed


def rule_scores(text: str) -> dict[str, Any]:
    """Cheap, language-agnostic statistics behind the rules, stored as columns for later re-thresholding."""
    words = text.split()
    n_words = len(words)
    lines = [line for line in text.splitlines() if line.strip()]
    n_chars = max(len(text), 1)
    line_counts = Counter(lines)
    dup_line_chars = sum(len(line) * (count - 1) for line, count in line_counts.items() if count > 1)
    lowered = [w.lower() for w in words]
    bigrams = Counter(zip(lowered, lowered[1:]))
    top_2gram_chars = 0
    if bigrams:
        (first, second), count = bigrams.most_common(1)[0]
        top_2gram_chars = (len(first) + len(second)) * count
    total_word_chars = max(sum(len(w) for w in lowered), 1)
    return {
        "n_words": n_words,
        "mean_word_length": (sum(len(w) for w in words) / n_words) if n_words else 0.0,
        "alpha_word_ratio": (sum(any(c.isalpha() for c in w) for w in words) / n_words) if n_words else 0.0,
        "stop_word_count": sum(w in STOP_WORDS for w in lowered),
        "symbol_word_ratio": ((text.count("#") + text.count("...") + text.count("…")) / n_words) if n_words else 0.0,
        "dup_line_char_frac": dup_line_chars / n_chars,
        "top_2gram_char_frac": top_2gram_chars / total_word_chars,
        "line_punct_ratio": (sum(line.rstrip().endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines))
        if lines else 0.0,
        "short_line_ratio": (sum(len(line) <= 30 for line in lines) / len(lines)) if lines else 0.0,
    }
