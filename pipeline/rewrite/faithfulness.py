"""How faithful a rewrite is to the source chunk it was written from: what it keeps, what it invents.

Pure functions, no model: the same texts always give the same numbers, so a threshold on them is
reproducible and a dropped rewrite can be explained from its decision row alone.

What is compared (`units`):

- **content words**: words of at least 3 letters that are not English function words (`STOPWORDS`),
  case-folded and lightly stemmed (`stem`: tower/towers, design/designed, company/companies match).
  Text in scripts written without spaces (Chinese, Japanese, Korean) has no words to split: its runs count
  as character bigrams instead.
- **numbers**: digit strings ("1,200" and "1200" are one number; "3.5" keeps its decimal). List markers
  ("1." or "2)" opening a line) are formatting, not numbers.
- **named terms**: acronyms (two or more capitals: NASA, UNESCO), runs of two or more capitalised words
  (Gustave Eiffel, Champ de Mars: the particles of `PARTICLES` may sit inside a run), and single capitalised
  words that do not open a sentence or a line (Paris in "built in Paris"). A capitalised word alone at the
  start of a sentence ("The", "Farmers") is capitalised by position, not by name, and is left out, and so is
  one that opens a sentence before a particle ("Spanning the Golden Gate" -> "Golden Gate"). Leading
  function words of a run are dropped ("The Eiffel Tower" -> "Eiffel Tower").
- **facts** = numbers and named terms: what a rewrite can get wrong.

A named term is *found* in a text when each of its words (stemmed, case-folded, function words aside)
occurs in that text, so "the Eiffel tower" grounds "Eiffel Tower" and "Eiffel" is grounded by "Gustave
Eiffel". A number is found when the same number occurs; for a rewrite's numbers from 0 to 20, the word
spelled out in the source also counts ("three" grounds "3"), since rewriting numerals is not inventing.

The components, for one source chunk and the rewrite's answer to it (`score_chunk`):

- `kept_content_frac` = share of the source's distinct content units (content words, numbers and named
  terms; a term's words count as content words too, so names weigh more) found in the rewrite.
- `invented_frac` = share of the rewrite's distinct facts (numbers, named terms) not found in the source.
  0 when the rewrite states no fact.

The score:

    faithfulness = (1 - invented_frac) * min(1, kept_content_frac / COVERAGE_TARGET[style])

Invention is the main signal: a rewrite that states a number or a name its source does not have is the
failure that makes synthetic data harmful (a fluent, confident falsehood), and it is judged the same way in
every style. Coverage only guards against a rewrite that is not about its source (an off-topic or generic
answer invents nothing but keeps nothing either); it is measured over the source chunk, and what a style
may be expected to keep differs: a Wikipedia-style rewrite restates the whole text, a condensed passage or a
knowledge list keeps its gist, and eight question-answer pairs cover only what they ask about. So coverage
is scored against a per-style target (`COVERAGE_TARGET`) and stops counting once the target is reached:
a rewrite keeping at least its style's target of the source loses nothing for coverage, one keeping half of
it loses half its score.

A page rewritten chunk by chunk (`score_rewrite`) is scored per chunk, each answer against its own chunk
(a rewrite of chunk 2 may rightly name what only chunk 2 says), then:

- `faithfulness` is the **minimum** over the chunks: one hallucinated chunk makes the whole rewrite carry a
  falsehood, and the stage already fails a whole (page, style) when any chunk fails (a rewrite with a bad
  part is not a good rewrite of the page). A token-weighted mean would let a long page hide one invented
  chunk behind many faithful ones.
- `kept_content_frac` and `invented_frac` are **pooled** over the chunks (summed counts: of all the page's
  content units, the share kept; of all the facts the rewrite states, the share invented), to describe the
  page as a whole; `worst_chunk` says which chunk set the minimum.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# Bump when the measure changes: part of the rewrite stage's plan identity, so a changed formula rescores.
METHOD = "faithfulness_v1"

# The share of the source chunk's content units a rewrite of each style is expected to keep (see above).
COVERAGE_TARGET = {"rewrite_wiki": 0.5, "distill": 0.3, "knowledge_list": 0.3, "qa_pairs": 0.2}
DEFAULT_COVERAGE_TARGET = 0.3

STOPWORDS = frozenset("""
a about above after again against all almost also although always am among an and another any anyone
anything are around as at be became because become been before being below between both but by can
cannot could did do does doing done down during each either else enough even ever every few for from
further had has have having he her here hers herself him himself his how however i if in into is it its
itself just least less like made make makes many may me might more most much must my myself neither never
no nor not now of off often on once one only or other others our ours ourselves out over own per perhaps
quite rather really same several shall she should since so some something such than that the their theirs
them themselves then there these they this those though through thus to together too toward towards under
until up upon us very via was we well were what whatever when whenever where whereas whether which while
who whoever whom whose why will with within without would yet you your yours yourself yourselves
""".split())
# Lower-case words that may join the capitalised words of one name: Champ de Mars, Bank of England.
PARTICLES = frozenset({"de", "du", "des", "la", "le", "van", "von", "der", "den", "da", "di", "del", "of", "the",
                       "y", "al", "bin", "ibn"})
# Spelled-out numbers that ground a rewrite's numerals.
NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+", re.UNICODE)
# A sentence opens after . ! ? : ; (and their CJK forms) followed by space, or at a line start.
_SENTENCE_END = re.compile(r"(?<=[.!?:;\u3002\uff01\uff1f])\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022>]+\s*)?(?:\d{1,2}[.)]\s+)?")
_SUFFIXES = (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("ly", ""))


def _is_cjk(ch: str) -> bool:
    return "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"


def _is_acronym(word: str) -> bool:
    return len(word) >= 2 and word.isupper()


def stem(word: str) -> str:
    """A light, English-shaped stem: case-folded, one common suffix removed (ies->y, ing, ed, es, s, ly)
    when at least 3 letters remain, a final e dropped, cut to 7 letters. Crude by design: it only has to
    make a word and its inflections compare equal, in source and rewrite alike."""
    w = word.lower()
    for suffix, replacement in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + replacement
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w[:7]


def normalize_number(token: str) -> str:
    """'1,200' -> '1200', '3.50' -> '3.5', '007' -> '7': one spelling per number."""
    if "," in token and re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")
    token = token.replace(",", ".")
    whole, _, decimals = token.partition(".")
    whole = whole.lstrip("0") or "0"
    decimals = decimals.rstrip("0")
    return f"{whole}.{decimals}" if decimals else whole


@dataclass(frozen=True)
class Units:
    """What a text says, in comparable form (see the module docstring)."""

    content: frozenset[str]  # stems of content words, and CJK character bigrams
    numbers: frozenset[str]  # normalised numbers
    terms: frozenset[tuple[str, ...]]  # named terms, as tuples of stems
    stems: frozenset[str]  # stems of every word (what a term is looked up in)
    number_words: frozenset[str]  # numbers spelled out as words ("three" -> "3")
    term_names: dict[tuple[str, ...], str] = field(default_factory=dict, compare=False)  # key -> as written

    def has_term(self, term: tuple[str, ...]) -> bool:
        return all(part in self.stems for part in term)

    def has_number(self, number: str, *, spelled: bool = False) -> bool:
        return number in self.numbers or (spelled and number in self.number_words)


def _sentences(text: str) -> list[str]:
    """Sentences and lines, each with its list marker (- , 1. , > ) removed."""
    out: list[str] = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line, count=1)
        out.extend(part for part in _SENTENCE_END.split(line) if part.strip())
    return out


def _named_terms(sentence: str) -> list[list[str]]:
    """The named terms of one sentence, as lists of words as written."""
    tokens = list(_TOKEN.finditer(sentence))
    terms: list[list[str]] = []
    run: list[tuple[int, str]] = []  # (position in the sentence, word)

    def close() -> None:
        words = list(run)
        while words and words[-1][1].lower() in PARTICLES:
            words.pop()
        if len(words) > 1 and words[0][0] == 0 and words[1][1].islower():
            # "Spanning the Golden Gate", "Built in the Belle Epoque": a sentence-opening word before a particle
            # is capitalised by position; the name starts after the particle
            words = words[1:]
            while words and words[0][1].islower():
                words.pop(0)
        while words and not _is_acronym(words[0][1]) and (words[0][1].lower() in STOPWORDS
                                                           or words[0][1].lower() in PARTICLES):
            words.pop(0)
        run.clear()
        if not words:
            return
        if len(words) >= 2 or _is_acronym(words[0][1]) or words[0][0] > 0:
            terms.append([w for _, w in words])

    for position, match in enumerate(tokens):
        word = match.group()
        joined = bool(run) and sentence[tokens[position - 1].end() : match.start()].strip() in ("", "-")
        capitalised = word[0].isalpha() and word[0].isupper()
        if capitalised and not any(_is_cjk(ch) for ch in word):
            if run and not joined:
                close()
            run.append((position, word))
        elif run and joined and word.lower() in PARTICLES and word.islower():
            run.append((position, word))
        else:
            close()
    close()
    return terms


def units(text: str) -> Units:
    """The content words, numbers and named terms of `text` (see the module docstring)."""
    content: set[str] = set()
    numbers: set[str] = set()
    stems: set[str] = set()
    number_words: set[str] = set()
    term_names: dict[tuple[str, ...], str] = {}
    for sentence in _sentences(text):
        for match in _TOKEN.finditer(sentence):
            token = match.group()
            if token[0].isdigit():
                numbers.add(normalize_number(token))
                continue
            if any(_is_cjk(ch) for ch in token):
                content.update(token[i : i + 2] for i in range(max(len(token) - 1, 1)))
                continue
            lower = token.lower()
            stems.add(stem(lower))
            if lower in NUMBER_WORDS:
                number_words.add(NUMBER_WORDS[lower])
            if len(lower) >= 3 and lower not in STOPWORDS:
                content.add(stem(lower))
        for words in _named_terms(sentence):
            key = tuple(stem(w) for w in words
                        if _is_acronym(w) or (w.lower() not in STOPWORDS and w.lower() not in PARTICLES))
            if key:
                term_names.setdefault(key, " ".join(words))
    return Units(frozenset(content), frozenset(numbers), frozenset(term_names), frozenset(stems),
                 frozenset(number_words), term_names)


@dataclass(frozen=True)
class ChunkFaithfulness:
    """One chunk's answer against the chunk: the score, its components, and the counts behind them."""

    faithfulness: float
    kept_content_frac: float
    invented_frac: float
    source_units: int  # distinct content units of the source chunk
    kept_units: int  # ... of them found in the rewrite
    facts: int  # distinct facts (numbers, named terms) the rewrite states
    invented: tuple[str, ...]  # ... of them not in the source, as written (numbers first)


