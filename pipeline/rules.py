"""Heuristic quality rules: score columns plus the names of the rules a document fails.

Score first, decide later: every document gets its rule scores as columns and the list of rules it fails
(`rule_failures`); extract then drops a document for the first failure with that name as its reason.
The pass/fail decisions are datatrove's own implementations of the Gopher quality and repetition, C4 and
FineWeb rules (they run offline: their English word splitting uses spaCy's blank model). Their
thresholds are the published defaults; the document-length bounds are configurable.

datatrove's filters split words and sentences with spaCy's blank tokenizer, which costs more than
trafilatura itself (about 40 ms for a 5 kB page, mostly creating and freeing lexemes). `FastWordTokenizer`
is a drop-in datatrove `WordTokenizer` with the same splitting conventions done by one regex: whitespace,
punctuation peeled off word edges, English contractions (`do|n't`, `it|'s`) split off. The filters' logic
is unchanged; tests/test_extract_rules.py checks its verdicts agree with the spaCy tokenizer's.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from datatrove.utils.word_tokenizers import WordTokenizer

from pipeline.config import RulesConfig

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
TERMINAL_PUNCTUATION = tuple(".!?\"'”’)»…。！？")


# spaCy's English tokenizer, in two regexes. First, spaces are put where spaCy splits inside a chunk of
# non-space characters: before contraction suffixes (do|n't, it|'s) and around its infixes (aid|.|The,
# Delaware|,|It, they|/|them, well|-|known); URLs are matched first and kept whole. Then a token is a URL,
# a contraction, an abbreviation (U.S., J.), an ellipsis, a run from a word character to a word character
# (so 3.14, 501(c)(3, D'Arcy and --user stay whole), or any other single character.
# Every alternative of the first regex starts by consuming a character, which keeps the scan fast.
_CONTRACTION = r"(?:[nN][’'][tT]|[’'](?:[sSmMdD]|ll|LL|re|RE|ve|VE))\b"
_URL = r"(?:https?|ftp)://\S+\w/?"
_SPLIT_POINTS = re.compile(
    rf"(?P<url>{_URL})"
    rf"|(?P<before>\w)(?=[nN’'])(?={_CONTRACTION})"
    r"|(?P<infix>\.(?<=[a-z]\.)(?=[A-Z])|[,:<>=/](?<=[^\W\d_][,:<>=/])(?=[^\W\d_])"
    r"|[-–—~](?<=[^\W_][-–—~])(?=[^\W\d_]))"
)
_TOKEN = re.compile(rf"{_URL}|{_CONTRACTION}|(?:[A-Za-z]\.){{2,}}|[A-Z]\.(?!\S)|\.\.\.+|-*\w(?:\S*\w)?|\S")
# A sentence ends at terminal punctuation (and closing quotes/brackets) followed by whitespace, or at a
# full stop between a lower-case and an upper-case letter (spaCy splits "aid.The" there too).
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|(?<=[a-z]\.)(?=[A-Z])")


def _split_point(match: re.Match) -> str:
    if match.lastgroup == "before":
        return match.group(0) + " "
    if match.lastgroup == "infix":
        return f" {match.group(0)} "
    return match.group(0)  # a URL stays as it is


class FastWordTokenizer(WordTokenizer):
    """Regex word/sentence splitting for space-separated languages, for datatrove's filters."""

    def __init__(self, language: str | None = None):
        super().__init__(language)
        # The filters ask for the same document's words in turn; datatrove's own 5-entry cache is flushed
        # in between by C4's per-line sentence splitting, so remember the last document here.
        self._last: tuple[str, list[str]] = ("", [])

    def word_tokenize(self, text: str) -> list[str]:
        if text is not self._last[0]:
            self._last = (text, _TOKEN.findall(_SPLIT_POINTS.sub(_split_point, text)))
        return self._last[1]

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start = 0
        for match in _SENTENCE_END.finditer(text):
            if text[start:match.start()].strip():
                spans.append((start, match.start()))
            start = match.end()
        if text[start:].strip() or not spans:
            spans.append((start, len(text)))
        return spans


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n))))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (its space-joined length times its count):
    datatrove's find_top_duplicate(get_n_grams(words, n)), counting tuples instead of joined strings."""
    grams = _ngrams(words, n)
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count


