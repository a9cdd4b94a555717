"""The quality rules' fast paths give datatrove's verdicts: the regex word tokenizer against spaCy's, and
the tuple-based n-gram statistics against datatrove's string-joining ones, on the bundled sample's pages."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trafilatura
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

from pipeline.config import RulesConfig
from pipeline.langid import LanguageIdentifier
from pipeline.rules import FastWordTokenizer, RuleSet, repeated_ngram_chars, top_ngram_chars
from pipeline.warc import RawRecord, decode_html, iter_warc, parse_http_response

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"


@pytest.fixture(scope="module")
def english_pages() -> list[str]:
    langid = LanguageIdentifier()
    texts = []
    for warc in sorted(SAMPLE.glob("*.warc*")):
        for record in iter_warc(warc):
            if not isinstance(record, RawRecord) or record.record_type != "response":
                continue
            response = parse_http_response(record.block)
            if response.status == 200 and "html" in response.content_type:
                text = trafilatura.extract(decode_html(response.body, response.charset)[0], deduplicate=False)
                if text and langid.identify(text)[0] == "en":
                    texts.append(text)
    assert len(texts) >= 40
    return texts


def test_tokenizer_follows_spacy_conventions():
    text = ("I don't know; it's 3.14 and aid.The well-known Delaware,It they/them r=25.9 "
            "(see http://x.org/a). Wait... no! U.S. and J. S. Bach e.g. pip -m --user https://pypi.org/legacy/ x")
    assert FastWordTokenizer("en").word_tokenize(text) == [
        "I", "do", "n't", "know", ";", "it", "'s", "3.14", "and", "aid", ".", "The", "well", "-", "known",
        "Delaware", ",", "It", "they", "/", "them", "r=25.9", "(", "see", "http://x.org/a", ")", ".", "Wait",
        "...", "no", "!", "U.S.", "and", "J.", "S.", "Bach", "e.g.", "pip", "-m", "--user",
        "https://pypi.org/legacy/", "x"]
    assert len(FastWordTokenizer("en").span_tokenize("One. Two! Three? four")) == 4


def test_fast_rules_agree_with_datatrove_spacy_rules(english_pages):
    fast = RuleSet(RulesConfig(all_failures=True))
    spacy = RuleSet(RulesConfig(all_failures=True, tokenizer="spacy"))
    verdicts = [(fast.failures(text), spacy.failures(text)) for text in english_pages]
    agree = sum(a == b for a, b in verdicts)
    assert agree >= 0.95 * len(verdicts), [pair for pair in verdicts if pair[0] != pair[1]]
    # the sample exercises real drops, not only passes
    assert sum(bool(b) for _, b in verdicts) >= 10


def test_ngram_statistics_equal_datatrove(english_pages):
    tokenizer = FastWordTokenizer("en")
    rng = random.Random(0)
    sequences = [tokenizer.word_tokenize(text) for text in english_pages]
    # small vocabularies repeat a lot: they exercise the jump-after-repeat path
    sequences += [[rng.choice(["ab", "c", "de", "f"]) for _ in range(rng.randrange(3, 300))] for _ in range(100)]
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
