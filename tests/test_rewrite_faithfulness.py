"""The faithfulness measure of rewrites (pipeline.rewrite.faithfulness), pure: what a rewrite keeps of its
source, what it invents, the combined score per style and over chunks, and where it sits among the checks
(a copy is dropped for copying before it is scored)."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.llm.client import Completion
from pipeline.llm.tokens import TokenCounter
from pipeline.rewrite import faithfulness as faith
from pipeline.rewrite.checks import COPIED_INPUT, check_rewrite, copy_ratio
from pipeline.rewrite.stage import Candidate, StyleSet, assemble, plan_doc

SOURCE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
          "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.")
PARAPHRASE = ("Gustave Eiffel's firm designed and built a lattice tower of wrought iron in Paris between 1887 and "
              "1889; it stands on the Champ de Mars and carries the engineer's name.")
HALLUCINATED = ("Jean Dupont's firm built an iron tower in Lyon in 1850; it was 500 metres tall and cost 3 million "
                "francs, according to the Louvre.")
PARTLY_INVENTED = "Gustave Eiffel built the tower in Paris in 1850 for the World Fair."
OFF_TOPIC = "This page is about an interesting subject that many readers will surely enjoy learning more about."
DEFAULT_MIN = load_config(None).rewrite.min_faithfulness


def test_a_faithful_paraphrase_scores_high_and_invents_nothing():
    score = faith.score_chunk(SOURCE, PARAPHRASE, "rewrite_wiki")
    assert score.invented == () and score.invented_frac == 0
    assert score.kept_content_frac > 0.8 and score.faithfulness == 1.0 >= DEFAULT_MIN
    assert score.facts == 5  # 1887, 1889, Gustave Eiffel, Paris, Champ de Mars


def test_invented_numbers_and_names_score_low_and_are_listed():
    score = faith.score_chunk(SOURCE, HALLUCINATED, "rewrite_wiki")
    assert set(score.invented) == {"1850", "500", "3", "Jean Dupont", "Lyon", "Louvre"}
    assert score.invented_frac > 0.8 and score.faithfulness < 0.1 < DEFAULT_MIN
    # half of its facts invented: below the default threshold too, though it keeps some of the source
    partly = faith.score_chunk(SOURCE, PARTLY_INVENTED, "rewrite_wiki")
    assert set(partly.invented) == {"1850", "World Fair"} and partly.invented_frac == 0.5
    faithful = faith.score_chunk(SOURCE, PARAPHRASE, "rewrite_wiki")
    assert score.faithfulness < partly.faithfulness < DEFAULT_MIN < faithful.faithfulness


def test_an_answer_not_about_its_source_invents_nothing_but_keeps_nothing():
    score = faith.score_chunk(SOURCE, OFF_TOPIC, "rewrite_wiki")
    assert score.invented_frac == 0 and score.kept_content_frac < 0.1 and score.faithfulness < DEFAULT_MIN


def test_coverage_is_judged_against_the_styles_target_and_invention_the_same_in_every_style():
    qa = ("Question: Who built the Eiffel Tower?\nAnswer: The company of the engineer Gustave Eiffel.\n\n"
          "Question: When was it built?\nAnswer: Between 1887 and 1889.")
    wiki, pairs = faith.score_chunk(SOURCE, qa, "rewrite_wiki"), faith.score_chunk(SOURCE, qa, "qa_pairs")
    assert wiki.kept_content_frac == pairs.kept_content_frac < faith.COVERAGE_TARGET["rewrite_wiki"]
    assert pairs.faithfulness == 1.0 > wiki.faithfulness  # eight questions need not restate the whole text
    assert pairs.invented == () and "Question" not in " ".join(faith.units(qa).term_names.values())
    for style in faith.COVERAGE_TARGET:
        assert faith.score_chunk(SOURCE, HALLUCINATED, style).faithfulness < DEFAULT_MIN


def test_combine_is_the_documented_formula_within_bounds():
    assert faith.combine(1.0, 0.0, "rewrite_wiki") == 1.0
    assert faith.combine(0.25, 0.0, "rewrite_wiki") == pytest.approx(0.5)  # half the wiki target of 0.5
    assert faith.combine(0.6, 0.25, "distill") == pytest.approx(0.75)
    assert faith.combine(0.0, 0.0, "qa_pairs") == 0.0 and faith.combine(1.0, 1.0, "qa_pairs") == 0.0
    assert faith.combine(0.15, 0.0, "a_new_style") == pytest.approx(0.15 / faith.DEFAULT_COVERAGE_TARGET)


def test_units_numbers_names_and_what_is_not_a_name():
    text = ("Farmers in the valley sell 1,280 apples to NASA every week.\n1. The market opens at dawn.\n"
            "- Prices rose by 3.50 percent in Lyon.")
    units = faith.units(text)
    assert units.numbers == {"1280", "3.5"}  # "1." opening a line is a list marker
    assert set(units.term_names.values()) == {"NASA", "Lyon"}  # "Farmers", "The", "Prices" open sentences
    assert faith.units("He saw the Bank of England and the Champ de Mars.").term_names.keys() == {
        ("bank", "england"), ("champ", "mar")}
    opening = faith.units("Spanning the Golden Gate strait, it links two cities.")
    assert set(opening.term_names.values()) == {"Golden Gate"}
    # the same number written two ways, and a numeral grounded by the word in the source
    assert faith.score_chunk("It cost 1280 dollars and took three years.", "Taking 3 years, it cost 1,280 dollars.",
                             "distill").invented == ()
    # inflections match: towers/tower, designed/design, companies/company
    assert faith.stem("towers") == faith.stem("tower") and faith.stem("designed") == faith.stem("design")
    assert faith.stem("companies") == faith.stem("company")


def test_a_rewrite_is_scored_chunk_by_chunk_minimum_score_pooled_components():
    second = "The tower is 330 metres tall and was the tallest structure in the world until 1930."
    second_rewrite = "Standing 330 metres high, it was the world's tallest structure until 1930."
    whole = faith.score_rewrite([SOURCE, second], [PARAPHRASE, second_rewrite], "rewrite_wiki")
    assert whole.faithfulness == 1.0 and whole.invented == ()
    # each answer against its own chunk: chunk 2's answer names what only chunk 2 says
    assert faith.score_chunk(SOURCE, second_rewrite, "rewrite_wiki").invented == ("1930", "330")
    # one hallucinated chunk sets the score of the whole rewrite
    bad = faith.score_rewrite([SOURCE, second], [PARAPHRASE, HALLUCINATED], "rewrite_wiki")
    assert bad.worst_chunk == 1 and bad.faithfulness == bad.chunks[1].faithfulness < DEFAULT_MIN
    facts = sum(c.facts for c in bad.chunks)
    assert bad.invented_frac == pytest.approx(len(bad.invented) / facts) and 0 < bad.invented_frac < 1
    assert bad.kept_content_frac == pytest.approx(sum(c.kept_units for c in bad.chunks) /
                                                  sum(c.source_units for c in bad.chunks))
    with pytest.raises(ValueError, match="one answer per source chunk"):
        faith.score_rewrite([SOURCE], [PARAPHRASE, PARAPHRASE], "rewrite_wiki")


def test_an_exact_copy_is_faithful_but_dropped_for_copying_before_it_is_scored():
    # the measure alone would pass a copy: it keeps everything and invents nothing
    assert faith.score_chunk(SOURCE, SOURCE, "rewrite_wiki").faithfulness == 1.0
    # ... so the copy check comes first, and its reason is the one recorded
    assert copy_ratio(SOURCE, SOURCE) == 1.0
    failure = check_rewrite(SOURCE, SOURCE, source_language="en", output_language="en", max_copy_ratio=0.9, ngram=8)
    assert failure.reason == COPIED_INPUT
    cfg = load_config(None, ["rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6"])
    styles = StyleSet(cfg)
    style = styles.styles["rewrite_wiki_v1"]
    plan = plan_doc({"doc_id": "d", "text": SOURCE, "language": "en", "quality_prob": 0.3}, cfg.rewrite,
                    TokenCounter(None))

    def answer(text: str) -> Completion:
        return Completion(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1, latency_s=0,
                          cached=False, model="m")

    kwargs = dict(model="m", params_json=styles.params_json(style), rewrite_cfg=cfg.rewrite)
    assert assemble(plan, style, [answer(SOURCE)], **kwargs) == ("dropped", failure)
    made = assemble(plan, style, [answer(PARAPHRASE)], **kwargs)
    assert isinstance(made, Candidate) and made.row["faithfulness"] == made.faithfulness.faithfulness == 1.0