def score_chunk(source: str, rewrite: str, style: str) -> ChunkFaithfulness:
    """`rewrite` (one chunk's answer) against `source` (that chunk), for a rewrite in `style` (the prompt's
    task: rewrite_wiki, qa_pairs, distill, knowledge_list). See the module docstring for the formula."""
    src, out = units(source), units(rewrite)
    source_units = len(src.content) + len(src.numbers) + len(src.terms)
    kept = (sum(1 for c in src.content if c in out.stems or c in out.content)
            + sum(1 for n in src.numbers if out.has_number(n))
            + sum(1 for t in src.terms if out.has_term(t)))
    invented_numbers = sorted(n for n in out.numbers if not src.has_number(n, spelled=True))
    invented_terms = sorted(out.term_names[t] for t in out.terms if not src.has_term(t))
    facts = len(out.numbers) + len(out.terms)
    kept_frac = kept / source_units if source_units else 1.0
    invented_frac = (len(invented_numbers) + len(invented_terms)) / facts if facts else 0.0
    return ChunkFaithfulness(
        faithfulness=combine(kept_frac, invented_frac, style), kept_content_frac=kept_frac,
        invented_frac=invented_frac, source_units=source_units, kept_units=kept, facts=facts,
        invented=tuple(invented_numbers + invented_terms))


