"""The eval-set n-gram index (pipeline.safety.decontam): matches with the right item and span, short items
matched whole, one normalisation for both sides, cut, save/load, bad input, Parquet and `datasets` input.
The JSONL fixture tests/fixtures/safety/evalset.jsonl holds 4 items: q-001 (long, with choices), q-002
(long once its choices are joined), q-003 (4 words: short) and one without an id on line 5 (long)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline.errors import CurateError
from pipeline.safety import SafetyInputError
from pipeline.safety.decontam import EvalIndex, Hit, _words, normalized_words

FIXTURE = str(Path(__file__).resolve().parent / "fixtures" / "safety" / "evalset.jsonl")
FIELDS = ["question", "choices"]
Q1 = "Which gas do green plants absorb from the air during photosynthesis in order to build sugars?"


@pytest.fixture(scope="module")
def index() -> EvalIndex:
    return EvalIndex.build([FIXTURE], FIELDS)


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_a_13_gram_is_found_with_its_item_and_span(index):
    thirteen = "green plants absorb from the air during photosynthesis in order to build sugars"
    doc = f"Some page. Biology notes: {thirteen} and more text follows here."
    hits = index.find(doc)
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.eval_set, hit.item) == ("evalset", "q-001")
    assert doc[hit.start:hit.end] == thirteen
    assert hit.words == thirteen


def test_twelve_words_are_not_enough(index):
    twelve = "plants absorb from the air during photosynthesis in order to build sugars"
    assert index.find(f"Notes: {twelve}. Unrelated ending words here.") == []


def test_item_without_id_is_named_by_its_line(index):
    doc = "the quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch"
    assert [h.item for h in index.find(doc)] == ["5"]  # line 4 of the file is blank


def test_a_whole_copy_is_one_hit_with_the_union_span(index):
    doc = f"Intro.\n\n{Q1} Carbon dioxide\n\nOutro."
    hits = index.find(doc)
    assert len(hits) == 1
    assert doc[hits[0].start:hits[0].end] == f"{Q1[:-1]}? Carbon dioxide"
    assert hits[0].words.startswith("which gas do") and hits[0].words.endswith("carbon dioxide")


def test_two_separate_copies_are_two_hits(index):
    doc = f"{Q1} -- something else entirely in between these -- {Q1}"
    hits = index.find(doc)
    assert [h.item for h in hits] == ["q-001", "q-001"]
    assert hits[0].end < hits[1].start


def test_choices_are_part_of_the_item(index):
    # q-002's question has 10 words: with its two choices it is a long item whose n-grams span both
    doc = "Quiz: what is the boiling point of water at sea level? 100 degrees Celsius. Or 50 degrees Celsius."
    hits = index.find(doc)
    assert {h.item for h in hits} == {"q-002"}


def test_short_items_are_matched_whole(index):
    assert [h.item for h in index.find("Homework: name the largest planet, then sleep.")] == ["q-003"]
    hit = index.find("NAME   the Largest\nplanet!")[0]
    assert (hit.start, hit.end, hit.words) == (0, 25, "name the largest planet")
    assert index.find("Name the largest known planet.") == []  # not contiguous
    assert index.find("the largest planet is Jupiter") == []    # not whole
    assert index.stats["short_items"] == 1


def test_too_short_items_are_counted_not_indexed(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "Paris"}, {"text": "yes no"},
                                              {"text": "one two three four five six seven eight nine ten"
                                                       " eleven twelve thirteen"}])
    built = EvalIndex.build([path])
    assert (built.stats["items"], built.stats["skipped_items"], built.stats["short_items"]) == (3, 2, 0)
    assert built.find("Paris yes no") == []
    assert built.find("One two three four five six seven eight nine ten eleven twelve thirteen")[0].item == "3"


@pytest.mark.parametrize("doc", [
    "which gas do green plants absorb from the air during photosynthesis in order to build sugars",
    "WHICH GAS DO GREEN PLANTS ABSORB FROM THE AIR DURING PHOTOSYNTHESIS IN ORDER TO BUILD SUGARS",
    "Which gas -- do green plants absorb, from the air (during photosynthesis), in order to build sugars!!!",
    "Which\tgas\n\ndo green   plants\r\nabsorb from the air during photosynthesis in order to build sugars",
    "“Which gas” do ‘green’ plants absorb from the air… during photosynthesis in order to build sugars…",
    "Ｗｈｉｃｈ gas do green plants absorb from the air during photosynthesis in order to build sugars",  # fullwidth
])
def test_normalisation_on_the_document_side(index, doc):
    assert [h.item for h in index.find(doc)] == ["q-001"]


def test_normalisation_on_the_item_side(tmp_path):
    item = "«THE Straße, of ÉTÉ»: where   the\nrivers—meet; the mountains' shadow falls tonight"  # 13 words
    built = EvalIndex.build([write_jsonl(tmp_path / "e.jsonl", [{"id": 7, "text": item}])])
    doc = "the strasse of été where the rivers meet the mountains shadow falls tonight"
    assert [h.item for h in built.find(doc)] == ["7"]
    assert built.find(doc.replace("été", "ete")) == []  # diacritics are kept


def test_normalized_words_offsets_and_unicode():
    text = "Straße ﬁne Ｆｕｌｌ e\u0301té 日本語テキスト don't x_y 42"
    words = normalized_words(text)
    assert [w for w, _, _ in words] == ["strasse", "fine", "full", "été", "日", "本", "語", "テ", "キ", "ス", "ト",
                                        "don", "t", "x", "y", "42"]
    assert [text[s:e] for _, s, e in words][:4] == ["Straße", "ﬁne", "Ｆｕｌｌ", "e\u0301té"]
    assert all(text[s:e].strip() == text[s:e] and e > s for _, s, e in words)


@pytest.mark.parametrize("text", ["Plain ASCII, with punctuation; and CAPS.", "Mixed café — ЖУРНАЛ 東京タワー ǅemal",
                                  "", "   ", "ß" * 3 + " İstanbul ﬃ ½ x\u0301"])
def test_fast_words_equal_normalized_words(text):
    assert _words(text) == [w for w, _, _ in normalized_words(text)]


def test_cut_removes_exactly_the_spans(index):
    doc = f"Keep this. {Q1} Keep that too. Name the largest planet. End."
    hits = index.find(doc)
    assert {h.item for h in hits} == {"q-001", "q-003"}
    expected = doc
    for hit in sorted(hits, key=lambda h: -h.start):
        expected = expected[:hit.start] + expected[hit.end:]
    assert index.cut(doc, hits) == expected == "Keep this. ? Keep that too. . End."
    assert index.cut(doc, []) == doc


def test_cut_takes_the_union_of_overlapping_hits():
    text = "0123456789"
    hits = [Hit("e", "a", "", 2, 6), Hit("e", "b", "", 4, 8), Hit("e", "c", "", 8, 9)]
    assert EvalIndex.cut(text, hits) == "019"


def test_save_load_roundtrip(index, tmp_path):
    path = tmp_path / "index.bin"
    index.save(path)
    for mmap in (True, False):
        loaded = EvalIndex.load(path, mmap=mmap)
        assert loaded == index
        assert (loaded.fingerprint, loaded.stats, loaded.describe()) == (index.fingerprint, index.stats,
                                                                         index.describe())
        doc = f"{Q1} Name the largest planet"
        assert loaded.find(doc) == index.find(doc) and len(loaded.find(doc)) == 2
    other = EvalIndex.build([FIXTURE], ["question"])
    assert other != index and other.fingerprint != index.fingerprint


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "not-an-index"
    path.write_bytes(b"PAR1 something else")
    with pytest.raises(SafetyInputError, match="not an index"):
        EvalIndex.load(path)


def test_fingerprint_stats_describe(index, tmp_path):
    assert index.stats["items"] == 4 and index.stats["ngrams"] > 0 and index.stats["bytes"] > 0
    assert index.stats["eval_sets"]["evalset"]["items"] == 4
    (described,) = index.describe()
    assert (described["path"], described["format"], described["items"]) == (FIXTURE, "jsonl", 4)
    assert described["fields"] == FIELDS
    assert EvalIndex.build([FIXTURE], FIELDS).fingerprint == index.fingerprint
    assert EvalIndex.build([FIXTURE], FIELDS, ngram=8).fingerprint != index.fingerprint
    copy = tmp_path / "evalset.jsonl"
    copy.write_text(Path(FIXTURE).read_text().replace("sugars", "glucose"))
    assert EvalIndex.build([str(copy)], FIELDS).fingerprint != index.fingerprint


def test_matches_a_brute_force_search():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40)]
    items = [" ".join(rng.choices(vocab, k=rng.randint(3, 20))) for _ in range(60)]
    docs = [" ".join(rng.choices(vocab, k=80)) + " " + rng.choice(items) for _ in range(60)]

    def grams(words, n):
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        built = EvalIndex.build([write_jsonl(Path(folder) / "e.jsonl", [{"text": t} for t in items])], ngram=5)
    for doc in docs:
        words = doc.split()
        expected = {str(number) for number, item in enumerate(items, 1)
                    if grams(item.split(), min(5, len(item.split()))) & grams(words, min(5, len(item.split())))}
        assert {h.item for h in built.find(doc)} == expected


def test_parquet_with_list_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"question": ["What is the capital city of the country that hosted the 1992 summer games"],
                      "choices": [["Madrid", "Barcelona"]], "answer": [1]})
    pq.write_table(table, tmp_path / "set.parquet")
    built = EvalIndex.build([str(tmp_path / "set.parquet")], FIELDS)
    hits = built.find("... capital city of the country that hosted the 1992 summer games: Madrid? Barcelona and so on")
    assert [(h.eval_set, h.item) for h in hits] == [("set", "0")]
    assert built.describe()[0]["format"] == "parquet"


def test_datasets_folder(tmp_path):
    import datasets

    rows = {"id": ["a-1", "a-2"], "question": [Q1, "Name the smallest planet of the solar system"],
            "choices": [["CO2", "O2"], []]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "arc"))
    built = EvalIndex.build([str(tmp_path / "arc")], FIELDS)
    assert built.describe()[0]["format"] == "datasets" and built.stats["items"] == 2
    assert [(h.eval_set, h.item) for h in built.find(f"x {Q1} y")] == [("arc", "a-1")]
    assert [h.item for h in built.find("name the smallest planet of the solar system")] == ["a-2"]

    splits = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"question": [Q1]}),
                                   "validation": datasets.Dataset.from_dict({"question": ["nothing " * 20]})})
    splits.save_to_disk(str(tmp_path / "dd"))
    built = EvalIndex.build([str(tmp_path / "dd")], ["question"])
    assert [h.item for h in built.find(Q1)] == ["test/0"]


def test_bad_inputs(tmp_path):
    def refused(paths, match, fields=("text",)):
        with pytest.raises(SafetyInputError, match=match) as caught:
            EvalIndex.build([str(p) for p in paths], list(fields))
        assert isinstance(caught.value, CurateError)
        return str(caught.value)

    missing = tmp_path / "missing.jsonl"
    assert str(missing) in refused([missing], "does not exist")
    message = refused([FIXTURE], "none of the text fields", fields=["prompt"])
    assert "its fields: id, question, choices" in message and FIXTURE in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert str(empty) in refused([empty], "empty")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02\x03 weights")
    refused([binary], "neither JSONL")
    csv = tmp_path / "set.csv"
    csv.write_text("question,answer\nWhat?,yes\n")
    refused([csv], "neither JSONL")
    folder = tmp_path / "folder"
    folder.mkdir()
    refused([folder], "not a `datasets` folder")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": oops}\n')
    refused([broken], "broken.jsonl:2: not JSON")
    array = tmp_path / "array.jsonl"
    array.write_text('{"text": "one two three four"}\n["a list"]\n')
    refused([array], "array.jsonl:2: a JSON list")
    words = tmp_path / "words.jsonl"
    words.write_text('{"text": "hi"}\n{"text": "?!"}\n')
    refused([words], "none of its 2 items has 3 words")


def test_empty_parquet_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(SafetyInputError, match="empty"):
        EvalIndex.build([str(tmp_path / "empty.parquet")])
