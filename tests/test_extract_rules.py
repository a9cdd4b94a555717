"""The rules' stored metrics give datatrove's verdicts: on every page of the bundled sample (and of
../shared/data's WARC files when present), the decision from `RuleSet.measure` + `failures` equals what
datatrove's own Gopher quality, Gopher repetition, C4 and FineWeb filters say (pass, or the first failing
reason), at the default thresholds and at looser and tighter ones given to both; the regex word tokenizer
agrees with spaCy's; the n-gram statistics equal datatrove's."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

from pipeline.config import ExtractConfig, RulesConfig
from pipeline.extract import Extractor
from pipeline.rules import FastWordTokenizer, RuleSet, failures, repeated_ngram_chars, top_ngram_chars
from pipeline.warc import RawRecord, iter_warc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "warc"
SHARED = ROOT.parent / "shared" / "data" / "warc"

# Written for this test: pages that reach C4's whole-page drops and line filters in each order.
C4_PAGES = [
    "Lorem ipsum dolor sit amet, the page begins.\nThen a line with { a curly bracket } in it.\n" * 3,
    "A line with { a curly bracket } comes first here.\nLorem ipsum dolor sit amet, and then this.\n" * 3,
    "Enable JavaScript to see { this } part of the page.\nWe use cookies to track you on the site.\n"
    "This line has enough words to be kept.\nAnd another one that is kept, too.\nA third one for good measure.\n"
    "A fourth kept line is here.\nThe fifth line ends the page.",
    ("x" * 1200 + " lorem ipsum { is hidden in a line with a word that is too long.\nshort line\n") * 4,
]


def page_texts(folder: Path) -> list[str]:
    """The main text of every page of every WARC file under `folder`, as extract makes it (every language)."""
    extractor = Extractor(ExtractConfig(rules={"enabled": False}))
    texts = []
    for warc in sorted(p for p in folder.rglob("*.warc*") if p.name.endswith((".warc", ".warc.gz"))):
        for record in iter_warc(warc):
            if isinstance(record, RawRecord):
                outcome = extractor.process(record, str(warc))
                if outcome.doc is not None:
                    texts.append(outcome.doc["text"])
    return texts


@pytest.fixture(scope="module")
def sample_pages() -> list[str]:
    texts = page_texts(SAMPLE)
    assert len(texts) >= 80
    return texts


def scaled(factor_max: float, factor_min: float, flags: bool) -> RulesConfig:
    """Every maximum times `factor_max`, every minimum times `factor_min` (counts rounded, >= 1; fractions of
    lines or words at most 1), C4's whole-page drops on or off. Hash and ellipsis ratios stay equal: datatrove
    bounds both with one max_symbol_word_ratio."""
    bounded = {name for name, field in RulesConfig.model_fields.items()
               if any(getattr(m, "le", None) == 1 for m in field.metadata)}
    values = {}
    for name, value in RulesConfig().decision_settings().items():
        if isinstance(value, bool) or value is None:
            continue
        factor = factor_max if name.startswith("max_") else factor_min
        new = max(1, round(value * factor)) if isinstance(value, int) else value * factor
        values[name] = min(new, 1.0) if name in bounded else new
    values["max_ellipsis_word_ratio"] = values["max_hash_word_ratio"]
    return RulesConfig(**values, drop_lorem_ipsum=flags, drop_curly_bracket=flags)


THRESHOLDS = {"defaults": RulesConfig(), "looser": scaled(1.5, 0.6, False), "tighter": scaled(0.6, 1.4, True)}


def datatrove_filters(cfg: RulesConfig, tokenizer) -> list[tuple[str, object]]:
    """datatrove's four filters with `cfg`'s thresholds, in the pipeline's order, C4 as FineWeb runs it."""
    return [
        ("gopher_", GopherQualityFilter(
            min_doc_words=cfg.min_doc_words, max_doc_words=cfg.max_doc_words,
            min_avg_word_length=cfg.min_mean_word_length, max_avg_word_length=cfg.max_mean_word_length,
            max_symbol_word_ratio=cfg.max_hash_word_ratio, max_bullet_lines_ratio=cfg.max_bullet_line_ratio,
            max_ellipsis_lines_ratio=cfg.max_end_ellipsis_line_ratio,
            max_non_alpha_words_ratio=cfg.min_alpha_word_ratio, min_stop_words=cfg.min_stop_words, language=tokenizer)),
        ("gopher_", GopherRepetitionFilter(
            dup_line_frac=cfg.max_dup_line_frac, dup_para_frac=cfg.max_dup_para_frac,
            dup_line_char_frac=cfg.max_dup_line_char_frac, dup_para_char_frac=cfg.max_dup_para_char_frac,
            top_n_grams=tuple((n, getattr(cfg, f"max_top_{n}gram_char_frac")) for n in (2, 3, 4)),
            dup_n_grams=tuple((n, getattr(cfg, f"max_dup_{n}gram_char_frac")) for n in range(5, 11)),
            language=tokenizer)),
        ("c4_", C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=cfg.min_sentences,
                                filter_lorem_ipsum=cfg.drop_lorem_ipsum, filter_curly_bracket=cfg.drop_curly_bracket,
                                language=tokenizer)),
        ("fineweb_", FineWebQualityFilter(line_punct_thr=cfg.min_line_punct_ratio,
                                          short_line_thr=cfg.max_short_line_ratio,
                                          char_duplicates_ratio=cfg.max_char_dup_ratio,
                                          new_line_ratio=cfg.max_list_ratio, language=tokenizer)),
    ]