def combine(kept_content_frac: float, invented_frac: float, style: str) -> float:
    """faithfulness = (1 - invented_frac) * min(1, kept_content_frac / COVERAGE_TARGET[style]), in [0, 1]."""
    target = COVERAGE_TARGET.get(style, DEFAULT_COVERAGE_TARGET)
    return max(0.0, min(1.0, (1.0 - invented_frac) * min(1.0, kept_content_frac / target)))


@dataclass(frozen=True)
class RewriteFaithfulness:
    """A whole rewrite: the minimum chunk score, the pooled components, and the chunk that set the minimum."""

    faithfulness: float
    kept_content_frac: float
    invented_frac: float
    worst_chunk: int  # 0-based index of the chunk with the lowest score
    invented: tuple[str, ...]  # every invented fact, chunk by chunk (as written)
    chunks: tuple[ChunkFaithfulness, ...]


def score_rewrite(sources: Sequence[str], answers: Sequence[str], style: str) -> RewriteFaithfulness:
    """Each chunk's answer against its own chunk, aggregated: minimum score, pooled components."""
    if len(sources) != len(answers) or not sources:
        raise ValueError(f"score_rewrite needs one answer per source chunk (got {len(sources)} chunks, "
                         f"{len(answers)} answers)")
    chunks = tuple(score_chunk(source, answer, style) for source, answer in zip(sources, answers))
    worst = min(range(len(chunks)), key=lambda i: chunks[i].faithfulness)
    source_units = sum(c.source_units for c in chunks)
    facts = sum(c.facts for c in chunks)
    return RewriteFaithfulness(
        faithfulness=chunks[worst].faithfulness,
        kept_content_frac=sum(c.kept_units for c in chunks) / source_units if source_units else 1.0,
        invented_frac=sum(len(c.invented) for c in chunks) / facts if facts else 0.0,
        worst_chunk=worst, invented=tuple(fact for c in chunks for fact in c.invented), chunks=chunks)
