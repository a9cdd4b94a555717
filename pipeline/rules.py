"""Heuristic quality rules: the metrics datatrove's filters threshold, measured once, decided later.

Score first, decide later. For every page the rules apply to, extract measures every metric that
datatrove's Gopher quality, Gopher repetition, C4 quality and FineWeb quality filters compare to a
threshold (`RuleSet.measure`, stored in extracted/ with the schema `pipeline.schemas.EXTRACTED`); the rules
stage (`pipeline.rules_stage`) compares the stored metrics with the thresholds of `RulesConfig`
(`failures`) and drops a page for the first failing check, with datatrove's reason name (`gopher_short_doc`,
`c4_too_few_sentences`, ...) and a detail naming the value and the threshold
(`gopher_short_doc: n_words 31 < 50`). Other thresholds re-decide from the stored metrics, without reading
or extracting a page again.

The metrics are computed as the filters compute them (same word and sentence splitting, same line splits,
same float64 divisions) and the checks run in the filters' order with their comparisons, so the verdicts and
first reasons are datatrove's: tests/test_extract_rules.py runs datatrove's own filters on every page of the
bundled sample and compares. Only what the filters fix in code stays fixed here too: C4's line filters
(which lines count as kept: >= 3 words, no word over 1000 characters, no "javascript", no policy phrase) and
FineWeb's 30-character short line define their metrics.

datatrove's filters split words and sentences with spaCy's blank tokenizer, which costs more than
trafilatura itself (about 40 ms for a 5 kB page, mostly creating and freeing lexemes). `FastWordTokenizer`
is a drop-in datatrove `WordTokenizer` with the same splitting conventions done by one regex: whitespace,
punctuation peeled off word edges, English contractions (`do|n't`, `it|'s`) split off
(`rules.tokenizer: fast`, the default; `spacy` uses datatrove's).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import numpy as np
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, find_top_duplicate, get_n_grams
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, split_into_sentences
from datatrove.utils.word_tokenizers import WordTokenizer

from pipeline.config import RulesConfig

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


def _split_words(text: str) -> list[str]:
    """The tokens of `text`: _TOKEN's matches once _SPLIT_POINTS has put its spaces in.

    No token or split point spans whitespace and the regexes look no further than the next space, so every
    whitespace-separated chunk is split on its own, the same way; a chunk of letters and digits only is one
    token as it is (neither regex has anything to split in it), and most of a page's chunks skip both scans."""
    words: list[str] = []
    for chunk in text.split():
        if chunk.isalnum():
            words.append(chunk)
        else:
            words += _TOKEN.findall(_SPLIT_POINTS.sub(_split_point, chunk))
    return words


class FastWordTokenizer(WordTokenizer):
    """Regex word/sentence splitting for space-separated languages, for datatrove's filters."""

    def __init__(self, language: str | None = None):
        super().__init__(language)
        # The filters ask for the same document's words in turn; datatrove's own 5-entry cache is flushed
        # in between by C4's per-line sentence splitting, so remember the last document here.
        self._last: tuple[str, list[str]] = ("", [])

    def word_tokenize(self, text: str) -> list[str]:
        if text is not self._last[0]:
            self._last = (text, _split_words(text))
        return self._last[1]

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]

    def sentence_count(self, text: str) -> int:
        """len(self.span_tokenize(text)), the number of sentences datatrove's split_into_sentences makes, without
        building them: the non-blank pieces between sentence ends, at least one."""
        return max(sum(1 for piece in _SENTENCE_END.split(text) if piece.strip()), 1)

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


# ------------------------------------------------------------------------------------ n-gram statistics


