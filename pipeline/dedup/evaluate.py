"""Measuring how well dedup finds near-duplicates: a seeded set of real texts with controlled edits, and
pair-level precision/recall against exact Jaccard similarity of the word-shingle sets.

Used by tests/test_dedup_quality.py and benchmarks/dedup.py. A pair counts as a true duplicate when its exact
Jaccard is >= `duplicate_at` (0.8); it is found when both documents end in the same cluster (same survivor).
A reported pair -- a dropped document and the survivor it names -- is false when its Jaccard is below
`false_below` (0.7); pairs in between are neither required nor penalised.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.dedup.keys import shingle_set

EDIT_OPS = ("insert", "delete", "replace", "shuffle", "mixed")
# Per-word edit probabilities. With 5-gram shingles one edited word changes up to 5 shingles, so about 2%
# edits is the 0.8-Jaccard boundary; the spread puts pairs on both sides of it.
EDIT_RATES = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.15, 0.3)


def load_texts(path: str | Path) -> list[dict[str, Any]]:
    """Articles from a JSONL file (`{"id", "url", "text"}`) or the benchmark's ground-truth JSON."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    return [{"id": key, "url": value.get("url"), "text": value["articleBody"]} for key, value in sorted(data.items())]


def edit_text(text: str, op: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """Apply one controlled edit: insert/delete/replace each word with probability `rate`, shuffle the
    paragraphs, or (mixed) all of them at a third of the rate plus a shuffle."""
    paragraphs = [p.split() for p in text.split("\n") if p.strip()]
    if op in ("shuffle", "mixed"):
        rng.shuffle(paragraphs)
    if op != "shuffle":
        word_rate = rate / 3 if op == "mixed" else rate
        edited = []
        for words in paragraphs:
            out: list[str] = []
            for word in words:
                this_op = rng.choice(("insert", "delete", "replace")) if op == "mixed" else op
                if rng.random() >= word_rate:
                    out.append(word)
                elif this_op == "insert":
                    out.extend([word, rng.choice(vocabulary)])
                elif this_op == "replace":
                    out.append(rng.choice(vocabulary))
                # delete: drop the word
            edited.append(out)
        paragraphs = edited
    return "\n".join(" ".join(words) for words in paragraphs if words)


@dataclass
class EditedDoc:
    doc_id: str
    family: int
    text: str
    url: str
    crawl_date: str
    edit: str


def make_edited_set(texts: list[str], *, variants: int = 3, seed: int = 0, copies: int = 1) -> list[EditedDoc]:
    """Each text plus `variants` edited versions of it (random op and rate), with random crawl dates so the
    original is not always the survivor. `copies` > 1 repeats the set with texts made distinct (every word
    replaced at 50% -- unrelated to each other) to scale the input while keeping its duplicate structure."""
    rng = random.Random(seed)
    vocabulary = sorted({word for text in texts for word in text.split()})
    docs: list[EditedDoc] = []
    family = 0
    for copy in range(copies):
        for text in texts:
            base = text if copy == 0 else edit_text(text, "replace", 0.5, rng, vocabulary)
            versions = [("original", base)]
            for _ in range(variants):
                op, rate = rng.choice(EDIT_OPS), rng.choice(EDIT_RATES)
                versions.append((f"{op}:{rate}", edit_text(base, op, rate, rng, vocabulary)))
            for index, (edit, body) in enumerate(versions):
                day = rng.randrange(1, 29)
                docs.append(EditedDoc(doc_id=f"f{family:05d}-v{index}", family=family, text=body,
                                      url=f"https://example.org/{family}/{index}",
                                      crawl_date=f"2024-02-{day:02d}T{rng.randrange(24):02d}:00:00Z", edit=edit))
            family += 1
    return docs


def pairwise_jaccard(texts: dict[str, str], ngram: int) -> dict[tuple[str, str], float]:
    """Exact Jaccard of every pair of documents sharing at least one shingle (all others are 0), via an
    inverted index so it stays fast on thousands of documents. Keys are sorted id pairs."""
    shingles = {doc_id: shingle_set(text, ngram) for doc_id, text in texts.items()}
    postings: dict[tuple, list[str]] = defaultdict(list)
    for doc_id in sorted(shingles):
        for shingle in shingles[doc_id]:
            postings[shingle].append(doc_id)
    shared: Counter = Counter()
    for ids in postings.values():
        for i, left in enumerate(ids):
            for right in ids[i + 1:]:
                shared[(left, right)] += 1
    return {pair: count / (len(shingles[pair[0]]) + len(shingles[pair[1]]) - count) for pair, count in shared.items()}


def pair_metrics(texts: dict[str, str], survivor_of: dict[str, str], *, ngram: int = 5, duplicate_at: float = 0.8,
                 false_below: float = 0.7) -> dict[str, Any]:
    """Recall over true pairs (Jaccard >= duplicate_at) and precision over reported (dropped, survivor) pairs.

    `survivor_of` maps every document to the survivor it was dropped for, or to itself."""
    jaccard = pairwise_jaccard(texts, ngram)
    true_pairs = [pair for pair, value in jaccard.items() if value >= duplicate_at]
    found = sum(1 for a, b in true_pairs if survivor_of[a] == survivor_of[b])
    reported = [tuple(sorted((doc, survivor))) for doc, survivor in survivor_of.items() if doc != survivor]
    false = [pair for pair in reported if jaccard.get(pair, 0.0) < false_below]
    return {
        "true_pairs": len(true_pairs), "found": found, "recall": found / len(true_pairs) if true_pairs else 1.0,
        "reported": len(reported), "false": len(false),
        "precision": 1 - len(false) / len(reported) if reported else 1.0,
        "false_pairs": [(a, b, round(jaccard.get((a, b), 0.0), 3)) for a, b in false[:10]],
    }


def write_docs_folder(docs: list[EditedDoc], folder: str | Path, num_shards: int = 1) -> list[Path]:
    """Write documents as a docs/ dataset (schemas.DOCS) split round-robin into `num_shards` files."""
    from pipeline import schemas
    from pipeline.io import write_parquet

    folder = Path(folder)
    paths = []
    for shard in range(num_shards):
        rows = [{"doc_id": d.doc_id, "url": d.url, "crawl_date": d.crawl_date, "text": d.text, "language": "en",
                 "n_chars": len(d.text), "rule_failures": []} for d in docs[shard::num_shards]]
        paths.append(write_parquet(schemas.from_rows(rows, schemas.DOCS), folder / f"part-{shard:05d}.parquet",
                                   schemas.DOCS))
    return paths


def survivors_from_decisions(doc_ids: list[str], decisions: list[dict[str, Any]]) -> dict[str, str]:
    """doc_id -> the survivor it was dropped for (decisions' duplicate_of), or itself."""
    survivor_of = {doc_id: doc_id for doc_id in doc_ids}
    for row in decisions:
        if row.get("duplicate_of"):
            survivor_of[row["doc_id"]] = row["duplicate_of"]
    return survivor_of
