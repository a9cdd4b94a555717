"""Near-duplicate precision/recall on real article texts with controlled, seeded edits, scored against the exact
Jaccard of the 5-word shingle sets (see pipeline.dedup.evaluate)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline import schemas
from pipeline.config import load_config
from pipeline.dedup.evaluate import (
    load_texts,
    make_edited_set,
    pair_metrics,
    survivors_from_decisions,
    write_docs_folder,
)
from pipeline.io import RunLayout, read_dataset
from stagehelpers import dedup_run

ARTICLES = Path(__file__).resolve().parents[1] / "data" / "dedup-texts" / "articles.jsonl"


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_and_recall_on_edited_articles(tmp_path, ray_local, seed):
    texts = [article["text"] for article in load_texts(ARTICLES)]
    docs = make_edited_set(texts, variants=3, seed=seed)
    assert len(docs) == 4 * len(texts) == 192
    write_docs_folder(docs, tmp_path / "docs", num_shards=3)
    cfg = load_config(None, [f"out={tmp_path / 'out'}", "dedup.line=false", "dedup.num_partitions=4"])
    dedup_run(cfg, docs_dir=tmp_path / "docs", quiet=True)
    decisions = read_dataset(RunLayout(cfg.out).decisions("dedup"), schemas.DECISIONS).to_pylist()
    survivor_of = survivors_from_decisions([d.doc_id for d in docs], decisions)
    metrics = pair_metrics({d.doc_id: d.text for d in docs}, survivor_of, ngram=5)
    # the set has many pairs on both sides of the 0.8 line, or the numbers would say nothing
    assert metrics["true_pairs"] >= 80 and metrics["reported"] >= 60
    assert metrics["recall"] >= 0.95, metrics
    assert metrics["precision"] >= 0.95, metrics
    # no article is ever merged with another article
    family = {d.doc_id: d.family for d in docs}
    assert all(family[doc] == family[survivor] for doc, survivor in survivor_of.items())
    assert Counter(r["reason"] for r in decisions).keys() <= {"near_duplicate", "exact_duplicate"}


def test_without_verification_candidates_are_linked_unchecked(tmp_path, ray_local):
    """LSH alone (no signature check) links more pairs below the 0.7 line than with the default check."""
    texts = [article["text"] for article in load_texts(ARTICLES)]
    docs = make_edited_set(texts, variants=3, seed=0)
    write_docs_folder(docs, tmp_path / "docs", num_shards=2)
    results = {}
    for name, override in {"verified": [], "unverified": ["dedup.verify_threshold=null"]}.items():
        cfg = load_config(None, [f"out={tmp_path / name}", "dedup.line=false", "dedup.num_partitions=2", *override])
        dedup_run(cfg, docs_dir=tmp_path / "docs", quiet=True)
        decisions = read_dataset(RunLayout(cfg.out).decisions("dedup"), schemas.DECISIONS).to_pylist()
        results[name] = pair_metrics({d.doc_id: d.text for d in docs},
                                     survivors_from_decisions([d.doc_id for d in docs], decisions))
    assert results["unverified"]["reported"] > results["verified"]["reported"]
    assert results["unverified"]["false"] > results["verified"]["false"]