class WordNgrams:
    """One page's word n-grams, keyed as datatrove keys them, for every n from offsets computed once.

    The top n-grams are counted as tuples of words (built and hashed in C, no joined string per n-gram). The
    repeated n-grams' keys are slices of the words' concatenation; a hash of every slice comes from prefix
    sums in numpy, equal slices have equal hashes, so only the n-grams whose hash occurs more than once are
    cut as strings and scanned."""

    def __init__(self, words: list[str]):
        self.words = words
        self.concatenated = "".join(words)
        self.offsets = list(accumulate(map(len, words), initial=0))  # where each word starts, and the end
        self._hashing: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent word n-gram, its space-joined length times its count:
        datatrove's find_top_duplicate(get_n_grams(words, n)), 0 when there are fewer than n words (datatrove
        skips the check then, which passes the same way)."""
        words = self.words
        if len(words) < n:
            return 0
        if " " in self.concatenated:
            # a word with a space in it: distinct n-grams can share a space-joined key ("a b"+"c", "a"+"b c")
            return find_top_duplicate(get_n_grams(words, n))
        # Without spaces in words, two space-joined keys are equal exactly when their words are, and first
        # occurrences come in the same order: the same top n-gram (ties go to the first) and count.
        gram, count = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)[0]
        return (sum(map(len, gram)) + n - 1) * count

    def repeated_chars(self, n: int) -> int:
        """Characters in word n-grams already seen, scanning left to right and jumping past each repeat:
        datatrove's find_all_duplicate(words, n), with its keys (the n words joined with nothing between, so
        "ab c" and "a bc" are one key there, and here)."""
        hashes = self._key_hashes(n)
        ordered = np.sort(hashes)
        shared = ordered[1:][ordered[1:] == ordered[:-1]]
        if not shared.size:
            return 0  # no two n-grams with the same hash: no n-gram occurs twice (the common case for larger n)
        # The scan only has to stop where an n-gram may occur more than once: at the others it would add a
        # key that never comes back and step to the next position, which jumping there does too.
        concatenated, offsets = self.concatenated, self.offsets
        seen: set[str] = set()
        repeated = next_index = 0
        for index in np.flatnonzero(np.isin(hashes, shared)).tolist():
            if index < next_index:
                continue  # inside a repeat it jumped past
            gram = concatenated[offsets[index]:offsets[index + n]]
            if gram in seen:
                repeated += len(gram)
                next_index = index + n
            else:
                seen.add(gram)
                next_index = index + 1
        return repeated

    def _key_hashes(self, n: int) -> np.ndarray:
        """A polynomial hash (Rabin-Karp, modulo 2**64: numpy's uint64 arithmetic wraps) of the concatenation
        of every n consecutive words: sum(code[i] * B**(i - start)) over the slice's characters, times
        B**(size + 2), the same factor for every slice, so equal slices have equal hashes."""
        if self._hashing is None:
            codes = np.frombuffer(self.concatenated.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            size = len(codes)
            powers = np.cumprod(np.full(size + 1, _HASH_BASE, dtype=np.uint64))  # B**1 .. B**(size + 1)
            prefix = np.zeros(size + 1, dtype=np.uint64)
            np.cumsum(codes * powers[:size], out=prefix[1:])  # prefix[k]: sum(code[i] * B**(i + 1)) for i < k
            starts = np.array(self.offsets, dtype=np.intp)
            # prefix[end] - prefix[start] is B**(start + 1) times the slice's hash; B**(size - start + 1) evens it out
            self._hashing = (prefix, starts, powers[size - starts])
        prefix, starts, scale = self._hashing
        if len(starts) <= n:
            return np.zeros(0, dtype=np.uint64)
        return (prefix[starts[n:]] - prefix[starts[:-n]]) * scale[:-n]


_HASH_BASE = 0x100000001B3  # odd (invertible modulo 2**64), large: characters spread over all 64 bits


def top_ngram_chars(words: list[str], n: int) -> int:
    """`WordNgrams.top_chars` of one list of words."""
    return WordNgrams(words).top_chars(n)


def repeated_ngram_chars(words: list[str], n: int) -> int:
    """`WordNgrams.repeated_chars` of one list of words."""
    return WordNgrams(words).repeated_chars(n)


# ---------------------------------------------------------------------------- metrics, one family each


def _ratio(part: float, whole: float) -> float | None:
    """part / whole, None when whole is 0 (datatrove divides by zero there, or takes a NaN mean, which passes)."""
    return part / whole if whole else None


_STOP_WORDS = frozenset(STOP_WORDS)
_POLICY = re.compile("|".join(map(re.escape, POLICY_SUBSTRINGS)))
_TERMINAL_PUNCTUATION = tuple(TERMINAL_PUNCTUATION)


def gopher_quality_metrics(text: str, words: list[str]) -> dict[str, Any]:
    """What GopherQualityFilter thresholds: word counts and lengths over the words with a non-punctuation
    character, symbol and alphabetic-word ratios over all words, bullet and ellipsis lines, stop words.
    Each distinct word is looked at once, with its count."""
    counts = Counter(words)
    # the words with a character that is not punctuation (not all of them in PUNCTUATION_SET)
    non_symbol = [(word, count) for word, count in counts.items() if not PUNCTUATION_SET.issuperset(word)]
    n_non_symbol = sum(count for _, count in non_symbol)
    lines = text.splitlines()
    return {
        "n_words": n_non_symbol,
        "mean_word_length": _ratio(sum(len(word) * count for word, count in non_symbol), n_non_symbol),
        "hash_word_ratio": _ratio(text.count("#"), len(words)),
        "ellipsis_word_ratio": _ratio(text.count("...") + text.count("…"), len(words)),
        "bullet_line_ratio": _ratio(sum(s.lstrip().startswith(("•", "-")) for s in lines), len(lines)),
        "end_ellipsis_line_ratio": _ratio(sum(s.rstrip().endswith(("...", "…")) for s in lines), len(lines)),
        "alpha_word_ratio": _ratio(sum(count for word, count in counts.items() if any(map(str.isalpha, word))),
                                   len(words)),
        "stop_word_count": len(_STOP_WORDS.intersection(counts)),
    }


_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = re.compile("\n+")


def gopher_repetition_metrics(text: str, words: list[str]) -> dict[str, Any]:
    """What GopherRepetitionFilter thresholds: duplicated paragraphs and lines (share of them, share of the
    characters), characters of the top 2/3/4-gram and of repeated 5..10-grams, per character of the text."""
    paragraphs = _PARAGRAPH_BREAK.split(text.strip())
    para_dups, para_dup_chars = find_duplicates(paragraphs)
    lines = _LINE_BREAKS.split(text)
    line_dups, line_dup_chars = find_duplicates(lines)
    metrics: dict[str, Any] = {
        "dup_para_frac": _ratio(para_dups, len(paragraphs)),
        "dup_para_char_frac": _ratio(para_dup_chars, len(text)),
        "dup_line_frac": _ratio(line_dups, len(lines)),
        "dup_line_char_frac": _ratio(line_dup_chars, len(text)),
    }
    ngrams = WordNgrams(words)
    for n in (2, 3, 4):
        metrics[f"top_{n}gram_char_frac"] = _ratio(ngrams.top_chars(n), len(text))
    for n in range(5, 11):
        metrics[f"dup_{n}gram_char_frac"] = _ratio(ngrams.repeated_chars(n), len(text))
    return metrics


def c4_metrics(text: str, tokenizer: Any) -> dict[str, Any]:
    """What C4QualityFilter (split on lines, citations removed, lines without terminal punctuation kept)
    decides on: the sentences of the lines it keeps, and the first line (1-based) among those it looks at
    where it would drop the whole page for "lorem ipsum" or a curly bracket. Its line filters are applied
    exactly as it applies them, in its order."""
    if isinstance(tokenizer, FastWordTokenizer):
        count_sentences = tokenizer.sentence_count
    else:
        def count_sentences(line: str) -> int:
            return len(split_into_sentences(line, tokenizer))

    n_sentences = 0
    lorem_line = curly_line = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if len(line) > 1000 and any(len(word) > 1000 for word in line.split()):  # no word is longer than its line
            continue
        enough_words = len(line.split(maxsplit=2)) == 3  # at least 3 words, counted before citations go
        if "[" in line:  # every citation pattern starts with one
            line = CITATION_REGEX.sub("", line)
        if not enough_words:
            continue
        lowered = line.lower()
        if lorem_line is None and "lorem ipsum" in lowered:
            lorem_line = number
        if "javascript" in lowered:
            continue
        if curly_line is None and "{" in line:
            curly_line = number
        if _POLICY.search(lowered):  # any(phrase in lowered for phrase in POLICY_SUBSTRINGS)
            continue
        n_sentences += count_sentences(line)
    return {"n_sentences": n_sentences, "lorem_ipsum_line": lorem_line, "curly_bracket_line": curly_line}


def fineweb_metrics(text: str, words: list[str]) -> dict[str, Any]:
    """What FineWebQualityFilter thresholds, over the non-blank lines: the share ending in terminal
    punctuation, the share of at most 30 characters, duplicated-line characters per non-newline character;
    and newlines per word."""
    lines = [line for line in text.split("\n") if line.strip() != ""]
    return {
        "line_punct_ratio": _ratio(sum(1 for line in lines if line.endswith(_TERMINAL_PUNCTUATION)), len(lines)),
        "short_line_ratio": _ratio(sum(1 for line in lines if len(line) <= 30), len(lines)),
        "char_dup_ratio": _ratio(find_duplicates(lines)[1], len(text.replace("\n", ""))) if lines else None,
        "list_ratio": _ratio(text.count("\n"), len(words)),
    }


# ------------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Check:
    """One threshold of one filter: the page fails when its `metric` is below (`min`) or above (`max`) the
    RulesConfig field `threshold`, or, for `line` checks, when the metric (a line number) is set and the
    boolean field `threshold` is true. A null metric or a null threshold never fails (datatrove: NaN, off)."""

    family: str  # the RulesConfig switch of the filter
    reason: str  # datatrove's reason, prefixed with the family (the decision's reason)
    metric: str  # the metric column
    threshold: str  # the RulesConfig field
    kind: Literal["min", "max", "line"]


def _checks() -> tuple[Check, ...]:
    gq, gr, c4, fw = "gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"
    return (
        # GopherQualityFilter, in its order
        Check(gq, "gopher_short_doc", "n_words", "min_doc_words", "min"),
        Check(gq, "gopher_long_doc", "n_words", "max_doc_words", "max"),
        Check(gq, "gopher_below_avg_threshold", "mean_word_length", "min_mean_word_length", "min"),
        Check(gq, "gopher_above_avg_threshold", "mean_word_length", "max_mean_word_length", "max"),
        Check(gq, "gopher_too_many_hashes", "hash_word_ratio", "max_hash_word_ratio", "max"),
        Check(gq, "gopher_too_many_ellipsis", "ellipsis_word_ratio", "max_ellipsis_word_ratio", "max"),
        Check(gq, "gopher_too_many_bullets", "bullet_line_ratio", "max_bullet_line_ratio", "max"),
        Check(gq, "gopher_too_many_end_ellipsis", "end_ellipsis_line_ratio", "max_end_ellipsis_line_ratio", "max"),
        Check(gq, "gopher_below_alpha_threshold", "alpha_word_ratio", "min_alpha_word_ratio", "min"),
        Check(gq, "gopher_enough_stop_words", "stop_word_count", "min_stop_words", "min"),
        # GopherRepetitionFilter
        Check(gr, "gopher_dup_para_frac", "dup_para_frac", "max_dup_para_frac", "max"),
        Check(gr, "gopher_dup_para_char_frac", "dup_para_char_frac", "max_dup_para_char_frac", "max"),
        Check(gr, "gopher_dup_line_frac", "dup_line_frac", "max_dup_line_frac", "max"),
        Check(gr, "gopher_dup_line_char_frac", "dup_line_char_frac", "max_dup_line_char_frac", "max"),
        *[Check(gr, f"gopher_top_{n}_gram", f"top_{n}gram_char_frac", f"max_top_{n}gram_char_frac", "max")
          for n in (2, 3, 4)],
        *[Check(gr, f"gopher_duplicated_{n}_n_grams", f"dup_{n}gram_char_frac", f"max_dup_{n}gram_char_frac", "max")
          for n in range(5, 11)],
        # C4QualityFilter: the two whole-page drops happen at the first line that has them (see `failures`),
        # the sentence count after every line
        Check(c4, "c4_lorem_ipsum", "lorem_ipsum_line", "drop_lorem_ipsum", "line"),
        Check(c4, "c4_curly_bracket", "curly_bracket_line", "drop_curly_bracket", "line"),
        Check(c4, "c4_too_few_sentences", "n_sentences", "min_sentences", "min"),
        # FineWebQualityFilter
        Check(fw, "fineweb_line_punct_ratio", "line_punct_ratio", "min_line_punct_ratio", "min"),
        Check(fw, "fineweb_short_line_ratio", "short_line_ratio", "max_short_line_ratio", "max"),
        Check(fw, "fineweb_char_dup_ratio", "char_dup_ratio", "max_char_dup_ratio", "max"),
        Check(fw, "fineweb_list_ratio", "list_ratio", "max_list_ratio", "max"),
    )


# In decision order: Gopher quality first (cheap, and it names the plain reasons: gopher_short_doc for a
# six-word page rather than the top-2-gram fraction such a page also fails), then repetition, C4, FineWeb.
CHECKS: tuple[Check, ...] = _checks()
FAMILIES = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
METRICS: tuple[str, ...] = tuple(dict.fromkeys(check.metric for check in CHECKS))


@dataclass(frozen=True)
class Failure:
    """A failed check of one page: its reason and a detail naming the value against the threshold."""

    reason: str
    detail: str


def _shown(value: Any, threshold: Any = None) -> str:
    """A metric value for a detail: integers as they are, floats to 4 significant digits, more when that
    would print the same as the threshold it was compared to (0.2000001 > 0.2)."""
    if isinstance(value, float):
        short = f"{value:.4g}"
        return repr(value) if threshold is not None and short == f"{threshold:.4g}" else short
    return str(value)


def _failed(check: Check, value: Any, threshold: Any) -> Failure | None:
    if value is None or threshold is None or threshold is False:
        return None
    if check.kind == "line":
        return Failure(check.reason, f"{check.reason}: {check.metric} {value} ({check.threshold})")
    if check.kind == "min" and value < threshold:
        return Failure(check.reason, f"{check.reason}: {check.metric} {_shown(value, threshold)} < {threshold}")
    if check.kind == "max" and value > threshold:
        return Failure(check.reason, f"{check.reason}: {check.metric} {_shown(value, threshold)} > {threshold}")
    return None


def failures(metrics: Mapping[str, Any], cfg: RulesConfig) -> list[Failure]:
    """Every check of the enabled families that `metrics` (one page's stored metrics) fail at `cfg`'s
    thresholds, in datatrove's order: the first is the page's drop reason. C4 drops a page at the first line
    with "lorem ipsum" or a curly bracket, so of those two the one on the earlier line comes first (on the
    same line: lorem ipsum, which C4 checks first)."""
    found: list[Failure] = []
    for family in FAMILIES:
        if not getattr(cfg, family):
            continue
        failed = [(check, failure) for check in CHECKS if check.family == family
                  if (failure := _failed(check, metrics.get(check.metric), getattr(cfg, check.threshold)))]
        lines = sorted((metrics[check.metric], index) for index, (check, _) in enumerate(failed)
                       if check.kind == "line")
        found += [failed[index][1] for _, index in lines]
        found += [failure for check, failure in failed if check.kind != "line"]
    return found


# ------------------------------------------------------------------------------------------------ rule set


def word_tokenizer(cfg: RulesConfig) -> WordTokenizer:
    """The tokenizer the metrics split words and sentences with: FastWordTokenizer, or datatrove's spaCy one."""
    if cfg.tokenizer == "fast":
        return FastWordTokenizer("en")
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    return load_word_tokenizer("en")


class RuleSet:
    """The per-worker state of the rules (their tokenizer, built once: spaCy's loads a model) and the two
    steps: `measure` a page (extract) and find its `failures` at the configured thresholds (rules stage)."""

    def __init__(self, cfg: RulesConfig):
        self.cfg = cfg
        self.tokenizer = word_tokenizer(cfg)

    def applies_to(self, language: str | None) -> bool:
        return self.cfg.enabled and (not self.cfg.apply_to_languages or language in self.cfg.apply_to_languages)

    def measure(self, text: str) -> dict[str, Any]:
        """Every metric of `text` (non-empty: extract's no_text check comes first), keyed as METRICS."""
        words = self.tokenizer.word_tokenize(text)
        return {**gopher_quality_metrics(text, words), **gopher_repetition_metrics(text, words),
                **c4_metrics(text, self.tokenizer), **fineweb_metrics(text, words)}

    def failures(self, text: str) -> list[str]:
        """Reasons `text` fails at the configured thresholds: only the first unless `rules.all_failures`."""
        reasons = [failure.reason for failure in failures(self.measure(text), self.cfg)]
        return reasons if self.cfg.all_failures else reasons[:1]
