"""Checks on a rewrite, each a pure function returning None (passes) or a `Failure` with a snake_case reason.

A rewrite is made of one answer per chunk of the source page. The per-answer checks (`check_answer`) look
at one completion: `empty_output`, `truncated_output` (finish reason "length": the answer was cut at the
style's token limit), and for question-answer styles `qa_unparseable`. The whole-rewrite checks
(`check_rewrite`) compare the reassembled text with the source: `copied_input` (the output repeats the
source verbatim above a ratio) and `language_mismatch` (the output is in another language than the
source). A rewrite that fails any check never enters synthetic/; its reason goes to decisions/rewrite.

A rewrite that passes those format checks is then scored (`RewriteScores`: the quality classifier's
probability of its text, its faithfulness to the source, pipeline.rewrite.faithfulness) and decided on the
scores (`check_scores`): `unfaithful_rewrite` below rewrite.min_faithfulness, then `low_rewrite_quality`
below rewrite.min_quality_prob. Format first, scores last: a copy or an empty answer is not worth scoring,
and the reason names the first thing wrong with it. Of the two scores, faithfulness decides first: a fluent
rewrite that invents facts is the worse failure, and its reason should say so; the detail of a score drop
carries both scores either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMPTY_OUTPUT = "empty_output"
TRUNCATED_OUTPUT = "truncated_output"
QA_UNPARSEABLE = "qa_unparseable"
COPIED_INPUT = "copied_input"
LANGUAGE_MISMATCH = "language_mismatch"
UNFAITHFUL_REWRITE = "unfaithful_rewrite"
LOW_REWRITE_QUALITY = "low_rewrite_quality"

# "Question: ..." / "Answer: ..." (also Q:/A:, any case, optional markdown bold or list markers).
_QA_LABEL = re.compile(r"^[\s>*#\-\d.)]*\**\s*(question|answer|q|a)\s*\**\s*[:：]\s*\**\s*", re.IGNORECASE)
_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Failure:
    reason: str
    detail: str


def parse_qa_pairs(text: str) -> list[tuple[str, str]] | Failure:
    """`Question: ...` / `Answer: ...` blocks -> [(question, answer), ...], in order.

    A question or answer may span several lines (until the next label). Fails when there is no pair, when a
    question has no answer or an answer no question, or when text other than a short preamble stands outside
    the pairs (the model did not follow the format)."""
    pairs: list[tuple[str, str]] = []
    label: str | None = None
    question: list[str] = []
    answer: list[str] = []
    preamble: list[str] = []

    def close_pair() -> Failure | None:
        q, a = " ".join(question).strip(), " ".join(answer).strip()
        if not q:
            return Failure(QA_UNPARSEABLE, f"answer without a question after pair {len(pairs)}")
        if not a:
            return Failure(QA_UNPARSEABLE, f"question without an answer: {q[:80]!r}")
        pairs.append((q, a))
        return None

    for line in text.splitlines():
        match = _QA_LABEL.match(line)
        if match:
            kind = "question" if match.group(1).lower() in ("question", "q") else "answer"
            content = line[match.end() :].strip().strip("*").strip()
            if kind == "question":
                if label is not None and (failure := close_pair()):
                    return failure
                question, answer = [content], []
            else:
                if label != "question":
                    return Failure(QA_UNPARSEABLE, f"answer without a question after pair {len(pairs)}")
                answer = [content]
            label = kind
        elif line.strip():
            if label is None:
                preamble.append(line.strip())
            elif label == "question" and not answer:
                question.append(line.strip())
            else:
                answer.append(line.strip())
    if label is None:
        return Failure(QA_UNPARSEABLE, "no `Question:` / `Answer:` pairs in the output")
    if failure := close_pair():
        return failure
    if len(" ".join(preamble)) > 200:
        return Failure(QA_UNPARSEABLE, f"{len(' '.join(preamble))} characters of text before the first question")
    return pairs


def format_qa_pairs(pairs: list[tuple[str, str]]) -> str:
    """The stored form of question-answer pairs: one `Question:`/`Answer:` block per pair."""
    return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)


def check_answer(text: str, finish_reason: str | None, *, qa: bool) -> Failure | None:
    """Checks on one chunk's answer, in order: empty, truncated, (QA) parses into pairs."""
    if not text or not text.strip():
        return Failure(EMPTY_OUTPUT, f"no text (finish_reason={finish_reason})")
    if finish_reason == "length":
        return Failure(TRUNCATED_OUTPUT, "the answer hit the style's max_tokens before it ended")
    if qa:
        parsed = parse_qa_pairs(text)
        if isinstance(parsed, Failure):
            return parsed
    return None


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits; any script)."""
    return [w.lower() for w in _WORDS.findall(text)]


def copy_ratio(source: str, output: str, ngram: int = 8) -> float:
    """Share of the output's words that sit inside a run of `ngram` consecutive words also found in the
    source (case and punctuation ignored). 1.0: the output is a verbatim copy; a real rephrasing shares
    only short phrases. An output shorter than `ngram` words counts as copied when it occurs whole in the
    source. Scripts written without spaces (Chinese, Japanese) count per character."""
    out_words, src_words = _units(output), _units(source)
    if not out_words:
        return 0.0
    if len(out_words) < ngram:
        n = len(out_words)
        grams = {tuple(src_words[i : i + n]) for i in range(len(src_words) - n + 1)}
        return 1.0 if tuple(out_words) in grams else 0.0
    source_grams = {tuple(src_words[i : i + ngram]) for i in range(len(src_words) - ngram + 1)}
    covered = [False] * len(out_words)
    for i in range(len(out_words) - ngram + 1):
        if tuple(out_words[i : i + ngram]) in source_grams:
            covered[i : i + ngram] = [True] * ngram
    return sum(covered) / len(out_words)


def _units(text: str) -> list[str]:
    units: list[str] = []
    for word in words(text):
        # A long run with no spaces in a CJK script is a phrase, not a word: compare it per character.
        if len(word) > 1 and any("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in word):
            units.extend(word)
        else:
            units.append(word)
    return units


def check_rewrite(source: str, output: str, *, source_language: str | None, output_language: str | None,
                  max_copy_ratio: float, ngram: int) -> Failure | None:
    """Checks on the reassembled rewrite against its source: verbatim copying, then language."""
    ratio = copy_ratio(source, output, ngram)
    if ratio > max_copy_ratio:
        return Failure(COPIED_INPUT, f"{ratio:.2f} of the output's words copy the source verbatim "
                                     f"(rewrite.max_copy_ratio={max_copy_ratio})")
    if source_language and output_language and output_language != source_language:
        return Failure(LANGUAGE_MISMATCH, f"output is {output_language!r}, source is {source_language!r}")
    return None


@dataclass(frozen=True)
class RewriteScores:
    """The scores of one rewrite that passed the format checks. `quality_prob` is None when no quality
    classifier was found (allowed only while rewrite.min_quality_prob is off), NaN when the classifier could
    not score the text (nothing left after its normalisation)."""

    quality_prob: float | None
    faithfulness: float
    kept_content_frac: float
    invented_frac: float
    invented: tuple[str, ...] = ()

    def detail(self) -> str:
        """`key=value; ...` of every score (what `curate explain` shows for a dropped rewrite), then the
        first invented facts."""
        missing = self.quality_prob is None or self.quality_prob != self.quality_prob  # None or NaN
        quality = "none" if missing else f"{self.quality_prob:.3f}"
        parts = [f"rewrite_quality_prob={quality}", f"faithfulness={self.faithfulness:.3f}",
                 f"kept_content_frac={self.kept_content_frac:.3f}", f"invented_frac={self.invented_frac:.3f}"]
        if self.invented:
            shown = ", ".join(self.invented[:8]) + (f", ... ({len(self.invented)} in all)"
                                                   if len(self.invented) > 8 else "")
            parts.append(f"invented: {shown}")
        return "; ".join(parts)


def threshold_on(threshold: float | None) -> bool:
    """A score threshold of None or 0 is off: it drops nothing (and the quality one needs no classifier)."""
    return threshold is not None and threshold > 0


def check_scores(scores: RewriteScores, *, min_faithfulness: float | None,
                 min_quality_prob: float | None) -> Failure | None:
    """Decide a format-checked rewrite on its scores: unfaithful first, then low quality (see the module
    docstring). The detail says which value missed which threshold, then lists every score."""
    if threshold_on(min_faithfulness) and scores.faithfulness < min_faithfulness:
        return Failure(UNFAITHFUL_REWRITE, f"faithfulness {scores.faithfulness:.3f} < rewrite.min_faithfulness "
                                           f"{min_faithfulness}; {scores.detail()}")
    if threshold_on(min_quality_prob):
        quality = scores.quality_prob
        if quality is None or quality != quality:  # no score (NaN): cannot show it is good enough
            return Failure(LOW_REWRITE_QUALITY, f"the classifier gave no score (no text left after its "
                                                f"normalisation) < rewrite.min_quality_prob {min_quality_prob}; "
                                                f"{scores.detail()}")
        if quality < min_quality_prob:
            return Failure(LOW_REWRITE_QUALITY, f"rewrite_quality_prob {quality:.3f} < rewrite.min_quality_prob "
                                                f"{min_quality_prob}; {scores.detail()}")
    return None
