"""Quality and speed of each `extract.extractor` on the article-extraction benchmark, against the default.

Data: the bundled data/extraction-benchmark (55 pages) and ../shared/data/extraction-benchmark (181 pages, a
superset of the 55) when present, or the folders given with --data: real pages, and the `articleBody` a
person extracted from each (never trafilatura's own evaluation set or readability's test pages).

Score: benchmarks/extraction_quality.py's token-level precision, recall and F1 per page, averaged over pages
(and the F1 of the averaged precision and recall). Each setting's F1 loss against the default is paired by
page, with a 95% bootstrap interval (2,000 resamples of the pages, seeded) and the number of pages it does
worse / better on (by more than 0.001 F1). Speed: CPU milliseconds per page of the extraction alone (the
stage's `Extractor.extract_text`: the chosen extractor under the time limit), best of --repeats passes, on
these pages; `benchmarks/extract.py` measures the stage on WARC pages.

    .venv/bin/python benchmarks/extractors.py [--data DIR ...] [--repeats 2]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from extraction_quality import load, score_page, summarize

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT / "data" / "extraction-benchmark", ROOT.parent / "shared" / "data" / "extraction-benchmark"]

# (label, ExtractConfig fields); the first is the default
SETTINGS = [
    ("trafilatura (default)", {}),
    ("trafilatura, favor_precision: false", {"favor_precision": False}),
    ("trafilatura-fast", {"extractor": "trafilatura-fast"}),
    ("trafilatura-fast, favor_precision: false", {"extractor": "trafilatura-fast", "favor_precision": False}),
    ("resiliparse", {"extractor": "resiliparse"}),
]


def paired_loss(base: list[float], other: list[float], seed: int = 0) -> tuple[float, float, float, int, int]:
    """Mean F1 loss of `other` against `base` (positive: worse), its 95% bootstrap interval, pages worse, better."""
    diffs = [a - b for a, b in zip(base, other, strict=True)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(2000))
    return (sum(diffs) / n, means[49], means[1949], sum(d > 0.001 for d in diffs), sum(d < -0.001 for d in diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", help="benchmark folder(s); default: both above")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per setting, best kept")
    args = parser.parse_args()
    from pipeline.config import ExtractConfig
    from pipeline.extract import Extractor

    for data in args.data or [c for c in CANDIDATES if c.is_dir()]:
        pages = load(data)
        print(f"\n{len(pages)} pages from {data}")
        print("| setting | precision | recall | F1 (mean of pages) | F1 (of mean P, R) | F1 loss vs default "
              "[95% CI] | pages worse / better | extraction CPU ms/page |")
        print("|---|---|---|---|---|---|---|---|")
        base: list[float] | None = None
        for label, fields in SETTINGS:
            extractor = Extractor(ExtractConfig(timeout_s=30, rules={"enabled": False}, **fields))
            extractor.extract_text(pages[0][2], pages[0][1])  # warm-up: trafilatura's first call loads its settings
            best = float("inf")
            for _ in range(max(args.repeats, 1)):
                cpu0 = time.process_time()
                texts = [extractor.extract_text(html, url) for _, url, html, _ in pages]
                best = min(best, time.process_time() - cpu0)
            scores = [score_page(text, gold) for text, (_, _, _, gold) in zip(texts, pages, strict=True)]
            result = summarize(scores)
            f1s = [s[2] for s in scores]
            if base is None:
                base, versus = f1s, "—"
            else:
                loss, low, high, worse, better = paired_loss(base, f1s)
                versus = f"{loss:+.4f} [{low:+.4f}, {high:+.4f}] | {worse} / {better}"
            if base is f1s:
                versus += " | —"
            print(f"| {label} | {result['precision']:.3f} | {result['recall']:.3f} | {result['f1_mean']:.4f} | "
                  f"{result['f1_of_means']:.4f} | {versus} | {1000 * best / len(pages):.2f} |")


if __name__ == "__main__":
    main()