def datatrove_verdict(text: str, filters) -> str | None:
    """The first failing filter's reason, named as the pipeline names it (None: every filter passes)."""
    for prefix, rule in filters:
        verdict = rule.filter(Document(text=text, id="page"))  # C4 edits doc.text: a fresh Document each
        if verdict is not True:
            reason = verdict[1].replace(" ", "_").strip("_")
            return reason if reason.startswith(prefix) else prefix + reason
    return None


def compare(texts: list[str], cfg: RulesConfig) -> tuple[Counter, list[tuple[str | None, str | None, str]]]:
    """(datatrove's verdicts counted, the pages where ours differ: (ours, datatrove's, text start))."""
    rules = RuleSet(cfg.model_copy(update={"apply_to_languages": []}))
    filters = datatrove_filters(cfg, rules.tokenizer)  # the same tokenizer instance for both
    counted: Counter = Counter()
    differ = []
    for text in texts:
        found = failures(rules.measure(text), cfg)
        ours = found[0].reason if found else None
        theirs = datatrove_verdict(text, filters)
        counted[theirs] += 1
        if ours != theirs:
            differ.append((ours, theirs, text[:80]))
    return counted, differ


@pytest.mark.parametrize("tokenizer", ["fast", "spacy"])
def test_decisions_equal_datatrove_filters_on_every_sample_page_at_the_defaults(sample_pages, tokenizer):
    counted, differ = compare(sample_pages + C4_PAGES, RulesConfig(tokenizer=tokenizer))
    assert differ == []
    assert counted[None] >= 10 and len(counted) >= 6  # real passes and drops for several reasons


@pytest.mark.parametrize("name", ["looser", "tighter"])
def test_decisions_equal_datatrove_filters_at_other_thresholds(sample_pages, name):
    counted, differ = compare(sample_pages + C4_PAGES, THRESHOLDS[name])
    assert differ == []
    assert len(counted) >= 4, counted


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/warc is not there")
@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_decisions_equal_datatrove_filters_on_the_shared_warcs(name):
    texts = page_texts(SHARED)
    assert len(texts) >= 50
    counted, differ = compare(texts, THRESHOLDS[name])
    assert differ == [] and len(counted) >= 4