def repeated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in word n-grams already seen, scanning left to right and jumping past each repeat:
    datatrove's find_all_duplicate(words, n) on tuples (its joined keys can also merge "ab c" with
    "a bc"; tuples do not)."""
    grams = _ngrams(words, n)
    if len(set(grams)) == len(grams):
        return 0  # no n-gram occurs twice: the common case for larger n
    seen: set[tuple[str, ...]] = set()
    repeated = idx = 0
    while idx < len(grams):
        gram = grams[idx]
        if gram in seen:
            repeated += sum(map(len, gram))
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


def _repetition_filter(language: Any):
    """datatrove's GopherRepetitionFilter, with its n-gram statistics (two thirds of its time, in
    Python string joins) computed on tuples: the parent runs its own line and paragraph checks with no
    n-gram thresholds, then the same n-gram thresholds are applied here."""
    from datatrove.pipeline.filters import GopherRepetitionFilter
    from datatrove.utils.text import split_into_words

    class RepetitionFilter(GopherRepetitionFilter):
        def __init__(self):
            super().__init__(language=language)
            self.ngram_top, self.ngram_dup = self.top_n_grams, self.dup_n_grams
            self.top_n_grams = self.dup_n_grams = ()

        def filter(self, doc):
            verdict = super().filter(doc)
            if verdict is not True:
                return verdict
            words = split_into_words(doc.text, self.language)  # cached: the parent just split it
            for n, n_frac in self.ngram_top:
                if top_ngram_chars(words, n) / len(doc.text) > n_frac:
                    return False, f"top_{n}_gram"
            for n, n_frac in self.ngram_dup:
                if repeated_ngram_chars(words, n) / len(doc.text) > n_frac:
                    return False, f"duplicated_{n}_n_grams"
            return True

    return RepetitionFilter()


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
        # datatrove takes a language code (its spaCy tokenizer) or a WordTokenizer instance
        words: Any = FastWordTokenizer("en") if cfg.tokenizer == "fast" else "en"
        self.filters: list[tuple[str, Any]] = []
        # Gopher quality first: it is cheap and names the plain reasons (gopher_short_doc for a
        # six-word page, rather than the top-2-gram fraction such a page also fails).
        if cfg.gopher_quality:
            self.filters.append(("gopher_", GopherQualityFilter(min_doc_words=cfg.min_doc_words,
                                                                max_doc_words=cfg.max_doc_words, language=words)))
        if cfg.gopher_repetition:
            # the spacy setting keeps datatrove's filter exactly as it is
            if cfg.tokenizer == "spacy":
                self.filters.append(("gopher_", GopherRepetitionFilter(language=words)))
            else:
                self.filters.append(("gopher_", _repetition_filter(words)))
        if cfg.c4_quality:
            # As FineWeb uses it: keep lines without terminal punctuation (that rule removes lines, and
            # rules here only score, they never edit the text).
            self.filters.append(("c4_", C4QualityFilter(filter_no_terminal_punct=False, language=words)))
        if cfg.fineweb_quality:
            self.filters.append(("fineweb_", FineWebQualityFilter(language=words)))

    def applies_to(self, language: str | None) -> bool:
        return self.cfg.enabled and (not self.cfg.apply_to_languages or language in self.cfg.apply_to_languages)

    def failures(self, text: str, doc_id: str = "") -> list[str]:
        """Names of the rules the text fails, in filter order: only the first unless
        `rules.all_failures` (the first decides the drop; the rest cost time and change nothing)."""
        from datatrove.data import Document

        failed: list[str] = []
        for prefix, rule in self.filters:
            # C4's filter rewrites doc.text in place: give every rule its own Document.
            verdict = rule.filter(Document(text=text, id=doc_id))
            if verdict is True:
                continue
            reason = verdict[1] if isinstance(verdict, tuple) else rule.name
            failed.append(_prefixed(prefix, str(reason)))
            if not self.cfg.all_failures:
                break
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
