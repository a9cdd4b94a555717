"""The extract stage's faster paths give exactly what the plain ones give: py3langid's features found in numpy
against py3langid's own byte-by-byte scan, the sentence count against the sentences, the WARC header dict against
dict() of FastWARC's header map, the n-gram statistics against datatrove's on words that make its keys collide."""

from __future__ import annotations

import io
import random

import numpy as np
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams
from fastwarc.warc import ArchiveIterator, WarcRecordType

from pipeline.langid import LanguageIdentifier
from pipeline.rules import FastWordTokenizer, WordNgrams
from pipeline.warc import _header_dict

TEXTS = [
    "", "a", "The quick brown fox jumps over the lazy dog. It's 3.14, isn't it?",
    "Добро пожаловать на наш сайт! Здесь вы найдёте всё.", "日本語のテキストです。東京は大きい。",
    "Ein Satz. Noch einer! Und ein dritter? Ja.", "مرحبا بكم في موقعنا", "x\ud800y",
]


def test_langid_features_equal_py3langid_scan():
    identifier = LanguageIdentifier()
    model = identifier._py3
    rng = random.Random(0)
    samples = [text.encode("utf-8", errors="surrogatepass") for text in TEXTS]
    samples += [rng.randbytes(rng.randrange(0, 2500)) for _ in range(50)]
    samples += [bytes(rng.choice(b"the \xe3\x81\x82") for _ in range(rng.randrange(0, 60))) for _ in range(200)]
    for data in samples:
        ids, counts = np.unique(identifier._features.find(data), return_counts=True)
        found = np.zeros(model.nb_numfeats, dtype=np.int64)
        found[ids] = counts
        assert (found == model.instance2fv(data)).all()


def test_sentence_count_is_the_number_of_sentences():
    tokenizer = FastWordTokenizer("en")
    lines = TEXTS + ["One. Two! Three? four", "aid.The end", "  ", "...", "Hi .  . There", "“Quoted.” Next",
                     "a.B.c.D", "end. ", ". start", "no end"]
    for line in lines:
        assert tokenizer.sentence_count(line) == len(tokenizer.span_tokenize(line))


def test_header_dict_equals_dict_of_the_header_map():
    record = (b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:a>\r\nwarc-record-id: <urn:b>\r\n"
              b"WARC-Target-URI: http://x/1\r\nWARC-Target-URI: http://x/2\r\nWARC-Date: 2020\r\n"
              b"Content-Length: 5\r\n\r\nhello\r\n\r\n")
    plain = record.replace(b"warc-record-id: <urn:b>\r\n", b"").replace(b"WARC-Target-URI: http://x/2\r\n", b"")
    for data in (record, plain):
        headers = next(iter(ArchiveIterator(io.BytesIO(data), parse_http=False,
                                            record_types=WarcRecordType.any_type))).headers
        assert list(_header_dict(headers).items()) == list(dict(headers).items())


def test_ngram_statistics_with_colliding_keys():
    rng = random.Random(1)
    for vocabulary in (["ab", "c", "a", "bc", "abc"], ["a b", "a", "b", "b a", " "], ["x", "xx", "xxx"]):
        for _ in range(200):
            words = [rng.choice(vocabulary) for _ in range(rng.randrange(0, 60))]
            ngrams = WordNgrams(words)
            for n in (2, 3, 4):
                assert ngrams.top_chars(n) == (find_top_duplicate(get_n_grams(words, n)) if len(words) >= n else 0)
            for n in range(5, 11):
                assert ngrams.repeated_chars(n) == find_all_duplicate(words, n)


def test_word_splitting_chunk_by_chunk_equals_the_whole_text():
    from pipeline.rules import _SPLIT_POINTS, _TOKEN, _split_point

    rng = random.Random(2)
    pieces = ["don't", "it's", "U.S.", "J.", "aid.The", "3.14", "501(c)(3)", "D'Arcy", "--user", "well-known",
              "they/them", "a,b", "x:y", "https://example.com/a?b=c.", "ftp://x.org/", "...", "…", "’s", "n't",
              "(hello)", "word", "Wörter", "日本語", "1st", "_x_", "a_b", "$5", "e-mail", "“quoted”", "x=y", "<tag>"]
    spaces = [" ", "  ", "\n", "\n\n", "\t", "\xa0", "\u2003", ""]
    texts = TEXTS + ["".join(rng.choice(pieces) + rng.choice(spaces) for _ in range(rng.randrange(0, 40)))
                     for _ in range(500)]
    tokenizer = FastWordTokenizer("en")
    for text in texts:
        assert tokenizer.word_tokenize(text) == _TOKEN.findall(_SPLIT_POINTS.sub(_split_point, text))
