"""The final summary's kept totals: tokens and words per quality bucket and top topic, counted exactly for
the first documents and estimated past them, one corpus file at a time."""

from __future__ import annotations

from pipeline import schemas
from pipeline.io import write_parquet
from pipeline.llm.tokens import TokenCounter, estimate_tokens
from pipeline.run import kept_totals

PAGES = [
    ("a", "Rivers carry sediment to the sea, building deltas over thousands of years.", 0.9, ["science_and_tech"]),
    ("b", "The council voted to extend the library's opening hours on weekends.", 0.6, ["politics"]),
    ("c", "Add flour and butter, then bake for twenty minutes until golden.", 0.1, ["food_and_dining"]),
    ("d", "東京の図書館は週末も開館します。", 0.3, []),
]


def _corpus(folder):
    rows = [{"doc_id": d, "text": t, "quality_prob": p, "topics": topics} for d, t, p, topics in PAGES]
    write_parquet(schemas.from_rows(rows[:2], schemas.SCORED), folder / "part-00000.parquet", schemas.SCORED)
    write_parquet(schemas.from_rows(rows[2:], schemas.SCORED), folder / "part-00001.parquet", schemas.SCORED)


def test_tokens_and_words_by_bucket_and_topic_exact(tmp_path):
    _corpus(tmp_path)
    totals = kept_totals(tmp_path, TokenCounter(None))
    tokens = {d: estimate_tokens(t) for d, t, _, _ in PAGES}
    words = {d: len(t.split()) for d, t, _, _ in PAGES}
    assert totals["kept_docs"] == 4
    assert totals["kept_tokens_by_quality_bucket"] == {"0.75-1.00": tokens["a"], "0.50-0.75": tokens["b"],
                                                       "0.00-0.25": tokens["c"], "0.25-0.50": tokens["d"]}
    assert totals["kept_words_by_topic"] == {"science_and_tech": words["a"], "politics": words["b"],
                                             "food_and_dining": words["c"], "(none)": words["d"]}
    assert totals["token_count"] == {"tokenizer": "estimate_utf8_bytes_div_3", "exact_docs": 4, "docs": 4}


def test_past_the_exact_budget_tokens_follow_the_measured_ratio(tmp_path):
    _corpus(tmp_path)
    totals = kept_totals(tmp_path, TokenCounter(None), exact_docs=1)  # the first file (2 docs) is counted
    ratio = (estimate_tokens(PAGES[0][1]) + estimate_tokens(PAGES[1][1])) / (
        len(PAGES[0][1].split()) + len(PAGES[1][1].split()))
    assert totals["token_count"]["exact_docs"] == 2
    assert totals["kept_tokens_by_quality_bucket"]["0.00-0.25"] == round(len(PAGES[2][1].split()) * ratio)
    exact = estimate_tokens(PAGES[0][1]) + estimate_tokens(PAGES[1][1])
    estimated = sum(round(len(text.split()) * ratio) for _, text, _, _ in PAGES[2:])
    assert sum(totals["kept_tokens_by_topic"].values()) == exact + estimated
