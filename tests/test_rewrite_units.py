"""The rewrite stage's pure steps: routing by score, chunking on paragraph boundaries, the output checks and
the QA parser, each with tiny inline documents asserting the reason."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.rewrite import route
from pipeline.rewrite.checks import (
    COPIED_INPUT,
    EMPTY_OUTPUT,
    LANGUAGE_MISMATCH,
    QA_UNPARSEABLE,
    TRUNCATED_OUTPUT,
    Failure,
    check_answer,
    check_rewrite,
    copy_ratio,
    format_qa_pairs,
    parse_qa_pairs,
)
from pipeline.llm.tokens import TokenCounter, estimate_tokens
from pipeline.rewrite.chunking import chunk_text, split_paragraphs
from pipeline.rewrite.stage import BELOW_THRESHOLD, NO_QUALITY_SCORE, STYLE_NOT_SELECTED, StyleSet

HIGH = ["qa_pairs_v1", "distill_v1", "knowledge_list_v1"]


def rewrite_cfg(*overrides: str):
    return load_config(None, ["rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", *overrides]).rewrite


@pytest.mark.parametrize(
    ("quality_prob", "expected"),
    [
        (0.95, HIGH),
        (0.6, HIGH),  # the threshold itself is high
        (0.59, ["rewrite_wiki_v1"]),
        (0.2, ["rewrite_wiki_v1"]),
        (0.19, BELOW_THRESHOLD),
        (None, NO_QUALITY_SCORE),
        (float("nan"), NO_QUALITY_SCORE),
    ],
)
def test_route_sends_each_score_to_its_styles_or_gives_the_reason(quality_prob, expected):
    result = route(quality_prob, rewrite_cfg())
    if isinstance(expected, str):
        assert isinstance(result, Failure) and result.reason == expected
    else:
        assert result == expected


def test_route_respects_the_selected_styles_and_custom_routes():
    cfg = rewrite_cfg('rewrite.styles=["qa_pairs_v1"]')
    assert route(0.9, cfg) == ["qa_pairs_v1"]
    failure = route(0.3, cfg)
    assert isinstance(failure, Failure) and failure.reason == STYLE_NOT_SELECTED
    assert "rewrite_wiki_v1" in failure.detail
    # routes are configuration: wiki for high-quality pages too
    cfg = rewrite_cfg('rewrite.high_styles=["rewrite_wiki_v1", "distill_v1"]')
    assert route(0.9, cfg) == ["rewrite_wiki_v1", "distill_v1"]


def test_bad_rewrite_config_names_the_field():
    with pytest.raises(ConfigError, match="rewrite.high_threshold"):
        load_config(None, ["rewrite.mid_threshold=0.7", "rewrite.high_threshold=0.5"])
    cfg = load_config(None, ['rewrite.styles=["summary_v9"]'])
    with pytest.raises(ValueError, match=r"rewrite.styles: \['summary_v9'\] in neither"):
        StyleSet(cfg)
    cfg = load_config(None, ['rewrite.max_output_tokens={rewrite_wiki: 100}'])
    with pytest.raises(ValueError, match="no limit for style 'qa_pairs'"):
        StyleSet(cfg)


def test_chunks_keep_whole_paragraphs_in_order_within_the_budget():
    paragraphs = [f"Paragraph {i:02d} talks about topic number {i:02d} in a few plain words." for i in range(12)]
    counter = TokenCounter(None)  # the estimate: 1 token per 3 bytes
    per_paragraph = estimate_tokens(paragraphs[0])
    chunks = chunk_text("\n\n".join(paragraphs) + "\n", per_paragraph * 3 + 2, counter)
    assert len(chunks) == 4
    assert all(len(chunk.split("\n")) == 3 for chunk in chunks)  # never a paragraph cut in two
    assert "\n".join(chunks).split("\n") == paragraphs  # reassembles in order, blank lines gone
    assert all(counter.count(chunk) <= per_paragraph * 3 + 2 for chunk in chunks)


def test_a_paragraph_over_the_budget_splits_at_sentences_then_words_then_characters():
    counter = TokenCounter(None)
    sentences = " ".join(f"Sentence {i} is short." for i in range(10))
    chunks = chunk_text(sentences, 20, counter)
    assert len(chunks) > 1 and all(c.endswith(".") and counter.count(c) <= 20 for c in chunks)
    assert " ".join(chunks) == sentences
    cjk = "这是一个很长的句子没有任何标点符号" * 10  # no spaces, no sentence end: character windows
    chunks = chunk_text(cjk, 16, counter)
    assert "".join(chunks) == cjk and all(counter.count(c) <= 16 for c in chunks)
    assert chunk_text(" \n\n ", 16, counter) == [] and split_paragraphs("a\n\n b \n") == ["a", "b"]


def test_the_served_models_tokenizer_counts_when_its_folder_is_given(tiny_model_dir):
    counter = TokenCounter(tiny_model_dir)
    assert counter.exact and counter.name == f"tokenizer:{tiny_model_dir.name}"
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    text = "Chunking counts tokens with the model's own tokenizer."
    assert counter.count(text) == len(reference.encode(text, add_special_tokens=False).ids)
    assert not TokenCounter(tiny_model_dir.parent).exact  # no tokenizer.json there: the estimate


@pytest.mark.parametrize(
    ("text", "finish", "qa", "reason"),
    [
        ("", "stop", False, EMPTY_OUTPUT),
        ("  \n\n ", "length", False, EMPTY_OUTPUT),
        ("The tower was completed in", "length", False, TRUNCATED_OUTPUT),
        ("The tower is in Paris.", "stop", True, QA_UNPARSEABLE),
        ("Question: Where is the tower?\n", "stop", True, QA_UNPARSEABLE),
        ("Answer: In Paris.\nQuestion: Where?\n", "stop", True, QA_UNPARSEABLE),
        ("The tower is in Paris.", "stop", False, None),
        ("Question: Where is the tower?\nAnswer: In Paris.", "stop", True, None),
    ],
)
def test_answer_checks(text, finish, qa, reason):
    failure = check_answer(text, finish, qa=qa)
    assert (failure.reason if failure else None) == reason


def test_qa_pairs_parse_multiline_answers_labels_and_a_short_preamble():
    text = ("Here are some questions.\n\n**Question:** Who designed the Eiffel Tower?\n**Answer:** Gustave "
            "Eiffel's company.\nIt was built for the 1889 fair.\n\nQ: Where is it?\nA: In Paris, France.")
    pairs = parse_qa_pairs(text)
    assert pairs == [("Who designed the Eiffel Tower?", "Gustave Eiffel's company. It was built for the 1889 fair."),
                     ("Where is it?", "In Paris, France.")]
    assert format_qa_pairs(pairs).startswith("Question: Who designed the Eiffel Tower?\nAnswer: Gustave")
    long_preamble = "This text is not in the format at all. " * 10 + "\nQuestion: a?\nAnswer: b."
    assert isinstance(parse_qa_pairs(long_preamble), Failure)


SOURCE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
          "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.")


def test_copy_ratio_and_language_checks():
    assert copy_ratio(SOURCE, SOURCE) == 1.0
    rephrased = ("Gustave Eiffel's firm designed and built a lattice tower of wrought iron in Paris between 1887 "
                 "and 1889; it stands on the Champ de Mars and carries the engineer's name.")
    assert copy_ratio(SOURCE, rephrased) < 0.3
    assert copy_ratio(SOURCE, "Paris, France") == 1.0  # short and found whole in the source
    kwargs = dict(max_copy_ratio=0.9, ngram=8)
    failure = check_rewrite(SOURCE, "Intro. " + SOURCE, source_language="en", output_language="en", **kwargs)
    assert failure.reason == COPIED_INPUT and "rewrite.max_copy_ratio=0.9" in failure.detail
    assert check_rewrite(SOURCE, rephrased, source_language="en", output_language="en", **kwargs) is None
    failure = check_rewrite(SOURCE, rephrased, source_language="en", output_language="de", **kwargs)
    assert failure.reason == LANGUAGE_MISMATCH and "'de'" in failure.detail
    # CJK text has no spaces: copying is measured per character
    zh = "埃菲尔铁塔是位于法国巴黎战神广场的锻铁镂空结构铁塔"
    assert copy_ratio(zh, zh) == 1.0 and copy_ratio(zh, "这座塔很高而且很有名气大家都喜欢去看") == 0.0
