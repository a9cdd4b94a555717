"""Main-text extraction quality of the extract stage's Extractor on the article-extraction benchmark.

Data: ../shared/data/extraction-benchmark (181 real pages: html/<id>.html.gz, ground-truth.json with
the `articleBody` a person extracted; the bundled 20-page subset in data/extraction-benchmark otherwise).

Score: token-level precision, recall and F1 per page (tokens = lower-cased runs of word characters,
counted with multiplicity), then averaged over pages; also the F1 of the averaged precision and recall,
the way the benchmark's published table is computed. The published trafilatura figure is F1 0.958; the
benchmark's own stored trafilatura output (output/trafilatura.json, when present) is scored with the same
scorer so the comparison is like for like.

Each extractor setting in SETTINGS is scored; the first is the stage's default.

    .venv/bin/python benchmarks/extraction_quality.py [--data DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT.parent / "shared" / "data" / "extraction-benchmark", ROOT / "data" / "extraction-benchmark"]
PUBLISHED_TRAFILATURA_F1 = 0.958
_TOKEN = re.compile(r"\w+")

SETTINGS = [
    {},  # the stage's defaults (ExtractConfig: favor_precision=True, include_tables=True)
    {"favor_precision": False},
    {"favor_precision": False, "favor_recall": True},
    {"include_tables": False},
    {"favor_precision": False, "include_tables": False},
]


def tokens(text: str | None) -> Counter:
    return Counter(_TOKEN.findall((text or "").lower()))


def score_page(predicted: str | None, truth: str) -> tuple[float, float, float]:
    pred, gold = tokens(predicted), tokens(truth)
    overlap = sum((pred & gold).values())
    precision = overlap / sum(pred.values()) if pred else (1.0 if not gold else 0.0)
    recall = overlap / sum(gold.values()) if gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def summarize(scores: list[tuple[float, float, float]]) -> dict[str, float]:
    n = len(scores)
    precision = sum(s[0] for s in scores) / n
    recall = sum(s[1] for s in scores) / n
    return {"precision": precision, "recall": recall, "f1_mean": sum(s[2] for s in scores) / n,
            "f1_of_means": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def load(data: Path) -> list[tuple[str, str, str, str]]:
    """(id, url, html, articleBody) for every page with its HTML present."""
    from pipeline.warc import decode_html

    truth = json.loads((data / "ground-truth.json").read_text())
    pages = []
    for page_id, item in sorted(truth.items()):
        path = data / "html" / f"{page_id}.html.gz"
        if path.exists():
            html, _ = decode_html(gzip.decompress(path.read_bytes()), None)
            pages.append((page_id, item.get("url"), html, item.get("articleBody") or ""))
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=next((c for c in CANDIDATES if c.is_dir()), None))
    args = parser.parse_args()
    from pipeline.config import ExtractConfig
    from pipeline.extract import Extractor

    pages = load(args.data)
    print(f"{len(pages)} pages from {args.data}")
    print(f"{'setting':44s} {'precision':>9s} {'recall':>7s} {'F1(mean)':>9s} {'F1(P,R)':>8s} {'pages/s':>8s}")
    published = args.data / "output" / "trafilatura.json"
    if published.exists():
        stored = json.loads(published.read_text())
        stored = stored.get("output", stored)
        result = summarize([score_page(stored.get(pid, {}).get("articleBody"), gold) for pid, _, _, gold in pages])
        print(f"{'benchmark-stored trafilatura output':44s} {result['precision']:9.3f} {result['recall']:7.3f} "
              f"{result['f1_mean']:9.3f} {result['f1_of_means']:8.3f} {'':>8s}")
    for setting in SETTINGS:
        extractor = Extractor(ExtractConfig(timeout_s=30, **setting, rules={"enabled": False}))
        extractor.extract_text(pages[0][2], pages[0][1])  # warm-up: trafilatura's first call loads its settings
        started = time.perf_counter()
        scores = [score_page(extractor.extract_text(html, url), gold) for _, url, html, gold in pages]
        rate = len(pages) / (time.perf_counter() - started)
        result = summarize(scores)
        name = "defaults" if not setting else ", ".join(f"{k}={v}" for k, v in setting.items())
        print(f"{name:44s} {result['precision']:9.3f} {result['recall']:7.3f} {result['f1_mean']:9.3f} "
              f"{result['f1_of_means']:8.3f} {rate:8.1f}")
    print(f"published trafilatura F1 (article-extraction-benchmark): {PUBLISHED_TRAFILATURA_F1}")


if __name__ == "__main__":
    main()
