"""The rewrite stage's pure steps: routing by score, chunking on paragraph boundaries, the output checks and
the QA parser, each with tiny inline documents asserting the reason."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.llm.tokens import TokenCounter, estimate_tokens
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


# ------------------------------------------------------------------------------------- score decisions
def scores(quality, faithfulness, invented=()):
    from pipeline.rewrite.checks import RewriteScores

    return RewriteScores(quality_prob=quality, faithfulness=faithfulness, kept_content_frac=0.5,
                         invented_frac=0.25 if invented else 0.0, invented=invented)


def test_score_checks_unfaithful_first_then_quality_with_every_score_in_the_detail():
    from pipeline.rewrite.checks import LOW_REWRITE_QUALITY, UNFAITHFUL_REWRITE, check_scores

    limits = dict(min_faithfulness=0.6, min_quality_prob=0.1)
    assert check_scores(scores(0.5, 0.9), **limits) is None
    assert check_scores(scores(0.1, 0.6), **limits) is None  # a threshold itself passes
    both = check_scores(scores(0.02, 0.3, ("1850", "Lyon")), **limits)
    assert both.reason == UNFAITHFUL_REWRITE
    assert both.detail.startswith("faithfulness 0.300 < rewrite.min_faithfulness 0.6; ")
    assert "rewrite_quality_prob=0.020" in both.detail and "invented: 1850, Lyon" in both.detail
    low = check_scores(scores(0.02, 0.9), **limits)
    assert low.reason == LOW_REWRITE_QUALITY
    assert low.detail.startswith("rewrite_quality_prob 0.020 < rewrite.min_quality_prob 0.1; ")
    assert "faithfulness=0.900" in low.detail
    # the classifier could not score the text (NaN): not shown to be good enough
    assert check_scores(scores(float("nan"), 0.9), **limits).reason == LOW_REWRITE_QUALITY
    # None or 0: that threshold is off (no quality score needed)
    for off in (None, 0.0):
        assert check_scores(scores(None, 0.9), min_faithfulness=0.6, min_quality_prob=off) is None
        assert check_scores(scores(0.5, 0.0), min_faithfulness=off, min_quality_prob=0.1) is None
    assert "rewrite_quality_prob=none" in scores(None, 0.9).detail()


def test_score_thresholds_are_validated_naming_the_field_and_are_stage_settings():
    from pipeline.rewrite.stage import NOT_SETTINGS

    defaults = load_config(None).rewrite
    assert 0 < defaults.min_quality_prob < 1 and 0 < defaults.min_faithfulness < 1
    for field in ("min_quality_prob", "min_faithfulness"):
        for bad in ("1.5", "-0.1", "high"):
            with pytest.raises(ConfigError, match=rf"rewrite\.{field}: "):
                load_config(None, [f"rewrite.{field}={bad}"])
        assert getattr(load_config(None, [f"rewrite.{field}=null"]).rewrite, field) is None
        assert field not in NOT_SETTINGS  # part of the stage's settings: a change is refused in a run folder


def test_score_histograms_add_up_over_shards():
    from pipeline.cards.synthetic import histogram, merge_score_stats, score_stats

    assert histogram([0.0, 0.05, 0.1, 0.55, 0.999, 1.0, None, float("nan")]) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    shard = {"scores": {"kept": {"faithfulness": score_stats([0.9, 1.0]), "rewrite_quality_prob": score_stats([None])},
                        "dropped": {"faithfulness": score_stats([0.1]), "rewrite_quality_prob": score_stats([0.5])}}}
    total = merge_score_stats([shard, shard, {}])
    assert total["kept"]["faithfulness"]["n"] == 4 and total["kept"]["faithfulness"]["sum"] == pytest.approx(3.8)
    assert total["kept"]["faithfulness"]["hist"][9] == 4 and total["kept"]["rewrite_quality_prob"]["n"] == 0
    assert total["dropped"]["rewrite_quality_prob"]["hist"][5] == 2