def test_c4_whole_page_drops_come_in_line_order():
    only_c4 = RulesConfig(gopher_quality=False, gopher_repetition=False, fineweb_quality=False)
    rules = RuleSet(only_c4)
    lorem_first, curly_first, skipped_lines, _long_word = (failures(rules.measure(t), only_c4) for t in C4_PAGES)
    assert [f.reason for f in lorem_first][:2] == ["c4_lorem_ipsum", "c4_curly_bracket"]
    assert [f.reason for f in curly_first][:2] == ["c4_curly_bracket", "c4_lorem_ipsum"]
    # "{" only in a javascript line, which C4 skips before looking for it; the cookie line is skipped after
    # (so it would count a "{" there) and neither line's sentences count
    measured = rules.measure(C4_PAGES[2])
    assert measured["curly_bracket_line"] is None and measured["n_sentences"] == 5 and skipped_lines == []
    assert rules.measure(C4_PAGES[3])["lorem_ipsum_line"] is None  # the line with a 1200-character word is skipped


def test_tokenizer_follows_spacy_conventions():
    text = ("I don't know; it's 3.14 and aid.The well-known Delaware,It they/them r=25.9 "
            "(see http://x.org/a). Wait... no! U.S. and J. S. Bach e.g. pip -m --user https://pypi.org/legacy/ x")
    assert FastWordTokenizer("en").word_tokenize(text) == [
        "I", "do", "n't", "know", ";", "it", "'s", "3.14", "and", "aid", ".", "The", "well", "-", "known",
        "Delaware", ",", "It", "they", "/", "them", "r=25.9", "(", "see", "http://x.org/a", ")", ".", "Wait",
        "...", "no", "!", "U.S.", "and", "J.", "S.", "Bach", "e.g.", "pip", "-m", "--user",
        "https://pypi.org/legacy/", "x"]
    assert len(FastWordTokenizer("en").span_tokenize("One. Two! Three? four")) == 4


def test_fast_tokenizer_verdicts_agree_with_spacy_ones(sample_pages):
    from pipeline.langid import LanguageIdentifier

    # the rules apply to English by default, and the regex tokenizer is for space-separated languages
    langid = LanguageIdentifier()
    english = [text for text in sample_pages if langid.identify(text)[0] == "en"]
    assert len(english) >= 40
    fast = RuleSet(RulesConfig(all_failures=True))
    spacy = RuleSet(RulesConfig(all_failures=True, tokenizer="spacy"))
    verdicts = [(fast.failures(text), spacy.failures(text)) for text in english]  # every failed check
    agree = sum(a == b for a, b in verdicts)
    assert agree >= 0.95 * len(verdicts), [pair for pair in verdicts if pair[0] != pair[1]]
    assert sum(bool(b) for _, b in verdicts) >= 10  # the sample exercises real drops, not only passes


def test_ngram_statistics_equal_datatrove(sample_pages):
    tokenizer = FastWordTokenizer("en")
    rng = random.Random(0)
    sequences = [tokenizer.word_tokenize(text) for text in sample_pages]
    # small vocabularies repeat a lot (the jump-after-repeat path); "ab c" / "a bc" are one key for datatrove's
    # repeated n-grams (joined with nothing between), and tokens with spaces meet its space-joined top n-grams
    for vocabulary in (["ab", "c", "de", "f"], ["ab", "c", "a", "bc", "b"], ["a b", "a", "b", "b a"]):
        sequences += [[rng.choice(vocabulary) for _ in range(rng.randrange(0, 300))] for _ in range(100)]
    for words in sequences:
        for n in (2, 3, 4):
            expected = find_top_duplicate(get_n_grams(words, n)) if len(words) >= n else 0
            assert top_ngram_chars(words, n) == expected
        for n in range(5, 11):
            assert repeated_ngram_chars(words, n) == find_all_duplicate(words, n)


def test_first_failure_only_unless_all_failures():
    text = "Buy now! " * 5  # short and repetitive: fails more than one rule
    assert RuleSet(RulesConfig()).failures(text) == ["gopher_short_doc"]
    every = RuleSet(RulesConfig(all_failures=True)).failures(text)
    assert every[0] == "gopher_short_doc" and len(every) > 1
